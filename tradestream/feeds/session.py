"""A broker feed session: authenticate, connect, register, read, reconnect. Broker-neutral.

`run_feed` owns one WebSocket at a time and drives a `FeedAdapter` (feeds/kis/adapter.py,
feeds/ls/adapter.py) that knows the broker's protocol. A closed, failed or silent connection
(no frame, data or heartbeat, within `stale_s`) is a lost connection: the task backs off
(capped exponential with jitter, reset on the first good frame), connects again and registers
everything anew. When a session that was streaming comes back, a `FeedGap` event (start, end,
reason) goes downstream, so no consumer mistakes the silence for a quiet market.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from tradestream.backoff import Backoff
from tradestream.errors import CredentialRejected, FeedError
from tradestream.events import Event, FeedGap
from tradestream.feeds.transport import open_upstream

log = logging.getLogger(__name__)


class Frame(msgspec.Struct, frozen=True):
    """One raw upstream frame as recorded (feeds/record.py)."""

    t: int  # received, ns since the epoch
    s: str  # session name
    b: str  # broker tag (feeds/registry.py): "kis", "ls"
    m: str  # the frame's text, as received
    # "" for a broker frame; "gap": m is a FeedGap (JSON) the session reported; "media": m
    # is the session's id -> media table (JSON), so that a replay names what the run named
    k: str = ""


DELIVER_S = 5.0  # when stopping: at most this long to hand on what one frame brought


FEED_LOST = (
    ConnectionClosed,
    HandshakeError,  # ConnectionRejected too
    OSError,
    trio.TooSlowError,
    httpx.HTTPError,
    FeedError,
)


@dataclass(frozen=True)
class FeedTiming:
    stale_s: float = 150.0
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.25
    backoff_cap_s: float = 1.0


#: FeedStatus states with a live socket
CONNECTED = frozenset({"subscribing", "streaming"})


@dataclass
class FeedStatus:
    """Live state of one feed session; written by its task, read by the status endpoint."""

    name: str
    state: str = "starting"  # authenticating, connecting, subscribing, streaming, backoff
    connects: int = 0
    reconnects: int = 0
    gaps: int = 0
    last_frame_ns: int = 0
    last_error: str = ""
    subscriptions: dict[str, str] = field(default_factory=dict)  # "tr:key" -> result
    decoder_stats: Callable[[], dict[str, object]] | None = None  # the adapter's, on demand

    @property
    def decoder(self) -> dict[str, object]:
        """The decoder's counters (frames, records, errors by kind), read when asked."""
        return self.decoder_stats() if self.decoder_stats is not None else {}

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "last_frame_at": self.last_frame_ns / 1e9 if self.last_frame_ns else None,
            "last_error": self.last_error,
            "subscribed": sum(1 for r in self.subscriptions.values() if r == "subscribed"),
            "refused": {k: r for k, r in self.subscriptions.items() if r != "subscribed"},
            **self.decoder,
        }


#: open_upstream's signature; tests pass an in-memory connection to run on the mock clock
Connect = Callable[[str, float], AbstractAsyncContextManager[WebSocketConnection]]


class FeedAdapter(Protocol):
    """What run_feed needs to know about one broker's protocol."""

    ws_url: str
    broker: str  # the broker's tag (feeds/registry.py): how a recording is decoded

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        """Make sure a credential is at hand (no-op when it is); CredentialRejected if refused."""

    def forget_credential(self) -> None:
        """The credential was refused: the next authenticate() must get a new one."""

    def registrations(self) -> list[str]:
        """The messages to send right after connecting."""

    def unregistrations(self) -> list[str]:
        """The messages that end what the live connection registered: sent when the feed is
        drained, so that the broker stops sending and the socket goes quiet."""

    def on_connect(self, status: FeedStatus) -> None:
        """A new connection: drop per-connection state (keys, acks)."""

    def decode(self, text: str, received_ns: int) -> list[Event] | object:
        """Events for a data frame ([] for a bad one, counted), else a control message."""

    def take_error(self) -> Exception | None:
        """The error behind the last [] from decode, once."""

    def stats(self) -> dict[str, object]: ...

    async def on_control(self, ws: WebSocketConnection, msg: object, status: FeedStatus) -> bool:
        """Act on a control message (answer heartbeats, record acks). True: a sign of a healthy
        session (resets the backoff). May raise FeedError."""


class _Decoder(Protocol):
    last_error: Any  # the decoder's own error type (FrameError), or None

    @property
    def stats(self) -> Any: ...

    def decode(self, text: str, received_ns: int) -> Any: ...


class DecoderAdapter:
    """The part of a FeedAdapter that only hands frames to the broker's pure decoder."""

    decoder: _Decoder

    def decode(self, text: str, received_ns: int) -> Any:
        return self.decoder.decode(text, received_ns)

    def take_error(self) -> Exception | None:
        exc, self.decoder.last_error = self.decoder.last_error, None
        return exc

    def stats(self) -> dict[str, object]:
        stats: dict[str, object] = self.decoder.stats.as_dict()
        return stats


class OpQueue(deque[str]):
    """Requests for the live connection (a slot driver's registrations), queued by `put`
    and sent in order by `pump`, which run_feed runs beside the reader (an adapter's
    `pump`). A new connection `clear`s it: the connect's registrations supersede it."""

    def __init__(self) -> None:
        super().__init__()
        self._lot = trio.lowlevel.ParkingLot()

    def put(self, message: str) -> None:
        self.append(message)
        self._lot.unpark()

    async def pump(self, ws: WebSocketConnection) -> None:
        """Send what is queued, then wait for more; until cancelled or the socket fails."""
        while True:
            while self:
                await ws.send_message(self.popleft())
            await self._lot.park()


class FeedControl:
    """How a running feed is stopped without losing what already reached its socket.

    `drain(quiet_s)`: register nothing more, keep reading what the broker already sent until
    the connection has been quiet for `quiet_s`, then return (the socket closes with 1000).
    A feed that is not streaming (authenticating, connecting, in backoff) returns at once.
    The caller bounds the whole with a deadline of its own."""

    __slots__ = ("stopping", "quiet_s", "read", "pump", "idle")

    def __init__(self) -> None:
        self.stopping = False
        self.quiet_s = 0.0
        self.read: trio.CancelScope | None = None  # the read in progress, while streaming
        self.pump: trio.CancelScope | None = None  # registration changes, while connected
        self.idle: trio.CancelScope | None = None  # an attempt not yet streaming, a backoff

    def drain(self, quiet_s: float) -> None:
        self.stopping = True
        self.quiet_s = quiet_s
        if self.pump is not None:
            self.pump.cancel()
        if self.read is not None:
            self.read.deadline = min(self.read.deadline, trio.current_time() + quiet_s)
        if self.idle is not None:
            self.idle.cancel()


async def _pump_until_drained(
    pump: Callable[[WebSocketConnection], Awaitable[None]],
    ws: WebSocketConnection,
    ctl: FeedControl,
) -> None:
    with trio.CancelScope() as ctl.pump:
        if not ctl.stopping:
            await pump(ws)
    ctl.pump = None


async def run_feed(
    adapter: FeedAdapter,
    events_out: trio.MemorySendChannel[Event],
    status: FeedStatus,
    timing: FeedTiming,
    *,
    rest_url: str = "",
    frames_out: trio.MemorySendChannel[Frame] | None = None,
    rng: random.Random | None = None,
    connect: Connect = open_upstream,
    control: FeedControl | None = None,
    lost_since: datetime | None = None,
    gap_reason: str = "",
    journal: Callable[[list[Event]], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stream from one broker session into `events_out` until cancelled, or until drained
    through `control` (it then returns once the socket has been quiet for a moment).

    Owns and closes `events_out` (and `frames_out`, which, when given, receives every raw
    frame for the recorder: a blocking edge, so a recording misses nothing). started():
    running (not necessarily connected: `status` says). Sends block when the pipeline is full
    (the lossless edge). Broker errors are counted, logged and retried; this task never
    returns on its own. On cancel the upstream socket is closed with code 1000. `lost_since`:
    the previous run ended uncleanly when it was last alive; the first streaming frame then
    reports the downtime as a feed gap, as after a lost connection (`gap_reason`, by default
    UNCLEAN_STOP). `journal` is given each
    frame's events before they are handed on (store/journal.py: a kill loses none of them).
    """
    backoff = Backoff(timing.backoff_initial_s, timing.backoff_cap_s, rng=rng)
    run = _Run(adapter, events_out, frames_out, status, backoff, lost_since, journal, gap_reason)
    status.decoder_stats = adapter.stats
    ctl = control if control is not None else FeedControl()
    with events_out, frames_out or contextlib.nullcontext():
        header = getattr(adapter, "recording_header", None)
        if frames_out is not None and header is not None:
            for kind, text in header():
                await frames_out.send(
                    Frame(time.time_ns(), status.name, adapter.broker, text, kind)
                )
        task_status.started()
        async with httpx.AsyncClient(base_url=rest_url, timeout=timing.connect_timeout_s) as http:
            while not ctl.stopping:
                run.streamed = False
                # Until the connection is up, a drain ends the attempt at once: nothing can
                # be waiting in a socket that is not streaming yet.
                attempt = ctl.idle = trio.CancelScope()
                try:
                    with attempt:
                        status.state = "authenticating"
                        await adapter.authenticate(http)
                        status.state = "connecting"
                        async with connect(adapter.ws_url, timing.connect_timeout_s) as ws:
                            status.connects += 1
                            status.state = "subscribing"
                            adapter.on_connect(status)
                            for msg in adapter.registrations():
                                await ws.send_message(msg)
                            await _stream(ws, run, ctl, timing.stale_s)
                except* CredentialRejected as group:
                    status.last_error = str(_leaves(group)[0])
                    log.warning("%s: %s; getting a new credential", status.name, status.last_error)
                    adapter.forget_credential()
                except* FEED_LOST as group:
                    status.last_error = "; ".join(repr(e) for e in _leaves(group))
                    log.warning("%s: connection lost (%s)", status.name, status.last_error)
                except* Exception as group:  # a bug or a reply nobody foresaw: not the tree's end
                    status.last_error = "; ".join(repr(e) for e in _leaves(group))
                    log.error(
                        "%s: unexpected error, reconnecting",
                        status.name,
                        exc_info=_leaves(group)[0],
                    )
                if ctl.stopping:
                    status.state = "stopped"
                    break
                if run.streamed and run.lost_at is None:  # a gap starts when streaming stops
                    run.lost_at = datetime.now(UTC)
                status.state = "backoff"
                status.reconnects += 1
                delay = backoff.next()
                log.info("%s: reconnecting in %.2fs", status.name, delay)
                with trio.CancelScope() as ctl.idle:
                    await trio.sleep(delay)


class _Run:
    """What one feed carries from connection to connection."""

    __slots__ = ("adapter", "events_out", "frames_out", "status", "backoff", "streamed",
                 "lost_at", "gap_reason", "journal")  # fmt: skip

    def __init__(
        self,
        adapter: FeedAdapter,
        events_out: trio.MemorySendChannel[Event],
        frames_out: trio.MemorySendChannel[Frame] | None,
        status: FeedStatus,
        backoff: Backoff,
        lost_since: datetime | None,
        journal: Callable[[list[Event]], None] | None = None,
        gap_reason: str = "",
    ) -> None:
        self.adapter = adapter
        self.journal = journal
        self.events_out = events_out
        self.frames_out = frames_out
        self.status = status
        self.backoff = backoff
        self.streamed = False  # this connection has brought data
        self.lost_at = lost_since  # set while a session that had streamed is down
        self.gap_reason = (gap_reason or UNCLEAN_STOP) if lost_since else ""


UNCLEAN_STOP = "unclean stop: the previous run ended without draining"


async def _stream(ws: WebSocketConnection, run: _Run, ctl: FeedControl, stale_s: float) -> None:
    """Read one connection until it fails (raised) or, drained, goes quiet (returned)."""
    adapter, events_out, frames_out, status = (
        run.adapter,
        run.events_out,
        run.frames_out,
        run.status,
    )
    async with trio.open_nursery() as connection:
        pump = getattr(adapter, "pump", None)
        if pump is not None:  # registrations changed while connected
            connection.start_soon(_pump_until_drained, pump, ws, ctl)
        ctl.idle = None  # connected: from here a drain reads on
        # One watchdog for the whole connection instead of a cancel scope per frame:
        # `waiting.since` is when the read began.
        waiting = _Waiting()
        connection.start_soon(_watch_stale, waiting, stale_s)
        unregistered = False
        # One scope for the connection's reads, not one per frame: a drain gives it a
        # deadline, renewed after every frame, so it ends once the socket has been quiet.
        with trio.CancelScope() as reading:
            ctl.read = reading
            while True:
                if ctl.stopping:
                    if not unregistered:  # the broker stops sending
                        unregistered = True
                        for msg in adapter.unregistrations():
                            await ws.send_message(msg)
                    reading.deadline = trio.current_time() + ctl.quiet_s
                waiting.since = trio.current_time()
                message = await ws.get_message()
                waiting.since = _PROCESSING
                now = time.time_ns()
                status.last_frame_ns = now
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                # Decode first (no checkpoint), then hand on the raw frame and its events as
                # one unit: a stop cannot split them.
                out = adapter.decode(text, now)
                sends: list[tuple[trio.MemorySendChannel[Any], Any]] = []
                if frames_out is not None:
                    sends.append((frames_out, Frame(now, status.name, adapter.broker, text)))
                if isinstance(out, list):
                    if out and not run.streamed:
                        run.streamed = True
                        run.backoff.reset()
                        status.state = "streaming"
                        if run.lost_at is not None:
                            gap = _gap(status, run.lost_at, now, run.gap_reason)
                            sends.append((events_out, gap))
                            if run.journal is not None:
                                run.journal([gap])
                            if frames_out is not None:
                                sends.append((frames_out, _gap_frame(gap, adapter)))
                            run.lost_at, run.gap_reason = None, ""
                    if out and run.journal is not None:
                        run.journal(out)  # before any hand-on: a kill from here loses nothing
                    if not sends:  # the usual frame: its events, no waiting
                        sends = _send_ready(events_out, out)
                    else:
                        sends += [(events_out, ev) for ev in out]
                    if not out:
                        _log_bad_frame(status.name, adapter, text)
                if sends:
                    await _deliver(sends, status)
                if not isinstance(out, list) and await adapter.on_control(ws, out, status):
                    run.backoff.reset()
        ctl.read = None
        if reading.cancelled_caught:  # quiet since the stop: done
            connection.cancel_scope.cancel()


_PROCESSING = float("inf")  # `_Waiting.since` while a frame is being handled


class _Waiting:
    """When the feed began waiting for its next frame (trio time), or `_PROCESSING`."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = _PROCESSING


async def _watch_stale(waiting: _Waiting, stale_s: float) -> None:
    """Raise `trio.TooSlowError` (a lost connection) once a read has waited `stale_s`. Wakes
    about once per `stale_s` while frames flow; time spent handing a frame on (a full
    pipeline) does not count."""
    while True:
        since = waiting.since
        if since == _PROCESSING:
            await trio.sleep(stale_s / 4)  # handling a frame: look again soon
            continue
        if trio.current_time() >= since + stale_s:
            raise trio.TooSlowError(f"no frame for {stale_s:g}s")
        await trio.sleep_until(since + stale_s)


def _send_ready(
    events_out: trio.MemorySendChannel[Event], events: list[Event]
) -> list[tuple[trio.MemorySendChannel[Any], Any]]:
    """Hand on what the edge takes without waiting (no scheduler pass per event); what is
    left, from the first event it could not take, for `_deliver`."""
    for i, ev in enumerate(events):
        try:
            events_out.send_nowait(ev)
        except trio.WouldBlock:
            return [(events_out, e) for e in events[i:]]
    return []


async def _deliver(
    sends: list[tuple[trio.MemorySendChannel[Any], Any]], status: FeedStatus
) -> None:
    """Hand on everything one received frame brought (the raw frame for the recorder, its
    events). The edges block as long as they must (lossless); only a stop (a cancel) arriving
    meanwhile bounds how long the rest may take, so a received frame is not lost to a
    shutdown. `send` is cancel-atomic: the item that was interrupted was not sent."""
    done = 0
    try:
        for chan, item in sends:
            await chan.send(item)
            done += 1
    except trio.Cancelled:
        with trio.move_on_after(DELIVER_S, shield=True) as scope:
            for chan, item in sends[done:]:
                await chan.send(item)
        if scope.cancelled_caught:
            log.error(
                "%s: stopping: %d received items not handed on in %.0fs",
                status.name,
                len(sends) - done,
                DELIVER_S,
            )
        raise


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    """The exceptions inside (nested) groups, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _gap(status: FeedStatus, lost_at: datetime, now_ns: int, reason: str = "") -> FeedGap:
    status.gaps += 1
    end = datetime.fromtimestamp(now_ns / 1e9, UTC)
    log.info("%s: streaming again after %.3fs", status.name, (end - lost_at).total_seconds())
    return FeedGap(status.name, lost_at, end, reason or status.last_error[:300] or "disconnected")


def _gap_frame(gap: FeedGap, adapter: FeedAdapter) -> Frame:
    """A gap as the recorder keeps it, so that a replay reports it too."""
    now = time.time_ns()
    return Frame(now, gap.source, adapter.broker, msgspec.json.encode(gap).decode(), "gap")


def _log_bad_frame(name: str, adapter: FeedAdapter, text: str) -> None:
    exc = adapter.take_error()
    if exc is None:
        return
    reason = getattr(exc, "reason", type(exc).__name__)
    errors = adapter.stats().get("errors")
    n = errors.get(reason, 0) if isinstance(errors, dict) else 0
    if n <= 10 or n % 1000 == 0:  # count every bad frame, log the first few of each kind
        log.warning("%s: dropped bad frame #%d (%s): %.200r", name, n, exc, text)
