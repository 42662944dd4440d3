"""What the router runs on every trade besides routing it: the movers scanner (which feeds
the scanner slots) and the sudden-move detector (detect/), whose alert the router publishes
and stores like any event, and hands to `on_alert` (the Redis edge) too. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tradestream.detect.movers import MoverScanner
from tradestream.detect.sudden import SuddenMoveDetector
from tradestream.events import Alert, Event, Tick
from tradestream.pipeline.stages import alert_from


class TickDetectors:
    """The router's `on_tick`: observe a trade; an alert if it completes a sudden move."""

    def __init__(
        self,
        detector: SuddenMoveDetector,
        movers: MoverScanner,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.detector = detector
        self.movers = movers
        self._on_alert = on_alert
        # set once the session calendar is known (session_calendar.Calendar.auction_print):
        # a move an auction's single print completes raises no alert
        self.auction_print: Callable[[datetime], bool] | None = None
        self.auction_skipped = 0

    def __call__(self, t: Tick) -> Event | None:
        ts = t.received_ns / 1e9
        self.movers.observe(t.code, ts, t.price, t.trade_volume)
        move = self.detector.update(t.code, ts, t.price)
        if move is None:
            return None
        if self.auction_print is not None and self.auction_print(t.trade_time):
            self.auction_skipped += 1
            return None
        alert = alert_from(move, t)
        if self._on_alert is not None:
            self._on_alert(alert)
        return alert
