"""Redis bridge: publish (channel, payload) pairs to Redis and deliver subscribed messages.

`run_redis_bridge` owns one coredis client at a time (its connection pool and, when there are
subscriptions, one pub/sub connection) and the receive end of `outgoing`. Redis is a lossy edge
here, by design: alerts fan out to other nodes and signals come in from workers (Celery → Redis →
WebSocket), and nothing downstream of it must ever wait for it. Needs the `redis` extra (coredis).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

import anyio
import coredis
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from tradestream.backoff import Backoff

log = logging.getLogger(__name__)

MAX_BATCH = 500  # publishes per pipeline round trip (STACK-NOTES §5: ~300 µs per command)
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0  # a PING or one pipeline; longer means the server is lost
# Lost connection, refused connect, protocol/handshake error, a hung server, a subscribe that
# is never acknowledged (builtin TimeoutError from coredis), and coredis's anyio streams closed
# under it when its connection dies.
REDIS_LOST = (
    RedisError,
    OSError,
    TimeoutError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


@dataclass
class RedisStats:
    """Live state of the bridge; written by its task, read by the status endpoint."""

    published: int = 0
    received: int = 0
    dropped: int = 0  # taken from `outgoing` but not published (Redis down, or lost mid-batch)
    errors: int = 0  # sessions lost or connects failed
    # The session answered PING and confirmed subscriptions. Without subscriptions (no pub/sub
    # keepalive) a silent loss shows only at the next publish, which reconnects by itself.
    connected: bool = False
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def run_redis_bridge(
    url: str,
    outgoing: trio.MemoryReceiveChannel[tuple[str, bytes]],
    on_message: Callable[[str, bytes], None],
    *,
    subscribe: Sequence[str] = (),
    stats: RedisStats,
    backoff_initial_s: float = 0.25,
    backoff_cap_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish what arrives on `outgoing`; call `on_message(channel, data)` for `subscribe`.

    Publishing: whatever is queued (up to MAX_BATCH) goes out in one non-transactional pipeline,
    so a burst costs one round trip. The edge into `outgoing` is the caller's: it must use
    `send_nowait` and count `WouldBlock` as a drop, so neither Redis nor this task ever blocks
    the caller. Subscriptions: each pub/sub message is handed to `on_message` at once, in this
    task; it must be cheap and must not raise (validate, then `send_nowait` into a bounded
    channel). That keeps coredis's unbounded pub/sub buffer empty. An exception from it is a bug
    and ends the bridge.

    started(): at once, meaning "running", not "connected" (see `stats.connected`).
    Redis down or lost: counted in `stats.errors`/`last_error`, logged, and retried after a
    capped exponential backoff with jitter (reset once a session answers PING); subscriptions
    are made anew each session. A batch that fails mid-publish, and everything that arrives on
    `outgoing` while down, is dropped and counted in `stats.dropped`: memory stays bounded and
    nothing stale is replayed. A lost pub/sub connection loses what was published meanwhile
    (Redis pub/sub has no replay). Returns once `outgoing` is closed and drained (subscriptions
    end with it); closes `outgoing`. Cancellation is clean: all tasks live in scopes it opens.
    """
    delays = Backoff(backoff_initial_s, backoff_cap_s)
    with outgoing:
        task_status.started()
        while True:
            lost: BaseException | None = None
            try:
                await _session(url, outgoing, on_message, subscribe, stats, delays.reset)
                return  # outgoing closed and drained
            except* REDIS_LOST as group:
                lost = first_leaf(group)
            finally:
                stats.connected = False
            # Being cancelled? coredis's teardown can then replace Cancelled with what looks
            # like an outage (its pub/sub cleanup races its connection's close and raises
            # ClosedResourceError). The checkpoint lets Cancelled win, uncounted and unlogged.
            await trio.lowlevel.checkpoint()
            stats.errors += 1
            stats.last_error = repr(lost)
            log.warning("redis bridge: lost (%s), retry in %.2fs", stats.last_error, delays.peek())
            with trio.move_on_after(delays.next()):
                async for _ in outgoing:  # down: drop what arrives (bounded memory)
                    stats.dropped += 1
                return  # outgoing closed while down


async def _session(
    url: str,
    outgoing: trio.MemoryReceiveChannel[tuple[str, bytes]],
    on_message: Callable[[str, bytes], None],
    subscribe: Sequence[str],
    stats: RedisStats,
    on_ready: Callable[[], None],
) -> None:
    """One client's life: connect, subscribe, publish until `outgoing` ends or Redis fails."""
    client = redis_client(url)
    async with client, trio.open_nursery() as nursery:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            await client.ping()
        unsubscribe = trio.CancelScope()  # nothing to stop without subscriptions
        if subscribe:
            unsubscribe = await nursery.start(_deliver, client, subscribe, on_message, stats)
        stats.connected = True
        on_ready()
        await _publish(client, outgoing, stats)
        unsubscribe.cancel()  # outgoing ended: the subscriber goes with it


async def _deliver(
    client: coredis.Redis[bytes],
    channels: Sequence[str],
    on_message: Callable[[str, bytes], None],
    stats: RedisStats,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Subscribe and hand on messages. started(scope): subscribed; cancel `scope` to leave
    cleanly (the pub/sub block must end normally for coredis to unsubscribe in order)."""
    # retry_policy=None: coredis would otherwise resubscribe forever on its own, unseen by us.
    async with client.pubsub(
        channels=list(channels), ignore_subscribe_messages=True, retry_policy=None
    ) as pubsub:  # subscriptions acknowledged here
        with trio.CancelScope() as stop:
            task_status.started(stop)
            async for message in pubsub:
                if message["type"] == "message":
                    stats.received += 1
                    channel = message["channel"]
                    # A "message" carries the published payload: bytes, as the client does
                    # not decode responses (the int data is for (un)subscribe replies).
                    data = cast(bytes, message["data"])
                    on_message(
                        channel.decode(errors="replace")
                        if isinstance(channel, bytes)
                        else str(channel),
                        data,
                    )
    if not stop.cancel_called:  # coredis ended the iteration: no longer subscribed
        raise RedisConnectionError("pub/sub ended")


async def _publish(
    client: coredis.Redis[bytes],
    outgoing: trio.MemoryReceiveChannel[tuple[str, bytes]],
    stats: RedisStats,
) -> None:
    async for first in outgoing:
        batch = [first]
        while len(batch) < MAX_BATCH:  # take what is already queued; never wait for more
            try:
                batch.append(outgoing.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        try:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                async with client.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
        except BaseException:  # lost, timed out or cancelled: whether it went out is unknown
            stats.dropped += len(batch)
            raise
        stats.published += len(batch)


@functools.cache
def _closing_streams(base: type[coredis.BaseConnection]) -> type[coredis.BaseConnection]:
    """`base`, but closing its anyio memory streams when it ends, connected or not.

    coredis 6.9 creates them in __init__ and closes them only after a successful connect; a
    refused connect leaves them to the GC, whose ResourceWarning then lands (an error under
    `-W error`) in whatever runs at the time.
    """

    class ClosingStreams(base):  # type: ignore[valid-type, misc]
        async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await super().run(task_status=task_status)
            finally:
                for value in vars(self).values():
                    if isinstance(value, (MemoryObjectSendStream, MemoryObjectReceiveStream)):
                        value.close()

    return ClosingStreams


def redis_client(url: str) -> coredis.Redis[bytes]:
    """A coredis client as every Redis user here needs it: no retries of its own (they are
    ours, with backoff: a coredis retry of a pipeline could send it twice), bounded connect
    and command times, and connections that close their streams when they die."""
    client = coredis.Redis.from_url(
        url,
        retry_policy=NoRetryPolicy(),
        connect_timeout=CONNECT_TIMEOUT_S,
        stream_timeout=COMMAND_TIMEOUT_S,
    )
    pool = client.connection_pool
    base: type[coredis.BaseConnection] = pool.connection_class
    pool.connection_class = _closing_streams(base)
    return client


def first_leaf(exc: BaseException) -> BaseException:
    """coredis nests its errors in anyio task-group groups; name the first real one."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Connects(Protocol):
    """What `reconnecting` keeps up to date."""

    connects: int
    last_error: str


async def reconnecting(
    url: str, stats: Connects, what: str, body: Callable[[coredis.Redis[bytes]], Awaitable[None]]
) -> None:
    """Run `body` on a connected client, again on a new one (after a backoff) whenever Redis
    is lost; until cancelled."""
    backoff = Backoff(0.25, 5.0)
    while True:
        lost: BaseException | None = None
        try:
            async with redis_client(url) as r:
                with trio.fail_after(COMMAND_TIMEOUT_S):
                    await r.ping()
                stats.connects += 1
                backoff.reset()
                await body(r)
        except* (*REDIS_LOST, trio.TooSlowError) as group:  # coredis nests them in groups
            lost = first_leaf(group)
        # being cancelled: coredis's teardown can dress the Cancelled up as an outage; this
        # checkpoint lets the Cancelled win
        await trio.lowlevel.checkpoint()
        stats.last_error = repr(lost)[:300]
        delay = backoff.next()
        log.warning("redis %s: %r; reconnecting in %.1f s", what, lost, delay)
        await trio.sleep(delay)
