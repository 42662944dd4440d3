"""REST reads on the gateway: /api/ticks/{code}, /api/bars/{code}, /api/news, /api/alerts.

Queries run in worker threads under their own limiter, apart from the flusher's writes.
Every route needs a JWT (``Authorization: Bearer <token>`` or ``?token=``); bad parameters
get a 400 with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial, wraps
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio
from sqlalchemy.engine import Engine

from tradestream.errors import BadRequest
from tradestream.events import KST
from tradestream.gateway.access import install, require_role
from tradestream.gateway.auth import Authenticator
from tradestream.store import reads
from tradestream.store.stocks import search

READ_THREADS = 4


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be ISO 8601, e.g. 2025-01-02T09:00:00+09:00") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=KST)  # naive: Korean market time


def _int(name: str, default: int, most: int = reads.MAX_ROWS) -> int:
    """A whole-number query parameter in 1..`most` (a 400 outside it, not a quiet clamp)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(f"{name} must be a whole number from 1 to {most}")
    return int(raw)


def _code(code: str) -> str:
    if not (len(code) == 6 and code.isalnum()):
        raise BadRequest("a stock code has 6 characters")
    return code


def register_reads(app: QuartTrio, engine: Engine, auth: Authenticator) -> None:
    install(app)
    limiter = trio.CapacityLimiter(READ_THREADS)

    def route(path: str) -> Callable[[Callable[..., Any]], Any]:
        def deco(fn: Callable[..., Any]) -> Any:
            @wraps(fn)
            async def handler(**kw: Any) -> Any:
                require_role(auth)
                try:
                    query = fn(**kw)
                except (BadRequest, ValueError) as exc:
                    return {"error": str(exc)}, 400
                try:
                    return {"data": await trio.to_thread.run_sync(query, limiter=limiter)}
                except OverflowError:
                    return {"error": "time range out of bounds"}, 400

            return app.get(path)(handler)

        return deco

    @route("/api/ticks/<code>")
    def ticks(code: str) -> Callable[[], Any]:
        return partial(reads.recent_ticks, engine, _code(code), _time("since"), _int("limit", 100))

    @route("/api/bars/<code>")
    def bars(code: str) -> Callable[[], Any]:
        interval = reads.parse_interval(request.args.get("interval", "1m"))
        return partial(
            reads.bars,
            engine,
            _code(code),
            interval,
            _time("since"),
            _time("until"),
            _int("limit", 100),
        )

    @route("/api/news")
    def news() -> Callable[[], Any]:
        ticker = request.args.get("ticker")
        return partial(
            reads.recent_news, engine, _code(ticker) if ticker else None, _int("limit", 50)
        )

    @route("/api/stocks")
    def stock_search() -> Callable[[], Any]:
        q = (request.args.get("q") or "").strip()
        if not q or len(q) > 40:
            raise BadRequest("q: a code or name prefix, 1 to 40 characters")
        limit = _int("limit", 20, 100)  # read here: the query runs in a worker thread
        return lambda: [s._asdict() for s in search(engine, q, limit)]

    @route("/api/alerts")
    def alerts() -> Callable[[], Any]:
        code = request.args.get("code")
        return partial(
            reads.recent_alerts, engine, _code(code) if code else None, _int("limit", 50)
        )
