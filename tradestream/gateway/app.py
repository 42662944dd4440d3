"""The Quart-Trio app: WebSocket /api/ws (seed 003) and /ws (seed 004), REST and metrics.

Routes:
    /api/ws, /ws        the client protocol (gateway/ws.py); /ws takes ?subscribe=a,b,c
    /health             liveness, no auth
    /metrics            Prometheus text format, no auth (bind it to a private interface)
    /api/ws/status      connections, users, subscriptions, upstream, queues (JWT)
    /api/...            REST reads (gateway/rest.py, JWT)
"""

from __future__ import annotations

from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from tradestream.errors import AuthError
from tradestream.gateway.auth import bearer
from tradestream.gateway.metrics import CONTENT_TYPE
from tradestream.gateway.rest import register_reads
from tradestream.gateway.ws import GatewayContext, serve_ws
from tradestream.topics import public_key

__all__ = ["GatewayContext", "create_app"]


def _public_subscriptions(subs: dict[str, int]) -> dict[str, int]:
    """Hub keys -> client topics: per-account order keys are summed, account numbers hidden."""
    out: dict[str, int] = {}
    for key, n in subs.items():
        key = public_key(key)
        out[key] = out.get(key, 0) + n
    return out


def create_app(ctx: GatewayContext) -> QuartTrio:
    app = QuartTrio("tradestream")
    ctx.metrics.attach(ctx.hub, ctx.status)

    if ctx.engine is not None:
        register_reads(app, ctx.engine, ctx.auth)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/api/ws/status")
    async def ws_status() -> Any:
        try:
            identity = ctx.auth.verify(bearer(request.headers, request.args))
        except AuthError as exc:
            return {"error": str(exc)}, 401
        status = ctx.status()
        status["subscriptions"] = _public_subscriptions(ctx.hub.subscriptions())
        status["handshaking"] = ctx.hub.handshaking
        if not identity.is_admin:
            # who is connected, their order ids and the holdings in the slot audits are the
            # operator's business: others get counts only
            users = status.pop("active_users", [])
            status["active_user_count"] = len(list(users))
            subs = status["subscriptions"]
            orders = sum(n for k, n in subs.items() if k.startswith("order:"))
            status["subscriptions"] = {k: n for k, n in subs.items()
                                       if not k.startswith("order:")}
            if orders:
                status["subscriptions"]["order"] = orders
            if ctx.slots_summary is not None and "slots" in status:
                status["slots"] = ctx.slots_summary(False)
        return status

    @app.websocket("/api/ws")
    async def api_ws() -> None:
        await serve_ws(ctx, presubscribe=False)

    @app.websocket("/ws")
    async def ws() -> None:
        await serve_ws(ctx, presubscribe=True)

    return app
