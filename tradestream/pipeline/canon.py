"""One canonical trade stream per code when two brokers may stream it (pure).

KIS and Kiwoom report the same trade with the same day's accumulated volume: that volume only
grows within a day, so for one venue and code a trade is new exactly when its volume is above
the last one passed on (or it is of a later day). Everything else is the other broker's copy
of a trade already passed on (during a failover or a move back, both brokers stream a code for
a moment), or an older one: it is dropped, counted by source, and neither clients, detectors
nor the store see it twice. The store's natural key (venue, code, trade time, volume) would
refuse the row anyway; this keeps the copy off the clients' streams too.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from tradestream.events import Tick


class TradeCanon:
    __slots__ = ("_last", "dropped")

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[datetime, int]] = {}
        self.dropped: Counter[str] = Counter()  # by the dropped trade's source

    def accept(self, t: Tick) -> bool:
        """Whether `t` is a new trade of its venue and code (and remember it if so)."""
        key = (t.venue, t.code)
        last = self._last.get(key)
        if last is None or t.volume > last[1] or t.trade_time.date() > last[0].date():
            self._last[key] = (t.trade_time, t.volume)
            return True
        self.dropped[t.source] += 1
        return False
