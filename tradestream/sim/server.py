"""The built-in broker simulator: KIS, LS and Kiwoom on one loopback app, speaking the real wire
formats.

KIS (../shared/protocols/kis.md): ``POST /oauth2/Approval``; ``POST /oauth2/tokenP`` and the
REST TRs of kis-rest.md (sim/kis_rest.py: the balance inquiry, with paging, rate limits and
token expiry); a WebSocket
on any path but ``/websocket``: JSON register/unregister with the acks and codes of §5, data
frames for H0STCNT0/H0NXCNT0/H0UNCNT0 trades, H0STASP0 order books and H0STPGM0 program trading
(several records per frame at times), H0UPCNT0 index updates (docs/kis-index.md) for the index
codes of market.SIM_INDEXES every INDEX_INTERVAL_S, AES-256-CBC encrypted H0STCNI0/H0STCNI9
execution notices for the demo account, PINGPONG heartbeats with a miss tolerance, the
41-registration limit and one session per app key.

LS (../shared/protocols/ls.md): ``POST /oauth2/token`` (form) and the WebSocket ``/websocket``:
``tr_type`` 3/4 requests with the token in the header, acks as §4, NWS headlines and S3_/K3_
trades with string bodies.

Kiwoom (../shared/protocols/kiwoom.md, sim/kiwoom.py): ``POST /oauth2/token`` with a JSON body
(au10001: the same path as LS's, told apart by the content type) and the WebSocket
``/api/dostk/websocket``: LOGIN first, REG/REMOVE per group with a registration limit, REAL 0B
trades and 0D books (several entries per message at times), PINGs with a miss tolerance,
SYSTEM R10001/R10002/R10004. Its trades and books are the ones the KIS sessions get in the
same step: one market, so both brokers report the same trades.

An outage can take one broker down (`SimControl.go_down(s, broker="kiwoom")`, or ``down_s``
with ``broker`` at ``/sim/faults``): its handshakes and REST calls are refused and its sessions
dropped while the others go on; without a broker, all of them.

The demo account's positions follow its fills and are served by the balance inquiry
(inquire-balance), and at ``GET /sim/positions`` in the document of accounts.parse_positions
(what a bridge for ``TRADESTREAM_POSITIONS_URL`` serves).

The market (market.py) and the news (ls_records.py) are deterministic per seed. `SimControl`
holds the fault switches: drop every connection (now or every N s), stall, malformed frames,
reject credentials; and the demo account's order entry and positions.
"""

from __future__ import annotations

import logging
import random
import string
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import msgspec
import trio
from quart import request, websocket
from quart_trio import QuartTrio

from tradestream.config import SimSettings
from tradestream.events import KST
from tradestream.feeds.kis.master import FILES, Listed, master_zip
from tradestream.serving import serve_app, ws_url
from tradestream.sim import ls_records
from tradestream.sim.history import DayBar, history, vcp_codes
from tradestream.sim.kis_rest import KisRestSim
from tradestream.sim.kiwoom import OTHER_LOGIN, KiwoomSim, system_message
from tradestream.sim.market import (
    DEFAULT_TICKERS,
    SimMarket,
    SimTicker,
    data_frame,
    encrypted_frame,
    execution_notice,
)
from tradestream.sim.rankings import Rankings, Row
from tradestream.upstream import (
    KIS_BOOK,
    KIS_INDEX,
    KIS_PROGRAM,
    KIWOOM_BOOK,
    LS_NEWS_KEY,
    LS_TRADE_TRS,
    NOTICE_TRS,
    TRADE_TRS,
)
from tradestream.upstream import LS_NEWS as NEWS_TR

log = logging.getLogger(__name__)

MARKET_STEP_S = 0.02  # the market advances in steps; trades per step follow tick_rate
INDEX_INTERVAL_S = 1.0  # one H0UPCNT0 record per index this often, to its subscribers
OUTBOX_FRAMES = 10_000  # frames queued per connection before the server gives up on it

KIS_TRADE_TRS = tuple(TRADE_TRS)
KIS_BOOK_TR = KIS_BOOK
KIS_PROGRAM_TR = KIS_PROGRAM
KIS_NOTICE_TRS = NOTICE_TRS
KIS_INDEX_TR = KIS_INDEX  # tr_key: an index code ("0001" KOSPI, "1001" KOSDAQ, "2001" KOSPI200)
KIS_TRS = (*KIS_TRADE_TRS, KIS_BOOK_TR, KIS_PROGRAM_TR, *KIS_NOTICE_TRS, KIS_INDEX_TR)
LS_MARKET_TRS = tuple(sorted(LS_TRADE_TRS, reverse=True))  # S3_, K3_
LS_NEWS = (NEWS_TR, LS_NEWS_KEY)
BROKERS = ("kis", "ls", "kiwoom")  # the protocols of _Conn, and the brokers of an outage

# (rt_cd, msg_cd, msg1) per kis.md §5.2
SUBSCRIBED = ("0", "OPSP0000", "SUBSCRIBE SUCCESS")
UNSUBSCRIBED = ("0", "OPSP0001", "UNSUBSCRIBE SUCCESS")
ALREADY = ("1", "OPSP0002", "ALREADY IN SUBSCRIBE")
NOT_FOUND = ("1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)")
MAX_OVER = ("1", "OPSP0008", "MAX SUBSCRIBE OVER")
BAD_APPROVAL = ("1", "OPSP0011", "invalid approval : NOT FOUND")
BAD_TR_ID = ("1", "OPSP8991", "SUBSCRIBE ERROR : invalid tr_id")
BAD_TR_KEY = ("1", "OPSP8992", "SUBSCRIBE ERROR : invalid tr_key")
KEY_IN_USE = ("1", "OPSP8996", "ALREADY IN USE appkey")
BAD_TR_TYPE = ("1", "OPSP8997", "JSON PARSING ERROR : invalid tr_type")
NO_INPUT = ("1", "OPSP9991", "JSON PARSING ERROR : input not found")
NO_BODY = ("1", "OPSP9992", "JSON PARSING ERROR : body not found")
NO_HEADER = ("1", "OPSP9998", "JSON PARSING ERROR : header not found")
BAD_JSON = ("1", "OPSP9999", "JSON PARSING ERROR : invalid json format")

LS_OK = ("00000", "정상처리되었습니다")
LS_BAD_TOKEN = ("IGW00121", "유효하지 않은 토큰입니다")  # shape per ls.md §4; codes unknown
LS_BAD_TR = ("IGW00011", "등록되지 않은 TR입니다")
LS_MAX_OVER = ("IGW00201", "등록 가능한 최대 건수를 초과했습니다")


class _Close:
    """Sentinel in a connection's outbox: close the socket with this code and reason."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class _Conn:
    def __init__(self, cid: int, protocol: str) -> None:
        self.cid = cid
        self.protocol = protocol  # "kis", "ls" or "kiwoom"
        self.app_key: str | None = None
        self.subs: set[tuple[str, str]] = set()
        self.keys: dict[str, tuple[str, str]] = {}  # tr_id -> (key, iv) from its ack
        self.missed_pings = 0
        self.overflowed = False
        self.out, self.out_rx = trio.open_memory_channel[str | _Close](OUTBOX_FRAMES)

    def send(self, item: str | _Close) -> None:
        try:
            self.out.send_nowait(item)
        except trio.WouldBlock:
            self.overflowed = True  # the client cannot keep up; a real server drops it too
            self.out.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


@dataclass
class SimStats:
    connections_total: int = 0
    frames_sent: int = 0
    records_sent: int = 0
    malformed_sent: int = 0
    approvals: int = 0
    tokens: int = 0
    orders: int = 0
    notices_sent: int = 0
    news_sent: int = 0


@dataclass
class SimOrder:
    code: str
    side: str  # "buy" or "sell"
    qty: int
    price: int  # 0: market


def _check_broker(broker: str | None) -> None:
    if broker is not None and broker not in BROKERS:
        raise ValueError(f"broker {broker!r}: one of {', '.join(BROKERS)}")


@dataclass
class SimControl:
    """Fault switches, the demo account's order entry, and counters (no I/O)."""

    reject_credentials: bool = False
    stalled_until: float = 0.0  # trio time; nothing at all is sent before it
    down_until: float = 0.0  # trio time; sessions are refused and closed before it
    down_until_by: dict[str, float] = field(default_factory=dict)  # the same, one broker
    drop_every_s: float = 0.0  # 0: never
    malformed_rate: float = 0.0  # share of data frames replaced by garbage
    stats: SimStats = field(default_factory=SimStats)
    conns: dict[int, _Conn] = field(default_factory=dict)
    orders: list[SimOrder] = field(default_factory=list)
    jumps: list[tuple[str, float]] = field(default_factory=list)  # (code, fraction), next step
    approvals: dict[str, str] = field(default_factory=dict)  # approval key -> app key
    tokens: set[str] = field(default_factory=set)  # LS access tokens
    # Kiwoom access tokens (sim/kiwoom.py): token -> (app key, expiry, KST)
    kiwoom_tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    refused_app_keys: set[str] = field(default_factory=set)  # this account is closed
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # code -> qty, cost

    def set_position(self, code: str, qty: int, avg_price: float = 0.0) -> None:
        """Change the demo account's position without a notice (a trade made elsewhere, a
        transfer, a corporate action): the drift a positions reconciliation must correct."""
        if qty <= 0:
            self.positions.pop(code, None)
        else:
            self.positions[code] = (qty, round(qty * avg_price))

    def apply_fill(self, code: str, side: str, qty: int, price: int) -> None:
        """The demo account's position after one of its fills (no short selling: a sell
        beyond the position closes it, as the account book counts it too)."""
        held, cost = self.positions.get(code, (0, 0))
        if side == "buy":
            held, cost = held + qty, cost + qty * price
        else:
            sold = min(qty, held)
            cost -= round(cost / held * sold) if held else 0
            held -= sold
        self.set_position(code, held, cost / held if held else 0.0)

    def positions_document(self, account: str) -> dict[str, object]:
        """The demo account's positions (accounts.parse_positions)."""
        return {
            "accounts": [
                {
                    "account": account,
                    "positions": [
                        {"code": code, "quantity": qty, "avg_price": round(cost / qty, 2)}
                        for code, (qty, cost) in sorted(self.positions.items())
                    ],
                }
            ]
        }

    def refuse_app_key(self, app_key: str, refused: bool = True) -> None:
        """Close (or reopen) one app key's account: its sessions are dropped and it gets no
        new approval key, as when a broker account is suspended."""
        if not refused:
            self.refused_app_keys.discard(app_key)
            return
        self.refused_app_keys.add(app_key)
        for approval in [k for k, v in self.approvals.items() if v == app_key]:
            del self.approvals[approval]
        for token in [t for t, (k, _) in self.kiwoom_tokens.items() if k == app_key]:
            del self.kiwoom_tokens[token]
        for conn in self.conns.values():
            if conn.app_key == app_key:
                conn.send(_Close(1008, "app key suspended"))

    def drop_all(
        self, code: int = 1011, reason: str = "simulated fault", broker: str | None = None
    ) -> int:
        """Close every WebSocket session (of one broker: "kis", "ls" or "kiwoom") now; returns
        how many were open."""
        _check_broker(broker)
        closed = [c for c in self.conns.values() if broker in (None, c.protocol)]
        for conn in closed:
            conn.send(_Close(code, reason))
        return len(closed)

    def revoke_credentials(self) -> None:
        """Forget every approval key and token issued so far (as after expiry): the next
        registration with one is refused (KIS OPSP0011, LS error ack, Kiwoom LOGIN 8005)."""
        self.approvals.clear()
        self.tokens.clear()
        self.kiwoom_tokens.clear()

    def go_down(self, seconds: float, broker: str | None = None) -> None:
        """Every broker (or one: "kis", "ls" or "kiwoom") is unreachable for `seconds`: its
        open sessions are dropped, its handshakes refused and its REST calls answered 503.
        `seconds` 0 ends its outage."""
        _check_broker(broker)
        until = trio.current_time() + seconds
        if broker is None:
            self.down_until = until
        else:
            self.down_until_by[broker] = until
        if seconds > 0:
            self.drop_all(1001, "simulated outage", broker)

    def is_down(self, broker: str | None = None) -> bool:
        """Every broker is down, or `broker` is."""
        now = trio.current_time()
        return now < self.down_until or (
            broker is not None and now < self.down_until_by.get(broker, 0.0)
        )

    def stall(self, seconds: float) -> None:
        """Send nothing (data or heartbeats) for `seconds`."""
        self.stalled_until = trio.current_time() + seconds

    def stalled(self) -> bool:
        return trio.current_time() < self.stalled_until

    def jump(self, code: str, fraction: float) -> None:
        """At the next step, a trade of `code` moved by `fraction` from its last price."""
        self.jumps.append((code, fraction))

    def place_order(self, code: str, side: str, qty: int, price: int = 0) -> None:
        """An order of the demo account: an order notice now, a fill notice at the next step."""
        if side not in ("buy", "sell") or qty <= 0:
            raise ValueError("side must be buy or sell and qty positive")
        self.orders.append(SimOrder(code, side, qty, price))


@dataclass(frozen=True)
class SimHandle:
    rest_url: str
    ws_url: str  # KIS
    ls_ws_url: str
    control: SimControl
    kiwoom_ws_url: str = ""
    rest: KisRestSim | None = None  # the REST TRs' state and counters
    market: SimMarket | None = None  # the simulated market (its minute bars, for tests)


class _KisReq(msgspec.Struct):
    header: dict[str, str] | None = None
    body: dict[str, dict[str, str]] | None = None


class _LsReq(msgspec.Struct):
    header: dict[str, str] | None = None
    body: dict[str, str] | None = None


def _kis_reply(
    tr_id: str,
    tr_key: str,
    code: tuple[str, str, str],
    output: dict | None = None,
    encrypt: bool = False,
) -> str:
    rt_cd, msg_cd, msg1 = code
    body: dict[str, object] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    # Every reply carries header.tr_id and tr_key: the broker's sample client needs both (§9.1).
    return msgspec.json.encode(
        {
            "header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "Y" if encrypt else "N"},
            "body": body,
        }
    ).decode()


class Simulator:
    """The simulator's state and its handlers; `create_app` exposes them over HTTP/WS."""

    def __init__(self, cfg: SimSettings, control: SimControl) -> None:
        self.cfg = cfg
        self.control = control
        known = {t.code: t for t in DEFAULT_TICKERS}
        # Codes beyond the built-in 50 get a synthetic ticker (tests that need more codes).
        tickers = tuple(
            known.get(c) or SimTicker(c, f"SIM {c}", 1000 * (5 + sum(map(ord, c)) % 50))
            for c in cfg.tickers
        )
        self.market = SimMarket(tickers, cfg.seed)
        self._tickers = tickers
        self.names = {t.code: t.name for t in tickers}
        self.news = ls_records.NewsGenerator([(t.code, t.name) for t in tickers], cfg.seed)
        self._rng = random.Random(cfg.seed + 1)  # keys and tokens
        self._framing = random.Random(cfg.seed + 2)  # records per frame, malformed frames
        self._next_cid = 0
        self._next_order = 10_000
        self._index_due = 0.0  # market time since the last index update
        self.rankings = Rankings(cfg.seed, self.names)
        self.extra_names = self.rankings.names()  # listed, not streamed until registered
        self._t0: float | None = None  # trio time the simulator's day started
        self.rest = KisRestSim(
            app_secret_of=lambda key: None,  # any secret goes with any key, as for approvals
            positions=lambda: control.positions,
            names={**self.extra_names, **self.names},
            account=cfg.demo_account,
            clock=trio.current_time,
            rankings=self.ranking_rows,
            minute_bars=lambda code: self.market.bars.get(code, {}),
            daily_bars=self.daily_history,
        )
        self._vcp_codes = vcp_codes(list(self.names), cfg.seed)
        self.kiwoom = KiwoomSim(
            cfg.seed, cfg.kiwoom_registration_limit, self._is_listed, control.kiwoom_tokens
        )
        self._histories: dict[str, list[DayBar]] = {}

    def elapsed(self) -> float:
        """Seconds since the simulator's day started (its first use)."""
        now = trio.current_time()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def ranking_rows(self) -> list[Row]:
        """The whole listed market now: the extra codes and the traded ones."""
        m = self.market
        return self.rankings.rows(
            self.elapsed(),
            lambda: [
                Row(c, self.names.get(c) or self.extra_names.get(c, c), m.price(c),
                    m.prev_close(c), m.volume(c), "KOSPI")
                for c in m.codes
                if c not in self.extra_names
            ],
        )  # fmt: skip

    def daily_history(self, code: str) -> list[DayBar]:
        """The code's daily bars before today (sim/history.py), made once per code."""
        found = self._histories.get(code)
        if found is None:
            if code in self.market.codes:
                prev = self.market.prev_close(code)
            else:
                row = self.rankings.ticker_for(code, 0.0)
                prev = row[0].base_price if row is not None else 10_000
            today = datetime.now(KST).date()
            found = history(code, prev, self.cfg.seed, today, code in self._vcp_codes)
            self._histories[code] = found
        return found

    def master_file(self, name: str) -> bytes | None:
        """``kospi_code`` or ``kosdaq_code``: every listed code of that market, zipped."""
        market = {v: k for k, v in FILES.items()}.get(name)
        if market is None:
            return None
        listed = [Listed(t.code, t.name, t.market, "ST") for t in self._tickers]
        extra = self.rankings.markets()
        listed += [Listed(c, n, extra[c], "ST") for c, n in self.extra_names.items()]
        return master_zip([r for r in listed if r.market == market], market)

    def _is_listed(self, code: str) -> bool:
        """A code the market lists: one that may be registered (then `_stream` it)."""
        return code in self.names or code in self.extra_names

    def _stream(self, code: str) -> None:
        """A listed code registered for the first time: the market trades it from now."""
        if code in self.names:
            return
        found = self.rankings.ticker_for(code, self.elapsed())
        if found is not None:
            ticker, price = found
            self.market.add(ticker, price)
            self.names[code] = ticker.name

    def _token(self, n: int) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(self._rng.choice(alphabet) for _ in range(n))

    # -- REST ------------------------------------------------------------------------------
    def approval(self, data: dict[str, str]) -> tuple[dict[str, str], int]:
        if self.control.reject_credentials or data.get("appkey") in self.control.refused_app_keys:
            return {
                "error_code": "EGW00103",
                "error_description": "유효하지 않은 AppKey입니다.",
            }, 403
        if data.get("grant_type") != "client_credentials" or not (
            data.get("appkey") and data.get("secretkey")
        ):
            return {"error_code": "EGW00002", "error_description": "bad request"}, 400
        key = self._token(36)
        self.control.approvals[key] = data["appkey"]
        self.control.stats.approvals += 1
        return {"approval_key": key}, 200

    def ls_token(self, form: dict[str, str]) -> tuple[dict[str, object], int]:
        if self.control.reject_credentials:
            return {"rsp_cd": "IGW00105", "rsp_msg": "유효하지 않은 AppKey입니다."}, 403
        if form.get("grant_type") != "client_credentials" or not (
            form.get("appkey") and form.get("appsecretkey")
        ):
            return {"rsp_cd": "IGW00002", "rsp_msg": "bad request"}, 400
        token = self._token(64)
        self.control.tokens.add(token)
        self.control.stats.tokens += 1
        return {
            "access_token": token,
            "token_type": "Bearer",
            "scope": "oob",
            "expires_in": 86400,
        }, 200

    # -- WebSocket requests ----------------------------------------------------------------
    def open_conn(self, protocol: str) -> _Conn:
        self._next_cid += 1
        conn = _Conn(self._next_cid, protocol)
        self.control.conns[conn.cid] = conn
        self.control.stats.connections_total += 1
        return conn

    def handle_kis(self, conn: _Conn, text: str) -> None:
        try:
            req = msgspec.json.decode(text, type=_KisReq)
        except msgspec.DecodeError:
            conn.send(_kis_reply("", "", BAD_JSON))
            return
        header = req.header or {}
        if header.get("tr_id") == "PINGPONG":
            conn.missed_pings = 0  # the client echoed our heartbeat
            return
        inp = (req.body or {}).get("input") or {}
        tr_id, tr_key = inp.get("tr_id", ""), inp.get("tr_key", "")
        app_key = self.control.approvals.get(header.get("approval_key", ""))
        if req.header is None:
            code = NO_HEADER
        elif req.body is None:
            code = NO_BODY
        elif not inp:
            code = NO_INPUT
        elif app_key is None:
            code = BAD_APPROVAL
        elif conn.app_key is None and any(
            c.app_key == app_key
            for c in self.control.conns.values()
            if c is not conn and c.protocol == "kis"
        ):
            code = KEY_IN_USE  # kis.md §3: one session per app key
        elif header.get("tr_type") not in ("1", "2"):
            code = BAD_TR_TYPE
        elif tr_id not in KIS_TRS:
            code = BAD_TR_ID
        elif not self._valid_key(tr_id, tr_key):
            code = BAD_TR_KEY
        elif header["tr_type"] == "2":
            code = UNSUBSCRIBED if (tr_id, tr_key) in conn.subs else NOT_FOUND
            conn.subs.discard((tr_id, tr_key))
        elif (tr_id, tr_key) in conn.subs:
            code = ALREADY
        elif len(conn.subs) >= self.cfg.registration_limit:
            code = MAX_OVER
        else:
            conn.app_key = app_key
            conn.subs.add((tr_id, tr_key))
            if tr_id not in KIS_NOTICE_TRS and tr_id != KIS_INDEX_TR:
                self._stream(tr_key)
            key, iv = self._token(32), self._token(16)
            conn.keys[tr_id] = (key, iv)
            conn.send(
                _kis_reply(
                    tr_id,
                    tr_key,
                    SUBSCRIBED,
                    {"iv": iv, "key": key},
                    encrypt=tr_id in KIS_NOTICE_TRS,
                )
            )
            return
        conn.send(_kis_reply(tr_id, tr_key, code))

    def handle_kiwoom(self, conn: _Conn, text: str) -> None:
        session = self.kiwoom.sessions[conn.cid]
        answer = self.kiwoom.handle(session, text, datetime.now(KST))
        conn.app_key = session.app_key
        conn.subs = session.registered
        for code in answer.streams:
            self._stream(code)
        for frame in answer.send:
            conn.send(frame)
        if answer.close:
            conn.send(_Close(1000, "closed by the broker"))
        for cid in answer.evict:  # kiwoom.md §8: another login took the app key
            other = self.control.conns.get(cid)
            if other is not None:
                other.app_key = None
                other.send(system_message(OTHER_LOGIN))
                other.send(_Close(1000, "another login with the app key"))

    def _valid_key(self, tr_id: str, tr_key: str) -> bool:
        if tr_id in KIS_NOTICE_TRS:
            return bool(tr_key)  # the HTS id
        if tr_id == KIS_INDEX_TR:
            return tr_key in self.market.index_codes
        return tr_key in self.names or tr_key in self.extra_names

    def handle_ls(self, conn: _Conn, text: str) -> None:
        try:
            req = msgspec.json.decode(text, type=_LsReq)
            header, body = req.header or {}, req.body or {}
        except msgspec.DecodeError:
            conn.send(ls_records.ack_message("", "", "", "IGW00001", "JSON 형식 오류"))
            return
        tr_cd, tr_key, tr_type = (
            body.get("tr_cd", ""),
            body.get("tr_key", ""),
            header.get("tr_type", ""),
        )
        if header.get("token") not in self.control.tokens:
            code = LS_BAD_TOKEN
        elif (tr_cd, tr_key) != LS_NEWS and not (tr_cd in LS_MARKET_TRS and tr_key in self.names):
            code = LS_BAD_TR
        elif tr_type == "4":
            conn.subs.discard((tr_cd, tr_key))
            code = LS_OK
        elif tr_type != "3":
            code = LS_BAD_TR
        elif (tr_cd, tr_key) not in conn.subs and len(conn.subs) >= self.cfg.registration_limit:
            code = LS_MAX_OVER
        else:
            conn.subs.add((tr_cd, tr_key))
            code = LS_OK
        conn.send(ls_records.ack_message(tr_cd, tr_key, tr_type, *code))

    # -- the market ------------------------------------------------------------------------
    def step(self, now: datetime, n_trades: int, dt: float) -> None:
        """One market step: trades, order books, program trading, news, notices and, every
        INDEX_INTERVAL_S of steps, the indexes, to every connection that registered for them."""
        trades = [self.market.trade(now) for _ in range(n_trades)]
        while self.control.jumps:
            code, fraction = self.control.jumps.pop(0)
            if code in self.names:
                trades.append(self.market.jump(code, fraction, now))
        self._index_due += dt
        indexes: list[list[str]] = []
        if self._index_due >= INDEX_INTERVAL_S - 1e-9:  # float steps: 50 x 0.02 is not 1.0
            self._index_due = 0.0
            indexes = [self.market.index_record(c, now) for c in self.market.index_codes]
        rng = self._framing
        books = {c for c in self.names if rng.random() < self.cfg.orderbook_rate * dt}
        programs = {c for c in self.names if rng.random() < self.cfg.program_rate * dt}
        news = self.news.next(now) if rng.random() < self.cfg.news_rate * dt else None
        notices = self._fill_orders(now)
        book_records: dict[str, list[str]] = {}  # one book per code and step, for every broker
        for conn in list(self.control.conns.values()):
            if conn.protocol == "kis":
                self._send_kis(conn, now, trades, books, programs, notices, indexes, book_records)
            elif conn.protocol == "kiwoom":
                self._send_kiwoom(conn, now, trades, books, book_records)
            else:
                self._send_ls(conn, trades, news)

    def _book(self, code: str, now: datetime, made: dict[str, list[str]]) -> list[str]:
        """The code's book of this step: made once, whoever asks first (KIS or Kiwoom)."""
        found = made.get(code)
        if found is None:
            found = made[code] = self.market.order_book(code, now)
        return found

    def _send_kiwoom(
        self,
        conn: _Conn,
        now: datetime,
        trades: list[list[str]],
        books: set[str],
        made: dict[str, list[str]],
    ) -> None:
        """The step's trades and books of the connection's registered items (kiwoom.md §5):
        the same records, and the same book per code (`made`), as the KIS connections get."""
        session = self.kiwoom.sessions.get(conn.cid)
        if session is None or not session.registered:
            return
        codes = {item.partition("_")[0] for kind, item in session.registered if kind == KIWOOM_BOOK}
        book_of = {
            c: (self._book(c, now, made), self.market.prev_close(c)) for c in sorted(books & codes)
        }
        stats = self.control.stats
        for frame in self.kiwoom.data(
            session,
            trades,
            book_of,
            self.cfg.max_records_per_frame,
            self._framing,
            self.control.malformed_rate,
        ):
            conn.send(frame.text)
            stats.frames_sent += 1
            stats.records_sent += frame.entries
            stats.malformed_sent += frame.malformed

    def _send_kis(
        self,
        conn: _Conn,
        now: datetime,
        trades: list[list[str]],
        books: set[str],
        programs: set[str],
        notices: list[list[str]],
        indexes: list[list[str]],
        made: dict[str, list[str]],
    ) -> None:
        if not conn.subs:
            return
        for tr_id in KIS_TRADE_TRS:
            self._send_records(conn, tr_id, [t for t in trades if (tr_id, t[0]) in conn.subs])
        self._send_records(
            conn,
            KIS_BOOK_TR,
            [self._book(c, now, made) for c in sorted(books) if (KIS_BOOK_TR, c) in conn.subs],
        )
        self._send_records(
            conn,
            KIS_PROGRAM_TR,
            [
                self.market.program_trade(c, now)
                for c in sorted(programs)
                if (KIS_PROGRAM_TR, c) in conn.subs
            ],
        )
        for tr_id in KIS_NOTICE_TRS:
            mine = [n for n in notices if (tr_id, n[0]) in conn.subs]
            if mine and tr_id in conn.keys:
                key, iv = conn.keys[tr_id]
                for record in mine:
                    conn.send(encrypted_frame(tr_id, [record], key, iv))
                    self.control.stats.notices_sent += 1
        for record in indexes:  # one record per frame, as KIS sends them
            if (KIS_INDEX_TR, record[0]) in conn.subs:
                rate = self.control.malformed_rate
                if rate and self._framing.random() < rate:
                    conn.send(self._malformed(KIS_INDEX_TR, [record]))
                    self.control.stats.malformed_sent += 1
                else:
                    conn.send(data_frame(KIS_INDEX_TR, [record]))
                self.control.stats.frames_sent += 1
                self.control.stats.records_sent += 1

    def _send_records(self, conn: _Conn, tr_id: str, records: list[list[str]]) -> None:
        i = 0
        while i < len(records):
            k = self._framing.randint(1, self.cfg.max_records_per_frame)
            chunk = records[i : i + k]
            if self.control.malformed_rate and self._framing.random() < self.control.malformed_rate:
                conn.send(self._malformed(tr_id, chunk))
                self.control.stats.malformed_sent += 1
            else:
                conn.send(data_frame(tr_id, chunk))
            self.control.stats.frames_sent += 1
            self.control.stats.records_sent += len(chunk)
            i += k

    def _malformed(self, tr_id: str, chunk: list[list[str]]) -> str:
        frame = data_frame(tr_id, chunk)
        kind = self._framing.randrange(4)
        if kind == 0:
            return frame[: len(frame) // 2]  # truncated: the field count no longer divides
        if kind == 1:
            return frame.replace("^", "^x", 1)  # a field that is not a number
        if kind == 2:
            return "0|H0ZZZZZ0|001|" + frame.split("|", 3)[3]  # unknown TR
        return "garbage \x00\x01 frame"

    def _send_ls(self, conn: _Conn, trades: list[list[str]], news: dict[str, str] | None) -> None:
        if news is not None and LS_NEWS in conn.subs:
            conn.send(ls_records.data_message(*LS_NEWS, news))
            self.control.stats.news_sent += 1
        for t in trades:
            for tr_cd in LS_MARKET_TRS:
                if (tr_cd, t[0]) in conn.subs:
                    conn.send(ls_records.data_message(tr_cd, t[0], ls_records.s3_body(t)))
                    self.control.stats.frames_sent += 1

    def _fill_orders(self, now: datetime) -> list[list[str]]:
        """H0STCNI0 records for the orders placed since the last step: an order notice and a
        fill notice each. Field 0 is the HTS id, which is also the subscription's tr_key."""
        out: list[list[str]] = []
        cfg = self.cfg
        while self.control.orders:
            o = self.control.orders.pop(0)
            self._next_order += 1
            order_no = f"{self._next_order:010d}"
            price = o.price or self.market.price(o.code)
            name = self.names.get(o.code, o.code)
            notice = partial(
                execution_notice,
                customer_id=cfg.demo_hts_id,
                account=cfg.demo_account,
                order_no=order_no,
                code=o.code,
                side=o.side,
                order_qty=o.qty,
                order_price=price,
                now=now,
                name=name,
            )
            out.append(notice(kind="order", qty=o.qty, price=price))
            fill_price = self.market.price(o.code)
            out.append(notice(kind="fill", qty=o.qty, price=fill_price))
            self.control.apply_fill(o.code, o.side, o.qty, fill_price)
            self.control.stats.orders += 1
        return out


def create_sim_app(sim: Simulator) -> QuartTrio:
    app = QuartTrio("tradestream-sim")
    control = sim.control
    cfg = sim.cfg

    @app.before_request
    async def outage() -> tuple[dict[str, str], int] | None:
        path = request.path
        if path.startswith("/sim/"):
            broker = None
        elif path == "/oauth2/token":  # LS's form, or Kiwoom's JSON (au10001)
            broker = "kiwoom" if request.is_json else "ls"
        else:
            broker = "kis"
        return ({"error": "simulated outage"}, 503) if control.is_down(broker) else None

    @app.post("/oauth2/Approval")
    async def approval() -> tuple[dict[str, str], int]:
        return sim.approval(await request.get_json(force=True, silent=True) or {})

    @app.post("/oauth2/tokenP")
    async def access_token() -> tuple[dict[str, object], int]:
        data = await request.get_json(force=True, silent=True) or {}
        refused = control.reject_credentials or data.get("appkey") in control.refused_app_keys
        return sim.rest.issue_token(data, refused=refused)

    @app.get("/common/master/<name>.mst.zip")
    async def master(name: str) -> tuple[bytes | dict[str, str], int, dict[str, str]]:
        """The broker's stock master files (kis-rest.md §8.3), for the listed market."""
        blob = sim.master_file(name)
        if blob is None:
            return {"error": f"no master file {name}"}, 404, {}
        return blob, 200, {"content-type": "application/zip"}

    @app.get("/uapi/<path:path>")
    async def uapi(path: str) -> tuple[dict[str, object], int, dict[str, str]]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return sim.rest.call("/uapi/" + path, headers, dict(request.args))

    @app.post("/oauth2/token")
    async def token() -> tuple[dict[str, object], int]:
        if request.is_json:  # Kiwoom's au10001: JSON in, JSON out, HTTP 200 either way
            body = await request.get_json(force=True, silent=True) or {}
            refused = control.reject_credentials or body.get("appkey") in control.refused_app_keys
            return sim.kiwoom.issue_token(body, datetime.now(KST), refused=refused), 200
        return sim.ls_token(dict(await request.form))

    @app.post("/sim/orders")
    async def place_order() -> tuple[dict[str, object], int]:
        data = await request.get_json(force=True, silent=True) or {}
        try:
            control.place_order(
                str(data["code"]), str(data["side"]), int(data["qty"]), int(data.get("price", 0))
            )
        except (KeyError, ValueError) as exc:
            return {"error": f"bad order: {exc}"}, 400
        return {"accepted": True}, 202

    @app.get("/sim/positions")
    async def positions() -> dict[str, object]:
        return control.positions_document(cfg.demo_account)

    @app.post("/sim/faults")
    async def faults() -> tuple[dict[str, object], int]:
        """Operate the fault switches of a running simulator, e.g.
        ``{"drop": true}``, ``{"stall_s": 5}``, ``{"down_s": 3}``, ``{"drop_every_s": 30}``,
        ``{"down_s": 3, "broker": "kiwoom"}`` (``drop`` and ``down_s`` of one broker: "kis",
        "ls" or "kiwoom"),
        ``{"malformed_rate": 0.05}``, ``{"reject_credentials": true}``, ``{"revoke": true}``,
        ``{"jump": {"code": "005930", "pct": 6}}`` (a sudden move at the next step),
        ``{"expire_tokens": true}`` (REST access tokens expire now), ``{"rest_rate": 2}``
        (REST calls a second per app key before EGW00201)."""
        data = await request.get_json(force=True, silent=True) or {}
        try:
            broker = data.get("broker")  # "drop" and "down_s" of one broker only
            _check_broker(broker)
            if data.get("drop"):
                control.drop_all(broker=broker)
            if "stall_s" in data:
                control.stall(float(data["stall_s"]))
            if "down_s" in data:
                control.go_down(float(data["down_s"]), broker)
            if "drop_every_s" in data:
                control.drop_every_s = float(data["drop_every_s"])
            if "malformed_rate" in data:
                control.malformed_rate = min(1.0, max(0.0, float(data["malformed_rate"])))
            if "reject_credentials" in data:
                control.reject_credentials = bool(data["reject_credentials"])
            if data.get("revoke"):
                control.revoke_credentials()
            if "jump" in data:
                control.jump(str(data["jump"]["code"]), float(data["jump"]["pct"]) / 100)
            if data.get("expire_tokens"):
                sim.rest.expire_tokens()
            if "rest_rate" in data:
                sim.rest.rate_per_s = max(1, int(data["rest_rate"]))
        except (TypeError, ValueError, KeyError) as exc:
            return {"error": f"bad fault: {exc}"}, 400
        return {"connections": len(control.conns), "stats": control.stats.__dict__}, 200

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

    async def kiwoom_pinger(conn: _Conn) -> None:
        """kiwoom.md §7: {"trnm":"PING"} to be echoed; R10002 and the end after misses."""
        session = sim.kiwoom.sessions[conn.cid]
        while True:
            await trio.sleep(cfg.ping_interval_s)
            if control.stalled():
                continue
            frame, over = sim.kiwoom.heartbeat(session, cfg.max_missed_pings)
            conn.send(frame)
            if over:
                conn.send(_Close(1000, "heartbeat not answered"))
                return

    async def session(protocol: str) -> None:
        if control.is_down(protocol):
            return  # not accepted: the handshake is refused (HTTP 403)
        await websocket.accept()
        conn = sim.open_conn(protocol)
        handle = {"kis": sim.handle_kis, "ls": sim.handle_ls, "kiwoom": sim.handle_kiwoom}[protocol]
        if protocol == "kiwoom":
            sim.kiwoom.open(conn.cid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, conn, nursery.cancel_scope)
                if protocol == "kis":
                    nursery.start_soon(pinger, conn)  # LS documents no heartbeat (ls.md §6)
                elif protocol == "kiwoom":
                    nursery.start_soon(kiwoom_pinger, conn)
                while True:
                    msg = await websocket.receive()
                    handle(conn, msg if isinstance(msg, str) else msg.decode("utf-8", "replace"))
        finally:
            del control.conns[conn.cid]
            sim.kiwoom.close(conn.cid)

    # Plain HTTP to any other path (including the WebSocket paths) is a JSON 404, as from a
    # REST API, rather than Quart's HTML 400 for "not a WebSocket request".
    @app.route("/", methods=_ANY_METHOD)
    @app.route("/<path:path>", methods=_ANY_METHOD)
    async def not_found(path: str = "") -> tuple[dict[str, str], int]:
        return {"error": "not_found", "message": f"no such endpoint: /{path}"}, 404

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> tuple[dict[str, str], int]:
        return {"error": "method_not_allowed", "message": f"{request.method} {request.path}"}, 405

    @app.websocket("/websocket")
    async def ls_session() -> None:
        await session("ls")

    @app.websocket("/api/dostk/websocket")
    async def kiwoom_session() -> None:
        await session("kiwoom")

    @app.websocket("/")
    @app.websocket("/<path:path>")
    async def kis_session(path: str = "") -> None:
        await session("kis")

    return app


_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def run_market(
    sim: Simulator, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Advance the market in fixed steps; drop connections periodically if asked to."""
    control, cfg = sim.control, sim.cfg
    owed = 0.0
    orders_owed = 0.0
    task_status.started()
    deadline = next_drop = trio.current_time()
    while True:
        deadline += MARKET_STEP_S
        await trio.sleep_until(deadline)
        if control.drop_every_s and deadline >= next_drop + control.drop_every_s:
            next_drop = deadline
            control.drop_all(1011, "simulated periodic drop")
        owed += cfg.tick_rate * MARKET_STEP_S
        n, owed = int(owed), owed - int(owed)
        orders_owed += cfg.order_rate_per_min / 60 * MARKET_STEP_S
        if orders_owed >= 1:  # the demo account trades now and then
            orders_owed -= 1
            code = sim.market.codes[sim._framing.randrange(len(sim.market.codes))]
            control.place_order(code, sim._framing.choice(("buy", "sell")), 10)
        if control.stalled():
            continue
        sim.step(datetime.now(KST), n, MARKET_STEP_S)


async def run_simulator(
    cfg: SimSettings, *, task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the simulator until cancelled. started(): listening; returns its URLs and control."""
    control = SimControl(
        drop_every_s=cfg.drop_every_s,
        malformed_rate=cfg.malformed_rate,
        reject_credentials=cfg.reject_credentials,
    )
    for code, qty, avg in cfg.demo_positions:  # held from before today
        control.set_position(code, qty, avg)
    sim = Simulator(cfg, control)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_app, create_sim_app(sim), cfg.host, cfg.port)
        await nursery.start(run_market, sim)
        base = binds[0]
        log.info(
            "broker simulator on %s (%d tickers, %.0f trades/s)",
            base,
            len(cfg.tickers),
            cfg.tick_rate,
        )
        task_status.started(
            SimHandle(
                rest_url=base,
                ws_url=ws_url(base, "/tryitout"),
                ls_ws_url=ws_url(base, "/websocket"),
                control=control,
                kiwoom_ws_url=ws_url(base, "/api/dostk/websocket"),
                rest=sim.rest,
                market=sim.market,
            )
        )
