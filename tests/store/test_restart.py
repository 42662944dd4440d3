"""The whole service stopped while its database is away: nothing is dropped; the next start
writes what was kept in the spool."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_service import wait_for
from tests.store.test_outage import Outage
from tradestream.roles import run_service
from tradestream.store import migrate
from tradestream.store.writer import make_engine


async def test_stop_during_an_outage_then_restart(server_db_url: str, tmp_path: Path) -> None:
    server = Outage(server_db_url)
    engine = make_engine(server.app_url)
    await trio.to_thread.run_sync(migrate.upgrade, engine)
    s = make_settings(tmp_path)
    s = replace(s, store=replace(s.store, url=server.app_url, drain_s=0.5, memory_rows=200))
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                running = await nursery.start(run_service, s)
                await wait_for(lambda: running.flusher.rows > 100, "stored")
                await trio.to_thread.run_sync(server.begin)
                await wait_for(lambda: running.flusher.retries > 0, "writes failing")
                await trio.sleep(1.0)  # the feed keeps running into memory and the spool
                running.stop()
            received, first = running.router.events + running.side["forwarded"], running.flusher
            ticks = running.router.ticks
            assert first.spool_rows > 0 and first.spooled_rows > 0
            assert first.rows + first.spool_rows == received  # every event: stored or spooled
            await trio.to_thread.run_sync(server.end)
            # the next start replays the spool before anything else
            async with trio.open_nursery() as nursery:
                again = await nursery.start(
                    run_service, replace(s, sim=replace(s.sim, tick_rate=0.0))
                )  # no new trades: count only the old
                await wait_for(lambda: again.flusher.spool_rows == 0, "spool replayed")
                again.stop()
        with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM stock_prices_realtime")
            stored = conn.execute(query).scalar_one()
        assert stored == ticks
        assert again.flusher.replayed_rows == first.spool_rows
    finally:
        engine.dispose()
        server.close()
