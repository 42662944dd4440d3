"""The flusher on trio's MockClock (autojump): exact virtual times, no real sleeps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tradestream.events import Event, FeedGap
from tradestream.store.flusher import FlusherStats, FlushPolicy, run_flusher
from tradestream.store.spool import Spool


@pytest.fixture
def disk_clock() -> trio.testing.MockClock:
    """Autojump, but only after 20 ms of real idleness: spool writes run in worker threads,
    which look idle to a zero-threshold autojump clock (it would race past their deadlines)."""
    return trio.testing.MockClock(autojump_threshold=0.02)


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """For tests that end inside a time budget while a worker thread fsyncs: jump only after
    250 ms of real idleness, longer than any fsync here, so virtual time cannot outrun it."""
    return trio.testing.MockClock(autojump_threshold=0.25)


def gap(i: int) -> FeedGap:
    """A small real event to spool (the spool stores events)."""
    t = datetime(2025, 1, 2, tzinfo=UTC)
    return FeedGap("kis-1", t, t, str(i))


POLICY = FlushPolicy(
    max_rows=100, max_delay_s=0.1, final_write_s=1.0, retry_initial_s=0.1, retry_cap_s=0.4
)


class RecordingSink:
    """Records (virtual time, batch); fails the first `failures` writes like a database outage."""

    def __init__(self, failures: int = 0, write_s: float = 0.0) -> None:
        self.batches: list[tuple[float, list[Any]]] = []
        self.failures = failures
        self.write_s = write_s
        self.attempts = 0

    async def write(self, batch: Sequence[Any]) -> None:
        self.attempts += 1
        if self.write_s:
            await trio.sleep(self.write_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.batches.append((trio.current_time(), list(batch)))

    @property
    def rows(self) -> list[Any]:
        return [r for _, b in self.batches for r in b]


async def test_flush_by_deadline_counts_from_first_row(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink()
    await nursery.start(run_flusher, rows_in, sink, POLICY)
    await trio.sleep(5)  # idle: no deadline runs before the first row
    t0 = trio.current_time()
    for i in range(5):
        out.send_nowait(i)
    await trio.sleep(0.099)
    assert sink.batches == []
    await trio.sleep(0.002)
    assert sink.batches == [(t0 + 0.1, [0, 1, 2, 3, 4])]


async def test_flush_by_size_is_immediate(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink()
    await nursery.start(run_flusher, rows_in, sink, POLICY)
    t0 = trio.current_time()
    for i in range(250):
        out.send_nowait(i)
    await trio.testing.wait_all_tasks_blocked()
    assert [(t, len(b)) for t, b in sink.batches] == [(t0, 100), (t0, 100)]
    await trio.sleep(0.2)
    assert [(t, len(b)) for t, b in sink.batches] == [(t0, 100), (t0, 100), (t0 + 0.1, 50)]
    assert sink.rows == list(range(250))


async def test_closed_channel_writes_the_tail_and_returns(autojump_clock: trio.abc.Clock) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink()
    stats = FlusherStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, sink, POLICY, stats)
        t0 = trio.current_time()
        with out:
            for i in range(30):
                out.send_nowait(i)
    # the flusher returned on its own once the channel was closed and drained
    assert sink.batches == [(t0, list(range(30)))]
    assert (stats.rows, stats.batches) == (30, 1)


async def test_cancel_writes_what_it_holds(autojump_clock: trio.abc.Clock) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink(write_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, sink, POLICY)
        for i in range(7):
            out.send_nowait(i)
        await trio.sleep(0.05)  # mid-deadline
        nursery.cancel_scope.cancel()
    assert sink.rows == list(range(7))  # written by the shielded final write


async def test_cancel_during_a_write_rewrites_the_batch(autojump_clock: trio.abc.Clock) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink(write_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, sink, POLICY)
        for i in range(100):
            out.send_nowait(i)
        await trio.sleep(0.2)  # the size-triggered write is in progress
        nursery.cancel_scope.cancel()
    assert sink.rows == list(range(100))
    assert sink.attempts == 2


async def test_failed_writes_are_retried_and_producers_never_wait(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    out, rows_in = trio.open_memory_channel[int](10)  # small: any blocking would show
    sink = RecordingSink(failures=3)
    stats = FlusherStats()
    await nursery.start(run_flusher, rows_in, sink, POLICY, stats)
    sent = 0

    async def producer() -> None:
        nonlocal sent
        for i in range(300):
            await out.send(i)
            sent += 1

    nursery.start_soon(producer)
    # Retry delays are jittered within [d/2, d] of 0.1, 0.2, 0.4: the third failure is over by
    # 0.1 + 0.2 = 0.3 and the fourth attempt cannot start before 0.05 + 0.1 + 0.2 = 0.35.
    await trio.sleep(0.31)
    assert stats.retries == 3
    assert sink.batches == []
    assert sent == 300  # the collector kept receiving: the feed never felt the outage
    assert stats.pending_rows == 300
    await trio.sleep(2)
    assert sink.rows == list(range(300))  # in order, once each
    assert stats.pending_rows == 0
    assert "database unavailable" in stats.last_error


async def test_outage_spills_to_the_spool_and_replays_in_order(
    disk_clock: trio.abc.Clock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    out, rows_in = trio.open_memory_channel[Event](10)
    sink = RecordingSink(failures=10**9)
    spool = Spool(tmp_path / "spool")
    policy = replace(POLICY, memory_rows=250, retry_cap_s=1.0)
    stats = FlusherStats()
    await nursery.start(run_flusher, rows_in, sink, policy, stats, spool)
    for i in range(1000):
        await out.send(gap(i))
        if i % 100 == 99:
            await trio.sleep(0.05)
    await trio.sleep(1)
    assert stats.pending_rows <= 250 + 100  # memory is bounded while the database is away
    assert stats.spool_rows == spool.rows >= 650
    assert stats.pending_rows + stats.spool_rows == 1000
    sink.failures = 0  # the database is back
    with trio.fail_after(120):  # virtual; the spool's threads run in real time meanwhile
        # The flusher signals nothing when it is done replaying: poll what it wrote.
        while len(sink.rows) < 1000 or spool.segments:  # noqa: ASYNC110
            await trio.sleep(0.05)
    got = [int(g.reason) for g in sink.rows]
    # oldest first
    assert got == list(range(1000)), [(i, g) for i, g in enumerate(got) if g != i][:3]
    assert spool.rows == spool.segments == 0
    assert stats.replayed_rows == stats.spooled_rows > 0
    assert list((tmp_path / "spool").iterdir()) == []


async def test_shutdown_during_an_outage_leaves_everything_in_the_spool(
    patient_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    out, rows_in = trio.open_memory_channel[Event](100)
    down = RecordingSink(failures=10**9)
    policy = replace(POLICY, drain_s=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in, down, policy, None, Spool(tmp_path / "s"))
        with out:
            for i in range(333):
                await out.send(gap(i))
    # the next start replays the spool before anything else
    spool = Spool(tmp_path / "s")
    assert spool.rows == 333
    up = RecordingSink()
    out2, rows_in2 = trio.open_memory_channel[Event](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_flusher, rows_in2, up, policy, None, spool)
        with out2:
            await out2.send(gap(333))
    assert [g.reason for g in up.rows] == [str(i) for i in range(334)]
    assert spool.rows == 0


async def test_hard_cancel_during_an_outage_spools_what_it_holds(
    patient_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    out, rows_in = trio.open_memory_channel[Event](100)
    spool = Spool(tmp_path / "s")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_flusher, rows_in, RecordingSink(failures=10**9), POLICY, None, spool
        )
        for i in range(150):
            await out.send(gap(i))
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert spool.rows == 150


def test_spool_survives_a_crash_and_sets_aside_bad_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([gap(1), gap(2)])
    spool.append([gap(3)])
    (tmp_path / "000000000009-1.tmp").write_bytes(b"half a write")  # killed mid-write
    (tmp_path / "000000000003-2.spool").write_bytes(b"not msgpack")
    reopened = Spool(tmp_path)  # a new process after the crash
    assert reopened.rows == 5 and reopened.segments == 3
    assert not list(tmp_path.glob("*.tmp"))
    first = reopened.oldest()
    assert first is not None and [g.reason for g in first[1]] == ["1", "2"]
    reopened.remove(first[0])
    second = reopened.oldest()
    assert second is not None and [g.reason for g in second[1]] == ["3"]
    reopened.remove(second[0])
    assert reopened.oldest() is None  # the unreadable one was set aside
    assert reopened.bad == 1 and len(list(tmp_path.glob("*.bad"))) == 1


@pytest.mark.parametrize("max_rows", [1, 3])
async def test_tiny_batches(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, max_rows: int
) -> None:
    out, rows_in = trio.open_memory_channel[int](100)
    sink = RecordingSink()
    policy = FlushPolicy(max_rows=max_rows, max_delay_s=1.0)
    await nursery.start(run_flusher, rows_in, sink, policy)
    for i in range(6):
        out.send_nowait(i)
    await trio.testing.wait_all_tasks_blocked()
    expected = [list(range(i, i + max_rows)) for i in range(0, 6, max_rows)]
    assert [b for _, b in sink.batches] == expected


async def test_a_steady_stream_is_taken_in_polls_and_the_size_rule_is_at_most_a_poll_late(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    out, rows_in = trio.open_memory_channel[int](1000)
    sink = RecordingSink()
    policy = FlushPolicy(max_rows=10, max_delay_s=1.0, poll_s=0.01)
    await nursery.start(run_flusher, rows_in, sink, policy)
    t0 = trio.current_time()
    for i in range(25):  # one row a millisecond
        out.send_nowait(i)
        await trio.sleep(0.001)
    await trio.sleep(0.05)
    times = [t - t0 for t, _ in sink.batches]
    assert [b for _, b in sink.batches][:2] == [list(range(10)), list(range(10, 20))]
    # the 10th row arrived at 9 ms: its batch went out by the next poll, not at the deadline
    assert 0.009 <= times[0] <= 0.009 + policy.poll_s + 1e-9
    assert 0.019 <= times[1] <= 0.019 + policy.poll_s + 1e-9


async def test_a_writer_that_falls_behind_writes_the_queued_batches_together(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    out, rows_in = trio.open_memory_channel[int](10_000)
    sink = RecordingSink(write_s=0.3)  # each write takes 0.3 s, whatever its size
    policy = FlushPolicy(max_rows=100, max_delay_s=0.1, merge_rows=1_000)
    await nursery.start(run_flusher, rows_in, sink, policy)
    for i in range(2_000):  # 1,000 rows/s: 100-row batches every 0.1 s
        out.send_nowait(i)
        await trio.sleep(0.001)
    await trio.sleep(2)
    sizes = [len(b) for _, b in sink.batches]
    assert sink.rows == list(range(2_000))  # in order, once each
    assert sizes[0] == 100  # on time: written alone
    # behind: later writes take what queued meanwhile (0.3 s of it), never past merge_rows
    assert max(sizes) > 100 and max(sizes) <= 1_000, sizes
    assert len(sizes) < 2_000 / 100 / 2, sizes  # far fewer writes than batches


def test_a_spool_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    from tradestream.errors import SpoolUnusable

    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolUnusable, match="cannot be written") as info:
        Spool(tmp_path / "file" / "spool")  # its parent is a file: mkdir fails
    assert info.value.directory == str(tmp_path / "file" / "spool")


async def test_a_spool_failing_mid_outage_holds_intake_back_and_loses_nothing(
    disk_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database is away and the spool directory disappears (a real filesystem failure: a
    file takes its place): the flusher keeps rows in memory up to the cap, then stops taking
    rows (the sender waits), says so, and never crashes; once the database is back every row
    is written, once, in order."""
    caplog.set_level(logging.INFO, logger="tradestream.store.flusher")
    out, rows_in = trio.open_memory_channel[Event](10)
    sink = RecordingSink(failures=10**9)
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool_dir.rmdir()
    spool_dir.write_text("the spool's place, taken")
    policy = replace(POLICY, memory_rows=250, retry_cap_s=1.0)
    stats = FlusherStats()
    await nursery.start(run_flusher, rows_in, sink, policy, stats, spool)
    sent = 0

    async def produce() -> None:
        nonlocal sent
        for i in range(1000):
            await out.send(gap(i))
            sent += 1

    nursery.start_soon(produce)
    while not stats.intake_held:  # noqa: ASYNC110  (the flusher signals nothing)
        await trio.sleep(0.05)
    await trio.sleep(1)  # the channel fills
    held = sent
    await trio.sleep(5)
    assert sent == held < 1000  # back-pressure: the sender waits, nothing is dropped
    assert stats.intake_held and stats.spool_error
    assert 250 < stats.pending_rows <= 250 + 100
    assert not stats.writing and stats.last_error_at
    sink.failures = 0  # the database is back
    with trio.fail_after(60):
        while len(sink.rows) < 1000:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert [int(g.reason) for g in sink.rows] == list(range(1000))
    assert stats.writing and stats.recovered_at and not stats.intake_held
    assert "refuses writes" in caplog.text and "intake held back" in caplog.text
    assert "database back after" in caplog.text and "rows to catch up" in caplog.text
    assert stats.spooled_rows == 0 and stats.lost_rows == 0


async def test_a_stop_with_the_database_and_the_spool_both_refusing_says_what_was_lost(
    patient_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, rows_in = trio.open_memory_channel[Event](100)
    spool_dir = tmp_path / "s"
    spool = Spool(spool_dir)
    spool_dir.rmdir()
    spool_dir.write_text("taken")
    stats = FlusherStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_flusher, rows_in, RecordingSink(failures=10**9), POLICY, stats, spool
        )
        for i in range(150):
            await out.send(gap(i))
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()  # no exception out of the flusher: the tree stays up
    assert stats.lost_rows == 150
    assert "rows not stored" in caplog.text
