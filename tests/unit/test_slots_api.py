"""What a non-admin sees of the slots listing (pure): no audits, no holding claims."""

from __future__ import annotations

from tradestream.gateway.slots_api import _without_holdings


def test_holdings_are_left_out_for_non_admins() -> None:
    listing = {
        "usage": {"kis-1": {"used": 3, "capacity": 39, "up": True}}, "pending": [
            {"tr_id": "H0STCNT0", "code": "000003", "priority": "holding",
             "claims": ["holding"], "claimed_at": 1.0},
            {"tr_id": "H0STCNT0", "code": "000004", "priority": "holding",
             "claims": ["holding", "scanner"], "claimed_at": 1.0}],
        "recent": [{"action": "grant", "code": "000001"}],
        "slots": [
            {"code": "000001", "priority": "holding", "claims": ["holding"]},
            {"code": "000002", "priority": "holding", "claims": ["holding", "pick", "demand"]},
            {"code": "000005", "priority": "pick", "claims": ["pick"]}]}
    public = _without_holdings(listing)
    assert public == {
        "usage": listing["usage"],
        "slots": [{"code": "000002", "priority": "pick", "claims": ["pick", "demand"]},
                  {"code": "000005", "priority": "pick", "claims": ["pick"]}],
        "pending": [{"tr_id": "H0STCNT0", "code": "000004", "priority": "scanner",
                     "claims": ["scanner"], "claimed_at": 1.0}]}
    assert listing["slots"][0]["claims"] == ["holding"]  # the admin's copy is untouched
