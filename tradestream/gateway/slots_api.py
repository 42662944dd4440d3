"""REST for the slot manager: GET /api/slots, PUT /api/watchlist/picks, POST /api/watchlist/scanner.

Reading needs any valid token; changing picks or scanner finds needs role admin or producer.
Holdings are the accounts' business: only admins see holding claims and the audit records
(which name them); others get the slots without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import request
from quart_trio import QuartTrio

from tradestream.gateway.access import WRITERS, install, require_role
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.ports import ScannerInput, Slots
from tradestream.slots.picks import Picks, pick_keys
from tradestream.upstream import KIS_BOOK, KIS_TRADES

MAX_CODES = 500


def _codes(body: Any, field: str) -> list[str]:
    raw = body.get(field, []) if isinstance(body, dict) else None
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_CODES
        or not all(isinstance(c, str) and len(c) == 6 and c.isalnum() for c in raw)
    ):
        raise ValueError(f"{field} must be a list of at most {MAX_CODES} 6-character codes")
    return list(dict.fromkeys(raw))


def register_slots(
    app: QuartTrio,
    slots: Slots,
    auth: Authenticator,
    scanner: ScannerInput,
    kept: tuple[tuple[str, str], ...] = (),
    names: Callable[[str], str] = lambda code: "",
) -> None:
    """`kept`: configured picks that are neither trades nor order books (indexes, program
    trading); a PUT of the picks keeps them. `names`: a code's name, shown on each row."""
    install(app)

    @app.get("/api/slots")
    async def listing() -> Any:
        out = slots.listing(admin=require_role(auth).is_admin)
        for part in ("slots", "pending"):
            out[part] = [{**row, "name": names(row["code"])} for row in out.get(part, [])]
        return out

    @app.put("/api/watchlist/picks")
    async def picks() -> Any:
        require_role(auth, WRITERS)
        body = await request.get_json(force=True, silent=True)
        try:
            trades = _codes(body, "codes")
            books = (
                _codes(body, "orderbook") if isinstance(body, dict) and "orderbook" in body else []
            )
        except ValueError as exc:
            return {"error": str(exc)}, 400
        keys = pick_keys(Picks(tuple(trades), tuple(books)), kept, KIS_TRADES, KIS_BOOK)
        changes = slots.set_picks(keys)
        pending = {(p["tr_id"], p["code"]) for p in slots.pending()}
        ops = [op.action for op in changes.ops]
        return {
            "picks": len(keys),
            "subscribed": ops.count("subscribe"),
            "unsubscribed": ops.count("unsubscribe"),
            "pending": sorted(f"{t}:{c}" for t, c in keys if (t, c) in pending),
        }

    @app.post("/api/watchlist/scanner")
    async def scanner_finds() -> Any:
        require_role(auth, WRITERS)
        body = await request.get_json(force=True, silent=True)
        try:
            codes = _codes(body, "codes")
        except ValueError as exc:
            return {"error": str(exc)}, 400
        return {"scanner": scanner.post(codes)}
