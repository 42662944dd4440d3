"""The batching flusher: size-or-deadline batches from a channel to a sink, without loss.

Two tasks share a queue of batches:
- the *collector* receives without pause and cuts batches: one is complete when `max_rows`
  rows are in it or `max_delay_s` after its first row, whichever comes first (an idle channel
  costs nothing, a lone row waits at most `max_delay_s`);
- the *writer* writes them in order. A failed write is retried with capped backoff and the
  batch is kept.

So a slow or unavailable database never blocks the producers: batches pile up in memory, and
past `memory_rows` the oldest go to the on-disk `Spool`, which the writer replays, oldest first,
before newer batches once writes succeed again. At shutdown the writer gets `drain_s` to write
what is pending; whatever is left then (the database is still down) is spooled for the next
start. Inserts are idempotent, so a batch written twice (a retry whose first attempt did
commit, a segment replayed after a crash) is stored once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import trio

from tradestream.backoff import Backoff
from tradestream.config import StoreSettings

log = logging.getLogger(__name__)
SPOOL_RETRY_S = 1.0  # while intake is held back: how often the spool is tried again


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


Row = TypeVar("Row")
Row_contra = TypeVar("Row_contra", contravariant=True)


class BatchSink(Protocol[Row_contra]):
    async def write(self, batch: Sequence[Row_contra]) -> None: ...


class WriteFn(Protocol[Row_contra]):
    def __call__(self, batch: Sequence[Row_contra], /) -> None: ...


class SpoolLike(Protocol[Row]):
    """What the flusher needs of its on-disk spool (`tradestream.store.spool.Spool`, which
    holds events): it stores and gives back the flusher's own rows."""

    @property
    def directory(self) -> Path: ...
    @property
    def rows(self) -> int: ...
    @property
    def segments(self) -> int: ...
    def append(self, batch: Sequence[Row], *, front: bool = False) -> None: ...
    def oldest(self) -> tuple[Path, list[Row]] | None: ...
    def set_aside(self, events: Sequence[Row], reason: str) -> None: ...
    def remove(self, path: Path) -> None: ...


@dataclass(frozen=True)
class FlushPolicy:
    max_rows: int = 500
    max_delay_s: float = 0.1
    poll_s: float = 0.01  # how often a filling batch takes what has arrived (collect)
    merge_rows: int = 5_000  # a writer that is behind writes queued batches together, up to this
    memory_rows: int = 50_000  # rows held in memory while writes fail; beyond: the spool
    drain_s: float = 5.0  # at shutdown: time to write what is pending before spooling it
    final_write_s: float = 5.0  # budget for spooling what is left when cancelled
    retry_initial_s: float = 0.1
    retry_cap_s: float = 5.0

    @classmethod
    def from_settings(cls, st: StoreSettings) -> FlushPolicy:
        return cls(
            max_rows=st.flush_rows,
            max_delay_s=st.flush_interval_s,
            memory_rows=st.memory_rows,
            drain_s=st.drain_s,
            final_write_s=st.final_write_s,
        )


@dataclass
class FlusherStats:
    rows: int = 0
    batches: int = 0
    retries: int = 0
    last_batch_rows: int = 0
    last_batch_ms: float = 0.0
    max_batch_ms: float = 0.0
    pending_rows: int = 0  # in memory, not yet written
    spool_rows: int = 0  # on disk, not yet written
    spool_segments: int = 0
    spooled_rows: int = 0  # ever sent to the spool
    replayed_rows: int = 0  # written from the spool
    refused_rows: int = 0  # rejected by the database (not an outage), set aside
    last_error: str = ""
    last_error_at: str = ""  # when last_error happened (ISO 8601, UTC)
    writing: bool = True  # False from a failed write until the next one succeeds
    recovered_at: str = ""  # when writes last succeeded again after failing
    spool_error: str = ""  # the spool's last refusal, while it lasts ("" once it takes a batch)
    intake_held: bool = False  # memory at its cap and the spool refusing: rows wait upstream
    lost_rows: int = 0  # at a stop, refused by the spool and the database both

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class ThreadedSink(Generic[Row]):
    """Runs a blocking `write(batch)` in a worker thread, one at a time.

    With `timeout_s`, a write that has not returned by then raises TimeoutError (an outage:
    the flusher retries the batch, or spools it at a stop), and so does a cancel while it
    runs: a database that accepts the connection and then says nothing (a frozen server, a
    half-open connection) is found out on our side, where no server timeout reaches, and a
    hard stop is not held up by it. The thread is abandoned: it may still commit its batch
    later, which is harmless, because every insert is idempotent; the writes that follow use
    a thread and a connection of their own."""

    def __init__(
        self,
        write: WriteFn[Row],
        limiter: trio.CapacityLimiter | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self._write = write
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._timeout_s = timeout_s
        self.abandoned = 0  # threads left behind by a write that timed out or was cancelled

    async def write(self, batch: Sequence[Row]) -> None:
        if self._timeout_s is None:
            await trio.to_thread.run_sync(self._write, batch, limiter=self._limiter)
            return
        limiter = self._limiter
        done = False
        try:
            with trio.move_on_after(self._timeout_s):
                await trio.to_thread.run_sync(
                    self._write, batch, limiter=limiter, abandon_on_cancel=True
                )
                done = True
        finally:
            if not done:
                # The thread keeps its limiter token until it returns: the next write gets
                # a limiter of its own instead of waiting behind it.
                self.abandoned += 1
                self._limiter = trio.CapacityLimiter(1)
        if not done:
            raise TimeoutError(f"database write took longer than {self._timeout_s:g} s")


async def collect(
    rows_in: trio.MemoryReceiveChannel[Row], batch: list[Row], policy: FlushPolicy
) -> bool:
    """Fill `batch` by the size-or-deadline rule. False once the channel is closed and drained
    (what was collected before is still in `batch`).

    After the first row the collector does not wake per row: it takes everything queued, then
    sleeps `poll_s` (or to the deadline) and takes again, so a steady stream costs a wake-up
    per poll, not per row; the size rule is met at most `poll_s` late. Once a take finds the
    channel half full (its senders may be waiting), it takes rows as they come instead."""
    try:
        batch.append(await rows_in.receive())  # no deadline before the first row
    except trio.EndOfChannel:
        return False
    deadline = trio.current_time() + policy.max_delay_s  # the deadline counts from it
    max_rows = policy.max_rows
    full = rows_in.statistics().max_buffer_size / 2  # a drain this large: senders may wait
    busy = False
    try:
        while len(batch) < max_rows:
            took = len(batch)
            try:
                while len(batch) < max_rows:
                    batch.append(rows_in.receive_nowait())
                break
            except trio.WouldBlock:
                pass
            now = trio.current_time()
            if now >= deadline:
                break
            busy = busy or len(batch) - took >= full
            if busy:  # the channel was filling up: take rows as they come, as senders wait
                with trio.move_on_at(deadline):
                    batch.append(await rows_in.receive())  # cancel-atomic: no row is lost
            else:
                await trio.sleep_until(min(deadline, now + policy.poll_s))
    except trio.EndOfChannel:
        return False
    return True


def _ignore(batch: Sequence[object]) -> None:
    pass


class _Queue(Generic[Row]):
    """Batches waiting for the writer, oldest first, and the one it is writing."""

    def __init__(self) -> None:
        self.batches: deque[list[Row]] = deque()
        self.queued_at: deque[float] = deque()  # when each of `batches` was queued
        self.inflight: list[Row] | None = None  # taken from memory, being written
        self.rows = 0  # in `batches` and `inflight`
        self.closed = False
        self.failing = False  # the last write failed: at shutdown, go straight to the spool
        self.lot = trio.lowlevel.ParkingLot()
        # told of each batch once durable (committed, spooled, set aside): the journal
        self.settled: Callable[[Sequence[Row]], None] = _ignore


async def run_flusher(
    rows_in: trio.MemoryReceiveChannel[Row],
    sink: BatchSink[Row],
    policy: FlushPolicy,
    stats: FlusherStats | None = None,
    spool: SpoolLike[Row] | None = None,
    *,
    transient: Callable[[BaseException], bool] = lambda exc: True,
    settled: Callable[[Sequence[Row]], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write rows in size-or-deadline batches until `rows_in` is closed and drained.

    Owns `rows_in`. started(): ready to receive (and replaying the spool, if it holds
    anything). Returns once everything received is written, or, if the database is still
    unavailable after `drain_s`, written to the spool. On cancel: spools what it holds under a
    shielded `final_write_s` budget. Without a spool (tests), rows that cannot be written by
    then are lost and logged.

    `transient(exc)` tells an outage (retry the batch) from a batch the database refuses
    (a value out of range, say): such a batch is split until the refused rows are found;
    the others are stored and the refused ones set aside in the spool's dead letters.

    `settled(batch)` is called once a batch is durable: committed, spooled or set aside (not
    for rows lost at a stop, which stay in the journal for the next start).
    """
    stats = stats if stats is not None else FlusherStats()
    q: _Queue[Row] = _Queue()
    if settled is not None:
        q.settled = settled
    batch: list[Row] = []
    if spool is not None:
        stats.spool_rows, stats.spool_segments = spool.rows, spool.segments
    with rows_in:
        try:
            async with trio.open_nursery() as nursery:
                writer_done = trio.Event()
                nursery.start_soon(_writer, q, sink, policy, stats, spool, writer_done, transient)
                task_status.started()
                while True:
                    more = await collect(rows_in, batch, policy)
                    if batch:
                        q.batches.append(batch)
                        q.queued_at.append(trio.current_time())
                        q.rows += len(batch)
                        stats.pending_rows = q.rows
                        batch = []
                        q.lot.unpark()
                        if not await _spill_excess(q, policy, stats, spool):
                            await _hold_intake(q, policy, stats, spool)
                    stats.pending_rows = q.rows
                    if not more:
                        break
                q.closed = True
                q.lot.unpark_all()
                with trio.move_on_after(policy.drain_s):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()  # the writer, if the database is still away
        finally:
            # The batch in flight is older than what was spilled while it was retried: it goes
            # to the spool's front; the queue and the channel's rest go to its end.
            first = q.inflight
            left = [b for b in [*q.batches, batch] if b]
            rest: list[Row] = []  # still in the channel: a hard stop came before its end
            while True:
                try:
                    rest.append(rows_in.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if rest:
                left.append(rest)
            if left or first:
                with trio.move_on_after(policy.final_write_s, shield=True) as scope:
                    if first:
                        await _save([first], sink, stats, spool, q.settled, front=True)
                    await _save(left, sink, stats, spool, q.settled)
                if scope.cancelled_caught:
                    log.error(
                        "could not save %d batches in %.1fs",
                        len(left) + bool(first),
                        policy.final_write_s,
                    )


async def _spill_excess(
    q: _Queue[Row], policy: FlushPolicy, stats: FlusherStats, spool: SpoolLike[Row] | None
) -> bool:
    """Keep memory bounded while writes fail: move the oldest queued batches to the spool.
    False when the spool refused one (a full disk, a directory gone): it stays in memory."""
    while spool is not None and q.rows > policy.memory_rows and q.batches:
        # Taken off the queue before the (threaded) write: the writer, running meanwhile,
        # must not take the same batch, nor this one pop a batch the writer holds.
        oldest, queued_at = q.batches.popleft(), q.queued_at.popleft()
        try:
            await trio.to_thread.run_sync(spool.append, oldest)
        except OSError as exc:
            q.batches.appendleft(oldest)
            q.queued_at.appendleft(queued_at)
            if not stats.spool_error:
                log.error("the spool at %s refuses writes (%s)", spool.directory, exc)
            stats.spool_error = repr(exc)[:300]
            return False
        stats.spool_error = ""
        q.settled(oldest)
        q.rows -= len(oldest)
        stats.spooled_rows += len(oldest)
        stats.spool_rows, stats.spool_segments = spool.rows, spool.segments
        stats.pending_rows = q.rows
    return True


async def _hold_intake(
    q: _Queue[Row], policy: FlushPolicy, stats: FlusherStats, spool: SpoolLike[Row] | None
) -> None:
    """Memory is at its cap, the database is away and the spool refuses writes: take no more
    rows until the writer or the spool brings memory under the cap. Meanwhile the channel
    fills and the router, then the feeds, wait (back-pressure): rows wait upstream instead of
    being dropped, and nothing crashes."""
    stats.intake_held = True
    log.error(
        "%d rows in memory (cap %d), the database away and the spool refusing writes: "
        "intake held back until either takes them",
        q.rows,
        policy.memory_rows,
    )
    try:
        while q.rows > policy.memory_rows:
            await trio.sleep(SPOOL_RETRY_S)
            if await _spill_excess(q, policy, stats, spool):
                break
    finally:
        stats.intake_held = False
    log.warning("intake resumed: %d rows in memory", q.rows)


async def _save(
    batches: list[list[Row]],
    sink: BatchSink[Row],
    stats: FlusherStats,
    spool: SpoolLike[Row] | None,
    settled: Callable[[Sequence[Row]], None],
    *,
    front: bool = False,
) -> None:
    """What is left when the flusher ends early (the database was too slow or away, or a hard
    stop): the spool, which is local and quick, for the next start to write. Without a spool
    (tests), one attempt at the database."""
    for b in batches:
        if spool is None:
            try:
                await sink.write(b)
                stats.rows += len(b)
                stats.batches += 1
                settled(b)
                continue
            except Exception as exc:
                stats.last_error = repr(exc)[:300]
            log.error("no spool configured: %d rows were not stored", len(b))
            continue
        try:
            await trio.to_thread.run_sync(partial(spool.append, b, front=front))
        except OSError as exc:
            stats.spool_error = repr(exc)[:300]
            try:  # the database is the only place left
                await sink.write(b)
            except Exception as db_exc:  # noqa: BLE001  (both refused: said below, not raised)
                log.error(
                    "%d rows not stored: the spool at %s refused them (%s) and so did the "
                    "database (%r)",
                    len(b),
                    spool.directory,
                    exc,
                    db_exc,
                )
                stats.lost_rows += len(b)
            else:
                stats.rows += len(b)
                stats.batches += 1
                settled(b)
            continue
        settled(b)
        stats.spooled_rows += len(b)
        stats.spool_rows, stats.spool_segments = spool.rows, spool.segments
        log.warning("%d rows kept in the spool (%s) for the next start", len(b), spool.directory)


async def _isolate(
    batch: list[Row], sink: BatchSink[Row], transient: Callable[[BaseException], bool]
) -> tuple[int, list[Row]]:
    """Write what the database accepts of a refused batch, halving it down to single rows.
    Returns (rows written, rows refused); an outage meanwhile propagates to be retried."""
    try:
        await sink.write(batch)
        return len(batch), []
    except Exception as exc:
        if transient(exc):
            raise
        if len(batch) == 1:
            return 0, batch
    mid = len(batch) // 2
    n1, bad1 = await _isolate(batch[:mid], sink, transient)
    n2, bad2 = await _isolate(batch[mid:], sink, transient)
    return n1 + n2, bad1 + bad2


async def _writer(
    q: _Queue[Row],
    sink: BatchSink[Row],
    policy: FlushPolicy,
    stats: FlusherStats,
    spool: SpoolLike[Row] | None,
    done: trio.Event,
    transient: Callable[[BaseException], bool],
) -> None:
    """Write the spool's segments, then the queued batches, in order; retry until it works."""
    backoff = Backoff(policy.retry_initial_s, policy.retry_cap_s)
    outage_at = 0.0  # when the current run of failed writes began
    try:
        while True:
            segment: Path | None = None
            if q.inflight is not None:
                # A failed batch is retried before anything else: batches spilled meanwhile
                # are newer than it, so order holds as inflight < spool < queue.
                batch = q.inflight
            elif spool is not None and spool.segments:
                # Everything spooled is older than anything still queued in memory.
                found = await trio.to_thread.run_sync(spool.oldest)
                if found is None:
                    continue
                segment, batch = found
            elif q.batches:
                batch = q.batches.popleft()
                if trio.current_time() - q.queued_at.popleft() > policy.max_delay_s:
                    # Behind: the batch waited longer than the deadline. Write what queued
                    # behind it in the same transaction, so the cost per row falls as the
                    # rate rises instead of the backlog growing.
                    while q.batches and len(batch) + len(q.batches[0]) <= policy.merge_rows:
                        batch = batch + q.batches.popleft()
                        q.queued_at.popleft()
                q.inflight = batch
            elif q.closed:
                return
            else:
                await q.lot.park()
                continue
            t0 = time.perf_counter()
            refused: list[Row] = []
            try:
                try:
                    await sink.write(batch)
                except Exception as exc:
                    if transient(exc):
                        raise
                    written, refused = await _isolate(batch, sink, transient)
                    log.error(
                        "the database refused %d of %d rows (%r); set aside",
                        len(refused),
                        len(batch),
                        exc,
                    )
                    stats.refused_rows += len(refused)
                    if spool is not None:
                        await trio.to_thread.run_sync(spool.set_aside, refused, repr(exc))
            except Exception as exc:  # an outage, of any driver: keep the batch, retry
                if not q.failing:
                    outage_at = trio.current_time()
                q.failing = True
                stats.writing = False
                stats.retries += 1
                stats.last_error = repr(exc)[:300]
                stats.last_error_at = _utc_now()
                delay = backoff.next()
                log.warning("write of %d rows failed (%r); retry in %.2fs", len(batch), exc, delay)
                await trio.sleep(delay)
                continue
            backoff.reset()
            if q.failing:
                stats.writing = True
                stats.recovered_at = _utc_now()
                log.info(
                    "database back after %.1f s; %d rows to catch up (%d in memory, %d in the "
                    "spool)",
                    trio.current_time() - outage_at,
                    q.rows + stats.spool_rows,
                    q.rows,
                    stats.spool_rows,
                )
            q.failing = False
            q.settled(batch)
            ms = (time.perf_counter() - t0) * 1000
            if segment is not None:
                await trio.to_thread.run_sync(spool.remove, segment)  # type: ignore[union-attr]
                stats.replayed_rows += len(batch)
                stats.spool_rows, stats.spool_segments = spool.rows, spool.segments  # type: ignore[union-attr]
            else:
                q.inflight = None
                q.rows -= len(batch)
                stats.pending_rows = q.rows
            stats.rows += len(batch) - len(refused)
            stats.batches += 1
            stats.last_batch_rows = len(batch)
            stats.last_batch_ms = ms
            stats.max_batch_ms = max(stats.max_batch_ms, ms)
    finally:
        done.set()
