"""Every event type round-trips through EventWriter on SQLite, PostgreSQL and MariaDB, and a
duplicate delivery stores nothing twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradestream.events import (
    KST,
    Alert,
    Execution,
    FeedGap,
    IndexTick,
    News,
    OrderBook,
    ProgramTrade,
    Signal,
    SlotAudit,
    Tick,
)
from tradestream.store import migrate, schema
from tradestream.store.writer import EventWriter, execution_row, make_engine

T = datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST)
NS = 1_735_777_815_123_456_000  # 2025-01-02 00:30:15.123456 UTC


def events() -> list[object]:
    return [
        Tick(
            "kis-1",
            "KRX",
            "005930",
            T,
            71000,
            -500,
            -0.7,
            71500,
            72000,
            70900,
            71100,
            71000,
            12,
            1_233_600,
            87_654_321_000,
            112.35,
            NS,
        ),
        OrderBook(
            "kis-1",
            "KRX",
            "005930",
            T,
            tuple(range(71100, 72100, 100)),
            tuple(range(71000, 70000, -100)),
            tuple(range(1, 11)),
            tuple(range(11, 21)),
            55,
            155,
            0,
            0,
            1_233_600,
            NS,
        ),
        ProgramTrade("kis-1", "KRX", "005930", T, 1, 2, 3, 4, 5, 6, 7, 8, 9, NS),
        Execution(
            "kis-1",
            "testuser01",
            "1234567801",
            "0000012345",
            "0000000000",
            "buy",
            "fill",
            "new",
            False,
            "005930",
            10,
            71000,
            10,
            71000,
            T,
            "삼성전자",
            NS,
        ),
        News(
            "ls-1",
            "202501020930151234000101",
            "삼성전자, 3분기 영업이익 12% 증가",
            ("005930", "000660"),
            "005930",
            "01",
            "연합뉴스",
            T,
            2048,
            NS,
        ),
        FeedGap(
            "kis-1",
            datetime(2025, 1, 2, 0, 30, 10, tzinfo=UTC),
            datetime(2025, 1, 2, 0, 30, 11, 500000, tzinfo=UTC),
            "ConnectionClosed",
        ),
        IndexTick(
            "kis-1",
            "kospi",
            "0001",
            T,
            2650.12,
            -12.5,
            -0.47,
            312_345,
            8_765_432,
            412,
            389,
            120,
            NS,
        ),
        Alert(
            "sudden-move",
            "005930",
            "sudden_move",
            "up",
            5.2,
            74700,
            71000,
            60.0,
            T,
            "005930 +5.20% in 60s",
            NS,
        ),
        Signal("scanner", "vcp", "vcp", "005930", {"score": 0.8, "pivot": 72000}, T, NS),
        SlotAudit(
            "slots",
            T,
            "evict",
            "kis-1",
            "H0STCNT0",
            "005930",
            "demand",
            "evicted by holding 000660",
        ),
    ]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


EVENT_TABLES = (
    schema.stock_prices_realtime,
    schema.orderbook_snapshots,
    schema.program_trades,
    schema.executions,
    schema.news,
    schema.feed_gaps,
    schema.index_ticks,
    schema.alerts,
    schema.signals,
    schema.slot_audit,
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in EVENT_TABLES
        }


def as_utc(dt: datetime) -> datetime:
    # SQLite and MariaDB hand back naive UTC; PostgreSQL an aware timestamp.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def test_round_trip_every_event_type_and_idempotency(engine: Engine) -> None:
    writer = EventWriter(engine)
    writer.write(events())
    assert set(counts(engine).values()) == {1}
    writer.write(events())  # a reconnect or replay delivers the same events again
    writer.write(events()[::-1])
    assert set(counts(engine).values()) == {1}

    with engine.connect() as conn:
        tick = conn.execute(sa.select(schema.stock_prices_realtime)).one()
        book = conn.execute(sa.select(schema.orderbook_snapshots)).one()
        exe = conn.execute(sa.select(schema.executions)).one()
        item = conn.execute(sa.select(schema.news)).one()
        gap = conn.execute(sa.select(schema.feed_gaps)).one()
        idx = conn.execute(sa.select(schema.index_ticks)).one()
        alert = conn.execute(sa.select(schema.alerts)).one()
        sig = conn.execute(sa.select(schema.signals)).one()
        audit = conn.execute(sa.select(schema.slot_audit)).one()
    assert (idx.index_name, idx.value, idx.advancers) == ("kospi", 2650.12, 412)
    assert (alert.direction, alert.price, alert.reference_price) == ("up", 74700, 71000)
    assert sig.payload == {"score": 0.8, "pivot": 72000}
    assert (audit.action, audit.priority) == ("evict", "demand")
    assert (tick.stock_code, tick.price, tick.change, tick.volume) == (
        "005930",
        71000,
        -500,
        1_233_600,
    )
    assert as_utc(tick.trade_time) == T
    assert as_utc(tick.received_at) == datetime(2025, 1, 2, 0, 30, 15, 123456, tzinfo=UTC)
    assert book.ask_prices == list(range(71100, 72100, 100)) and book.ask1 == 71100
    assert (exe.side, exe.kind, exe.rejected, exe.name) == ("buy", "fill", False, "삼성전자")
    assert item.tickers == ["005930", "000660"] and item.title.startswith("삼성전자")
    assert as_utc(gap.ended_at) - as_utc(gap.started_at) == (
        datetime(2025, 1, 2, 0, 30, 11, 500000) - datetime(2025, 1, 2, 0, 30, 10)
    )


def test_distinct_trades_in_one_second_are_all_kept(engine: Engine) -> None:
    base = events()[0]
    assert isinstance(base, Tick)
    import msgspec

    trades = [
        msgspec.structs.replace(base, volume=base.volume + i, trade_volume=1) for i in range(500)
    ]
    EventWriter(engine).write(trades)
    EventWriter(engine).write(trades[250:])
    assert counts(engine)["stock_prices_realtime"] == 500


def test_identical_partial_fills_are_both_kept_and_a_repeat_once(engine: Engine) -> None:
    """Execution.seq is part of the natural key: the second of two identical fills on one
    connection (seq 2) is a row of its own; the same notice from another socket (seq 1) is not;
    and the account book rebuilt from the store after a restart counts both fills."""
    import msgspec

    from tradestream.accounts import AccountBook
    from tradestream.store import reads

    fill = next(e for e in events() if isinstance(e, Execution))
    second = msgspec.structs.replace(fill, seq=2)
    again = msgspec.structs.replace(fill, source="kis-2")  # another socket: seq 1 there
    EventWriter(engine).write([fill, second, again])
    assert counts(engine)["executions"] == 2
    stored = reads.executions_since(engine, T - timedelta(days=1))
    assert sorted(e.seq for e in stored) == [1, 2]
    book = AccountBook()
    for e in stored:
        book.apply(e)
    assert book.positions_by_code()["005930"] == 2 * fill.quantity


def test_migrations_reach_head_and_check_passes(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    migrate.check(engine)


async def test_rows_the_database_refuses_are_set_aside_not_retried_forever(
    engine: Engine, tmp_path: Path
) -> None:
    """A value out of a column's range is not an outage: the rest of the batch is stored,
    the refused row goes to the dead letters, and storage goes on."""
    import trio

    from tradestream.events import Event
    from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
    from tradestream.store.spool import Spool
    from tradestream.store.writer import transient

    good = events()[0]
    assert isinstance(good, Tick)
    import msgspec

    batch = [msgspec.structs.replace(good, volume=good.volume + i) for i in range(20)]
    poison = msgspec.structs.replace(good, volume=10**30)  # no database column holds this
    spool, stats = Spool(tmp_path / "spool"), FlusherStats()
    out, rows_in = trio.open_memory_channel[Event](100)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sink = ThreadedSink(EventWriter(engine).write)
            await nursery.start(
                partial(
                    run_flusher,
                    rows_in,
                    sink,
                    FlushPolicy(max_rows=50),
                    stats,
                    spool,
                    transient=transient,
                )
            )
            with out:
                for ev in [*batch[:10], poison, *batch[10:]]:
                    await out.send(ev)
    assert counts(engine)["stock_prices_realtime"] == 20
    assert stats.refused_rows == 1 and stats.retries == 0 and stats.rows == 20
    letters = (tmp_path / "spool" / "dead-letters.log").read_text().splitlines()
    assert len(letters) == 1 and "1000000000000000000000000000000" in letters[0]


@pytest.mark.parametrize("bulk_copy", [True, False])
def test_text_fields_with_copy_specials_round_trip(engine: Engine, bulk_copy: bool) -> None:
    """A code or source with a tab, newline, CR or backslash (a hostile or broken broker)
    is stored as it came, by COPY's text lines on PostgreSQL as by executemany elsewhere."""
    base = events()[0]
    assert isinstance(base, Tick)
    import msgspec

    odd = ["00\t5930", "a\\b", "x\ny", "r\rs", "\\N"]
    ticks = [
        msgspec.structs.replace(base, code=c, source=f"src{c}", volume=base.volume + i)
        for i, c in enumerate(odd)
    ]
    EventWriter(engine, bulk_copy=bulk_copy).write(ticks)
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(
                schema.stock_prices_realtime.c.stock_code,
                schema.stock_prices_realtime.c.source,
                schema.stock_prices_realtime.c.change_percent,
            ).order_by(schema.stock_prices_realtime.c.volume)
        ).all()
    assert [tuple(r) for r in got] == [(c, f"src{c}", base.change_percent) for c in odd]


def test_migration_0005_keeps_the_executions_stored_before_it(db_url: str) -> None:
    """A database at 0004 with a fill in it: after the upgrade the fill is there with seq 1,
    and its identical twin (seq 2) can be stored beside it; a downgrade goes back."""
    import msgspec

    eng = make_engine(db_url)
    try:
        migrate.upgrade(eng, "0004")
        fill = next(e for e in events() if isinstance(e, Execution))
        row = {k: v for k, v in execution_row(fill).items() if k != "seq"}
        with eng.begin() as conn:  # the columns 0004 has, with the table's own types
            conn.execute(schema.executions.insert().values(**row))
        migrate.upgrade(eng)
        EventWriter(eng).write([fill, msgspec.structs.replace(fill, seq=2)])
        with eng.connect() as conn:
            seqs = conn.execute(sa.text("SELECT seq FROM executions ORDER BY seq")).scalars()
            assert list(seqs) == [1, 2]
        with eng.begin() as conn:
            conn.execute(sa.text("DELETE FROM executions WHERE seq = 2"))
        migrate.downgrade(eng, "0004")
        assert migrate.current_revision(eng) == "0004"
    finally:
        eng.dispose()
