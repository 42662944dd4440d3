"""The dashboard at ``/``: one page of plain HTML, JavaScript and CSS from gateway/static/.

No build step, no third-party code: the page talks to the service the way any client does,
over the WebSocket (``/ws?batch=1&subscribe=...``, the token in an ``auth`` message) and the
REST reads (``Authorization: Bearer``), with the token the user pastes (kept in the browser's
localStorage).

Routes:
    /                       the page, with its settings in a JSON data block
    /dashboard/<asset>      dashboard.js, dashboard.css

The page is public; the data is not: without a token it shows the login form. One exception,
for the laptop demo: when nobody configured a secret (this process made one up, so no token
exists but the one the banner prints) and the broker is the built-in simulator, the page
carries a token of its own (user ``dashboard``, role ``user``) so that ``just run`` and a
browser are all it takes. A configured secret, RS256, another broker or the gateway role never
get one.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from tradestream.gateway.ws import WsServices

__all__ = ["register_dashboard"]

STATIC = files("tradestream.gateway") / "static"
PAGE = "dashboard.html"
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
CONFIG_MARK = "{/*dashboard-config*/}"  # in dashboard.html's JSON data block
DEV_USER = "dashboard"
DEV_TOKEN_TTL_S = 12 * 3600.0  # a reload issues a new one
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def page_config(ws: WsServices, dev: bool) -> dict[str, Any]:
    """What the page needs to know of the server: its limits, and the dev token if allowed."""
    g = ws.settings
    return {
        "devToken": ws.auth.issue(DEV_USER, ttl_s=DEV_TOKEN_TTL_S) if dev else None,
        "maxSubscriptions": g.max_subscriptions,
        "ratePerS": g.rate_per_s,
        "rateBurst": g.rate_burst,
    }


def _json_for_html(doc: dict[str, Any]) -> str:
    """JSON that cannot end its <script> block (no '<' survives) nor be read as markup."""
    return (
        json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _security_headers(host: str) -> dict[str, str]:
    """Scripts and styles from this origin only (the config block is data, not script);
    WebSocket and fetch to this host only."""
    connect = "'self'"
    if _HOST.fullmatch(host):  # as the browser sent it; anything odd: 'self' alone
        connect += f" ws://{host} wss://{host}"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def register_dashboard(app: QuartTrio, ws: WsServices) -> None:
    """Add ``/`` and its assets to `app` (read from the package once, here)."""
    page = (STATIC / PAGE).read_text(encoding="utf-8")
    if CONFIG_MARK not in page:
        raise RuntimeError(f"{PAGE} lacks its config mark {CONFIG_MARK!r}")
    assets = {name: (STATIC / name).read_text(encoding="utf-8") for name in ASSETS}
    dev = ws.settings.dev_token and ws.settings.jwt_secret_generated

    @app.get("/")
    async def dashboard() -> Response:
        body = page.replace(CONFIG_MARK, _json_for_html(page_config(ws, dev)))
        headers = _security_headers(request.host)
        headers["Cache-Control"] = "no-store"  # it may carry a token
        return Response(body, content_type="text/html; charset=utf-8", headers=headers)

    @app.get("/dashboard/<name>")
    async def dashboard_asset(name: str) -> Response:
        if name not in assets:
            return Response("not found\n", status=404, content_type="text/plain")
        headers = _security_headers(request.host)
        headers["Cache-Control"] = "no-cache"
        return Response(assets[name], content_type=ASSETS[name], headers=headers)
