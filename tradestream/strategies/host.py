"""The strategy host: one bounded queue and one supervised task per strategy.

Seed 000 ran its trading logic per headline with `asyncio.create_task(process_news(...))`: an
unowned task per event, nothing bounding how many pile up, and an exception in one vanishing
into the event loop's "exception was never retrieved". Here the router calls
`StrategyHost.offer(event)` on its hot path, which never awaits and never raises; each strategy
consumes its own bounded queue in a task of the host's nursery, under a per-event deadline,
and is restarted after a backoff when it raises or hangs. The host owns those queues and tasks;
it does not own the strategies' payload sink (`emit`), which must be sync and cheap.

Back-pressure (STYLE §4, an edge states its choice): *drop-newest with a counter*. When a
strategy's queue is full, `offer` drops the event for that strategy only and counts it in
`status()[id]["dropped"]`: a slow strategy loses input, the feed and the store never wait.

One queue per strategy holds every type it wants, in arrival order. So a strategy should want
only what it must see one by one: ticks come at the trade rate, and a strategy wanting Tick
beside a rare type (News) can lose the rare event behind a burst of ticks. One that merely
needs the latest price per code takes a read-only view of it at construction instead (the
service passes the router's `MarketState.latest`, kept current before any strategy is
offered the event; see news.py), which is also fresher than any tick queued before the event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import trio

log = logging.getLogger("tradestream.strategies")

QUEUE_SIZE = 1000
EVENT_TIMEOUT_S = 5.0
RESTART_BACKOFF_S = (0.5, 30.0)  # (first delay, cap); doubles per consecutive failure

State = Literal["idle", "running", "backoff", "failed", "stopped"]
Payload = dict[str, Any]
Emit = Callable[[str, Payload], None]


@runtime_checkable
class Strategy(Protocol):
    """A plug-in that turns events into signal payloads.

    - `id`: unique within a host; it is the `strategy_id` of every payload it emits.
    - `wants`: the event classes it consumes (`isinstance` match, so a base class works too).
      They share one bounded queue: want Tick only to act on every trade, not to track prices
      (module doc).
    - `handle(event)`: zero or more payloads, dicts shaped like seed 003's `strategy_signal`
      data: {"signal": "buy" | "sell" | "watch" | ..., "symbol": "005930",
      "quantity": int | None, "reason": str, ...}. None counts as no payloads. It runs under
      the host's per-event deadline, so it must await rather than block the thread (offload
      CPU-heavy work with `trio.to_thread.run_sync`): a blocked thread stops every task.
    - optional `reset() -> None`: called after `handle` raised or hung, before the strategy
      gets its next event, to drop state the failure may have left half-updated.
    """

    id: str
    wants: tuple[type, ...]

    async def handle(self, event: Any) -> Iterable[Payload] | None: ...


def restart_delay(initial_s: float, cap_s: float, failures: int) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1-based): initial_s,
    2*initial_s, 4*initial_s, ... capped at cap_s. Pure. No jitter: unlike feed reconnects
    (backoff.py) there is no shared upstream for restarts to stampede on, and a
    deterministic schedule is easier to read in status and to test."""
    if failures < 1:
        return 0.0
    exponent = min(failures - 1, 64)  # 2**64 * any sane initial_s is past any cap
    return min(cap_s, initial_s * 2.0**exponent)


@dataclass(eq=False)
class _Slot:
    """One strategy's queue and counters. Mutated only by `offer` and its supervisor task."""

    strategy: Strategy
    events_out: trio.MemorySendChannel[Any]
    events_in: trio.MemoryReceiveChannel[Any]
    state: State = "idle"
    handled: int = 0
    emitted: int = 0
    dropped: int = 0
    errors: int = 0
    timeouts: int = 0
    emit_errors: int = 0
    restarts: int = 0
    consecutive_failures: int = 0
    backoff_s: float = 0.0
    last_error: str | None = None
    wants: tuple[str, ...] = field(default=())


class StrategyHost:
    """Runs strategies in supervised tasks and routes events to them.

    `emit(strategy_id, payload)` receives every payload a strategy returns, in order; it is
    called from the strategy's task, must not block, and an exception from it is logged and
    counted (`emit_errors`), never blamed on the strategy.

    Limits: the deadline works by cancellation, so a `handle` that blocks the thread or
    swallows `trio.Cancelled` cannot be stopped by the host (nor can anything else in Trio).

    Error policy, per strategy: an exception from `handle` (or from iterating its result, or a
    payload that is not a dict), and a `handle` that outlives `event_timeout_s` (a hang, raised
    as `trio.TooSlowError`), is logged with its traceback and counted; the event that caused
    it is dropped (a poison event is not retried); `reset()` is called if the strategy has
    one; the strategy waits `restart_delay(*restart_backoff_s, consecutive failures)` in state
    "backoff" while its queue keeps filling up to `queue_size` (then drops), and resumes in
    state "running" with `restarts` + 1. A handled event resets the consecutive-failure count.
    With `max_restarts` set, the failure after that many restarts leaves the strategy
    "failed": its queue is closed and later offers count as dropped. Nothing a strategy raises
    (`Exception`) reaches the nursery tree; cancellation (`BaseException`) passes through.
    """

    def __init__(
        self,
        strategies: Iterable[Strategy],
        emit: Emit,
        *,
        queue_size: int = QUEUE_SIZE,
        event_timeout_s: float = EVENT_TIMEOUT_S,
        restart_backoff_s: tuple[float, float] = RESTART_BACKOFF_S,
        max_restarts: int | None = None,
    ) -> None:
        initial_s, cap_s = restart_backoff_s
        if queue_size < 1 or queue_size == math.inf:
            raise ValueError("queue_size must be a positive, finite bound")
        if not 0 < event_timeout_s < math.inf:
            raise ValueError("event_timeout_s must be positive and finite")
        if not 0 <= initial_s <= cap_s < math.inf:
            raise ValueError("restart_backoff_s must be (initial, cap) with 0 <= initial <= cap")
        if max_restarts is not None and max_restarts < 0:
            raise ValueError("max_restarts must be None or >= 0")
        self._emit = emit
        self._event_timeout_s = event_timeout_s
        self._backoff = (initial_s, cap_s)
        self._max_restarts = max_restarts
        self._slots: dict[str, _Slot] = {}
        for strategy in strategies:
            if strategy.id in self._slots:
                raise ValueError(f"duplicate strategy id {strategy.id!r}")
            # drop-newest when full: see the module docstring
            events_out, events_in = trio.open_memory_channel[Any](queue_size)
            self._slots[strategy.id] = _Slot(
                strategy, events_out, events_in, wants=tuple(t.__name__ for t in strategy.wants)
            )
        # type(event) -> the slots that want it. Precomputed for the declared types; other
        # types (subclasses, types nobody wants) are resolved once on first sight, so `offer`
        # is one dict lookup plus one send_nowait per interested strategy.
        self._routes: dict[type, tuple[_Slot, ...]] = {}
        for slot in self._slots.values():
            for t in slot.strategy.wants:
                self._route(t)
        self._ran = False

    # -- hot path -------------------------------------------------------------------------------

    def offer(self, event: object) -> None:
        """Queue `event` for every strategy that wants its type. Never blocks, never raises:
        a full (or failed, or closed) strategy queue drops the event and counts it there."""
        slots = self._routes.get(type(event))
        if slots is None:
            slots = self._route(type(event))
        for slot in slots:
            try:
                slot.events_out.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                slot.dropped += 1

    def _route(self, event_type: type) -> tuple[_Slot, ...]:
        slots = tuple(s for s in self._slots.values() if issubclass(event_type, s.strategy.wants))
        self._routes[event_type] = slots
        return slots

    # -- the task -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every strategy until cancelled, or until `close()` and every queue is drained.

        started(): every strategy task is spawned; events offered before that were queued
        anyway (the queues exist from construction). Owns the strategy queues: on return or
        cancellation both ends are closed, so later offers are counted drops. Never raises
        what a strategy raises. A host runs once.
        """
        if self._ran:
            raise RuntimeError("a StrategyHost runs once")
        self._ran = True
        try:
            async with trio.open_nursery() as nursery:
                for slot in self._slots.values():
                    nursery.start_soon(self._supervise, slot, name=f"strategy:{slot.strategy.id}")
                task_status.started()
        finally:
            self.close()
            for slot in self._slots.values():
                slot.events_in.close()

    def close(self) -> None:
        """Stop intake: strategies finish what is queued, then `run` returns. Idempotent."""
        for slot in self._slots.values():
            slot.events_out.close()

    async def _supervise(self, slot: _Slot) -> None:
        strategy = slot.strategy
        with slot.events_in:
            slot.state = "running"
            try:
                async for event in slot.events_in:
                    if not await self._handle_one(slot, event):
                        slot.state = "failed"
                        log.error(
                            "strategy %s failed for good after %d restarts; its queue is closed",
                            strategy.id,
                            slot.restarts,
                        )
                        return
            finally:
                if slot.state != "failed":
                    slot.state = "stopped"

    async def _handle_one(self, slot: _Slot, event: object) -> bool:
        """Handle one event; on failure, reset and back off. False: give up (max_restarts)."""
        strategy = slot.strategy
        try:
            with trio.fail_after(self._event_timeout_s):
                result = await strategy.handle(event)
                payloads = [] if result is None else list(result)
            for p in payloads:
                if not isinstance(p, dict):
                    raise TypeError(f"payload must be a dict, not {type(p).__name__}")
        except Exception as exc:  # the point of a supervisor; Cancelled is a BaseException
            return await self._recover(slot, event, exc)
        slot.handled += 1
        slot.consecutive_failures = 0
        for payload in payloads:
            try:
                self._emit(strategy.id, payload)
            except Exception:  # the sink's bug, not the strategy's: count, keep going
                slot.emit_errors += 1
                log.exception("emit failed for a payload of strategy %s", strategy.id)
            else:
                slot.emitted += 1
        return True

    async def _recover(self, slot: _Slot, event: object, exc: Exception) -> bool:
        strategy = slot.strategy
        slot.errors += 1
        slot.consecutive_failures += 1
        if isinstance(exc, trio.TooSlowError):
            slot.timeouts += 1
            slot.last_error = f"timeout: handle took over {self._event_timeout_s:g}s"
        else:
            slot.last_error = f"{type(exc).__name__}: {exc}"
        log.error(
            "strategy %s failed on %s (%s)",
            strategy.id,
            type(event).__name__,
            slot.last_error,
            exc_info=exc,
        )
        reset = getattr(strategy, "reset", None)
        if callable(reset):
            try:
                reset()
            except Exception:
                log.exception("strategy %s: reset() failed too", strategy.id)
        if self._max_restarts is not None and slot.restarts >= self._max_restarts:
            return False
        slot.backoff_s = restart_delay(*self._backoff, slot.consecutive_failures)
        slot.state = "backoff"
        log.warning("strategy %s restarts in %.2fs", strategy.id, slot.backoff_s)
        await trio.sleep(slot.backoff_s)  # events queue up meanwhile, to the bound
        slot.restarts += 1
        slot.state = "running"
        return True

    # -- observability --------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, object]]:
        """A fresh snapshot per strategy id, for the status endpoint."""
        out: dict[str, dict[str, object]] = {}
        for sid, s in self._slots.items():
            stats = s.events_out.statistics()
            out[sid] = {
                "state": s.state,
                "wants": list(s.wants),
                "handled": s.handled,
                "emitted": s.emitted,
                "dropped": s.dropped,
                "errors": s.errors,
                "timeouts": s.timeouts,
                "emit_errors": s.emit_errors,
                "restarts": s.restarts,
                "consecutive_failures": s.consecutive_failures,
                "backoff_s": s.backoff_s,
                "last_error": s.last_error,
                "queue_depth": stats.current_buffer_used,
                "queue_size": int(stats.max_buffer_size),
            }
        return out
