"""The batching flusher: size-or-deadline batches from a channel to a sink.

A batch is written when `max_rows` rows are buffered or `max_delay_s` after its first row,
whichever comes first. The deadline counts from the first row, so an idle channel costs
nothing and a lone row waits at most `max_delay_s`. A failing write is retried with backoff
and the batch is kept: while it retries, rows back up in the channel and the producers block
(the lossless choice); the rows are never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import trio

from tradestream.feeds.backoff import Backoff

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Row_contra = TypeVar("Row_contra", contravariant=True)


class BatchSink(Protocol[Row_contra]):
    async def write(self, batch: Sequence[Row_contra]) -> None: ...


@dataclass(frozen=True)
class FlushPolicy:
    max_rows: int = 500
    max_delay_s: float = 0.1
    final_write_s: float = 5.0  # budget for the last write when the flusher is cancelled
    retry_initial_s: float = 0.1
    retry_cap_s: float = 5.0


@dataclass
class FlusherStats:
    rows: int = 0
    batches: int = 0
    retries: int = 0
    last_batch_rows: int = 0
    last_batch_ms: float = 0.0
    max_batch_ms: float = 0.0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class ThreadedSink(Generic[Row]):
    """Runs a blocking `write(batch)` in a worker thread, one at a time per limiter."""

    def __init__(self, write: "WriteFn[Row]", limiter: trio.CapacityLimiter | None = None) -> None:
        self._write = write
        self._limiter = limiter or trio.CapacityLimiter(1)

    async def write(self, batch: Sequence[Row]) -> None:
        # Not abandoned on cancel: a thread left running could still commit behind our back.
        await trio.to_thread.run_sync(self._write, batch, limiter=self._limiter)


class WriteFn(Protocol[Row_contra]):
    def __call__(self, batch: Sequence[Row_contra], /) -> None: ...


async def collect(rows_in: trio.MemoryReceiveChannel[Row], batch: list[Row], policy: FlushPolicy) -> bool:
    """Fill `batch` by the size-or-deadline rule. False once the channel is closed and drained
    (what was collected before is still in `batch`)."""
    try:
        batch.append(await rows_in.receive())  # no deadline before the first row
        with trio.move_on_after(policy.max_delay_s):  # the deadline counts from it
            while len(batch) < policy.max_rows:
                batch.append(await rows_in.receive())  # cancel-atomic: no row is lost
    except trio.EndOfChannel:
        return False
    return True


async def _write_until_done(sink: BatchSink[Row], batch: list[Row], policy: FlushPolicy,
                            stats: FlusherStats) -> None:
    backoff = Backoff(policy.retry_initial_s, policy.retry_cap_s)
    while True:
        t0 = time.perf_counter()
        try:
            await sink.write(batch)
        except Exception as exc:  # a database error of any driver: keep the batch, retry
            stats.retries += 1
            stats.last_error = repr(exc)[:300]
            delay = backoff.next()
            log.warning("write of %d rows failed (%r); retry in %.2fs", len(batch), exc, delay)
            await trio.sleep(delay)
            continue
        ms = (time.perf_counter() - t0) * 1000
        stats.rows += len(batch)
        stats.batches += 1
        stats.last_batch_rows = len(batch)
        stats.last_batch_ms = ms
        stats.max_batch_ms = max(stats.max_batch_ms, ms)
        return


async def run_flusher(
    rows_in: trio.MemoryReceiveChannel[Row],
    sink: BatchSink[Row],
    policy: FlushPolicy,
    stats: FlusherStats | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write rows in size-or-deadline batches until `rows_in` is closed and drained.

    Owns `rows_in`. started(): ready to receive. Returns after the last batch is written.
    On cancel: writes what it holds under a shielded `final_write_s` budget; inserts are
    idempotent, so rewriting a batch whose first attempt committed is safe.
    """
    stats = stats if stats is not None else FlusherStats()
    batch: list[Row] = []
    with rows_in:
        task_status.started()
        try:
            while True:
                more = await collect(rows_in, batch, policy)
                if batch:
                    await _write_until_done(sink, batch, policy, stats)
                    batch = []
                if not more:
                    return
        finally:
            if batch:
                with trio.move_on_after(policy.final_write_s, shield=True) as scope:
                    await _write_until_done(sink, batch, policy, stats)
                if scope.cancelled_caught:
                    log.error("final write of %d rows did not finish in %.1fs", len(batch),
                              policy.final_write_s)
