"""Reconnect time: the simulated broker goes down for a while and comes back; how long until
the first new record reaches the pipeline (upstream back -> first new record)?"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import trio

from tradestream.config import (
    GatewaySettings,
    KisSettings,
    LsSettings,
    Settings,
    SimSettings,
    StoreSettings,
)
from tradestream.roles import run_service
from tradestream.sim.market import DEFAULT_TICKERS

ROUNDS = 8
DOWN_S = 3.0


async def main(rounds: int = ROUNDS, down_s: float = DOWN_S) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(
            gateway=GatewaySettings(port=0, jwt_secret="bench-secret-bench-secret-bench-secret"),
            store=StoreSettings(
                url=f"sqlite:///{Path(tmp) / 'bench.db'}",
                auto_upgrade=True,
                spool_dir=str(Path(tmp) / "spool"),
            ),
            kis=KisSettings(watchlist=tuple(t.code for t in DEFAULT_TICKERS[:40]), stale_s=15.0),
            ls=LsSettings(enabled=False),
            sim=SimSettings(port=0, tick_rate=500.0),
        )
        latencies: list[float] = []
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_service, s)
            assert running.sim is not None
            control = running.sim.control
            # The router only counts ticks (no event to wait on): poll the counter.
            while running.router.ticks == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            for _ in range(rounds):
                control.go_down(down_s)
                await trio.sleep_until(control.down_until)
                back, before = trio.current_time(), running.router.ticks
                while running.router.ticks == before:  # noqa: ASYNC110 -- as above, 1 ms poll
                    await trio.sleep(0.001)
                latencies.append(trio.current_time() - back)
            running.stop()
    latencies.sort()
    return {
        "rounds": rounds,
        "down_s": down_s,
        "back_to_first_record_ms_p50": round(statistics.median(latencies) * 1000, 1),
        "back_to_first_record_ms_max": round(latencies[-1] * 1000, 1),
        "all_ms": [round(x * 1000, 1) for x in latencies],
    }
