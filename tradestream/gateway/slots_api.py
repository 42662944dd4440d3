"""REST for the slot manager: GET /api/slots, PUT /api/watchlist/picks, POST /api/watchlist/scanner.

Reading needs any valid token; changing picks or scanner finds needs role admin or producer.
Holdings are the accounts' business: only admins see holding claims and the audit records
(which name them); others get the slots without them.
"""

from __future__ import annotations

from typing import Any

from quart import request
from quart_trio import QuartTrio

from tradestream.errors import AuthError
from tradestream.gateway.auth import Authenticator, bearer
from tradestream.slots.driver import SlotDriver

WRITERS = ("admin", "producer")
MAX_CODES = 500


def _codes(body: Any, field: str) -> list[str]:
    raw = body.get(field, []) if isinstance(body, dict) else None
    if not isinstance(raw, list) or len(raw) > MAX_CODES or not all(
            isinstance(c, str) and len(c) == 6 and c.isalnum() for c in raw):
        raise ValueError(f"{field} must be a list of at most {MAX_CODES} 6-character codes")
    return list(dict.fromkeys(raw))


def register_slots(app: QuartTrio, driver: SlotDriver, auth: Authenticator,
                   scanner_posted: set[str], on_scanner: Any,
                   kept: tuple[tuple[str, str], ...] = ()) -> None:
    """`kept`: configured picks that are neither trades nor order books (indexes, program
    trading); a PUT of the picks keeps them."""
    def verify(roles: tuple[str, ...] | None = None) -> Any:
        """The caller's identity, or the error reply."""
        try:
            ident = auth.verify(bearer(request.headers, request.args))
        except AuthError as exc:
            return {"error": str(exc)}, 401
        if roles is not None and ident.role not in roles:
            return {"error": "needs role " + " or ".join(roles)}, 403
        return ident

    def check(roles: tuple[str, ...] | None = None) -> tuple[dict[str, str], int] | None:
        ident = verify(roles)
        return ident if isinstance(ident, tuple) else None

    @app.get("/api/slots")
    async def slots() -> Any:
        ident = verify()
        if isinstance(ident, tuple):
            return ident
        return driver.listing(admin=ident.is_admin)

    @app.put("/api/watchlist/picks")
    async def picks() -> Any:
        if (denied := check(WRITERS)) is not None:
            return denied
        body = await request.get_json(force=True, silent=True)
        try:
            trades = _codes(body, "codes")
            books = _codes(body, "orderbook") if isinstance(body, dict) and "orderbook" in body \
                else []
        except ValueError as exc:
            return {"error": str(exc)}, 400
        keys = [("H0STCNT0", c) for c in trades] + [("H0STASP0", c) for c in books] + list(kept)
        changes = driver.set_picks(keys)
        pending = {(p["tr_id"], p["code"]) for p in driver.pending()}
        ops = [op.action for op in changes.ops]
        return {"picks": len(keys), "subscribed": ops.count("subscribe"),
                "unsubscribed": ops.count("unsubscribe"),
                "pending": sorted(f"{t}:{c}" for t, c in keys if (t, c) in pending)}

    @app.post("/api/watchlist/scanner")
    async def scanner() -> Any:
        if (denied := check(WRITERS)) is not None:
            return denied
        body = await request.get_json(force=True, silent=True)
        try:
            codes = _codes(body, "codes")
        except ValueError as exc:
            return {"error": str(exc)}, 400
        scanner_posted.clear()
        scanner_posted.update(codes)
        on_scanner()
        return {"scanner": sorted(scanner_posted)}
