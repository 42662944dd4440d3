"""Storage: ticks/s through the flusher against a per-row commit baseline (seed 001's way),
and tick-to-row-visible latency at a steady rate, on SQLite and PostgreSQL.

PostgreSQL is the server at TRADESTREAM_BENCH_POSTGRES_URL (default: the local one, database
`test`); a scratch database is created there and dropped afterwards."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import msgspec
import sqlalchemy as sa
import trio

from tradestream.events import KST, Event, Tick
from tradestream.feeds.kis.codec import KisDecoder
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame
from tradestream.store import migrate, schema
from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
from tradestream.store.spool import Spool
from tradestream.store.writer import EventWriter, make_engine, tick_row

PG_URL = os.environ.get(
    "TRADESTREAM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BASELINE_ROWS = 2_000
THROUGHPUT_ROWS = 100_000
LATENCY_RATE = 5_000  # ticks/s
LATENCY_S = 10.0


def make_ticks(n: int, seed: int) -> list[Tick]:
    market, decoder = SimMarket(DEFAULT_TICKERS, seed=seed), KisDecoder("bench")
    now = datetime.now(KST).replace(microsecond=0)
    out: list[Tick] = []
    while len(out) < n:
        parsed = decoder.decode(data_frame("H0STCNT0", [market.trade(now)]), 0)
        assert isinstance(parsed, list)
        out += [t for t in parsed if isinstance(t, Tick)]
    return out


@contextmanager
def scratch(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}"
        return
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def per_row_commit(url: str, ticks: Sequence[Tick]) -> float:
    """Seed 001's loop: one insert and one commit per trade. Returns rows/s."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    insert = schema.stock_prices_realtime.insert()
    t0 = time.perf_counter()
    for t in ticks:
        with engine.begin() as conn:
            conn.execute(insert, tick_row(t))
    rate = len(ticks) / (time.perf_counter() - t0)
    engine.dispose()
    return rate


class TimedSink:
    """The real sink, noting when each row became visible (its transaction committed)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._sink = ThreadedSink(EventWriter(engine).write)
        self.latencies_ms: list[float] = []

    async def write(self, batch: Sequence[Event]) -> None:
        await self._sink.write(batch)
        now = time.time_ns()
        self.latencies_ms += [(now - e.received_ns) / 1e6 for e in batch if isinstance(e, Tick)]


async def through_flusher(
    url: str, ticks: Sequence[Tick], tmp: Path, rate: float | None = None
) -> tuple[float, list[float], FlusherStats]:
    """Push ticks through run_flusher (as fast as possible, or at `rate`/s with fresh receive
    times). Returns (rows/s, per-row latencies in ms, stats)."""
    engine = make_engine(url)
    await trio.to_thread.run_sync(migrate.upgrade, engine)
    sink, stats = TimedSink(engine), FlusherStats()
    out, rows_in = trio.open_memory_channel[Event](10_000)
    spool = Spool(tmp / f"spool-{uuid.uuid4().hex}")
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, sink, FlushPolicy(), stats, spool)
        with out:
            for i, t in enumerate(ticks):
                if rate is not None:
                    await trio.sleep_until(t0 + i / rate)
                await out.send(msgspec.structs.replace(t, received_ns=time.time_ns()))
    elapsed = trio.current_time() - t0
    engine.dispose()
    return len(ticks) / elapsed, sink.latencies_ms, stats


def pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=1000)[int(q * 1000) - 1], 1)


async def main() -> dict[str, object]:
    results: dict[str, object] = {}
    backends = ["sqlite"]
    try:
        sa.create_engine(PG_URL).connect().close()
        backends.append("postgres")
    except sa.exc.OperationalError as exc:
        results["postgres"] = f"skipped: {PG_URL} not reachable ({exc.orig})"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for backend in backends:
            with scratch(backend, tmp) as url:
                base = await trio.to_thread.run_sync(
                    per_row_commit, url, make_ticks(BASELINE_ROWS, seed=1)
                )
            with scratch(backend, tmp) as url:
                fast, _, st = await through_flusher(url, make_ticks(THROUGHPUT_ROWS, seed=2), tmp)
            with scratch(backend, tmp) as url:
                n = int(LATENCY_RATE * LATENCY_S)
                _, lat, _ = await through_flusher(
                    url, make_ticks(n, seed=3), tmp, rate=LATENCY_RATE
                )
            results[backend] = {
                "per_row_commit_rows_per_s": round(base),
                "flusher_rows_per_s": round(fast),
                "speedup": round(fast / base, 1),
                "flusher_batches": st.batches,
                f"latency_at_{LATENCY_RATE}_per_s_ms_p50": pct(lat, 0.5),
                f"latency_at_{LATENCY_RATE}_per_s_ms_p99": pct(lat, 0.99),
                f"latency_at_{LATENCY_RATE}_per_s_ms_max": round(max(lat), 1),
            }
    return results
