"""One WebSocket connection: authentication, limits, the client protocol and the sender.

Each connection runs in its own nursery: the handler body reads client messages, a sender
drains the client's `Outbox` into the socket, a heartbeat pings, and a watcher closes the
connection when its token expires. Everything the server says goes through the outbox, so
there is one writer per socket and ordering is kept.

A client that stops reading fills its socket buffer and blocks the sender's write; publishing
never waits for it (the hub only queues), and after `send_timeout_s` without progress the server
aborts the connection (serving.py). Nobody else is delayed at any point.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from quart import websocket
from sqlalchemy.engine import Engine

from tradestream import topics, wire
from tradestream.config import GatewaySettings
from tradestream.errors import AuthError, ProtocolError, TokenExpired
from tradestream.gateway.auth import Authenticator, Identity, bearer
from tradestream.gateway.limits import TokenBucket
from tradestream.gateway.metrics import GatewayMetrics
from tradestream.gateway.ports import Demand, MarketView
from tradestream.hub import (
    Client,
    CloseRequest,
    Hub,
    Msg,
    Outbox,
    run_heartbeat,
    text_frame,
)
from tradestream.serving import WriteProbe, write_probe
from tradestream.store import reads
from tradestream.topics import Topic, parse_topic
from tradestream.wire import (
    CLOSE_RATE_LIMITED,
    CLOSE_REASONS,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TRY_AGAIN_LATER,
)

log = logging.getLogger("tradestream.gateway")

MAX_BATCH_MESSAGES = 256  # messages taken from an outbox per wake-up
MAX_STORE_LOOKUPS = 2  # get_price store fallbacks in flight per connection (queued or running)
STORE_READ_THREADS = 4  # get_price store reads of every connection together


class StorePrices:
    """get_price's fallback when no trade is in memory: the latest stored trade, read in a
    worker thread. One limiter for every connection, so reads never take the writer's
    connections (the engine's pool has 5+10)."""

    def __init__(self, engine: Engine, threads: int = STORE_READ_THREADS) -> None:
        self._engine = engine
        self._limiter = trio.CapacityLimiter(threads)

    async def latest(self, code: str) -> dict[str, Any] | None:
        """The latest stored trade of `code`, or None; raises what the database raises."""
        rows = await trio.to_thread.run_sync(
            partial(reads.recent_ticks, self._engine, code, None, 1), limiter=self._limiter
        )
        return rows[-1] if rows else None


@dataclass(frozen=True)
class WsServices:
    """What a WebSocket connection uses, and nothing else."""

    hub: Hub
    auth: Authenticator
    market: MarketView  # current values for new subscribers, get_price, get_account
    demand: Demand  # upstream data for price and order-book topics
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    prices: StorePrices | None = None  # get_price's store fallback (None: memory only)


def reply(payload: str) -> Msg:
    return Msg(payload, "reply")


async def serve_ws(ctx: WsServices, *, presubscribe: bool) -> None:
    """The body of a WebSocket route: authenticate, admit, then run the connection."""
    await websocket.accept()
    m = ctx.metrics
    s, hub = ctx.settings, ctx.hub
    # Sockets still authenticating count too: each may wait `handshake_timeout_s` for its
    # token, and unauthenticated sockets must not be a way around the connection limit.
    # They have a pool of their own besides, so that they cannot crowd out clients that
    # bring their token in the URL or a header (whose check takes no time at all).
    token = bearer(websocket.headers, websocket.args)
    full = len(hub.clients) + hub.handshaking >= s.max_connections
    if full or (token is None and hub.handshaking >= s.max_pending_handshakes):
        reason = "server_full" if full else "handshakes_full"
        m.closes.labels(reason).inc()
        m.refusals += 1
        if m.refusals & (m.refusals - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...
            log.warning(
                "ws refused reason=%s remote=%s refusals=%d",
                reason,
                websocket.remote_addr,
                m.refusals,
            )
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "server full; try again later")
        return
    hub.handshaking += 1
    try:
        identity = ctx.auth.verify(token) if token is not None else await _auth_by_message(ctx)
    except AuthError as exc:
        m.auth_failures.labels("expired" if isinstance(exc, TokenExpired) else "invalid").inc()
        log.info("ws auth_failure remote=%s reason=%r", websocket.remote_addr, str(exc))
        await websocket.close(wire.close_code_for(exc), str(exc))
        return
    finally:
        hub.handshaking -= 1
    if hub.connections_of(identity.user_id) >= s.max_connections_per_user:
        m.closes.labels("too_many_connections").inc()
        log.info(
            "ws refused reason=too_many_connections user=%r remote=%s",
            identity.user_id,
            websocket.remote_addr,
        )
        await websocket.close(
            CLOSE_TOO_MANY_CONNECTIONS, f"at most {s.max_connections_per_user} connections per user"
        )
        return
    batch = websocket.args.get("batch", "") in ("1", "true")
    client = hub.connect(identity.user_id, batch=batch)
    m.connections_opened.inc()
    log.info(
        "ws connect client=%d user=%r role=%s batch=%s remote=%s",
        client.id,
        identity.user_id,
        identity.role,
        batch,
        websocket.remote_addr,
    )
    conn = Connection(ctx, client, identity)
    first: list[str] = []
    if presubscribe:  # /ws?subscribe=a,b,c (seed 004)
        first = [t.strip() for t in websocket.args.get("subscribe", "").split(",") if t.strip()]
    try:
        await conn.run(first)
    finally:
        conn.release_all()
        hub.disconnect(client)
        close = client.outbox.close_request
        log.info(
            "ws disconnect client=%d user=%r close=%s reason=%r",
            client.id,
            identity.user_id,
            "aborted" if conn.write_aborted else close.code if close else "client",
            close.reason if close else "",
        )


async def _auth_by_message(ctx: WsServices) -> Identity:
    """No token in the URL or headers: the first message must be {"type": "auth", ...}."""
    timeout = ctx.settings.handshake_timeout_s
    with trio.move_on_after(timeout):
        raw = await websocket.receive()
        try:
            msg = wire.decode_client_message(raw)
        except ProtocolError as exc:
            raise AuthError(f"expected an auth message first ({exc})") from None
        if not isinstance(msg, wire.Auth):
            raise AuthError(
                "missing token: send ?token=, an Authorization header, or an auth message first"
            )
        return ctx.auth.verify(msg.token)
    raise AuthError(f"no token within {timeout:g}s")


class Connection:
    def __init__(self, ctx: WsServices, client: Client, identity: Identity) -> None:
        self.ctx = ctx
        self._roles = dict(ctx.settings.topic_roles)  # kinds checked by config._topic_roles
        self.client = client
        self.identity = identity
        self.subs: dict[str, tuple[Topic, list[str]]] = {}  # as subscribed -> (topic, hub keys)
        s = ctx.settings
        self.bucket = TokenBucket(s.rate_per_s, s.rate_burst, trio.current_time())
        self.dropped_in_a_row = 0
        self._expiry_scope = trio.CancelScope()
        self._lookups_in_flight = 0
        self._nursery: trio.Nursery | None = None
        self._write_aborted = False

    async def run(self, presubscribe: list[str]) -> None:
        ctx, out = self.ctx, self.client.outbox
        out.put(reply(wire.connected(self.client.id, self.client.user_id)))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sender)
            nursery.start_soon(
                run_heartbeat,
                self.client,
                ctx.settings.ping_interval_s,
                ctx.settings.max_missed_pongs,
                lambda: Msg(wire.ping(), "ping"),
            )
            nursery.start_soon(self._expiry)
            for topic in presubscribe:
                self._guard(self._subscribe, topic)
            while True:
                self.on_message(await websocket.receive())

    # -- writing -----------------------------------------------------------------------------
    def _aborted(self) -> None:
        self._write_aborted = True

    @property
    def write_aborted(self) -> bool:
        """The socket went away under a write (aborted, broken, or closed by the peer)."""
        return self._write_aborted

    async def _sender(self) -> None:
        client, m = self.client, self.ctx.metrics
        outbox = client.outbox
        assert self._nursery is not None
        # The server (serving.py) reports on this task's writes: a write that cannot
        # finish within `send_timeout_s` is aborted (counted as send_timeout), a broken socket
        # is reported, and a send that reached no socket (the peer had closed) shows as an
        # unchanged write count. Either way the connection is gone: nothing more is written,
        # closed or counted as sent, and what is left in the outbox counts as discarded.
        probe = WriteProbe(self._aborted)
        write_probe.set(probe)

        async def write(text: str) -> bool:
            """Send one message through Quart and hypercorn; False if the connection is gone."""
            before = probe.writes
            await websocket.send(text)
            if self._write_aborted or (before and probe.writes == before):
                self._write_aborted = True
            return not self._write_aborted

        async def write_frames(frames: bytes) -> bool:
            """Write built frames straight to the socket (serving.py); False if gone."""
            if not await probe.send_frames(frames):
                self._write_aborted = True
            return not self._write_aborted

        def direct_path() -> Callable[[Msg], bool]:
            """The outbox's direct path, once the connection is known: a message published
            while nothing is queued or being written goes onto the socket at once, from the
            publisher, without waking this task (STACK-NOTES §3c); what the socket does not
            take now, this task finishes. Runs once per delivery: the connection's write
            and the metrics below it, then the system call."""
            try_send = probe.direct_writer()
            observe_direct = m.observe_direct
            wake = outbox.wake

            def write_now(msg: Msg) -> bool:
                frame = msg.frame
                n = try_send(frame)
                if n is None:
                    return False
                observe_direct(msg)
                if n < len(frame):
                    wake()
                return True

            return write_now

        def write_batch_now(batch: list[Msg]) -> None:
            """The coalescer's path for a batch client (Hub.run_coalescer): what a burst
            queued, as one frame, written from the coalescer while the socket is idle."""
            if len(batch) == 1:
                frame = batch[0].frame
            else:
                frame = text_frame(("[" + ",".join([x.payload for x in batch]) + "]").encode())
            n = probe.try_send(frame)
            if n is None:  # the socket broke: the sender's next write finds out
                outbox.discarded += len(batch)
                outbox.wake()
                return
            if len(batch) == 1:
                m.observe_message(batch[0])
            else:
                m.observe_frame(batch)
            if n < len(frame):
                outbox.wake()

        try:
            await self._send_loop(outbox, probe, write, write_frames, direct_path, write_batch_now)
        finally:
            outbox.direct = outbox.coalesce = outbox.schedule = None
        self._nursery.cancel_scope.cancel()

    async def _send_loop(
        self,
        outbox: Outbox,
        probe: WriteProbe,
        write: Callable[[str], Awaitable[bool]],
        write_frames: Callable[[bytes], Awaitable[bool]],
        direct_path: Callable[[], Callable[[Msg], bool]],
        write_batch_now: Callable[[list[Msg]], None],
    ) -> None:
        client, m, timeout = self.client, self.ctx.metrics, self.ctx.settings.send_timeout_s
        while not self._write_aborted:
            if probe.server is not None and outbox.direct is None and outbox.coalesce is None:
                # The connection is known: publishers may write. A batch client's messages
                # wait for the hub's coalescer, which writes what a burst queued as one frame.
                if not client.batch:
                    outbox.direct = direct_path()
                elif self.ctx.hub.coalescing:
                    outbox.can_write_now = probe.can_write_now
                    outbox.coalesce = write_batch_now
                    outbox.schedule = self.ctx.hub.schedule_flush
            batch = await outbox.get_batch(MAX_BATCH_MESSAGES)
            if isinstance(batch, CloseRequest):
                with trio.move_on_after(timeout):
                    await websocket.close(batch.code, batch.reason)
                if not self._write_aborted:  # else counted as send_timeout (or a broken socket)
                    m.closes.labels(CLOSE_REASONS.get(batch.code, str(batch.code))).inc()
                break
            if probe.server is not None:
                # Everything queued in one socket write, each message its own frame (or, with
                # batch=1, one frame for all): every message's frame is built once and shared
                # by all its clients, and nothing waits for a batch to fill.
                if client.batch and len(batch) > 1:
                    joined = "[" + ",".join([x.payload for x in batch]) + "]"
                    frames = text_frame(joined.encode())
                else:
                    frames = b"".join([x.frame for x in batch])
                if not await write_frames(frames):
                    outbox.discarded += len(batch)
                    break
                if client.batch and len(batch) > 1:
                    m.observe_frame(batch)
                else:
                    for x in batch:
                        m.observe_message(x)
            elif client.batch and len(batch) > 1:
                # One frame for all that is queued: the per-frame cost dominates
                # (STACK-NOTES §3), and nothing waits for a batch to fill.
                if not await write("[" + ",".join([x.payload for x in batch]) + "]"):
                    outbox.discarded += len(batch)
                    break
                m.observe_frame(batch)
            else:
                for i, x in enumerate(batch):
                    if not await write(x.payload):
                        outbox.discarded += len(batch) - i
                        break
                    m.observe_message(x)

    async def _expiry(self) -> None:
        """Close the connection when its token expires; an `auth` refresh restarts the wait."""
        while True:
            with self._expiry_scope:
                exp = self.identity.expires_at
                if exp is None:
                    await trio.sleep_forever()
                # the same leeway as at the handshake, so an accepted token is served
                auth = self.ctx.auth
                await trio.sleep(max(0.0, exp + auth.leeway_s - auth.clock()))
                log.info("ws token_expired client=%d user=%r", self.client.id, self.client.user_id)
                self.client.outbox.close(CLOSE_TOKEN_EXPIRED, "token expired")
                return
            self._expiry_scope = trio.CancelScope()

    # -- reading -----------------------------------------------------------------------------
    def on_message(self, raw: str | bytes) -> None:
        s, m, out = self.ctx.settings, self.ctx.metrics, self.client.outbox
        if not self.bucket.take(trio.current_time()):
            self.dropped_in_a_row += 1
            m.dropped_in.labels("rate_limited").inc()
            if self.dropped_in_a_row == 1:
                m.errors.labels("rate_limited").inc()
                out.put(
                    reply(
                        wire.error(
                            "rate_limited",
                            f"more than {s.rate_per_s:g} messages/s (burst "
                            f"{s.rate_burst}); messages are dropped until the rate falls",
                        )
                    )
                )
            elif self.dropped_in_a_row > s.rate_close_after:
                out.close(CLOSE_RATE_LIMITED, "rate limit exceeded")
            return
        self.dropped_in_a_row = 0
        self._guard(self._dispatch, raw)

    def _guard(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except ProtocolError as exc:
            self.ctx.metrics.errors.labels(exc.code).inc()
            log.info("ws error client=%d code=%s message=%r", self.client.id, exc.code, str(exc))
            self.client.outbox.put(reply(wire.error(exc.code, str(exc), exc.topic)))

    def _dispatch(self, raw: str | bytes) -> None:
        msg = wire.decode_client_message(raw)
        self.ctx.metrics.messages_in.labels(type(msg).__struct_config__.tag).inc()
        out = self.client.outbox
        if isinstance(msg, wire.Pong):
            self.client.unanswered_pings = 0
        elif isinstance(msg, wire.Ping):
            out.put(reply(wire.pong(msg.timestamp)))
        elif isinstance(msg, wire.Subscribe):
            self._subscribe(msg.topic, msg.since)
        elif isinstance(msg, wire.Unsubscribe):
            self._unsubscribe(msg.topic)
        elif isinstance(msg, wire.GetPrice):
            self._get_price(msg.symbol)
        elif isinstance(msg, wire.GetAccount):
            market = self.ctx.market
            accounts = market.account_names() if self.identity.is_admin else self.identity.accounts
            out.put(reply(wire.account(market.account_snapshot(accounts))))
        elif isinstance(msg, wire.Auth):
            self._refresh(msg.token)

    def _refresh(self, token: str) -> None:
        try:
            identity = self.ctx.auth.verify(token)
        except AuthError as exc:
            raise ProtocolError("auth_failed", str(exc)) from None
        if identity.user_id != self.identity.user_id:
            raise ProtocolError("auth_failed", "a refreshed token must be for the same user")
        if (identity.role, identity.accounts) != (self.identity.role, self.identity.accounts):
            # Subscriptions were authorised (and order topics routed) with the old grants;
            # a change of role or accounts needs a new connection.
            raise ProtocolError(
                "auth_failed",
                "a refreshed token must grant the same role and accounts; reconnect to change them",
            )
        self.identity = identity
        self._expiry_scope.cancel()
        self.client.outbox.put(reply(wire.authenticated(identity.user_id, identity.expires_at)))

    # -- subscriptions -----------------------------------------------------------------------
    def _hub_keys(self, topic: Topic) -> list[str]:
        """Private topics route per account: a user only ever gets their own accounts' orders;
        an admin's order topics cover every account."""
        if topic.kind != "order":
            return [topic.raw if topic.cadence_s else topic.name]
        order_no = None if topic.arg == "*" else topic.arg
        if self.identity.is_admin:
            return [topics.admin_orders(order_no)]
        if not self.identity.accounts:
            raise ProtocolError("forbidden", "your token grants no accounts", topic.raw)
        return [topics.account_orders(a, order_no) for a in sorted(self.identity.accounts)]

    def _subscribe(self, raw_topic: str, since: wire.Since | None = None) -> None:
        try:
            self._subscribe_topic(raw_topic, since)
        except ProtocolError as exc:
            exc.topic = exc.topic or raw_topic
            raise

    def _forget_revoked(self) -> None:
        """Forget subscriptions the hub ended (an upstream slot lost): a new subscribe to the
        topic claims afresh instead of being told it is already subscribed."""
        revoked = self.client.revoked
        if not revoked:
            return
        for raw, (topic, _) in list(self.subs.items()):
            if topic.name in revoked:
                del self.subs[raw]
                self.ctx.demand.release(self.client.id, topic)
        revoked.clear()

    def _subscribe_topic(self, raw_topic: str, since: wire.Since | None = None) -> None:
        out, hub = self.client.outbox, self.ctx.hub
        self._forget_revoked()
        if raw_topic in self.subs:
            out.put(reply(wire.subscribed(raw_topic)))
            return
        topic = parse_topic(raw_topic)
        if len(self.subs) >= self.ctx.settings.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.ctx.settings.max_subscriptions} subscriptions per connection",
                raw_topic,
            )
        roles = self._roles.get(topic.kind)
        if roles is not None and self.identity.role not in roles:
            raise ProtocolError(
                "forbidden", f"{topic.kind} topics need role " + " or ".join(roles), raw_topic
            )
        keys = self._hub_keys(topic)
        self.ctx.demand.claim(self.client.id, topic, self.identity.user_id)
        for key in keys:
            if topic.cadence_s:
                hub.subscribe(self.client, topic.name, key=key, period=topic.cadence_s)
            else:
                hub.subscribe(self.client, key)
        self.subs[raw_topic] = (topic, keys)
        log.info("ws subscribe client=%d topic=%s", self.client.id, raw_topic)
        history = hub.history
        if history is None or topic.conflatable or topic.cadence_s:
            # a conflated topic recovers by its snapshot, the latest value, sent below
            extra = {"recovered": False, "recovery": "snapshot"} if since is not None else {}
            out.put(reply(wire.subscribed(raw_topic, **extra)))
        elif since is None:
            out.put(reply(wire.subscribed(raw_topic, epoch=history.epoch, offset=history.offset)))
        else:
            # no await from here to the last put: nothing is published in between, so the
            # replay and the live messages neither overlap nor leave a hole
            recovered, missed = history.since(keys, since.offset, since.epoch)
            out.put(
                reply(
                    wire.subscribed(
                        raw_topic,
                        recovered=recovered,
                        epoch=history.epoch,
                        offset=history.offset,
                    )
                )
            )
            for m in missed:
                out.put(m)  # type: ignore[arg-type]
            self.ctx.metrics.recoveries.labels("yes" if recovered else "no").inc()
        snapshot = self._snapshot(topic)
        if snapshot is not None:  # the current value at once, rather than at the next update
            out.put_latest(keys[0], snapshot)

    def _snapshot(self, topic: Topic) -> Msg | None:
        market = self.ctx.market
        if topic.kind == "price":
            tick = market.tick(str(topic.arg))
            if tick is None:  # a gateway fed from Redis keeps messages, not ticks
                return market.last_message(topic.name)
            return Msg(wire.price_update(tick), "price_update")
        if topic.kind == "orderbook":
            book = market.book(str(topic.arg))
            if book is None:
                return market.last_message(topic.name)
            return Msg(wire.orderbook_update(book), "orderbook_update")
        if topic.conflatable:
            return market.last_message(topic.name)
        return None

    def _unsubscribe(self, raw_topic: str) -> None:
        self._forget_revoked()
        entry = self.subs.pop(raw_topic, None)
        if entry is None:
            raise ProtocolError("not_subscribed", f"not subscribed to {raw_topic!r}", raw_topic)
        topic, keys = entry
        for key in keys:
            self.ctx.hub.unsubscribe(self.client, key)
        self.ctx.demand.release(self.client.id, topic)
        log.info("ws unsubscribe client=%d topic=%s", self.client.id, raw_topic)
        self.client.outbox.put(reply(wire.unsubscribed(raw_topic)))

    def release_all(self) -> None:
        for topic, _ in self.subs.values():
            self.ctx.demand.release(self.client.id, topic)
        self.subs.clear()

    # -- requests ----------------------------------------------------------------------------
    def _get_price(self, symbol: str) -> None:
        if not (isinstance(symbol, str) and len(symbol) == 6 and symbol.isalnum()):
            raise ProtocolError("invalid_message", "symbol must be a 6-char code")
        tick = self.ctx.market.tick(symbol)
        if tick is not None:
            self.client.outbox.put(reply(wire.price(tick, "memory", self.ctx.market.name(symbol))))
            return
        if self.ctx.prices is None or self._nursery is None:
            raise ProtocolError("no_data", f"no price known for {symbol}")
        if self._lookups_in_flight >= MAX_STORE_LOOKUPS:
            raise ProtocolError("busy", "too many price lookups in flight")
        self._lookups_in_flight += 1
        self._nursery.start_soon(self._price_from_store, symbol)

    async def _price_from_store(self, symbol: str) -> None:
        try:
            await self._lookup_price(symbol)
        finally:
            self._lookups_in_flight -= 1

    async def _lookup_price(self, symbol: str) -> None:
        prices, out = self.ctx.prices, self.client.outbox
        if prices is None:
            return
        try:
            r = await prices.latest(symbol)
        except Exception as exc:  # the database is away: an answer, not a dropped connection
            log.warning("ws get_price store lookup failed: %r", exc)
            self.ctx.metrics.errors.labels("store_unavailable").inc()
            out.put(
                reply(
                    wire.error(
                        "store_unavailable",
                        f"no price in memory for {symbol} and the store is unavailable",
                    )
                )
            )
            return
        if r is None:
            self.ctx.metrics.errors.labels("no_data").inc()
            out.put(reply(wire.error("no_data", f"no price known for {symbol}")))
            return
        out.put(
            reply(
                wire.encode(
                    {
                        "type": "price",
                        "symbol": symbol,
                        "source": "store",
                        "name": self.ctx.market.name(symbol),
                        "data": {
                            "price": r["price"],
                            "change": r["change"],
                            "change_percent": r["change_percent"],
                            "volume": r["volume"],
                            "timestamp": r["time"],
                            "trade_volume": r["trade_volume"],
                        },
                    }
                )
            )
        )
