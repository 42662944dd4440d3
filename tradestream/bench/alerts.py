"""Alert latency: a sudden move in the simulator's stream to the alert on a client's socket.

The whole service runs (simulator at 2,000 trades/s, feeds, router with the detector, store,
gateway); a client subscribed to `alert` reads each alert and measures its receive time against
the triggering trade's upstream receive time (`data.received_ns`, the same host clock).

Each jump is matched to the first alert with its code and its direction whose triggering trade
arrived after the jump was made. Anything else on the socket meanwhile (another code's late
alert, a move back the other way, a trade received before the jump) is not this jump's alert:
it is skipped and counted (`skipped`), never measured.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import trio

from tradestream.config import (
    DetectSettings,
    GatewaySettings,
    KisSettings,
    LsSettings,
    Settings,
    SimSettings,
    StoreSettings,
)
from tradestream.feeds.transport import open_upstream
from tradestream.roles import run_service
from tradestream.sim.market import DEFAULT_TICKERS

ALERTS = 200


async def main(alerts: int = ALERTS, tick_rate: float = 2000.0) -> dict[str, object]:
    codes = tuple(t.code for t in DEFAULT_TICKERS)
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(
            gateway=GatewaySettings(port=0, jwt_secret="bench-secret-bench-secret-bench-secret"),
            store=StoreSettings(
                url=f"sqlite:///{Path(tmp) / 'bench.db'}",
                auto_upgrade=True,
                spool_dir=str(Path(tmp) / "spool"),
            ),
            kis=KisSettings(
                watchlist=codes, app_keys=(("bench-key-2", "bench-secret-2"),), scanner_slots=0
            ),
            ls=LsSettings(enabled=False),
            sim=SimSettings(port=0, tick_rate=tick_rate),
            detect=DetectSettings(debounce_s=0.5),  # one code may alert again soon
        )
        latencies: list[float] = []
        skipped = 0  # alerts on the socket that were not the awaited jump's (module doc)
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_service, s)
            assert running.sim is not None
            url = f"{running.ws_url}?token={running.auth.issue('bench')}"
            async with open_upstream(url, connect_timeout_s=5) as ws:
                await ws.get_message()
                await ws.send_message('{"type":"subscribe","topic":"alert"}')
                await ws.get_message()
                # polls the service's state: it has no event for "every code has traded"
                while len(running.state.latest) < len(codes):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                for i in range(alerts):
                    code = codes[i % len(codes)]
                    direction = "up" if (i // len(codes)) % 2 == 0 else "down"
                    jumped_ns = time.time_ns()
                    running.sim.control.jump(code, 0.06 if direction == "up" else -0.065)
                    with trio.fail_after(10):
                        while True:
                            msg = msgspec.json.decode(await ws.get_message())
                            if msg.get("type") != "alert":
                                continue
                            data = msg["data"]
                            if (msg["symbol"], data["direction"]) == (code, direction) and data[
                                "received_ns"
                            ] >= jumped_ns:
                                break
                            skipped += 1
                    latencies.append(time.time_ns() - data["received_ns"])
            running.stop()
    ms = sorted(x / 1e6 for x in latencies)
    return {
        "alerts": len(ms),
        "skipped": skipped,
        "trades_per_s": tick_rate,
        "tick_to_client_ms_p50": round(statistics.median(ms), 2),
        "tick_to_client_ms_p99": round(ms[max(0, int(len(ms) * 0.99) - 1)], 2),
        "tick_to_client_ms_max": round(ms[-1], 2),
    }
