"""Built-in KIS broker simulator speaking the real wire format (../shared/protocols/kis.md).

One Quart-Trio app served by hypercorn on loopback:
- ``POST /oauth2/Approval`` -> ``{"approval_key": ...}`` (§2); ``POST /oauth2/tokenP`` (§9.1);
- a WebSocket on any path (§1): JSON register/unregister with the acks and error codes of §5,
  ``0|H0STCNT0|NNN|...`` data frames of 46 fields, several records per frame at times (§6),
  PINGPONG heartbeats with a miss tolerance (§5.3), the per-session registration limit (§3).

The market itself (sim/market.py) is deterministic per seed. `SimControl` holds the fault
switches tests and operators use: drop every connection, stall, reject approval requests.
"""

from __future__ import annotations

import logging
import random
import string
from dataclasses import dataclass
from datetime import datetime

import msgspec
import trio
from quart import request, websocket
from quart_trio import QuartTrio

from tradestream.config import SimSettings
from tradestream.events import KST
from tradestream.gateway.serve import serve_app, ws_url
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame

log = logging.getLogger(__name__)

TR_TRADE = "H0STCNT0"
MARKET_STEP_S = 0.02  # the market advances in steps; trades per step follow tick_rate
OUTBOX_FRAMES = 10_000  # frames queued per connection before the server gives up on it

# (rt_cd, msg_cd, msg1) per kis.md §5.2
SUBSCRIBED = ("0", "OPSP0000", "SUBSCRIBE SUCCESS")
UNSUBSCRIBED = ("0", "OPSP0001", "UNSUBSCRIBE SUCCESS")
ALREADY = ("1", "OPSP0002", "ALREADY IN SUBSCRIBE")
NOT_FOUND = ("1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)")
MAX_OVER = ("1", "OPSP0008", "MAX SUBSCRIBE OVER")
BAD_APPROVAL = ("1", "OPSP0011", "invalid approval : NOT FOUND")
BAD_TR_ID = ("1", "OPSP8991", "SUBSCRIBE ERROR : invalid tr_id")
BAD_TR_KEY = ("1", "OPSP8992", "SUBSCRIBE ERROR : invalid tr_key")
BAD_TR_TYPE = ("1", "OPSP8997", "JSON PARSING ERROR : invalid tr_type")
NO_INPUT = ("1", "OPSP9991", "JSON PARSING ERROR : input not found")
NO_BODY = ("1", "OPSP9992", "JSON PARSING ERROR : body not found")
NO_HEADER = ("1", "OPSP9998", "JSON PARSING ERROR : header not found")
BAD_JSON = ("1", "OPSP9999", "JSON PARSING ERROR : invalid json format")


class _Close:
    """Sentinel in a connection's outbox: close the socket with this code and reason."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class _Conn:
    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.subs: set[tuple[str, str]] = set()
        self.missed_pings = 0
        self.overflowed = False
        self.out, self.out_rx = trio.open_memory_channel[str | _Close](OUTBOX_FRAMES)

    def send(self, item: str | _Close) -> None:
        try:
            self.out.send_nowait(item)
        except trio.WouldBlock:
            # The client cannot keep up; a real server would drop it too.
            self.overflowed = True
            self.out.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


@dataclass
class SimStats:
    connections_total: int = 0
    frames_sent: int = 0
    records_sent: int = 0
    approvals: int = 0


class SimControl:
    """Fault switches and counters of a running simulator (no I/O; the tasks read them)."""

    def __init__(self) -> None:
        self.reject_approval = False
        self.stalled_until = 0.0  # trio time; no frames at all before it
        self.stats = SimStats()
        self.conns: dict[int, _Conn] = {}

    def drop_all(self, code: int = 1011, reason: str = "simulated fault") -> int:
        """Close every WebSocket session; returns how many were open."""
        for conn in self.conns.values():
            conn.send(_Close(code, reason))
        return len(self.conns)

    def stall(self, seconds: float) -> None:
        """Send nothing (data or heartbeats) for `seconds`."""
        self.stalled_until = trio.current_time() + seconds

    def stalled(self) -> bool:
        return trio.current_time() < self.stalled_until


@dataclass(frozen=True)
class SimHandle:
    rest_url: str
    ws_url: str
    control: SimControl


class _Req(msgspec.Struct):
    header: dict[str, str] | None = None
    body: dict[str, dict[str, str]] | None = None


def _reply(tr_id: str, tr_key: str, code: tuple[str, str, str], output: dict | None = None) -> str:
    rt_cd, msg_cd, msg1 = code
    body: dict[str, object] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    # Every reply carries header.tr_id and tr_key: the broker's sample client needs both (§9.1).
    return msgspec.json.encode(
        {"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body}
    ).decode()


def create_sim_app(cfg: SimSettings, control: SimControl) -> QuartTrio:
    app = QuartTrio("tradestream-sim")
    rng = random.Random(cfg.seed + 1)
    known_codes = set(cfg.tickers)
    approval_keys: set[str] = set()
    alphabet = string.ascii_letters + string.digits
    next_cid = 0

    def token(n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    @app.post("/oauth2/Approval")
    async def approval() -> tuple[dict[str, str], int]:
        data = await request.get_json(force=True, silent=True) or {}
        if control.reject_approval:
            return {"error_code": "EGW00103", "error_description": "invalid appkey"}, 403
        if data.get("grant_type") != "client_credentials" or not (
            data.get("appkey") and data.get("secretkey")
        ):
            return {"error_code": "EGW00002", "error_description": "bad request"}, 400
        key = token(36)
        approval_keys.add(key)
        control.stats.approvals += 1
        return {"approval_key": key}, 200

    @app.post("/oauth2/tokenP")
    async def access_token() -> tuple[dict[str, object], int]:
        return {"access_token": token(64), "token_type": "Bearer", "expires_in": 86400,
                "access_token_token_expired": "2099-12-31 23:59:59"}, 200  # fmt: skip

    def handle(conn: _Conn, text: str) -> None:
        try:
            req = msgspec.json.decode(text, type=_Req)
        except msgspec.DecodeError:
            conn.send(_reply("", "", BAD_JSON))
            return
        header = req.header or {}
        if header.get("tr_id") == "PINGPONG":
            conn.missed_pings = 0  # the client echoed our heartbeat
            return
        inp = (req.body or {}).get("input")
        tr_id = (inp or {}).get("tr_id", "")
        tr_key = (inp or {}).get("tr_key", "")
        if req.header is None:
            code = NO_HEADER
        elif req.body is None:
            code = NO_BODY
        elif not inp:
            code = NO_INPUT
        elif header.get("approval_key") not in approval_keys:
            code = BAD_APPROVAL
        elif header.get("tr_type") not in ("1", "2"):
            code = BAD_TR_TYPE
        elif tr_id != TR_TRADE:
            code = BAD_TR_ID
        elif tr_key not in known_codes:
            code = BAD_TR_KEY
        elif header["tr_type"] == "2":
            code = UNSUBSCRIBED if (tr_id, tr_key) in conn.subs else NOT_FOUND
            conn.subs.discard((tr_id, tr_key))
        elif (tr_id, tr_key) in conn.subs:
            code = ALREADY
        elif len(conn.subs) >= cfg.registration_limit:
            code = MAX_OVER
        else:
            conn.subs.add((tr_id, tr_key))
            conn.send(_reply(tr_id, tr_key, SUBSCRIBED, {"iv": token(16), "key": token(32)}))
            return
        conn.send(_reply(tr_id, tr_key, code))

    async def sender(conn: _Conn, cancel: trio.CancelScope) -> None:
        async for item in conn.out_rx:
            if conn.overflowed:
                await websocket.close(1008, "client too slow")
                break
            if isinstance(item, _Close):
                await websocket.close(item.code, item.reason)
                break
            await websocket.send(item)
        cancel.cancel()

    async def pinger(conn: _Conn) -> None:
        while True:
            await trio.sleep(cfg.ping_interval_s)
            if control.stalled():
                continue
            if cfg.max_missed_pings and conn.missed_pings >= cfg.max_missed_pings:
                conn.send(_Close(1000, "heartbeat not answered"))
                return
            conn.missed_pings += 1
            stamp = datetime.now(KST).strftime("%Y%m%d%H%M%S")
            conn.send(f'{{"header":{{"tr_id":"PINGPONG","datetime":"{stamp}"}}}}')

    @app.websocket("/")
    @app.websocket("/<path:path>")
    async def session(path: str = "") -> None:
        nonlocal next_cid
        await websocket.accept()
        next_cid += 1
        conn = _Conn(next_cid)
        control.conns[conn.cid] = conn
        control.stats.connections_total += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, conn, nursery.cancel_scope)
                nursery.start_soon(pinger, conn)
                while True:
                    msg = await websocket.receive()
                    handle(conn, msg if isinstance(msg, str) else msg.decode("utf-8", "replace"))
        finally:
            del control.conns[conn.cid]

    return app


async def run_market(
    cfg: SimSettings, control: SimControl, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Advance the market in steps and send each connection the trades it registered for."""
    tickers = tuple(t for t in DEFAULT_TICKERS if t.code in set(cfg.tickers))
    market = SimMarket(tickers, cfg.seed)
    framing = random.Random(cfg.seed + 2)
    owed = 0.0
    task_status.started()
    deadline = trio.current_time()
    while True:
        deadline += MARKET_STEP_S
        await trio.sleep_until(deadline)
        owed += cfg.tick_rate * MARKET_STEP_S
        n, owed = int(owed), owed - int(owed)
        if n == 0 or control.stalled():
            continue
        now = datetime.now(KST)
        trades = [market.trade(now) for _ in range(n)]
        for conn in list(control.conns.values()):
            mine = [t for t in trades if (TR_TRADE, t[0]) in conn.subs]
            i = 0
            while i < len(mine):
                k = framing.randint(1, cfg.max_records_per_frame)
                conn.send(data_frame(TR_TRADE, mine[i : i + k]))
                control.stats.frames_sent += 1
                control.stats.records_sent += len(mine[i : i + k])
                i += k


async def run_simulator(
    cfg: SimSettings, *, task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the simulator until cancelled. started(): listening; returns its URLs and control."""
    control = SimControl()
    app = create_sim_app(cfg, control)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_app, app, cfg.host, cfg.port)
        await nursery.start(run_market, cfg, control)
        base = binds[0]
        log.info("KIS simulator on %s (%d tickers, %.0f trades/s)", base, len(cfg.tickers), cfg.tick_rate)
        task_status.started(SimHandle(rest_url=base, ws_url=ws_url(base, "/tryitout"), control=control))
