"""Fan-out from the pipeline to gateway clients: topics, subscribers and per-client outboxes.

Publishing never awaits a client. Each client has an `Outbox`:
- *conflated* messages (prices) keep only the latest payload per topic while the client is
  behind, so a slow reader costs one pending message per topic, never a growing queue;
- *lossless* messages (replies, later orders and alerts) queue up to a bound; past it the
  client is closed as a slow consumer so that it reconnects and recovers, and nobody else waits.

A message is a `Msg`: the encoded text (once per event), its WebSocket frame (built once, on
first use), its type and the event's upstream receive time, shared by reference by every
subscriber.

Nothing wakes per message while clients keep up: a message that finds its client's outbox
empty is offered to the connection's direct path first (`Outbox.direct`: written onto the
socket by the publisher, without waiting); a batch client's messages are written by one task
for all of them once the publisher yields (`run_coalescer`, one frame per client and burst).
Only a client whose socket is busy or full gets its queue and its sender task woken.

Cadenced subscriptions (``price:005930@1s``) are groups per (topic, period): publishing only
marks the group's latest message, and `run_cadence` hands it to the group's subscribers at
most once per period. A topic nobody watches has no group, no timer and no encoding.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from tradestream.history import History
from tradestream.wire import CLOSE_GOING_AWAY, CLOSE_HEARTBEAT, CLOSE_SLOW_CONSUMER


def text_frame(payload: bytes) -> bytes:
    """A server-to-client WebSocket text frame (RFC 6455 §5.2): FIN, opcode 1, unmasked, so
    its bytes are the same for every client."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


MAX_COALESCED = 256  # messages the coalescer puts in one frame for a batch client


class Msg:
    """One outgoing message, shared by every client it goes to: its text, and the WebSocket
    frame of that text, built once when a client first needs it."""

    __slots__ = ("payload", "kind", "ns", "_frame", "bucket", "age_s", "offset")

    def __init__(self, payload: str, kind: str = "reply", ns: int = 0) -> None:
        self.payload = payload
        self.kind = kind  # the message type, for the metrics
        self.ns = ns  # upstream receive time (wall clock, ns), 0 for replies
        self._frame: bytes | None = None
        # Its age at its first direct write, as the latency histogram's bucket index and
        # seconds (GatewayMetrics.observe_direct): the publisher writes it to every idle
        # subscriber within one pass, so the age is measured once for all of them.
        self.bucket = -1
        self.age_s = 0.0
        self.offset = 0  # its place in the lossless topics' history (history.py), 0: none

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.payload.encode())
        return self._frame

    def __repr__(self) -> str:
        return f"Msg({self.payload!r})"


class _Pending:
    """Queue marker for a conflated topic; the payload is looked up when it is sent."""

    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic


@dataclass(frozen=True)
class CloseRequest:
    code: int
    reason: str


class Outbox:
    """A bounded, conflating queue of outgoing text frames for one client."""

    def __init__(self, max_lossless: int) -> None:
        self._queue: deque[Msg | _Pending] = deque()
        self._latest: dict[str, Msg | list[Msg]] = {}
        self._lossless = 0
        self._max_lossless = max_lossless
        self._lot = trio.lowlevel.ParkingLot()
        self.close_request: CloseRequest | None = None
        self.sent = 0
        self.conflated = 0
        self.discarded = 0  # queued messages thrown away by a close
        # Set by the connection once its socket can be written without waiting: a message
        # that finds the queue empty is handed to it first (no task wakes up for it). It
        # returns False when it cannot take the message now; then the message is queued.
        self.direct: Callable[[Msg], bool] | None = None
        self.direct_sent = 0
        self._flush = False
        # A batch client's coalescing path (Hub.run_coalescer): with `coalesce` set, a message
        # queued while nothing was does not wake the sender; the hub's coalescer, once the
        # publisher yields, hands everything queued to `coalesce` as one batch if
        # `can_write_now()`, else wakes the sender.
        self.coalesce: Callable[[list[Msg]], None] | None = None
        self.can_write_now: Callable[[], bool] | None = None
        self.schedule: Callable[[Outbox], None] | None = None
        self.scheduled = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, payload: Msg) -> None:
        """Queue a message that must not be dropped; closes the client past the bound."""
        if self.close_request is not None:
            return
        if self.direct is not None and not self._queue and self.direct(payload):
            self.direct_sent += 1
            return
        if self._lossless >= self._max_lossless:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._queue.append(payload)
        self._lossless += 1
        self._wake()

    def put_latest(self, topic: str, payload: Msg) -> None:
        """Queue a message of which only the latest per topic matters."""
        if self.close_request is not None:
            return
        if self.direct is not None and not self._queue and self.direct(payload):
            self.direct_sent += 1
            return
        self.queue_latest(topic, payload)

    def queue_latest(self, topic: str, payload: Msg) -> None:
        """`put_latest` once the direct path has declined the message: queue it (or replace
        the queued one of its topic). While the outbox only waits for the coalescer's write
        delay (`scheduled`), the client is not behind: a topic's updates are all kept, in
        order, and conflate only once the client falls behind."""
        if self.close_request is not None:
            return
        if topic in self._latest:
            current = self._latest[topic]
            if self.scheduled:
                if isinstance(current, list):
                    current.append(payload)
                else:
                    self._latest[topic] = [current, payload]
                return
            self.conflated += len(current) if isinstance(current, list) else 1
            self._latest[topic] = payload
            return
        self._latest[topic] = payload
        self._queue.append(_Pending(topic))
        self._wake()

    def _wake(self) -> None:
        if self.schedule is None:
            self._lot.unpark()
        elif not self.scheduled:
            self.scheduled = True
            self.schedule(self)

    def flush(self) -> None:
        """The coalescer's turn (Hub.run_coalescer): everything queued goes to `coalesce` as
        one batch when the socket can take it now; otherwise the sender is woken."""
        self.scheduled = False
        if not self._queue or self.close_request is not None:
            return
        if self.coalesce is None or self.can_write_now is None or not self.can_write_now():
            self._lot.unpark()
            return
        self.coalesce(self._take(MAX_COALESCED))
        if self._queue:  # more than one batch: the sender takes the rest
            self._lot.unpark()

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close the socket; what is queued is discarded."""
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
            self.discarded += len(self._queue) + sum(
                len(v) - 1 for v in self._latest.values() if isinstance(v, list)
            )  # a marker stands for a write delay's updates of its topic
            self._queue.clear()
            self._latest.clear()
            self._lot.unpark()

    def wake(self) -> None:
        """Wake the sender even with nothing queued (a direct write left bytes to finish):
        its next `get_batch` returns, possibly empty."""
        self._flush = True
        self._lot.unpark()

    async def get_batch(self, max_items: int) -> list[Msg] | CloseRequest:
        """Wait for messages and take up to `max_items` of them, oldest first; or the close.
        After `wake()` it may return an empty list."""
        while not self._queue and self.close_request is None and not self._flush:
            await self._lot.park()
        self._flush = False
        if self.close_request is not None:
            return self.close_request
        return self._take(max_items)

    def _take(self, max_items: int) -> list[Msg]:
        out: list[Msg] = []
        queue = self._queue
        while queue and len(out) < max_items:
            item = queue.popleft()
            if isinstance(item, _Pending):
                value = self._latest.pop(item.topic)
                if isinstance(value, list):
                    out += value  # a write delay's updates of one topic, in order
                else:
                    out.append(value)
            else:
                out.append(item)
                self._lossless -= 1
        self.sent += len(out)
        return out


class Client:
    """One gateway connection as the hub sees it."""

    __slots__ = ("id", "user_id", "outbox", "topics", "batch", "unanswered_pings", "revoked")

    def __init__(self, cid: int, user_id: str, outbox: Outbox, batch: bool) -> None:
        self.id = cid
        self.user_id = user_id
        self.outbox = outbox
        self.topics: set[str] = set()  # hub keys
        self.batch = batch
        self.unanswered_pings = 0  # reset by the client's pong
        self.revoked: set[str] = set()  # topics the hub ended (`Hub.revoke`); the gateway clears


class _Cadence:
    """The subscribers of one topic at one period, and the latest message not yet sent."""

    __slots__ = ("key", "topic", "period", "subs", "msg", "due")

    def __init__(self, key: str, topic: str, period: float, now: float) -> None:
        self.key = key  # e.g. "price:005930@1s": the outbox conflates on it
        self.topic = topic
        self.period = period
        self.subs: dict[int, Client] = {}
        self.msg: Msg | None = None  # set by publish_latest, cleared when handed out
        self.due = now + period


async def run_heartbeat(
    client: Client, interval_s: float, max_missed: int, ping: Callable[[], Msg]
) -> None:
    """Send `ping()` every `interval_s`; close the client (4002) once `max_missed` pings in a
    row went unanswered. Returns when it closes the client; the caller cancels it otherwise."""
    while True:
        await trio.sleep(interval_s)
        if client.unanswered_pings >= max_missed:
            client.outbox.close(CLOSE_HEARTBEAT, f"no pong to {max_missed} pings")
            return
        client.unanswered_pings += 1
        client.outbox.put(ping())


class Hub:
    """Topic -> subscribers. Synchronous by design: publishing only queues."""

    def __init__(self, outbox_max: int = 1024, history: History | None = None) -> None:
        self._outbox_max = outbox_max
        self.history = history  # lossless topics' recent messages, for recovery
        self._ids = itertools.count(1)
        self.clients: dict[int, Client] = {}
        self._topics: dict[str, dict[int, Client]] = {}
        self._cadences: dict[str, dict[str, _Cadence]] = {}  # topic -> key -> group
        self._cadence_lot = trio.lowlevel.ParkingLot()
        self._empty = trio.Event()
        self._empty.set()
        self.delivered: dict[str, int] = {}  # message kind -> messages queued to clients
        self._conflated_gone = 0  # conflations counted by outboxes of closed connections
        self._discarded_gone = 0  # likewise, messages discarded by a close
        self._per_user: dict[str, int] = {}
        self.handshaking = 0  # sockets accepted but not yet authenticated (the gateway's count)
        self._to_flush: list[Outbox] = []
        self._flush_lot = trio.lowlevel.ParkingLot()
        self.coalescing = False  # run_coalescer is running: batch clients may use it

    # -- connections ------------------------------------------------------------------------
    def connect(self, user_id: str, *, batch: bool = False) -> Client:
        client = Client(next(self._ids), user_id, Outbox(self._outbox_max), batch)
        self.clients[client.id] = client
        self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
        if self._empty.is_set():
            self._empty = trio.Event()
        return client

    def disconnect(self, client: Client) -> None:
        for topic in list(client.topics):
            self.unsubscribe(client, topic)
        if self.clients.pop(client.id, None) is not None:
            out = client.outbox
            self._conflated_gone += out.conflated
            # what a close did not already count: messages left when the connection ended
            self._discarded_gone += out.discarded + (0 if out.close_request else len(out))
            left = self._per_user[client.user_id] - 1
            if left:
                self._per_user[client.user_id] = left
            else:
                del self._per_user[client.user_id]
        if not self.clients:
            self._empty.set()

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown") -> None:
        for client in self.clients.values():
            client.outbox.close(code, reason)

    async def wait_empty(self) -> None:
        await self._empty.wait()

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(self, client: Client, topic: str, *, key: str = "", period: float = 0.0) -> bool:
        """Add a subscription; False if the client already had it.

        With `period` > 0 the client gets `topic`'s conflatable messages at most once per
        period, conflated in its outbox under `key` (default ``topic@{period}s``).
        """
        if period <= 0:
            key = topic
        elif not key:
            key = f"{topic}@{period:g}s"
        if key in client.topics:
            return False
        client.topics.add(key)
        if period <= 0:
            self._topics.setdefault(topic, {})[client.id] = client
            return True
        groups = self._cadences.setdefault(topic, {})
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Cadence(key, topic, period, trio.current_time())
            self._cadence_lot.unpark_all()
        group.subs[client.id] = client
        return True

    def unsubscribe(self, client: Client, key: str) -> bool:
        if key not in client.topics:
            return False
        client.topics.discard(key)
        subs = self._topics.get(key)
        if subs is not None and client.id in subs:
            del subs[client.id]
            if not subs:
                del self._topics[key]
            return True
        for topic, groups in list(self._cadences.items()):
            group = groups.get(key)
            if group is not None:
                group.subs.pop(client.id, None)
                if not group.subs:
                    del groups[key]
                    if not groups:
                        del self._cadences[topic]
                break
        return True

    def has_subscribers(self, topic: str) -> bool:
        return topic in self._topics or topic in self._cadences

    async def run_cadence(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hand each cadence group's latest message to its subscribers once per period.

        Sleeps while there is no group; one task serves every group (their count is the
        number of distinct topic@period pairs, small).
        """
        task_status.started()
        while True:
            if not self._cadences:
                await self._cadence_lot.park()
                continue
            now = trio.current_time()
            next_due = now + 60.0
            for groups in list(self._cadences.values()):
                for g in groups.values():
                    if g.due <= now:
                        if g.msg is not None:
                            msg, g.msg = g.msg, None
                            for client in g.subs.values():
                                client.outbox.put_latest(g.key, msg)
                            self._count(msg.kind, len(g.subs))
                        g.due = max(g.due + g.period, now)
                    next_due = min(next_due, g.due)
            with trio.move_on_at(next_due):
                await self._cadence_lot.park()  # a new group may be due sooner

    def schedule_flush(self, outbox: Outbox) -> None:
        """An outbox with a coalescing path has something queued (Outbox.schedule)."""
        self._to_flush.append(outbox)
        if len(self._to_flush) == 1:
            self._flush_lot.unpark()

    async def run_coalescer(
        self, delay_s: float = 0.0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush the batch clients' outboxes once the publisher yields: one task wakes for a
        whole burst, and each client gets what the burst queued for it as one frame. With
        `delay_s` (the write delay), the flush waits that long after the first message
        queued, so a client that gets a message every few milliseconds gets them a few to a
        frame: one system call for several deliveries, each message about `delay_s` late (the
        delay, plus the time to write that round's frames)."""
        self.coalescing = True
        task_status.started()
        try:
            while True:
                if not self._to_flush:
                    await self._flush_lot.park()
                if delay_s > 0:
                    await trio.sleep(delay_s)
                ready, self._to_flush = self._to_flush, []
                for outbox in ready:
                    outbox.flush()
                await trio.lowlevel.checkpoint()
        finally:
            self.coalescing = False
            for outbox in self._to_flush:  # the senders take over
                outbox.schedule = None
                outbox.flush()

    # -- publishing -------------------------------------------------------------------------
    def _count(self, kind: str, n: int) -> None:
        self.delivered[kind] = self.delivered.get(kind, 0) + n

    def publish_latest(self, topic: str, msg: Msg) -> int:
        """Deliver a conflatable message to every subscriber of `topic`; returns how many
        got it now (cadenced subscribers get it at their next period)."""
        groups = self._cadences.get(topic)
        if groups is not None:
            for g in groups.values():
                g.msg = msg
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for client in subs.values():
            # The common case inline (one call per delivery): a client that keeps up has
            # nothing queued and takes the message on its direct path.
            outbox = client.outbox
            direct = outbox.direct
            if (
                direct is not None
                and not outbox._queue
                and outbox.close_request is None
                and direct(msg)
            ):
                outbox.direct_sent += 1
            else:
                outbox.queue_latest(topic, msg)
        self._count(msg.kind, len(subs))
        return len(subs)

    def publish(self, topic: str, msg: Msg) -> int:
        """Deliver a lossless message to every subscriber of `topic`, and keep it in the
        topic's history (stamped with its offset) for subscribers that come back."""
        if self.history is not None:
            self.history.record(topic, msg)
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for client in list(subs.values()):  # a put may close a slow client, not unsubscribe it
            client.outbox.put(msg)
        self._count(msg.kind, len(subs))
        return len(subs)

    def revoke(self, topic: str, msg: Msg, *, user: str | None = None) -> int:
        """End every subscription to `topic` (cadenced ones included; only `user`'s if given),
        telling each subscriber with the lossless `msg`; the topic is added to each client's
        `revoked` set so the connection can forget it too. Returns the number ended."""
        n = 0
        for client in list(self._topics.get(topic, {}).values()):
            if user is not None and client.user_id != user:
                continue
            client.outbox.put(msg)
            client.revoked.add(topic)
            self.unsubscribe(client, topic)
            n += 1
        for key, group in list(self._cadences.get(topic, {}).items()):
            for client in list(group.subs.values()):
                if user is not None and client.user_id != user:
                    continue
                client.outbox.put(msg)
                client.revoked.add(topic)
                self.unsubscribe(client, key)
                n += 1
        self._count(msg.kind, n)
        return n

    def broadcast(self, msg: Msg) -> int:
        """Deliver a lossless message to every connected client."""
        for client in self.clients.values():
            client.outbox.put(msg)
        self._count(msg.kind, len(self.clients))
        return len(self.clients)

    # -- introspection ----------------------------------------------------------------------
    def subscriptions(self) -> dict[str, int]:
        """Hub key -> number of subscribed connections (cadence groups under their key)."""
        out = {t: len(subs) for t, subs in self._topics.items()}
        for groups in self._cadences.values():
            out.update((g.key, len(g.subs)) for g in groups.values())
        return out

    def connections_of(self, user_id: str) -> int:
        return self._per_user.get(user_id, 0)

    def conflated_total(self) -> int:
        return self._conflated_gone + sum(c.outbox.conflated for c in self.clients.values())

    def discarded_total(self) -> int:
        return self._discarded_gone + sum(c.outbox.discarded for c in self.clients.values())

    def users(self) -> Iterable[str]:
        return sorted(self._per_user)
