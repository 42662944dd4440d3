"""Typed, immutable events that flow through the pipeline.

Events are msgspec Structs: cheap to create (no __dict__, no GC tracking) and cheap to encode.
Every event carries the feed session it came from (`source`), its receive time
(`received_ns`, wall clock, ns since the epoch) and a natural key that identifies it across
reconnects, so that storage can de-duplicate re-sent records.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec

KST = timezone(timedelta(hours=9), "KST")


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One trade (KIS H0STCNT0 record and siblings).

    `volume` is the day's accumulated volume (ACML_VOL); `trade_volume` is this trade's.
    """

    source: str
    venue: str  # "KRX", "NXT" or "UN" (KRX+NXT unified stream)
    code: str
    trade_time: datetime  # business date + execution time, tz-aware (KST)
    price: int
    change: int  # signed, versus the prior close
    change_percent: float
    open: int
    high: int
    low: int
    ask: int
    bid: int
    trade_volume: int
    volume: int
    value: int  # accumulated traded value, KRW
    strength: float  # execution strength (CTTR)
    received_ns: int

    @property
    def key(self) -> tuple[str, str, datetime, int]:
        """Natural key: a venue's accumulated volume only grows, so it pins one trade."""
        return (self.venue, self.code, self.trade_time, self.volume)
