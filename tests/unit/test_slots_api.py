"""What a non-admin sees of the slots listing (pure): no audits, no holding claims, and
nothing from which the holdings could be inferred (counts, row order)."""

from __future__ import annotations

from tradestream.slots.views import without_holdings as _without_holdings

T, B = "H0STCNT0", "H0STASP0"


def slot(session: str, tr_id: str, code: str, *claims: str) -> dict[str, object]:
    return {
        "session": session,
        "tr_id": tr_id,
        "code": code,
        "priority": claims[0],
        "claims": list(claims),
    }


def test_holdings_are_left_out_for_non_admins() -> None:
    listing = {
        "usage": {
            "kis-1": {"used": 4, "capacity": 39, "up": True},
            "kis-2": {"used": 1, "capacity": 40, "up": False},
        },
        "pending": [
            {
                "tr_id": T,
                "code": "000003",
                "priority": "holding",
                "claims": ["holding"],
                "claimed_at": 1.0,
            },
            {
                "tr_id": T,
                "code": "000009",
                "priority": "holding",
                "claims": ["holding", "scanner"],
                "claimed_at": 1.0,
            },
            {
                "tr_id": T,
                "code": "000004",
                "priority": "scanner",
                "claims": ["scanner"],
                "claimed_at": 2.0,
            },
        ],
        "recent": [{"action": "grant", "code": "000001"}],
        # the manager's order: holdings first
        "slots": [
            slot("kis-1", T, "000001", "holding"),
            slot("kis-1", T, "000007", "holding", "pick", "demand"),
            slot("kis-2", B, "000002", "holding"),
            slot("kis-1", B, "000006", "pick"),
            slot("kis-1", T, "000005", "pick"),
        ],
        "notice_session": "kis-1",
    }
    public = _without_holdings(listing)
    assert public == {
        "notice_session": "kis-1",
        # used: the rows listed, so used minus the rows counts no holding-only slot
        "usage": {
            "kis-1": {"used": 3, "capacity": 39, "up": True},
            "kis-2": {"used": 0, "capacity": 40, "up": False},
        },
        # sorted by (session, tr_id, code): 000007 (also a holding) is not set apart
        "slots": [
            slot("kis-1", B, "000006", "pick"),
            slot("kis-1", T, "000005", "pick"),
            slot("kis-1", T, "000007", "pick", "demand"),
        ],
        "pending": [
            {
                "tr_id": T,
                "code": "000004",
                "priority": "scanner",
                "claims": ["scanner"],
                "claimed_at": 2.0,
            },
            {
                "tr_id": T,
                "code": "000009",
                "priority": "scanner",
                "claims": ["scanner"],
                "claimed_at": 1.0,
            },
        ],
    }
    assert listing["slots"][0]["claims"] == ["holding"]  # the admin's copy is untouched
    assert listing["usage"]["kis-1"]["used"] == 4
