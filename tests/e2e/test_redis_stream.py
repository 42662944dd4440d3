"""The ingest's stream to the gateways, in one process on the real Redis: what an ingest's
`TeeHub` publishes reaches a gateway's hub with the ingest's offsets; a gateway that starts
late reads the stream from its start before it says it is up (latest values, the history);
a stale lease holder's appends are refused by the stream's fence."""

from __future__ import annotations

import uuid
from functools import partial

import coredis
import trio

from tradestream.history import History
from tradestream.hub import Hub, Msg
from tradestream.redis_fanout import (
    READ_COUNT,
    FanoutStats,
    RemoteMarket,
    StreamFence,
    TeeHub,
    run_stream_in,
    run_stream_out,
)


def signal(n: int) -> Msg:
    return Msg(f'{{"type":"signal_update","n":{n}}}', "signal_update")


async def test_a_late_gateway_reads_the_whole_stream_before_it_is_up(redis_url: str) -> None:
    stream = f"ts-test:{uuid.uuid4().hex[:12]}:stream"
    n = READ_COUNT * 2 + 500  # more than one read
    ingest = TeeHub(history=History(epoch="ing"))
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_stream_out, redis_url, ingest, stream=stream))
                for i in range(1, n + 1):  # 5,000 messages: the edge holds 50,000
                    ingest.publish("signal:vcp", signal(i))
                    ingest.publish_latest("price:005930", Msg(f'{{"p":{i}}}', "price_update"))
                ingest.finish()
                await ingest.fanout.finished.wait()
                gw = Hub(history=History(epoch="gw"))
                market = RemoteMarket()
                await nursery.start(
                    partial(run_stream_in, redis_url, gw, market, FanoutStats(), stream=stream)
                )
                # up only now: everything before is there
                assert gw.history is not None and gw.history.epoch == "ing"
                assert gw.history.offset == n
                ok, missed = gw.history.since(["signal:vcp"], n - 3, "ing")
                assert ok and [m.offset for m in missed] == [n - 2, n - 1, n]
                latest = market.last_message("price:005930")
                assert latest is not None and latest.payload == f'{{"p":{n}}}'
                nursery.cancel_scope.cancel()
    finally:
        async with coredis.Redis.from_url(redis_url) as r:
            await r.delete([stream])


async def test_a_deposed_holder_cannot_append(redis_url: str) -> None:
    stream = f"ts-test:{uuid.uuid4().hex[:12]}:stream"
    fence_key = f"{stream}:fence"
    hub = TeeHub()
    deposed = trio.Event()
    try:
        async with coredis.Redis.from_url(redis_url) as r:
            await r.set(fence_key, "3")
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    fence = StreamFence(fence_key, 3, lambda: None)
                    await nursery.start(
                        partial(run_stream_out, redis_url, hub, stream=stream, fence=fence)
                    )
                    hub.broadcast(Msg('{"n":1}', "x"))
                    while hub.fanout.sent < 1:  # noqa: ASYNC110  (Redis, another party)
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
                await r.set(fence_key, "4")  # a newer holder
                stale = TeeHub()
                async with trio.open_nursery() as nursery:
                    fence = StreamFence(fence_key, 3, deposed.set)
                    await nursery.start(
                        partial(run_stream_out, redis_url, stale, stream=stream, fence=fence)
                    )
                    stale.broadcast(Msg('{"n":2}', "x"))
                    await deposed.wait()
                    nursery.cancel_scope.cancel()
                entries = await r.xrange(stream)
    finally:
        async with coredis.Redis.from_url(redis_url) as r:
            await r.delete([stream, fence_key])
    assert [e.field_values[b"p"] for e in entries] == [b'{"n":1}']
    assert stale.fanout.fenced == 1 and stale.fanout.sent == 0
