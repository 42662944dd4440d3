"""Slot management for scarce upstream real-time registrations (pure policy in `policy`)."""

from tradestream.slots.policy import (
    DEFAULT_TR_IDS,
    NO_SLOT,
    ORDER_BOOK_TR_ID,
    TRADES_TR_ID,
    Audit,
    Changes,
    PendingRecord,
    Priority,
    Rejection,
    SlotManager,
    SlotRecord,
    Usage,
    usable_capacity,
)
from tradestream.upstream import Op

__all__ = [
    "DEFAULT_TR_IDS",
    "NO_SLOT",
    "ORDER_BOOK_TR_ID",
    "TRADES_TR_ID",
    "Audit",
    "Changes",
    "Op",
    "PendingRecord",
    "Priority",
    "Rejection",
    "SlotManager",
    "SlotRecord",
    "Usage",
    "usable_capacity",
]
