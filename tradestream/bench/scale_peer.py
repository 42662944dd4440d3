"""The strong peer of the scale benchmark (bench/scale.py): the seed design's way to scale out,
on asyncio, one ingest process and any number of gateway processes over Redis pub/sub.

- ingest: reads the bench upstream (KIS wire format) over one WebSocket and decodes it as
  bench/peer.py does (the same pure decoder, feeds/kis/codec.py), encodes each trade once
  (`wire.price_update`), stores every trade (executemany every 100 ms in a thread, as
  bench/peer.py), serves its own clients with `websockets.broadcast()` and PUBLISHes each
  encoded trade on the Redis channel PREFIX + topic (`price:{code}`): what arrived since the
  last round trip goes out as one pipeline, so the decoding loop never waits for Redis;
- gateway: SUBSCRIBEs to the price channels of CODES and `broadcast()`s each message to its
  clients of that topic.

Clients speak the subset of the client protocol the bench clients use: `subscribe`, answered
with `subscribed`; anything else is ignored. Redis is coredis's asyncio client (redis-py is
not a dependency of the project).

Run: ``python -m tradestream.bench.scale_peer ingest UPSTREAM_WS PORT DATABASE_URL CODES
REDIS_URL PREFIX`` or ``... gateway PORT CODES REDIS_URL PREFIX`` (CODES: comma-separated);
each prints "ready" once it serves (the ingest: once registered upstream too).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import coredis
import msgspec
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from tradestream import topics, wire
from tradestream.events import Event, Tick
from tradestream.feeds.kis.codec import KisDecoder, subscribe_message
from tradestream.store import migrate
from tradestream.store.writer import EventWriter, make_engine
from tradestream.upstream import KIS_TRADES

STORE_EVERY_S = 0.1

Audience = dict[str, set[ServerConnection]]  # topic -> the sockets subscribed to it


def clients_of(audience: Audience) -> Callable[[ServerConnection], Awaitable[None]]:
    """The connection handler: each `subscribe` adds the socket to its topic's audience."""

    async def handler(ws: ServerConnection) -> None:
        joined: list[str] = []
        try:
            async for raw in ws:
                try:
                    msg = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    continue
                topic = msg.get("topic") if isinstance(msg, dict) else None
                if isinstance(topic, str) and msg.get("type") == "subscribe":
                    audience.setdefault(topic, set()).add(ws)
                    joined.append(topic)
                    await ws.send(wire.subscribed(topic))
        except ConnectionClosed:
            pass
        finally:
            for topic in joined:
                audience[topic].discard(ws)

    return handler


def _serve(audience: Audience, port: int) -> AbstractAsyncContextManager[Any]:
    return serve(clients_of(audience), "127.0.0.1", port, compression=None, ping_interval=None)


async def ingest(
    upstream: str, port: int, db_url: str, codes: list[str], redis_url: str, prefix: str
) -> None:
    audience: Audience = {}
    rows: list[Event] = []
    outgoing: list[tuple[str, str]] = []
    more = asyncio.Event()
    engine = make_engine(db_url)
    await asyncio.to_thread(migrate.upgrade, engine)
    writer = EventWriter(engine, bulk_copy=False)  # executemany, as bench/peer.py

    async def store() -> None:
        while True:
            await asyncio.sleep(STORE_EVERY_S)
            if rows:
                batch = rows[:]
                rows.clear()
                await asyncio.to_thread(writer.write, batch)

    async def publish(r: coredis.Redis[bytes]) -> None:
        while True:
            await more.wait()
            more.clear()
            batch = outgoing[:]
            outgoing.clear()
            async with r.pipeline(transaction=False) as pipe:
                for channel, text in batch:
                    pipe.publish(channel, text)

    decoder = KisDecoder("scale-peer")
    async with coredis.Redis.from_url(redis_url) as r, _serve(audience, port):
        async with connect(upstream, compression=None, max_size=None, ping_interval=None) as up:
            for code in codes:
                await up.send(subscribe_message("bench-approval-key", KIS_TRADES, code))
            print("ready", flush=True)
            tasks = [asyncio.create_task(store()), asyncio.create_task(publish(r))]
            try:
                async for frame in up:
                    decoded = decoder.decode(str(frame), time.time_ns())
                    for ev in decoded if isinstance(decoded, list) else ():
                        rows.append(ev)
                        if type(ev) is not Tick:
                            continue
                        topic, text = topics.price(ev.code), wire.price_update(ev)
                        local = audience.get(topic)
                        if local:
                            broadcast(local, text)
                        outgoing.append((prefix + topic, text))
                        more.set()
            finally:
                for task in tasks:
                    task.cancel()


async def gateway(port: int, codes: list[str], redis_url: str, prefix: str) -> None:
    audience: Audience = {}
    channels = [prefix + topics.price(code) for code in codes]
    cut = len(prefix)
    async with (
        coredis.Redis.from_url(redis_url, decode_responses=True) as r,
        _serve(audience, port),
    ):
        async with r.pubsub(channels=channels, ignore_subscribe_messages=True) as subscription:
            print("ready", flush=True)
            async for message in subscription:
                watchers = audience.get(str(message["channel"])[cut:])
                data = message["data"]
                if watchers and isinstance(data, str):
                    broadcast(watchers, data)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    try:
        if role == "ingest":
            url, port, db, codes, redis_url, prefix = args
            asyncio.run(ingest(url, int(port), db, codes.split(","), redis_url, prefix))
        else:
            port, codes, redis_url, prefix = args
            asyncio.run(gateway(int(port), codes.split(","), redis_url, prefix))
    except KeyboardInterrupt:
        pass
