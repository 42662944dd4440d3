"""The Quart-Trio app: WebSocket /api/ws (seed 003) and /ws (seed 004), REST and metrics.

Routes:
    /                   the dashboard page (gateway/dashboard.py; gateway/static/)
    /api/ws, /ws        the client protocol (gateway/ws.py); /ws takes ?subscribe=a,b,c
    /health             liveness, no auth
    /metrics            Prometheus text format, no auth (bind it to a private interface)
    /api/ws/status      connections, users, subscriptions, upstream, queues (JWT)
    /api/...            REST reads (gateway/rest.py, JWT), when a store is given
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio
from sqlalchemy.engine import Engine

from tradestream.gateway.access import install, require_role
from tradestream.gateway.dashboard import register_dashboard
from tradestream.gateway.metrics import CONTENT_TYPE
from tradestream.gateway.rest import register_reads
from tradestream.gateway.ws import WsServices, serve_ws
from tradestream.topics import public_key

__all__ = ["WsServices", "create_app"]

Status = Callable[[bool], dict[str, Any]]  # the service's status document, for an admin or not


def _public_subscriptions(subs: dict[str, int]) -> dict[str, int]:
    """Hub keys -> client topics: per-account order keys are summed, account numbers hidden."""
    out: dict[str, int] = {}
    for key, n in subs.items():
        key = public_key(key)
        out[key] = out.get(key, 0) + n
    return out


def create_app(
    ws: WsServices, *, status: Status | None = None, engine: Engine | None = None
) -> QuartTrio:
    """The app over `ws`'s hub. `status(admin)` is the service's part of /api/ws/status (the
    gateway adds its own); `engine` serves the REST reads."""
    app = QuartTrio("tradestream")
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Korean as UTF-8, not \uXXXX
    install(app)
    hub, auth = ws.hub, ws.auth
    ws.metrics.attach(hub, lambda: status(True) if status is not None else {})
    if engine is not None:
        register_reads(app, engine, auth)
    register_dashboard(app, ws)  # the page at /: gateway/static/dashboard.*

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ws.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/api/ws/status")
    async def ws_status() -> Any:
        identity = require_role(auth)
        doc = status(identity.is_admin) if status is not None else {}
        doc.update(
            {
                "active_connections": len(hub.clients),
                "outboxes": {
                    "queued": sum(len(c.outbox) for c in hub.clients.values()),
                    "conflated": hub.conflated_total(),
                },
                "subscriptions": _public_subscriptions(hub.subscriptions()),
                "handshaking": hub.handshaking,
            }
        )
        if identity.is_admin:
            doc["active_users"] = list(hub.users())
        else:
            # who is connected and their order ids are the operator's business: others get
            # counts only (the service's part already left out the holdings)
            doc["active_user_count"] = len(list(hub.users()))
            subs = doc["subscriptions"]
            orders = sum(n for k, n in subs.items() if k.startswith("order:"))
            doc["subscriptions"] = {k: n for k, n in subs.items() if not k.startswith("order:")}
            if orders:
                doc["subscriptions"]["order"] = orders
        return doc

    @app.websocket("/api/ws")
    async def api_ws() -> None:
        await serve_ws(ws, presubscribe=False)

    @app.websocket("/ws")
    async def plain_ws() -> None:
        await serve_ws(ws, presubscribe=True)

    return app
