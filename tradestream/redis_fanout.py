"""Client-facing messages over a Redis stream, from an ingest process to gateway processes
(`tradestream run --role ingest` / `--role gateway`).

The ingest's hub is a `TeeHub`: it serves its own clients as any hub, and hands every message
(each encoded once) to `run_stream_out`, which appends them to one Redis stream, one pipelined
round trip per batch, never one command per message per client. Each entry: `k` (`l` latest,
conflatable; `p` lossless on a topic; `b` to every client; `v` the topic's subscriptions end
(its upstream slot was lost) with this message; `x` the ingest stopped cleanly),
`t` the topic, `y` the message type,
`p` the payload, `o` and `e` the ingest's history offset (the message's own for `p`, else the
last one given) and epoch. The stream is capped (MAXLEN ~, `STREAM_MAXLEN`).

A gateway's `run_stream_in` reads the stream from its end (XREAD BLOCK) and publishes each entry
into its own hub, keeping the latest message of each conflatable topic for new subscribers'
snapshots (`RemoteMarket`, its `MarketView`) and mirroring the ingest's history of lossless
messages, offsets and epoch as they are (`History.follow`), so a client that comes back on any
gateway resumes where it left. A gateway reads the stream from its first entry when it starts,
so it starts with the latest values and the history the stream still holds. Both ends
reconnect with backoff; the edge into Redis is bounded and drops (counted) when Redis is away,
so intake and storage never wait for it. Needs the `redis` extra (coredis).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import coredis
import trio
from coredis.tokens import PureToken

from tradestream.hub import Hub, Msg
from tradestream.redis_bridge import COMMAND_TIMEOUT_S, reconnecting

log = logging.getLogger(__name__)

STREAM = "tradestream:stream"
STREAM_MAXLEN = 100_000
OUT_BUFFER = 50_000  # messages waiting for Redis before new ones are dropped
BATCH = 500
INTERVAL_S = 0.005  # at most one append command per this: the CPU it saves (bench scale)
READ_COUNT = 1000
BLOCK_MS = 1000


@dataclass
class FanoutStats:
    sent: int = 0
    batches: int = 0  # append commands
    dropped: int = 0  # Redis away and the buffer full
    received: int = 0
    connects: int = 0
    fenced: int = 0  # refused: a newer ingest holds the lease
    last_error: str = ""
    finished: trio.Event = field(default_factory=trio.Event, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "finished"}


Entry = tuple[bytes, str, str, str, int, str]  # kind, topic, type, payload, offset, epoch


class TeeHub(Hub):
    """A hub that also hands every message to the Redis stream (the ingest role's)."""

    def __init__(self, outbox_max: int = 1024, **kw: Any) -> None:
        super().__init__(outbox_max, **kw)
        self.out, self.out_in = trio.open_memory_channel[Entry](OUT_BUFFER)
        self.fanout = FanoutStats()

    def has_subscribers(self, topic: str) -> bool:
        return True  # the gateways' clients may watch anything: everything goes out

    def _tee(self, kind: bytes, topic: str, msg: Msg) -> None:
        h = self.history
        try:
            if h is None:
                self.out.send_nowait((kind, topic, msg.kind, msg.payload, 0, ""))
            else:
                offset = msg.offset if kind == b"p" else h.offset
                self.out.send_nowait((kind, topic, msg.kind, msg.payload, offset, h.epoch))
        except trio.WouldBlock:
            self.fanout.dropped += 1

    def publish_latest(self, topic: str, msg: Msg) -> int:
        self._tee(b"l", topic, msg)
        return super().publish_latest(topic, msg)

    def publish(self, topic: str, msg: Msg) -> int:
        n = super().publish(topic, msg)  # stamps the history's offset first
        self._tee(b"p", topic, msg)
        return n

    def broadcast(self, msg: Msg) -> int:
        self._tee(b"b", "", msg)
        return super().broadcast(msg)

    def revoke(self, topic: str, msg: Msg, *, user: str | None = None) -> int:
        if user is None:  # the pipeline's (a slot lost): the gateways' clients too
            self._tee(b"v", topic, msg)
        return super().revoke(topic, msg, user=user)

    def finish(self) -> None:
        """Mark the stream's end for this ingest: a clean stop, not a death (the next ingest
        announces no takeover gap). `run_stream_out` sets `finished` once it is written."""
        self._tee(b"x", "", Msg("{}", "end"))


# Appends a batch to the stream unless a newer lease holder exists (the fence is larger than
# our token): one command per batch, atomic with the check. ARGV: token, maxlen, then six
# values per entry.
_FENCED_XADD = """
local f = redis.call('GET', KEYS[2])
if f and tonumber(f) > tonumber(ARGV[1]) then return -1 end
for i = 3, #ARGV, 6 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[i], 't', ARGV[i + 1],
             'y', ARGV[i + 2], 'p', ARGV[i + 3], 'o', ARGV[i + 4], 'e', ARGV[i + 5])
end
return (#ARGV - 2) / 6
"""


@dataclass(frozen=True)
class StreamFence:
    """The lease's fence key and our token: appends are refused once a newer holder exists,
    and `deposed()` is called."""

    key: str
    token: int
    deposed: Callable[[], None]


async def run_stream_out(
    url: str,
    hub: TeeHub,
    *,
    stream: str = STREAM,
    fence: StreamFence | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Append the hub's messages to `stream` until cancelled, reconnecting with backoff. With
    `fence`, each batch goes in by one script that refuses it to a deposed holder; then nothing
    more is sent."""
    stats, source = hub.fanout, hub.out_in

    async def send(r: coredis.Redis[bytes]) -> None:
        last_sent = -INTERVAL_S
        while True:
            batch = [await source.receive()]
            # At most one command per INTERVAL_S: a command costs coredis about 250 µs of
            # CPU whatever it carries (2 µs more per entry), so under load what comes before
            # the next turn joins the batch (one wake-up for all of it); a lone message after
            # a quiet spell goes at once.
            await trio.sleep_until(last_sent + INTERVAL_S)
            while len(batch) < BATCH:
                try:
                    batch.append(source.receive_nowait())
                except trio.WouldBlock:
                    break
            if fence is None:
                async with r.pipeline(transaction=False) as pipe:
                    for kind, topic, mtype, payload, offset, epoch in batch:
                        pipe.xadd(
                            stream,
                            {
                                "k": kind,
                                "t": topic,
                                "y": mtype,
                                "p": payload,
                                "o": offset,
                                "e": epoch,
                            },  # fmt: skip
                            trim_strategy=PureToken.MAXLEN,
                            trim_operator=PureToken.APPROXIMATELY,
                            threshold=STREAM_MAXLEN,
                        )
            else:
                args: list[Any] = [fence.token, STREAM_MAXLEN]
                for entry in batch:
                    args += entry
                if await r.eval(_FENCED_XADD, keys=[stream, fence.key], args=args) == -1:
                    stats.fenced += len(batch)
                    log.error("stream out: a newer ingest holds the lease; publishing stops")
                    fence.deposed()
                    await trio.sleep_forever()
            last_sent = trio.current_time()
            stats.sent += len(batch)
            stats.batches += 1
            if batch[-1][0] == b"x":
                stats.finished.set()

    task_status.started()
    await reconnecting(url, stats, "stream out", send)


@dataclass
class RemoteMarket:
    """The gateway role's `MarketView`: the latest message of each conflatable topic as read
    from the stream; the rest (accounts, ticks as objects) lives in the ingest process."""

    latest: dict[str, Msg] = field(default_factory=dict)

    def tick(self, code: str) -> None:
        return None

    def book(self, code: str) -> None:
        return None

    def last_message(self, topic: str) -> Msg | None:
        return self.latest.get(topic)

    def account_snapshot(self, accounts: Iterable[str]) -> dict[str, Any]:
        return {"accounts": []}

    def account_names(self) -> list[str]:
        return []

    def traded_codes(self) -> list[str]:
        return sorted(t[6:] for t in self.latest if t.startswith("price:"))

    def name(self, code: str) -> str:
        return ""


async def run_stream_in(
    url: str,
    hub: Hub,
    market: RemoteMarket,
    stats: FanoutStats,
    *,
    stream: str = STREAM,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish the stream's new entries into `hub` until cancelled; reconnect with backoff,
    resuming after the last entry read. started(): the stream as it was is read (the latest
    values and the history are there for the first clients), or Redis did not answer within
    COMMAND_TIMEOUT_S (then clients are served meanwhile, and a recovery it cannot vouch for
    yet says so)."""
    last: str | bytes = "0-0"  # from the first entry: the latest values and the history
    key = stream.encode()
    caught_up = trio.Event()

    async def read(r: coredis.Redis[bytes]) -> None:
        nonlocal last
        while True:
            block = BLOCK_MS if caught_up.is_set() else None
            found = await r.xread({stream: last}, count=READ_COUNT, block=block)
            entries = (found or {}).get(key) or ()
            for entry in entries:
                last = entry.identifier
                _deliver(hub, market, entry.field_values)
                stats.received += 1
            if len(entries) < READ_COUNT:
                caught_up.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconnecting, url, stats, "stream in", read)
        with trio.move_on_after(COMMAND_TIMEOUT_S):
            await caught_up.wait()
        task_status.started()


def _deliver(hub: Hub, market: RemoteMarket, fields: dict[Any, Any]) -> None:
    def get(name: str) -> str:
        v = fields.get(name.encode(), fields.get(name, b""))
        return v.decode() if isinstance(v, bytes) else str(v)

    kind, topic, msg = get("k"), get("t"), Msg(get("p"), get("y"))
    history, epoch = hub.history, get("e")
    if history is not None and epoch:
        offset = int(get("o") or 0)
        history.follow(epoch, offset, lossless=kind == "p")
        if kind == "p":
            msg.offset = offset  # stamped by the ingest: recorded as it is
    if kind == "l":
        market.latest[topic] = msg
        hub.publish_latest(topic, msg)
    elif kind == "p":
        hub.publish(topic, msg)
    elif kind == "b":
        hub.broadcast(msg)
    elif kind == "v":
        hub.revoke(topic, msg)
