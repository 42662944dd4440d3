"""Failover: one broker goes away while both stream; how long are its codes silent for a client?

`tradestream run` runs as its own process on its built-in simulator: KIS and Kiwoom, the 50-code
watchlist split between them (every second code prefers Kiwoom). A client in this process
watches every code's price over the real WebSocket. Each round takes one broker down for
`down_s` (the simulator drops its sessions and refuses its handshakes and token calls), then
measures, for every code that broker carried, the silence the client saw: its last update
before the fault to its first after. The codes come back on the other broker once the lost
session is declared lost (`TRADESTREAM_FAILOVER_AFTER_S`). After the outage the round waits
until the codes are home again and checks that the move back left no silence beyond
`home_gap_max_s`.

The peer is the same service with one broker (Kiwoom off) and the same KIS outage: nothing
takes the codes over, so they are silent for the whole outage. The client also checks the one
trade stream per code: no price update repeats or goes back in accumulated volume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from tradestream.bench.fanout import SECRET
from tradestream.bench.served import _free_port, _start, _wait_http
from tradestream.feeds.transport import open_upstream
from tradestream.gateway.auth import Authenticator

ROUNDS = 2  # per broker
DOWN_S = 30.0
FAILOVER_AFTER_S = 10.0
TICK_RATE = 500.0  # trades/s over 50 codes: about 10 per code and second


class Watch:
    """What the client saw: each code's last update time, its silences, order checks."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.volume: dict[str, int] = {}
        self.updates = 0
        self.repeats = 0  # an update whose accumulated volume is not above the last one's
        self.gaps: list[dict[str, Any]] = []  # feed_gap messages

    def first_after(self, code: str, t: float) -> bool:
        return self.last.get(code, 0.0) > t


async def _client(url: str, codes: list[str], watch: Watch, ready: trio.Event) -> None:
    async with open_upstream(url, 10) as ws:
        for code in codes:
            await ws.send_message(
                msgspec.json.encode({"type": "subscribe", "topic": f"price:{code}"}).decode()
            )
        ready.set()
        while True:
            msg = msgspec.json.decode(await ws.get_message())
            now = trio.current_time()
            kind = msg.get("type")
            if kind == "price_update":
                code, volume = msg["symbol"], msg["data"]["volume"]
                if volume <= watch.volume.get(code, -1):
                    watch.repeats += 1
                watch.volume[code] = volume
                watch.last[code] = now
                watch.updates += 1
            elif kind == "feed_gap":
                watch.gaps.append(msg)
            elif kind == "ping":  # the server's heartbeat
                await ws.send_message('{"type":"pong"}')


class Service:
    def __init__(self, tmp: Path, failover_after_s: float, *, kiwoom: bool) -> None:
        self.port, self.sim_port = _free_port(), _free_port()
        self.token = Authenticator(SECRET).issue("bench", role="admin")
        self.env = {
            **_base_env(),
            "TRADESTREAM_PORT": str(self.port),
            "TRADESTREAM_SIM_PORT": str(self.sim_port),
            "TRADESTREAM_SIM_TICK_RATE": str(TICK_RATE),
            "TRADESTREAM_JWT_SECRET": SECRET,
            "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "TRADESTREAM_DB_AUTO_UPGRADE": "1",
            "TRADESTREAM_SPOOL_DIR": str(tmp / "spool"),
            "TRADESTREAM_LOG_LEVEL": "WARNING",
            "TRADESTREAM_LS_DISABLED": "1",
            "TRADESTREAM_MARKET_MOVERS_EVERY_S": "0",
            "TRADESTREAM_FAILOVER_AFTER_S": str(failover_after_s),
            "TRADESTREAM_WS_RATE_BURST": "200",  # the client subscribes to 50 codes at once
            "TRADESTREAM_SIM_ORDER_RATE": "0",  # no new holdings: the same codes throughout
            **({} if kiwoom else {"TRADESTREAM_KIWOOM_DISABLED": "1"}),
        }
        self.proc: trio.Process | None = None

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(
                f"http://127.0.0.1:{self.port}{path}", params={"token": self.token}
            )
            return resp.json()

    async def fault(self, **body: Any) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"http://127.0.0.1:{self.sim_port}/sim/faults", json=body)
            resp.raise_for_status()

    async def slots_by_session(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for row in (await self.get("/api/slots"))["slots"]:
            if row["tr_id"] == "H0STCNT0":
                out.setdefault(row["session"], set()).add(row["code"])
        return out

    async def streaming(self) -> bool:
        """Every session streams; one with nothing registered (a KIS session back after
        the other took its broker's codes home) is connected, with nothing to stream."""
        feeds = (await self.get("/api/ws/status"))["upstream"]
        return all(
            f["state"] == "streaming" or (f["state"] == "subscribing" and not f["subscribed"])
            for f in feeds
        )


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADESTREAM_")}


async def _until(predicate: Any, timeout_s: float, poll_s: float = 0.05) -> None:
    with trio.fail_after(timeout_s):
        while not await predicate():  # noqa: ASYNC110 -- another process: polled
            await trio.sleep(poll_s)


async def _outage(
    svc: Service, watch: Watch, broker: str, codes: set[str], down_s: float
) -> dict[str, Any]:
    """Take `broker` down; each code of `codes`: fault -> first update again, and the
    silence (last update before -> first after)."""
    t0 = trio.current_time()
    before = {c: watch.last.get(c, t0) for c in codes}
    await svc.fault(down_s=down_s, broker=broker)

    async def all_back() -> bool:
        return all(watch.first_after(c, t0) for c in codes)

    await _until(all_back, down_s + 60)
    resumed = {c: watch.last[c] for c in codes}  # about the first update after (10/s)
    failover = sorted(resumed[c] - t0 for c in codes)
    silence = sorted(resumed[c] - before[c] for c in codes)
    return {
        "broker_down": broker,
        "codes": len(codes),
        "fault_to_data_s_p50": round(statistics.median(failover), 2),
        "fault_to_data_s_max": round(failover[-1], 2),
        "silence_s_max": round(silence[-1], 2),
        "t0": t0,
    }


async def _run(tmp: Path, failover_after_s: float, rounds: int, down_s: float, *, kiwoom: bool
               ) -> dict[str, Any]:  # fmt: skip
    svc = Service(tmp, failover_after_s, kiwoom=kiwoom)
    svc.proc = await _start([sys.executable, "-m", "tradestream", "run"], env=svc.env, cwd=tmp)
    watch = Watch()
    out: dict[str, Any] = {"rounds": []}
    try:
        await _wait_http(svc.port, timeout_s=60)
        await _until(svc.streaming, 60, 0.2)
        home = await svc.slots_by_session()
        codes = sorted(c for cs in home.values() for c in cs)
        ready = trio.Event()
        async with trio.open_nursery() as nursery:
            url = f"ws://127.0.0.1:{svc.port}/ws?token={svc.token}"
            nursery.start_soon(_client, url, codes, watch, ready)
            await ready.wait()

            async def everyone() -> bool:
                return all(c in watch.last for c in codes)

            await _until(everyone, 30)
            plan = ["kiwoom", "kis"] if kiwoom else ["kis"]
            for _ in range(rounds):
                for broker in plan:
                    mine = _by_broker(home)[broker]  # every session of the broker goes down
                    r = await _outage(svc, watch, broker, mine, down_s)
                    t0 = r.pop("t0")
                    await trio.sleep(max(0.0, t0 + down_s - trio.current_time()))  # its course

                    async def at_home() -> bool:  # each broker's codes on its sessions again
                        now = _by_broker(await svc.slots_by_session())
                        homes = _by_broker(home)
                        return all(homes[b] <= now.get(b, set()) for b in homes) and (
                            await svc.streaming()
                        )

                    await _until(at_home, 90, 0.2)
                    back = trio.current_time()
                    await trio.sleep(2.0)  # after the move home: no silence on any code
                    r["home_gap_max_s"] = round(_max_silence(watch, codes, back), 2)
                    out["rounds"].append(r)
            nursery.cancel_scope.cancel()
    finally:
        if svc.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                svc.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(30):
                await svc.proc.wait()
    out["feed_gaps"] = [g["reason"] for g in watch.gaps if "failover" in g["reason"]]
    out["updates"] = watch.updates
    out["repeated_or_older_updates"] = watch.repeats
    return out


def _by_broker(by_session: dict[str, set[str]]) -> dict[str, set[str]]:
    """kis-1 and kis-2 are one broker's: which of them a code is on does not matter."""
    out: dict[str, set[str]] = {}
    for session, codes in by_session.items():
        out.setdefault(session.rpartition("-")[0], set()).update(codes)
    return out


def _max_silence(watch: Watch, codes: list[str], since: float) -> float:
    """The longest any code has gone without an update, looked at now (codes update about ten
    times a second, so anything above a second is a real silence)."""
    now = trio.current_time()
    return max(now - max(watch.last[c], since) for c in codes)


async def main(
    rounds: int = ROUNDS, down_s: float = DOWN_S, failover_after_s: float = FAILOVER_AFTER_S
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        pooled = await _run(Path(a), failover_after_s, rounds, down_s, kiwoom=True)
        peer = await _run(Path(b), failover_after_s, 1, down_s, kiwoom=False)
    kis_rounds = [r for r in pooled["rounds"] if r["broker_down"] == "kis"]
    peer_silence = peer["rounds"][0]["silence_s_max"]
    return {
        "down_s": down_s,
        "failover_after_s": failover_after_s,
        "pooled": pooled,
        "peer_kis_only": peer,
        "kis_outage_silence_s_max_pooled_vs_peer": [
            round(r["silence_s_max"] / peer_silence, 3) for r in kis_rounds
        ],
    }
