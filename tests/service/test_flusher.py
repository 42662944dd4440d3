"""The flusher on trio's MockClock (autojump): exact virtual times, no real sleeps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from tradestream.store.flusher import FlusherStats, FlushPolicy, run_flusher

POLICY = FlushPolicy(max_rows=100, max_delay_s=0.1, final_write_s=1.0,
                     retry_initial_s=0.1, retry_cap_s=0.4)


class RecordingSink:
    """Records (virtual time, batch); fails the first `failures` writes like a database outage."""

    def __init__(self, failures: int = 0, write_s: float = 0.0) -> None:
        self.batches: list[tuple[float, list[int]]] = []
        self.failures = failures
        self.write_s = write_s
        self.attempts = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.attempts += 1
        if self.write_s:
            await trio.sleep(self.write_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.batches.append((trio.current_time(), list(batch)))

    @property
    def rows(self) -> list[int]:
        return [r for _, b in self.batches for r in b]


async def test_flush_by_deadline_counts_from_first_row(autojump_clock: trio.abc.Clock,
                                                       nursery: trio.Nursery) -> None:
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


async def test_flush_by_size_is_immediate(autojump_clock: trio.abc.Clock,
                                          nursery: trio.Nursery) -> None:
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


async def test_failed_writes_are_retried_and_nothing_is_lost(autojump_clock: trio.abc.Clock,
                                                              nursery: trio.Nursery) -> None:
    out, rows_in = trio.open_memory_channel[int](10)  # small: producers feel the back-pressure
    sink = RecordingSink(failures=3)
    stats = FlusherStats()
    await nursery.start(run_flusher, rows_in, sink, POLICY, stats)
    sent = 0

    async def producer() -> None:
        nonlocal sent
        for i in range(300):
            await out.send(i)  # blocks while the flusher retries: the lossless edge
            sent += 1

    nursery.start_soon(producer)
    # Retry delays are jittered within [d/2, d] of 0.1, 0.2, 0.4: the third failure is over by
    # 0.1 + 0.2 = 0.3 and the fourth attempt cannot start before 0.05 + 0.1 + 0.2 = 0.35.
    await trio.sleep(0.31)
    assert stats.retries == 3
    assert sink.batches == []
    assert sent < 300  # the producer is held back, not dropping
    await trio.sleep(2)
    assert sent == 300
    assert sink.rows == list(range(300))
    assert "database unavailable" in stats.last_error


@pytest.mark.parametrize("max_rows", [1, 3])
async def test_tiny_batches(autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
                            max_rows: int) -> None:
    out, rows_in = trio.open_memory_channel[int](100)
    sink = RecordingSink()
    policy = FlushPolicy(max_rows=max_rows, max_delay_s=1.0)
    await nursery.start(run_flusher, rows_in, sink, policy)
    for i in range(6):
        out.send_nowait(i)
    await trio.testing.wait_all_tasks_blocked()
    assert [b for _, b in sink.batches] == [list(range(i, i + max_rows)) for i in range(0, 6, max_rows)]
