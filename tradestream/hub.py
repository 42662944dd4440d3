"""Fan-out from the pipeline to gateway clients: topics, subscribers and per-client outboxes.

Publishing never awaits a client. Each client has an `Outbox`:
- *conflated* messages (prices) keep only the latest payload per topic while the client is
  behind, so a slow reader costs one pending message per topic, never a growing queue;
- *lossless* messages (replies, later orders and alerts) queue up to a bound; past it the
  client is closed as a slow consumer so that it reconnects and recovers, and nobody else waits.

Payloads are `str` (text frames), encoded once per event and shared by every subscriber.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

CLOSE_GOING_AWAY = 1001
CLOSE_HEARTBEAT = 4002
CLOSE_SLOW_CONSUMER = 4008


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
        self._queue: deque[str | _Pending] = deque()
        self._latest: dict[str, str] = {}
        self._lossless = 0
        self._max_lossless = max_lossless
        self._lot = trio.lowlevel.ParkingLot()
        self.close_request: CloseRequest | None = None
        self.sent = 0
        self.conflated = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, payload: str) -> None:
        """Queue a message that must not be dropped; closes the client past the bound."""
        if self.close_request is not None:
            return
        if self._lossless >= self._max_lossless:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._queue.append(payload)
        self._lossless += 1
        self._lot.unpark()

    def put_latest(self, topic: str, payload: str) -> None:
        """Queue a message of which only the latest per topic matters."""
        if self.close_request is not None:
            return
        if topic in self._latest:
            self._latest[topic] = payload  # still queued: replace in place
            self.conflated += 1
            return
        self._latest[topic] = payload
        self._queue.append(_Pending(topic))
        self._lot.unpark()

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close the socket; what is queued is discarded."""
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
            self._queue.clear()
            self._latest.clear()
            self._lot.unpark()

    async def get_batch(self, max_items: int) -> list[str] | CloseRequest:
        """Wait for messages and take up to `max_items` of them, oldest first; or the close."""
        while not self._queue and self.close_request is None:
            await self._lot.park()
        if self.close_request is not None:
            return self.close_request
        out: list[str] = []
        queue = self._queue
        while queue and len(out) < max_items:
            item = queue.popleft()
            if isinstance(item, _Pending):
                out.append(self._latest.pop(item.topic))
            else:
                out.append(item)
                self._lossless -= 1
        self.sent += len(out)
        return out


class Client:
    """One gateway connection as the hub sees it."""

    __slots__ = ("id", "user_id", "outbox", "topics", "batch", "unanswered_pings")

    def __init__(self, cid: int, user_id: str, outbox: Outbox, batch: bool) -> None:
        self.id = cid
        self.user_id = user_id
        self.outbox = outbox
        self.topics: set[str] = set()
        self.batch = batch
        self.unanswered_pings = 0  # reset by the client's pong


async def run_heartbeat(client: Client, interval_s: float, max_missed: int,
                        ping: Callable[[], str]) -> None:
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

    def __init__(self, outbox_max: int = 1024) -> None:
        self._outbox_max = outbox_max
        self._ids = itertools.count(1)
        self.clients: dict[int, Client] = {}
        self._topics: dict[str, dict[int, Client]] = {}
        self._empty = trio.Event()
        self._empty.set()

    # -- connections ------------------------------------------------------------------------
    def connect(self, user_id: str, *, batch: bool = False) -> Client:
        client = Client(next(self._ids), user_id, Outbox(self._outbox_max), batch)
        self.clients[client.id] = client
        if self._empty.is_set():
            self._empty = trio.Event()
        return client

    def disconnect(self, client: Client) -> None:
        for topic in list(client.topics):
            self.unsubscribe(client, topic)
        self.clients.pop(client.id, None)
        if not self.clients:
            self._empty.set()

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown") -> None:
        for client in self.clients.values():
            client.outbox.close(code, reason)

    async def wait_empty(self) -> None:
        await self._empty.wait()

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(self, client: Client, topic: str) -> bool:
        """Add a subscription; False if the client already had it."""
        if topic in client.topics:
            return False
        client.topics.add(topic)
        self._topics.setdefault(topic, {})[client.id] = client
        return True

    def unsubscribe(self, client: Client, topic: str) -> bool:
        if topic not in client.topics:
            return False
        client.topics.discard(topic)
        subs = self._topics.get(topic)
        if subs is not None:
            subs.pop(client.id, None)
            if not subs:
                del self._topics[topic]
        return True

    def has_subscribers(self, topic: str) -> bool:
        return topic in self._topics

    # -- publishing -------------------------------------------------------------------------
    def publish_latest(self, topic: str, payload: str) -> int:
        """Deliver a conflatable message to every subscriber of `topic`; returns how many."""
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for client in subs.values():
            client.outbox.put_latest(topic, payload)
        return len(subs)

    def publish(self, topic: str, payload: str) -> int:
        """Deliver a lossless message to every subscriber of `topic`."""
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for client in subs.values():
            client.outbox.put(payload)
        return len(subs)

    def broadcast(self, payload: str) -> int:
        """Deliver a lossless message to every connected client."""
        for client in self.clients.values():
            client.outbox.put(payload)
        return len(self.clients)

    # -- introspection ----------------------------------------------------------------------
    def subscriptions(self) -> dict[str, list[str]]:
        return {t: sorted({c.user_id for c in subs.values()}) for t, subs in self._topics.items()}

    def users(self) -> Iterable[str]:
        return sorted({c.user_id for c in self.clients.values()})
