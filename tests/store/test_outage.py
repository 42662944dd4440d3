"""A database outage in the middle of a stream, on the real servers: nothing lost, nothing
stored twice, and the producers never wait.

The outage is the server's own doing: on PostgreSQL the database stops allowing connections and
its sessions are terminated; on MariaDB the application's account is locked and its sessions
killed; SQLite is locked by another writer. Then it all comes back."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
import trio

from tradestream.bench.faults import FreezingProxy
from tradestream.events import KST, Event, Tick
from tradestream.feeds.kis.codec import KisDecoder
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame
from tradestream.store import migrate
from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
from tradestream.store.spool import Spool
from tradestream.store.writer import EventWriter, make_engine

RATE = 2000  # ticks per second
SECONDS = 3.0
POLICY = FlushPolicy(
    max_rows=200,
    max_delay_s=0.05,
    memory_rows=1000,
    drain_s=10.0,
    retry_initial_s=0.05,
    retry_cap_s=0.3,
)


def ticks(n: int) -> list[Tick]:
    """n distinct trades from the simulator's market, through the real parser."""
    market, decoder = SimMarket(DEFAULT_TICKERS, seed=11), KisDecoder("kis-1")
    now = datetime(2025, 1, 2, 10, 0, 0, tzinfo=KST)
    out: list[Tick] = []
    while len(out) < n:
        parsed = decoder.decode(data_frame("H0STCNT0", [market.trade(now)]), 1)
        assert isinstance(parsed, list)
        out += [t for t in parsed if isinstance(t, Tick)]
    return out


class Outage:
    """Takes one scratch database away from the application for a while, server side."""

    def __init__(self, db_url: str) -> None:
        url = sa.engine.make_url(db_url)
        self.backend, self.db = url.get_backend_name(), url.database
        # administer from another database: PostgreSQL cannot lock out the current one
        admin = url.set(database="postgres" if self.backend == "postgresql" else None)
        self.admin = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        self.app_url = db_url
        if self.backend in ("mysql", "mariadb"):
            self.user = f"u_{self.db}"[:32]
            self._sql(
                f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY 'pw'",
                f"GRANT ALL ON {self.db}.* TO '{self.user}'@'%%'",
            )
            self.app_url = url.set(username=self.user, password="pw").render_as_string(
                hide_password=False
            )

    def _sql(self, *statements: str) -> list[Any]:
        rows: list[Any] = []
        with self.admin.connect() as conn:
            for stmt in statements:
                result = conn.exec_driver_sql(stmt)
                rows += list(result) if result.returns_rows else []
        return rows

    def begin(self) -> None:
        if self.backend == "postgresql":
            self._sql(
                f"ALTER DATABASE {self.db} ALLOW_CONNECTIONS false",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.db}' AND pid <> pg_backend_pid()",
            )
        else:
            self._sql(f"ALTER USER '{self.user}'@'%%' ACCOUNT LOCK")
            ids = self._sql(
                f"SELECT id FROM information_schema.processlist WHERE user = '{self.user}'"
            )
            for (pid,) in ids:
                try:
                    self._sql(f"KILL {pid}")
                except sa.exc.DBAPIError:
                    pass  # it ended by itself

    def end(self) -> None:
        if self.backend == "postgresql":
            self._sql(f"ALTER DATABASE {self.db} ALLOW_CONNECTIONS true")
        else:
            self._sql(f"ALTER USER '{self.user}'@'%%' ACCOUNT UNLOCK")

    def close(self) -> None:
        if self.backend in ("mysql", "mariadb"):
            self._sql(f"DROP USER '{self.user}'@'%%'")
        self.admin.dispose()


async def test_outage_mid_stream_loses_nothing_and_doubles_nothing(
    db_url: str, tmp_path: Path
) -> None:
    server = None if db_url.startswith("sqlite") else Outage(db_url)
    url = server.app_url if server else db_url
    engine = make_engine(url)
    await trio.to_thread.run_sync(migrate.upgrade, engine)
    data = ticks(int(RATE * SECONDS))
    spool = Spool(tmp_path / "spool")
    stats = FlusherStats()
    events_out, events_in = trio.open_memory_channel[Event](100)
    lock_engine = sa.create_engine(url) if server is None else None
    max_send_s = 0.0

    async def outage() -> None:
        await trio.sleep(SECONDS / 3)
        if server is not None:
            await trio.to_thread.run_sync(server.begin)
            await trio.sleep(1.5)
            await trio.to_thread.run_sync(server.end)
        else:  # another writer holds SQLite's write lock for a while
            assert lock_engine is not None

            def hold() -> None:
                with lock_engine.connect() as conn:
                    conn.exec_driver_sql("BEGIN EXCLUSIVE")
                    import time

                    time.sleep(1.5)
                    conn.exec_driver_sql("COMMIT")

            await trio.to_thread.run_sync(hold)

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            await inner.start(
                run_flusher,
                events_in,
                ThreadedSink(EventWriter(engine).write),
                POLICY,
                stats,
                spool,
            )
            inner.start_soon(outage)
            with events_out:
                start = trio.current_time()
                for i, tick in enumerate(data):
                    await trio.sleep_until(start + i / RATE)
                    t0 = trio.current_time()
                    await events_out.send(tick)
                    if i % 7 == 0:  # a reconnect re-sends some trades
                        await events_out.send(msgspec.structs.replace(tick, source="kis-1"))
                    max_send_s = max(max_send_s, trio.current_time() - t0)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM stock_prices_realtime")).scalar_one()
        distinct = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT DISTINCT venue, stock_code, trade_time, volume "
                "FROM stock_prices_realtime) d"
            )
        ).scalar_one()
    engine.dispose()
    if lock_engine is not None:
        lock_engine.dispose()
    if server is not None:
        server.close()
    assert stored == distinct == len(data)
    assert spool.rows == 0 and spool.segments == 0
    assert max_send_s < 0.5  # the producer (the feeds) never waited for the database
    if server is not None:
        assert stats.retries > 0 and stats.spooled_rows > 0 and stats.replayed_rows > 0


async def test_a_hung_database_fails_the_write_in_time_and_a_stop_is_not_held_up(
    server_db_url: str, tmp_path: Path
) -> None:
    """The server stops answering with the connection open: the write fails after the
    sink's timeout (retried, said in the stats), and a hard stop while it hangs ends at once,
    the stuck batch in the spool; the next start writes it, once."""
    real = sa.engine.make_url(server_db_url)
    migrated = make_engine(server_db_url)
    await trio.to_thread.run_sync(migrate.upgrade, migrated)
    data = ticks(600)
    spool = Spool(tmp_path / "spool")
    stats = FlusherStats()
    policy = FlushPolicy(max_rows=100, max_delay_s=0.05, retry_initial_s=0.05, retry_cap_s=0.2)
    assert real.host is not None and real.port is not None
    proxy = FreezingProxy(real.host, real.port)
    with trio.fail_after(60):
        async with trio.open_nursery() as outer:
            await outer.start(proxy.run)
            engine = make_engine(real.set(port=proxy.port).render_as_string(hide_password=False))
            sink = ThreadedSink(EventWriter(engine).write, timeout_s=1.0)
            events_out, events_in = trio.open_memory_channel[Event](1000)
            async with trio.open_nursery() as inner:
                await inner.start(run_flusher, events_in, sink, policy, stats, spool)
                for t in data[:300]:
                    await events_out.send(t)
                while stats.rows < 300:  # noqa: ASYNC110  (the flusher signals nothing)
                    await trio.sleep(0.01)
                proxy.freeze()
                for t in data[300:]:
                    await events_out.send(t)
                while "longer than 1 s" not in stats.last_error:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                assert not stats.writing and stats.retries >= 1
                stopped_at = trio.current_time()
                inner.cancel_scope.cancel()  # the hard stop, while writes hang
            stop_s = trio.current_time() - stopped_at
            proxy.thaw()
            outer.cancel_scope.cancel()
    assert stop_s < 2.0, stop_s  # not held up by the hung write
    assert stats.rows == 300 and spool.rows == 300  # the stuck rows are in the spool
    assert sink.abandoned >= 1
    # the next start (straight to the server) writes the spool; nothing is stored twice
    again = FlusherStats()
    events_out2, events_in2 = trio.open_memory_channel[Event](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_flusher, events_in2, ThreadedSink(EventWriter(migrated).write), policy, again, spool
        )
        events_out2.close()
    with migrated.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM stock_prices_realtime")).scalar_one()
    migrated.dispose()
    engine.dispose()
    assert stored == 600 and spool.rows == 0 and again.replayed_rows == 300
