"""Gap backfill end to end: the simulator's minute bars (the broker's §6.1 TR) fill the
minutes a feed gap touched, stored beside the streamed trades; /api/bars is whole again and
says which bars were backfilled; a real reconnect's gap reaches the backfiller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import tok
from tests.e2e.test_service import TIMEOUT_S, service, wait_for
from tradestream.events import KST, FeedGap


async def test_a_gap_is_filled_from_the_brokers_minute_bars(tmp_path: Path) -> None:
    s = make_settings(tmp_path, watchlist=("005930",))
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None and running.sim.market is not None
            assert running.backfill is not None
            await wait_for(lambda: running.slots.manager.slot("H0STCNT0", "005930") is not None,
                           "005930 registered")  # fmt: skip
            rec = running.slots.manager.slot("H0STCNT0", "005930")
            assert rec is not None
            # the simulator's market traded 005930 in the minutes before the service started:
            # three minutes of history in its minute-bar TR
            now = datetime.now(KST).replace(second=0, microsecond=0)
            minutes = [now - timedelta(minutes=m) for m in (12, 11, 10)]
            history = running.sim.market.bars.setdefault("005930", {})
            for i, m in enumerate(minutes):
                history[m.strftime("%Y%m%d%H%M")] = [70_000 + i, 70_500 + i, 69_500, 70_100, 10 + i]
            # a gap over them on the session that carries 005930 (12:30 past to 9:30 past)
            start = (minutes[0] - timedelta(seconds=30)).astimezone(UTC)
            end = (minutes[-1] + timedelta(seconds=90)).astimezone(UTC)
            gap = FeedGap(rec.session, start, end, "test")
            running.backfill.request(gap)
            await wait_for(lambda: running.backfill.stats.done >= 1, "the gap backfilled")
            await wait_for(lambda: running.flusher.rows > 0 and running.flusher.pending_rows == 0,
                           "stored")  # fmt: skip
            # a real gap: the broker away for a moment; its backfill is recorded too
            # (a session that has not streamed yet has no gap to report: wait for trades)
            await wait_for(lambda: running.router.ticks > 0, "trades streaming")
            async with httpx.AsyncClient(base_url=running.sim.rest_url) as sim_http:
                await sim_http.post("/sim/faults", json={"down_s": 0.5})
            # (its backfill waits for the gap's last minute to end: not awaited here)
            await wait_for(lambda: running.backfill.stats.requested >= 2, "the real gap", 15)
            auth = {"Authorization": f"Bearer {tok(running)}"}
            since = (minutes[0] - timedelta(minutes=1)).isoformat()
            until = (minutes[-1] + timedelta(minutes=2)).isoformat()
            async with httpx.AsyncClient(base_url=running.url, headers=auth) as http:
                bars = (
                    await http.get(
                        "/api/bars/005930",
                        params={"interval": "1m", "since": since, "until": until},
                    )
                ).json()["data"]
            status = running.backfill.stats.as_dict()
    filled = [b for b in bars if b.get("backfilled")]
    assert [b["time"] for b in filled] == [m.isoformat() for m in minutes]
    assert [b["open"] for b in filled] == [70_000, 70_001, 70_002]
    assert [b["volume"] for b in filled] == [10, 11, 12]
    assert status["bars"] >= 3 and status["failed"] == 0 and status["dropped"] == 0
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT source, started_at, bars, status FROM backfills")))
    engine.dispose()
    synthetic = [
        r for r in rows if str(r.started_at).startswith(str(start.replace(tzinfo=None))[:19])
    ]
    assert [(r.source, r.bars, r.status) for r in synthetic] == [(rec.session, 3, "done")]
    assert {r.status for r in rows} == {"done"}  # the real gap's too, if it ended in time
