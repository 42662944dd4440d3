"""The strong peer of the served benchmarks: an asyncio server on the `websockets` library
doing the same job as tradestream, the way a careful asyncio service would.

It reads the bench upstream (KIS wire format) over one WebSocket, decodes frames with the
same pure decoder (feeds/kis/codec.py), encodes each trade once with the same JSON
(`wire.price_update`) and hands it to every subscriber of `price:{code}` with
`websockets.broadcast()` (writes without awaiting, no per-subscriber back-pressure). Every
trade is stored: a batch every 100 ms with executemany in a thread (store/writer.py's
executemany path, the same idempotent insert; tradestream itself uses COPY on PostgreSQL).
Clients speak the subset of the client protocol the bench clients use: `subscribe` (answered
with `subscribed`); everything else is ignored.

Run: ``python -m tradestream.bench.peer UPSTREAM_WS_URL PORT DATABASE_URL CODE,CODE,...``;
prints "ready" once listening and registered upstream.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from tradestream import topics, wire
from tradestream.events import Event, Tick
from tradestream.feeds.kis.codec import KisDecoder, subscribe_message
from tradestream.store import migrate
from tradestream.store.writer import EventWriter, make_engine
from tradestream.upstream import KIS_TRADES

FLUSH_S = 0.1


async def main(upstream: str, port: int, db_url: str, codes: list[str]) -> None:
    subs: dict[str, set[ServerConnection]] = {}
    pending: list[Event] = []
    engine = make_engine(db_url)
    await asyncio.to_thread(migrate.upgrade, engine)
    writer = EventWriter(engine, bulk_copy=False)  # executemany, as the peer is defined

    async def client(ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("type") == "subscribe":
                    topic = str(msg.get("topic"))
                    subs.setdefault(topic, set()).add(ws)
                    await ws.send(wire.subscribed(topic))
        except ConnectionClosed:
            pass
        finally:
            for s in subs.values():
                s.discard(ws)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            if pending:
                batch = pending[:]
                pending.clear()
                await asyncio.to_thread(writer.write, batch)

    decoder = KisDecoder("peer")
    async with serve(client, "127.0.0.1", port, compression=None, ping_interval=None):
        async with connect(upstream, compression=None, max_size=None, ping_interval=None) as up:
            for code in codes:
                await up.send(subscribe_message("bench-approval-key", KIS_TRADES, code))
            print("ready", flush=True)
            flush = asyncio.create_task(flusher())  # the peer is plain asyncio, as its users write
            try:
                async for frame in up:
                    out = decoder.decode(str(frame), time.time_ns())
                    if not isinstance(out, list):
                        continue  # an ack
                    for ev in out:
                        if type(ev) is Tick:
                            watchers = subs.get(topics.price(ev.code))
                            if watchers:
                                broadcast(watchers, wire.price_update(ev))
                        pending.append(ev)
            finally:
                flush.cancel()


if __name__ == "__main__":
    url, port, db, codes = sys.argv[1:5]
    try:
        asyncio.run(main(url, int(port), db, codes.split(",")))
    except KeyboardInterrupt:
        pass
