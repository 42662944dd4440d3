"""The Quart-Trio app: WebSocket /api/ws (seed 003) and the REST status endpoints.

Each WebSocket connection runs two tasks in its own nursery: the handler body reads client
messages, and a sender drains the client's `Outbox` into the socket. Everything the server
says to a client, replies included, goes through the outbox, so there is one writer per socket
and ordering is kept. When the hub asks a client to close (shutdown: 1001; slow consumer), the
sender closes the socket with that code and cancels the handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
from quart import websocket
from sqlalchemy.engine import Engine
from quart_trio import QuartTrio

from tradestream.events import Tick
from tradestream.gateway import protocol
from tradestream.gateway.auth import CLOSE_UNAUTHORIZED, AuthError, Authenticator
from tradestream.gateway.rest import register_reads
from tradestream.hub import Client, CloseRequest, Hub, run_heartbeat

log = logging.getLogger(__name__)

MAX_BATCH_MESSAGES = 256  # messages taken from an outbox per wake-up


@dataclass(frozen=True)
class GatewayContext:
    hub: Hub
    auth: Authenticator
    streamed: frozenset[str]  # codes the feeds are subscribed to upstream
    latest: Mapping[str, Tick]  # latest trade per code, kept by the router
    status: Callable[[], dict[str, object]]
    engine: Engine | None = None  # for the REST reads
    ping_interval_s: float = 30.0  # server heartbeat (seed 004)
    max_missed_pongs: int = 2


def create_app(ctx: GatewayContext) -> QuartTrio:
    app = QuartTrio("tradestream")

    if ctx.engine is not None:
        register_reads(app, ctx.engine, ctx.auth)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/ws/status")
    async def ws_status() -> dict[str, object]:
        return ctx.status()

    @app.websocket("/api/ws")
    async def ws_endpoint() -> None:
        await websocket.accept()
        try:
            identity = ctx.auth.verify(websocket.args.get("token"))
        except AuthError as exc:
            log.info("auth failure from %s: %s", websocket.remote_addr, exc)
            await websocket.close(CLOSE_UNAUTHORIZED, str(exc))
            return
        batch = websocket.args.get("batch", "") in ("1", "true")
        client = ctx.hub.connect(identity.user_id, batch=batch)
        log.info("client %d connected (user %s)", client.id, client.user_id)
        client.outbox.put(protocol.connected(client.id, client.user_id))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sender, client, nursery.cancel_scope)
                nursery.start_soon(run_heartbeat, client, ctx.ping_interval_s,
                                   ctx.max_missed_pongs, protocol.ping)
                while True:
                    raw = await websocket.receive()
                    _on_message(ctx, client, raw)
        finally:
            ctx.hub.disconnect(client)
            log.info("client %d disconnected", client.id)

    return app


async def _sender(client: Client, cancel: trio.CancelScope) -> None:
    outbox = client.outbox
    while True:
        batch = await outbox.get_batch(MAX_BATCH_MESSAGES)
        if isinstance(batch, CloseRequest):
            await websocket.close(batch.code, batch.reason)
            cancel.cancel()
            return
        if client.batch and len(batch) > 1:
            # One frame for all that is queued: the per-frame cost dominates (STACK-NOTES §3).
            await websocket.send("[" + ",".join(batch) + "]")
        else:
            for payload in batch:
                await websocket.send(payload)


def _on_message(ctx: GatewayContext, client: Client, raw: str | bytes) -> None:
    out = client.outbox
    try:
        msg = protocol.decode_client_message(raw)
        if isinstance(msg, protocol.Pong):
            client.unanswered_pings = 0
        elif isinstance(msg, protocol.Ping):
            out.put(protocol.pong(msg.timestamp))
        elif isinstance(msg, protocol.Subscribe):
            code = protocol.price_topic_code(msg.topic)
            if code not in ctx.streamed:
                raise protocol.ProtocolError("not_streamed", f"{code} is not on the watchlist")
            ctx.hub.subscribe(client, msg.topic)
            out.put(protocol.subscribed(msg.topic))
            last = ctx.latest.get(code)
            if last is not None:  # the current price at once, rather than at the next trade
                out.put_latest(msg.topic, protocol.price_update(last))
        elif isinstance(msg, protocol.Unsubscribe):
            if not ctx.hub.unsubscribe(client, msg.topic):
                raise protocol.ProtocolError("not_subscribed", f"not subscribed to {msg.topic!r}")
            out.put(protocol.unsubscribed(msg.topic))
    except protocol.ProtocolError as exc:
        out.put(protocol.error(exc.code, str(exc)))
