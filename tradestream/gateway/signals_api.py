"""Signals: scans over stored bars, signals posted by producers, and their broadcast.

    POST /api/signals/{kind}/scan   run the `vcp` scan (detect/vcp_daily.py) over the daily
                                    bars, or the `daytrading` scan (detect/scanners.py) over
                                    today's 1-minute bars, of every streamed code, from the
                                    store
    POST /api/signals/{kind}        post signals: {"signals": [{"symbol": "005930", ...}, ...]}

Either way the result is broadcast as `signal_update` on `signal:{kind}` (seed 004's shape) and
stored, one row per item. Both need role admin or producer. The same publisher
(pipeline/publish.py) takes the signals arriving from external workers over Redis (seed 004's
Celery path).

What each scan reads (`scan_window`):

- vcp: each code's last 160 daily bars (the broker's, cached in `daily_bars` by
  roles/daily.py): a base of weeks to months, as the pattern is meant; `since` is about when
  they begin. A code without enough daily bars is skipped.
- daytrading: today's session, the 1-minute bars from 09:00 KST (the KRX open) to now, so the
  "first open" and the "day high" are the day's, not those of some recent window. Trades after
  the 15:30 close (after-hours, NXT, or the simulator at night) count as today's session too.
  Before 09:00 KST there is no session yet: the scan reads nothing and finds nothing (count 0,
  still broadcast, so a dashboard clears yesterday's list), whatever traded overnight. The
  response's `since` says which start was used.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio
from sqlalchemy.engine import Engine

from tradestream.detect.scanners import Bar, scan_daytrading
from tradestream.detect.vcp_daily import LOOKBACK, scan_vcp_daily
from tradestream.events import KST
from tradestream.gateway.access import WRITERS, install, require_role
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.ports import Signals
from tradestream.pipeline.publish import MAX_SIGNALS, SIGNAL_KINDS
from tradestream.store import reads
from tradestream.store.daily import recent_daily

log = logging.getLogger(__name__)

KINDS = SIGNAL_KINDS
BAR_S = 60  # both scans run on 1-minute bars
VCP_LOOKBACK = LOOKBACK  # daily bars the VCP scan reads
VCP_CALENDAR_DAYS = 240  # about when 160 trading days begin (for the answer's `since`)
SESSION_OPEN_HOUR = 9  # the KRX regular session opens at 09:00 KST
# 09:00 to midnight is 900 one-minute bars: a whole day fits (within reads.MAX_ROWS), so the
# session's first bar, and with it the first open, is never cut off, even after hours.
DAYTRADING_MAX_BARS = 15 * 60
assert DAYTRADING_MAX_BARS <= reads.MAX_ROWS
SCAN_THREADS = 2


def _bars(rows: Iterable[dict[str, Any]]) -> list[Bar]:
    return [Bar(r["time"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in rows]


def scan_window(kind: str, now: datetime) -> tuple[datetime, int]:
    """The start of the bars a scan reads and how many it may keep (pure; module doc).

    For "daytrading" the start is 09:00 KST on `now`'s KST date; before 09:00 that is later
    than `now`, an empty window."""
    if kind == "vcp":
        return now - timedelta(days=VCP_CALENDAR_DAYS), VCP_LOOKBACK
    if kind == "daytrading":
        local = now.astimezone(KST)
        return local.replace(
            hour=SESSION_OPEN_HOUR, minute=0, second=0, microsecond=0
        ), DAYTRADING_MAX_BARS
    raise ValueError(f"unknown scan {kind!r}")


def scan(engine: Engine, kind: str, codes: Sequence[str], now: datetime) -> list[dict[str, Any]]:
    """Blocking: read each code's bars of `scan_window(kind, now)` and run the scan (in a
    worker thread). Returns the hits as JSON-ready dicts, best first, `code` as `symbol`."""
    since, limit = scan_window(kind, now)
    if since >= now:  # before the session: nothing to read
        return []
    found: Sequence[Any]
    if kind == "vcp":
        daily = {c: recent_daily(engine, c, limit) for c in codes}
        found = scan_vcp_daily(
            {c: [Bar(d.toordinal(), o, h, lo, cl, v) for d, o, h, lo, cl, v in rows]
             for c, rows in daily.items()}
        )  # fmt: skip
    else:
        by_code = {c: _bars(reads.bars(engine, c, BAR_S, since, now, limit)) for c in codes}
        found = scan_daytrading(by_code)
    out = []
    for item in found:
        d = dataclasses.asdict(item)
        d["symbol"] = d.pop("code")
        out.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()})
    return out


def _utc_now() -> datetime:
    return datetime.now(UTC)


def register_signals(
    app: QuartTrio,
    engine: Engine,
    auth: Authenticator,
    publisher: Signals,
    codes: Callable[[], Sequence[str]],
    *,
    clock: Callable[[], datetime] = _utc_now,
) -> None:
    """Add the routes of the module doc. `codes()` lists the codes to scan; `clock()` is the
    scans' "now" (tz-aware; a test passes a fixed session time)."""
    limiter = trio.CapacityLimiter(SCAN_THREADS)

    install(app)

    @app.post("/api/signals/<kind>/scan")
    async def run_scan(kind: str) -> Any:
        require_role(auth, WRITERS)
        if kind not in KINDS:
            return {"error": f"unknown scan {kind!r}; one of {', '.join(KINDS)}"}, 404
        now = clock()
        signals = await trio.to_thread.run_sync(
            partial(scan, engine, kind, list(codes()), now), limiter=limiter
        )
        delivered = publisher.publish(kind, signals, "scanner")
        since, _ = scan_window(kind, now)
        return {
            "signal_type": kind.upper(),
            "count": len(signals),
            "signals": signals,
            "delivered_to": delivered,
            "since": since.astimezone(KST).isoformat(),
        }

    @app.post("/api/signals/<kind>")
    async def post(kind: str) -> Any:
        require_role(auth, WRITERS)
        if kind not in KINDS:
            return {"error": f"unknown signal kind {kind!r}; one of {', '.join(KINDS)}"}, 404
        body = await request.get_json(force=True, silent=True)
        signals = body.get("signals") if isinstance(body, Mapping) else None
        if (
            not isinstance(signals, list)
            or len(signals) > MAX_SIGNALS
            or not all(isinstance(s, dict) for s in signals)
        ):
            return {"error": f'expected {{"signals": [objects]}} (at most {MAX_SIGNALS})'}, 400
        delivered = publisher.publish(kind, signals, "rest")
        return {"count": len(signals), "delivered_to": delivered}
