"""What the slots look like from outside: the REST listing, the status section, audit events.

Pure functions of the manager's records and the driver's counters: the admin's view
(`status`, `listing`), the redacted one for everybody else (`without_holdings`,
`public_summary`), and `audit_event`, the stored `SlotAudit` event for an `Audit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tradestream.events import KST, SlotAudit
from tradestream.slots.policy import Audit, PendingRecord, SlotManager, SlotRecord

RECENT_AUDITS = 20  # audit records in the status section, newest last


def audit_event(a: Audit) -> SlotAudit:
    """The `SlotAudit` event stored for `a` (`a.at`: the driver's clock, wall-clock seconds in
    the service; no session, as for a pending or refused claim: "")."""
    return SlotAudit(
        "slots",
        datetime.fromtimestamp(a.at, KST),
        a.action,
        a.session or "",
        a.tr_id,
        a.code,
        a.priority.name.lower(),
        a.reason,
    )


def audit_dict(a: Audit) -> dict[str, Any]:
    return {
        "at": a.at,
        "action": a.action,
        "session": a.session,
        "tr_id": a.tr_id,
        "code": a.code,
        "priority": a.priority.name.lower(),
        "reason": a.reason,
    }


def slot_rows(records: Iterable[SlotRecord]) -> list[dict[str, Any]]:
    return [
        {
            "session": r.session,
            "tr_id": r.tr_id,
            "code": r.code,
            "priority": r.priority.name.lower(),
            "claims": [c.name.lower() for c in r.claims],
            "subscribed_at": r.subscribed_at,
            "last_data_at": r.last_data_at,
            "stale": r.stale,
            "retiring_at": r.retiring_at,
        }
        for r in records
    ]


def pending_rows(records: Iterable[PendingRecord]) -> list[dict[str, Any]]:
    return [
        {
            "tr_id": p.tr_id,
            "code": p.code,
            "priority": p.priority.name.lower(),
            "claims": [c.name.lower() for c in p.claims],
            "claimed_at": p.claimed_at,
        }
        for p in records
    ]


def status(
    manager: SlotManager,
    *,
    lost: Iterable[str],
    notice_session: str | None,
    demand: int,
    stats: Mapping[str, int],
) -> dict[str, Any]:
    """The admin's status section: usage per session, counters, the recent audit records."""
    usage = {
        name: {
            "used": u.used,
            "capacity": u.capacity,
            "up": manager.is_up(name),
            **({"broker": b} if (b := manager.broker(name)) is not None else {}),
        }
        for name, u in manager.usage().items()
    }
    return {
        "usage": usage,
        "lost_sessions": sorted(lost),
        "notice_session": notice_session,
        "pending": len(manager.pending()),
        "demand": demand,
        **stats,
        "recent": [audit_dict(a) for a in manager.audit_log[-RECENT_AUDITS:]],
    }


def listing(
    status: dict[str, Any],
    slots: list[dict[str, Any]],
    pending: list[dict[str, Any]],
    *,
    admin: bool,
) -> dict[str, Any]:
    """`GET /api/slots`: the status with every slot and pending claim (the rows replace the
    pending count); for anyone but an admin without the holdings (`without_holdings`)."""
    out = {**status, "slots": slots, "pending": pending}
    return out if admin else without_holdings(out)


def public_summary(public_listing: dict[str, Any]) -> dict[str, Any]:
    """The status section for anyone but an admin: the counters of the redacted listing, the
    pending rows counted again, no slot rows."""
    public = dict(public_listing)
    public["pending"] = len(public.pop("pending"))
    del public["slots"]
    return public


def without_holdings(listing: dict[str, Any]) -> dict[str, Any]:
    """The slots listing for a non-admin: no audits, no holding claims (a slot held only for
    a holding is left out; others keep their next-best claim as their priority).

    Nothing may tell the holdings apart: each session's `used` counts the rows listed (the
    manager's count less the listed rows would be the holding-only slots), and rows are
    sorted by (session, tr_id, code), not by priority (holdings first would show which
    listed slots also carry a holding claim)."""
    out = {k: v for k, v in listing.items() if k not in ("recent", "slots", "pending", "usage")}
    for part in ("slots", "pending"):
        rows = []
        for row in listing[part]:
            claims = [c for c in row["claims"] if c != "holding"]
            if claims:
                rows.append({**row, "claims": claims, "priority": claims[0]})
        rows.sort(key=lambda r: (r.get("session") or "", r["tr_id"], r["code"]))
        out[part] = rows
    if "usage" in listing:
        used: dict[str, int] = {}
        for row in out["slots"]:
            used[row.get("session") or ""] = used.get(row.get("session") or "", 0) + 1
        out["usage"] = {
            name: {**u, "used": used.get(name, 0)} for name, u in listing["usage"].items()
        }
    return out
