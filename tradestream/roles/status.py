"""The ingest's part of the status document (GET /api/ws/status, /metrics): sessions, queues,
router, store, slots, strategies, Redis. The gateway adds its connections and subscriptions
(gateway/app.py)."""

from __future__ import annotations

import time
from typing import Any

from tradestream.roles.ingest import Ingest


def ingest_status(ing: Ingest, admin: bool) -> dict[str, Any]:
    """For anyone but an admin the slots come without the holdings (slots/driver.py)."""
    alerts = ing.alerts_out
    redis: dict[str, Any] = {
        "configured": alerts is not None,
        "dropped_here": alerts.dropped_here if alerts else 0,
    }
    if ing.redis is not None:
        redis.update(ing.redis.as_dict())
    gate = ing.state.gate_state
    return {
        "price_streamer_running": any(f.state == "streaming" for f in ing.feeds),
        "upstream": [f.as_dict() for f in ing.feeds],
        "queues": {
            name: {
                "depth": ch.statistics().current_buffer_used,
                "size": ch.statistics().max_buffer_size,
            }
            for name, ch in ing.queues.items()
        },
        "router": ing.router.as_dict(),
        "store": ing.flusher.as_dict(),
        "journal": ing.journal.as_dict() if ing.journal is not None else None,
        "market_movers": ing.market_movers.as_dict() if ing.market_movers is not None else None,
        "backfill": ing.backfill.stats.as_dict() if ing.backfill is not None else None,
        "daily_bars": ing.daily_bars.as_dict() if ing.daily_bars is not None else None,
        "recorder": ing.recorder.__dict__ if ing.recorder is not None else None,
        "slots": ing.slots.summary(admin=admin),
        "positions": ing.positions.as_dict(),
        "side_events": dict(ing.side),
        "strategies": ing.strategies.status(),
        "redis": redis,
        # access tokens and approval keys: state, expiry, counts (never a value or secret)
        "credentials": ing.credentials.status() if ing.credentials is not None else [],
        "market_gate": gate.level if gate else None,
        "uptime_s": round(time.time() - ing.started_at, 3),
    }
