"""The stored SlotAudit event built from a slot manager Audit (pure)."""

from __future__ import annotations

from datetime import datetime

from tradestream.events import KST, SlotAudit
from tradestream.slots.policy import Audit, Priority
from tradestream.slots.views import audit_event

AT = 1_704_153_600.25  # 2024-01-02 09:00:00.25 KST


def test_an_audit_becomes_a_slot_audit_event() -> None:
    a = Audit(AT, "evict", "kis-2", "H0STCNT0", "005930", Priority.DEMAND, "pick 000660")
    assert audit_event(a) == SlotAudit(
        "slots",
        datetime(2024, 1, 2, 9, 0, 0, 250_000, tzinfo=KST),
        "evict",
        "kis-2",
        "H0STCNT0",
        "005930",
        "demand",
        "pick 000660",
    )


def test_no_session_is_an_empty_string() -> None:
    a = Audit(AT, "refuse", None, "H0STASP0", "000660", Priority.SCANNER, "pool full")
    ev = audit_event(a)
    assert ev.session == ""
    assert ev.priority == "scanner"
    assert ev.at.tzinfo is KST and ev.at.timestamp() == AT
