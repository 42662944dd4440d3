"""The brokers tradestream speaks, by recording tag: the one place that names them.

The service starts every broker's sessions from here, the slot manager takes the `slotted`
ones, the replay decodes a recording's frames with the decoder of the frame's tag, and the
simulator's URLs are applied per broker.
"""

from __future__ import annotations

from collections.abc import Mapping

from tradestream.config import Settings
from tradestream.feeds import kis, ls
from tradestream.feeds.broker import Broker
from tradestream.feeds.kiwoom.broker import BROKER as KIWOOM

BROKERS: Mapping[str, Broker] = {b.tag: b for b in (kis.BROKER, ls.BROKER, KIWOOM)}


def broker(tag: str) -> Broker:
    """The broker of a recording tag; KeyError names the tags known."""
    try:
        return BROKERS[tag]
    except KeyError:
        raise KeyError(f"unknown broker {tag!r} (known: {', '.join(BROKERS)})") from None


def use_simulator(s: Settings, rest_url: str, ws_base: str) -> Settings:
    """Point every broker without a URL of its own at the simulator (`ws_base` + its path)."""
    for b in BROKERS.values():
        s = b.use_simulator(s, rest_url, ws_base.rstrip("/") + b.sim_ws_path)
    return s


def streamed_codes(s: Settings, *, slotted: bool = True) -> tuple[frozenset[str], frozenset[str]]:
    """Codes with trades, and codes with order books, registered upstream by the settings
    (without `slotted`: only by brokers whose registrations need no slot)."""
    trades: set[str] = set()
    books: set[str] = set()
    for b in BROKERS.values():
        if b.slotted and not slotted:
            continue
        for tr, key in b.registrations(s):
            if tr in b.trade_trs:
                trades.add(key)
            elif tr in b.book_trs:
                books.add(key)
    return frozenset(trades), frozenset(books)
