"""Who may call a REST route: one check for every route (JWT, then the role).

`require_role` returns the caller's identity or raises `Denied`, which `install` renders as a
JSON error: 401 for a missing or unusable token, 403 for a role that may not.
"""

from __future__ import annotations

from typing import Any

from quart import request
from quart_trio import QuartTrio

from tradestream.errors import AuthError
from tradestream.gateway.auth import Authenticator, Identity, bearer

WRITERS = ("admin", "producer")  # may post signals, picks and scanner finds


class Denied(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def require_role(auth: Authenticator, roles: tuple[str, ...] | None = None) -> Identity:
    """The identity behind the request's token (header or ?token=), if it has one of
    `roles` (any role when None)."""
    try:
        ident = auth.verify(bearer(request.headers, request.args))
    except AuthError as exc:
        raise Denied(str(exc), 401) from None
    if roles is not None and ident.role not in roles:
        raise Denied("needs role " + " or ".join(roles), 403)
    return ident


def install(app: QuartTrio) -> None:
    """Render `Denied` as ``{"error": ...}`` with its status (idempotent)."""

    @app.errorhandler(Denied)
    async def denied(exc: Denied) -> Any:
        return {"error": str(exc)}, exc.status
