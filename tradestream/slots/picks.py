"""Scheduled daily picks (seed 002 refreshes its picks at 07:20): what a picks source says, and
when the next refresh is due. Pure: the task that reads the source and applies the picks is
`run_scheduled_picks` in slots/driver.py's caller (roles/ingest.py).

A source is a JSON document ``{"codes": [...], "orderbook": [...]}`` (``orderbook`` optional;
a bare list is the codes) or CSV/plain text: one code per line (or comma-separated), an optional
second column ``orderbook`` (or ``book``) marking codes whose order book is picked too; ``#``
starts a comment.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import msgspec

from tradestream.events import KST

DEFAULT_AT = time(7, 20)  # KST, before the 08:30 pre-market auction


@dataclass(frozen=True)
class Picks:
    codes: tuple[str, ...]  # trades
    orderbook: tuple[str, ...] = ()  # order books too


def _code(raw: object) -> str:
    code = str(raw).strip()
    if not (len(code) == 6 and code.isalnum()):
        raise ValueError(f"not a stock code: {code!r}")
    return code


def parse_picks(text: str) -> Picks:
    """The picks in a source's text (JSON or CSV, module docstring); ValueError if unusable."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            doc = msgspec.json.decode(stripped)
        except msgspec.DecodeError as exc:
            raise ValueError(f"picks: invalid JSON ({exc})") from None
        if isinstance(doc, list):
            doc = {"codes": doc}
        if not isinstance(doc, dict) or not isinstance(doc.get("codes"), list):
            raise ValueError('picks: JSON must be {"codes": [...], "orderbook": [...]}')
        listed = doc.get("orderbook", [])
        if not isinstance(listed, list):
            raise ValueError("picks: orderbook must be a list of codes")
        return Picks(
            tuple(dict.fromkeys(_code(c) for c in doc["codes"])),
            tuple(dict.fromkeys(_code(c) for c in listed)),
        )
    codes: list[str] = []
    books: list[str] = []
    for line in stripped.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 2 and cells[1].lower() in ("orderbook", "book"):
            codes.append(_code(cells[0]))
            books.append(cells[0])
            continue
        codes += [_code(c) for c in cells if c]
    if not codes:
        raise ValueError("picks: no codes in the source")
    return Picks(tuple(dict.fromkeys(codes)), tuple(dict.fromkeys(books)))


def parse_at(raw: str) -> time:
    """``HH:MM`` (KST)."""
    try:
        hh, mm = raw.strip().split(":")
        return time(int(hh), int(mm))
    except ValueError:
        raise ValueError(f"not a time of day HH:MM: {raw!r}") from None


def trading_day(d: date, holidays: Container[date]) -> bool:
    return d.weekday() < 5 and d not in holidays


def next_run(now: datetime, at: time, holidays: Container[date] = frozenset()) -> datetime:
    """The next `at` (KST) on a trading day strictly after `now`."""
    kst = now.astimezone(KST)
    day = kst.date()
    while True:
        candidate = datetime.combine(day, at, tzinfo=KST)
        if candidate > kst and trading_day(day, holidays):
            return candidate
        day += timedelta(days=1)


def pick_keys(
    picks: Picks, kept: tuple[tuple[str, str], ...], trades_tr: str, book_tr: str
) -> list[tuple[str, str]]:
    """The (tr_id, code) picks for the slot manager, as `PUT /api/watchlist/picks` makes them:
    trades, order books, then the configured picks such a PUT keeps (indexes, program)."""
    return (
        [(trades_tr, c) for c in picks.codes]
        + [(book_tr, c) for c in picks.orderbook]
        + [k for k in kept]
    )
