"""Per-topic history of lossless messages, for recovery after a reconnect (Centrifugo's idea,
in memory, one process).

Every message published on a lossless topic (orders, alerts, signals, news, strategies) gets
an `offset` from one counter per process, stamped once into its payload with the process's
`epoch`, so the same message on several topics (an alert on `alert` and `alert:{code}`) is
one message with one offset. Each topic keeps its last `size` messages for at most `ttl_s`.

A client that saw a topic up to `offset` in `epoch` asks `since(keys, offset, epoch)`: it gets
the topic's later messages in order and `True` if the history still holds everything after
that offset; `False` (and nothing) when the epoch is another process's, or messages after the
offset were already trimmed, so a partial replay is never presented as complete. Offsets are
global, so a topic's offsets have gaps: the rule compares against what was trimmed, never
against a gap. Topics beyond `max_topics` are forgotten oldest first; a forgotten topic's last
offset raises a floor below which nothing is recoverable for a topic without history.

A gateway fed from the ingest's stream (redis_fanout.py) keeps a mirror: `follow` adopts the
ingest's epoch and offsets as its messages arrive, so a client may resume on any gateway. The
mirror vouches only for what it saw: a new epoch starts it afresh, and a hole in the offsets
(messages that never reached it) raises `start`, below which nothing is recoverable.

Pure and synchronous (time from `clock`): the hub calls `record` as it publishes.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Protocol


class Stamped(Protocol):
    payload: str
    offset: int


class _Topic:
    __slots__ = ("items", "trimmed")

    def __init__(self) -> None:
        self.items: deque[tuple[int, float, Stamped]] = deque()
        self.trimmed = 0  # the highest offset dropped from this topic


class History:
    def __init__(
        self,
        size: int = 1000,
        ttl_s: float = 600.0,
        *,
        max_topics: int = 10_000,
        epoch: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.max_topics = max_topics
        self.epoch = epoch or secrets.token_hex(4)
        self.offset = 0  # the last offset given
        self._clock = clock
        self._topics: OrderedDict[str, _Topic] = OrderedDict()
        self._floor = 0  # the highest offset of a forgotten topic
        self.start = 0  # everything after this offset was seen (a mirror may begin later)
        self._tail = ',"epoch":"' + self.epoch + '"}'

    def follow(self, epoch: str, offset: int, *, lossless: bool) -> None:
        """Mirror mode: a message of another process's history arrives, with that process's
        `epoch` and `offset` (the message's own offset if `lossless`, else the last offset
        given there before it). Call before `record`ing a lossless message (whose offset is
        already set). A new epoch forgets everything; a jump in the offsets is a hole."""
        last_seen = offset - 1 if lossless else offset  # all before the message
        if epoch != self.epoch:
            self.epoch = epoch
            self._tail = ',"epoch":"' + epoch + '"}'
            self._topics.clear()
            self._floor = 0
            self.start = self.offset = last_seen
        elif last_seen > self.offset:  # offsets in between never came: not recoverable
            self.start = max(self.start, last_seen)
        self.offset = max(self.offset, offset)

    def stamp(self, msg: Stamped) -> None:
        """Give `msg` the next offset, in its payload too (once: a later call keeps it)."""
        if msg.offset:
            return
        self.offset += 1
        msg.offset = self.offset
        msg.payload = msg.payload[:-1] + ',"offset":' + str(self.offset) + self._tail

    def record(self, topic: str, msg: Stamped) -> None:
        self.stamp(msg)
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic()
            if len(self._topics) > self.max_topics:
                _, gone = self._topics.popitem(last=False)
                self._floor = max(self._floor, gone.trimmed, *(o for o, _, _ in gone.items))
        else:
            self._topics.move_to_end(topic)
        now = self._clock()
        t.items.append((msg.offset, now, msg))
        self._trim(t, now)

    def _trim(self, t: _Topic, now: float) -> None:
        items = t.items
        while items and (len(items) > self.size or now - items[0][1] > self.ttl_s):
            t.trimmed = items.popleft()[0]

    def since(self, keys: Iterable[str], offset: int, epoch: str) -> tuple[bool, list[Stamped]]:
        """Everything after `offset` on `keys`, in offset order, and whether that is all."""
        if epoch != self.epoch or offset > self.offset or offset < self.start:
            return False, []
        now = self._clock()
        out: list[tuple[int, Stamped]] = []
        for key in keys:
            t = self._topics.get(key)
            if t is None:
                if offset < self._floor:
                    return False, []
                continue
            self._trim(t, now)
            if offset < t.trimmed:
                return False, []
            out += [(o, m) for o, _, m in t.items if o > offset]
        out.sort(key=lambda x: x[0])
        seen: set[int] = set()
        msgs = []
        for o, m in out:  # one message on two keys (an admin's order topics) comes once
            if o not in seen:
                seen.add(o)
                msgs.append(m)
        return True, msgs
