"""run_redis_bridge against a real Redis: publish batches, deliver subscriptions, ride out outages.

Redis is `TRADESTREAM_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0; the `redis_url` and
`prefix` fixtures are in tests/conftest.py); unreachable, the tests skip, or fail under CI. Each
test uses its own channel prefix, so parallel runs do not collide. The reconnect test starts its
own throwaway `redis-server` on a free port so that it can kill it. Sockets are real, so time is
real: no exact-time asserts, a generous `fail_after` on each wait.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import coredis
import pytest
import trio

from tests.conftest import _unavailable
from tradestream.redis_bridge import RedisStats, run_redis_bridge

WAIT_S = 5.0
FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 0.2}


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    try:
        with trio.fail_after(WAIT_S):
            while not cond():  # noqa: ASYNC110 -- polls stats that another task writes
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise AssertionError(f"timed out waiting for: {what}") from None


@asynccontextmanager
async def listening(url: str, *channels: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    """An independent subscriber: yields the list it appends (channel, data) to."""
    got: list[tuple[str, bytes]] = []

    async def listen(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        async with (
            coredis.Redis.from_url(url) as client,
            client.pubsub(channels=list(channels), ignore_subscribe_messages=True) as pubsub,
        ):
            with trio.CancelScope() as stop:  # leave the pub/sub block normally (coredis 6.9)
                task_status.started(stop)
                async for msg in pubsub:
                    got.append((msg["channel"].decode(), msg["data"]))

    async with trio.open_nursery() as nursery:
        stop = await nursery.start(listen)
        yield got
        stop.cancel()


async def publish(url: str, channel: str, data: bytes) -> int:
    async with coredis.Redis.from_url(url) as client:
        return await client.publish(channel, data)


async def test_publishes_in_order(redis_url: str, prefix: str, nursery: trio.Nursery) -> None:
    out, out_in = trio.open_memory_channel[tuple[str, bytes]](100)
    stats = RedisStats()
    items = [(f"{prefix}a", b"1"), (f"{prefix}b", b"2"), (f"{prefix}a", b"3"), (f"{prefix}a", b"4")]
    async with listening(redis_url, f"{prefix}a", f"{prefix}b") as got:
        await nursery.start(
            partial(run_redis_bridge, redis_url, out_in, lambda c, d: None, stats=stats)
        )
        for item in items:
            out.send_nowait(item)  # queued together: one pipeline
        await wait_until(lambda: len(got) == len(items), "all published")
        await trio.sleep(0.1)  # nothing extra arrives
    assert got == items
    assert stats.published == 4 and stats.dropped == stats.errors == 0
    assert stats.as_dict()["connected"] is True


async def test_returns_when_outgoing_closes(redis_url: str, prefix: str) -> None:
    out, out_in = trio.open_memory_channel[tuple[str, bytes]](10)
    stats = RedisStats()
    async with listening(redis_url, f"{prefix}x") as got:
        out.send_nowait((f"{prefix}x", b"last"))
        out.close()
        with trio.fail_after(WAIT_S):  # drains, publishes, returns, subscriber and all
            await run_redis_bridge(
                redis_url, out_in, lambda c, d: None, stats=stats, subscribe=[f"{prefix}in"]
            )
        await wait_until(lambda: len(got) == 1, "tail published")
    assert got == [(f"{prefix}x", b"last")] and stats.published == 1


async def test_delivers_subscribed_messages(
    redis_url: str, prefix: str, nursery: trio.Nursery
) -> None:
    out, out_in = trio.open_memory_channel[tuple[str, bytes]](10)
    stats = RedisStats()
    seen: list[tuple[str, bytes]] = []
    await nursery.start(
        partial(
            run_redis_bridge,
            redis_url,
            out_in,
            lambda c, d: seen.append((c, d)),
            subscribe=[f"{prefix}sig", f"{prefix}other"],
            stats=stats,
        )
    )
    await wait_until(lambda: stats.connected, "connected and subscribed")
    assert await publish(redis_url, f"{prefix}sig", b'{"k":1}') == 1
    await publish(redis_url, f"{prefix}other", b"\x00\xff")
    await publish(redis_url, f"{prefix}unsubscribed", b"no")
    await wait_until(lambda: len(seen) == 2, "both delivered")
    assert seen == [(f"{prefix}sig", b'{"k":1}'), (f"{prefix}other", b"\x00\xff")]
    assert stats.received == 2
    out.close()


async def test_unreachable_keeps_running_and_drops() -> None:
    out, out_in = trio.open_memory_channel[tuple[str, bytes]](8)
    stats = RedisStats()
    caller_drops = 0
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    run_redis_bridge,
                    "redis://127.0.0.1:1/0",
                    out_in,
                    lambda c, d: None,
                    subscribe=["x"],
                    stats=stats,
                    **FAST,
                )
            )
            for i in range(200):  # the caller's edge: never awaits Redis
                try:
                    out.send_nowait(("x", b"%d" % i))
                except trio.WouldBlock:
                    caller_drops += 1
                if i % 20 == 0:
                    await trio.sleep(0.02)
            await wait_until(lambda: stats.errors >= 3, "several failed connects")
            await wait_until(lambda: stats.dropped + caller_drops == 200, "all accounted")
            assert not stats.connected and stats.published == 0
            assert "127.0.0.1:1" in stats.last_error or "Connection" in stats.last_error
            nursery.cancel_scope.cancel()
    assert stats.dropped > 0  # the bridge drained and dropped rather than hold them


async def test_cancel_is_clean_while_subscribed(redis_url: str, prefix: str) -> None:
    # coredis 6.9 raced its pub/sub cleanup against its connection's close when cancelled from
    # outside (ClosedResourceError about half the time); the bridge must just stop, uncounted.
    for i in range(10):
        out, out_in = trio.open_memory_channel[tuple[str, bytes]](10)
        stats = RedisStats()
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        run_redis_bridge,
                        redis_url,
                        out_in,
                        lambda c, d: None,
                        subscribe=[f"{prefix}in"],
                        stats=stats,
                    )
                )
                await wait_until(lambda s=stats: s.connected, "connected")
                out.send_nowait((f"{prefix}out", b"x"))
                await trio.sleep(0.002 * (i % 5))
                nursery.cancel_scope.cancel()
        assert stats.errors == 0 and not stats.connected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def redis_server(binary: str, port: int) -> AsyncIterator[trio.Process]:
    """A throwaway redis-server (no persistence) on `port`, killed on exit."""
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                check=False,
            )
        )
        with trio.fail_after(WAIT_S):
            while True:
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.02)
        try:
            yield proc
        finally:
            proc.kill()


@pytest.fixture
def redis_server_bin() -> str:
    path = shutil.which("redis-server")
    if path is None:
        _unavailable("redis-server is not installed (needed to kill and restart a server)")
    return str(path)


async def test_reconnects_after_server_restart(redis_server_bin: str, prefix: str) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    out, out_in = trio.open_memory_channel[tuple[str, bytes]](100)
    stats = RedisStats()
    seen: list[tuple[str, bytes]] = []
    with trio.fail_after(4 * WAIT_S):
        async with trio.open_nursery() as nursery:
            async with redis_server(redis_server_bin, port) as proc:
                await nursery.start(
                    partial(
                        run_redis_bridge,
                        url,
                        out_in,
                        lambda c, d: seen.append((c, d)),
                        subscribe=[f"{prefix}in"],
                        stats=stats,
                        **FAST,
                    )
                )
                await wait_until(lambda: stats.connected, "first session")
                async with listening(url, f"{prefix}out") as got:
                    out.send_nowait((f"{prefix}out", b"before"))
                    await wait_until(lambda: got == [(f"{prefix}out", b"before")], "published")
                proc.kill()
                await proc.wait()
            await wait_until(lambda: stats.errors >= 1 and not stats.connected, "loss seen")
            for _ in range(5):  # down: taken and dropped, never queued up
                out.send_nowait((f"{prefix}out", b"lost"))
            await wait_until(lambda: stats.dropped >= 5, "drops counted")
            assert stats.last_error

            async with redis_server(redis_server_bin, port):  # back on the same port
                await wait_until(lambda: stats.connected, "reconnected")
                async with listening(url, f"{prefix}out") as got:
                    out.send_nowait((f"{prefix}out", b"after"))
                    await wait_until(lambda: got == [(f"{prefix}out", b"after")], "resumed")
                await wait_until(lambda: stats.connected, "still connected")
                await publish(url, f"{prefix}in", b"resubscribed")
                await wait_until(
                    lambda: seen == [(f"{prefix}in", b"resubscribed")],
                    "subscription re-established",
                )
                nursery.cancel_scope.cancel()
    assert stats.published == 2
