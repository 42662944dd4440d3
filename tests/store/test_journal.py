"""The intake journal (store/journal.py) on a real directory, with an injected clock: what is
recorded survives the journal object (a killed process), settled segments go away, a torn
record or a full disk costs no crash."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing

from tradestream.events import Event, FeedGap
from tradestream.store.flusher import FlusherStats, FlushPolicy, run_flusher
from tradestream.store.journal import SUFFIX, Journal, read_segment
from tradestream.store.spool import Spool


def gap(i: int) -> FeedGap:
    t = datetime(2025, 1, 2, tzinfo=UTC)
    return FeedGap("kis-1", t, t, str(i))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def segments(d: Path) -> list[Path]:
    return sorted(d.glob(f"*{SUFFIX}"))


def test_a_segment_goes_once_all_its_events_are_durable(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path, rotate_s=5.0, clock=clock)
    first = [gap(0), gap(1)]
    j.record(first[:1])
    j.record(first[1:])
    clock.now += 5.0
    second = [gap(2)]
    j.record(second)  # rotated: two segments
    assert len(segments(tmp_path)) == 2
    j.settled(first[:1])
    assert len(segments(tmp_path)) == 2  # one of its events is not durable yet
    j.settled([gap(9), *first[1:]])  # events it never recorded (spool replays) are ignored
    assert [p.name for p in segments(tmp_path)] == [f"{2:012d}{SUFFIX}"]
    j.settled(second)
    assert len(segments(tmp_path)) == 1  # the open segment stays until it rotates
    clock.now += 5.0
    j.record([gap(3)])
    assert [p.name for p in segments(tmp_path)] == [f"{3:012d}{SUFFIX}"]
    assert j.as_dict()["segments_deleted"] == 2


def test_what_a_killed_process_recorded_is_taken_at_the_next_start(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path, clock=clock)
    j.record([gap(0), gap(1)])
    clock.now += 10
    j.record([gap(2)])
    j.settled([])  # nothing durable: the process dies here (no close)
    with open(segments(tmp_path)[-1], "ab") as fh:
        fh.write(b"\x40\x00\x00\x00partial")  # a record torn by the kill
    again = Journal(tmp_path, clock=clock)
    kept: list[list[Event]] = []
    assert again.take_leftovers(kept.append) == 3
    assert [[e.reason for e in batch] for batch in kept] == [["0", "1"], ["2"]]  # type: ignore[attr-defined]
    assert segments(tmp_path) == []
    again.record([gap(3)])  # numbering goes on after the leftovers'
    assert [e.reason for e in read_segment(segments(tmp_path)[0])] == ["3"]  # type: ignore[attr-defined]


def test_close_keeps_only_what_is_not_durable(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path, clock=clock)
    done, lost = [gap(0)], [gap(1)]
    j.record(done)
    clock.now += 10
    j.record(lost)
    j.settled(done)
    assert j.close() == 1
    (left,) = segments(tmp_path)
    assert [e.reason for e in read_segment(left)] == ["1"]  # type: ignore[attr-defined]


def test_a_full_disk_is_counted_and_intake_goes_on(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path, clock=clock)
    j.record([gap(0)])
    os.close(j._fd)
    j._fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as a full disk
    j.record([gap(1)])  # no exception
    st = j.as_dict()
    assert st["errors"] == 1 and "No space left" in str(st["error"])
    assert st["events"] == 1  # the failed record is not counted as journaled
    clock.now += 10
    j.record([gap(2)])  # the next segment works again
    assert j.as_dict()["error"] == "" and j.as_dict()["events"] == 2


class AwayDatabase:
    """A sink whose writes fail (an outage) until `up`."""

    def __init__(self) -> None:
        self.up = False
        self.rows: list[object] = []

    async def write(self, batch: Sequence[object]) -> None:
        if not self.up:
            raise ConnectionError("away")
        self.rows += batch


@pytest.fixture
def disk_clock() -> trio.testing.MockClock:
    """Autojump only after 20 ms of real idleness: the spool's fsyncs run in worker threads."""
    return trio.testing.MockClock(autojump_threshold=0.02)


async def test_the_flusher_settles_every_durable_batch(
    tmp_path: Path, disk_clock: trio.testing.MockClock
) -> None:
    """Committed batches and batches spilled to the spool in an outage are settled; so each
    journal segment goes once its events are in the database or the spool."""
    settled: list[object] = []
    sink = AwayDatabase()
    policy = FlushPolicy(max_rows=10, max_delay_s=0.1, memory_rows=20, retry_initial_s=0.5)
    spool = Spool(tmp_path / "spool")
    events = [gap(i) for i in range(100)]
    stats = FlusherStats()
    out, rows_in = trio.open_memory_channel[Event](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_flusher(
                rows_in, sink, policy, stats, spool, settled=settled.extend, task_status=task_status
            )
        )
        for ev in events:
            await out.send(ev)
            await trio.sleep(0.01)
        while stats.spooled_rows == 0:  # noqa: ASYNC110  (memory over its cap: spooled)
            await trio.sleep(0.05)
        spilled = stats.spooled_rows
        assert len(settled) >= spilled  # ... and settled then, before any commit
        assert sink.rows == []
        sink.up = True
        out.close()
    assert {id(e) for e in events} <= {id(e) for e in settled}
    assert len(sink.rows) == 100


async def test_a_batch_being_spooled_is_not_also_taken_by_the_writer(
    tmp_path: Path, disk_clock: trio.testing.MockClock
) -> None:
    """The database comes back while the oldest batch is being written to the spool: the
    writer writes the other batches, the spooled one is replayed, and no batch is skipped."""
    import threading

    release = threading.Event()

    class SlowSpool(Spool):
        def append(self, batch: Sequence[Event], *, front: bool = False) -> None:
            release.wait(10)
            super().append(batch, front=front)

    sink, spool, stats = AwayDatabase(), SlowSpool(tmp_path / "spool"), FlusherStats()
    policy = FlushPolicy(max_rows=10, max_delay_s=0.1, memory_rows=20, retry_initial_s=0.5)
    events = [gap(i) for i in range(60)]
    out, rows_in = trio.open_memory_channel[Event](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, sink, policy, stats, spool)
        for ev in events[:40]:
            await out.send(ev)
            await trio.sleep(0.01)
        sink.up = True  # back while a spill waits in its thread
        while len(sink.rows) < 10:  # noqa: ASYNC110  (the writer, on the mock clock)
            await trio.sleep(0.05)
        release.set()
        for ev in events[40:]:
            await out.send(ev)
        out.close()
    assert sorted(int(e.reason) for e in sink.rows) == list(range(60))  # type: ignore[attr-defined]


async def test_notices_left_in_the_journal_reach_the_account_book(tmp_path: Path) -> None:
    """A kill left today's fill (and yesterday's) in the journal: at the next start they go
    to the spool, and today's to the account book (read from the store before the spool is
    written); a notice the book already has is not counted twice."""
    from dataclasses import replace
    from datetime import timedelta

    import msgspec

    from tests.conftest import make_settings
    from tests.unit.test_accounts_reconcile import fill
    from tradestream.accounts import AccountBook
    from tradestream.roles.ingest import _open_journal

    s = make_settings(tmp_path)
    today, known = fill("005930", "buy", 10), fill("000660", "buy", 5, order_no="2")
    old = msgspec.structs.replace(fill("035720", "buy", 7, order_no="3"),
                                  time=today.time - timedelta(days=1))  # fmt: skip
    spool = Spool(tmp_path / "spool")
    left = Journal(Path(s.store.spool_dir) / "journal")
    left.record([today, known, old])  # then the process dies: nothing settled
    book = AccountBook()
    book.apply(known)  # stored before the kill: the book read it from the store
    journal = await _open_journal(replace(s, store=replace(s.store, journal=True)), spool, book)
    assert journal is not None and spool.rows == 3
    assert book.positions_by_code() == {"005930": 10, "000660": 5}  # not yesterday's, once each
