"""The signal scans on a schedule (TRADESTREAM_SCAN_EVERY_S): every interval while the market
is open, the VCP and day-trading scans run over the traded codes exactly as
``POST /api/signals/{kind}/scan`` runs them (gateway/signals_api.py) and their results are
published on ``signal:{kind}`` and stored, with source "schedule"."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy.exc
import trio
from sqlalchemy.engine import Engine

from tradestream.gateway.signals_api import KINDS, scan

log = logging.getLogger(__name__)


async def run_scheduled_scans(
    engine: Engine,
    publish: Callable[[str, Sequence[dict[str, Any]], str], int],
    codes: Callable[[], Sequence[str]],
    every_s: float,
    market_open: Callable[[], bool],
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: sleep `every_s`, then, if the market is open, scan and publish each
    kind. A scan that fails (the database away) is logged; the next interval tries again."""
    task_status.started()
    limiter = trio.CapacityLimiter(1)
    while True:
        await trio.sleep(every_s)
        if not market_open():
            continue
        for kind in KINDS:
            try:
                found = await trio.to_thread.run_sync(
                    partial(scan, engine, kind, list(codes()), clock()), limiter=limiter
                )
            except sqlalchemy.exc.SQLAlchemyError as exc:
                log.warning("scheduled %s scan failed: %r", kind, exc)
                continue
            publish(kind, found, "schedule")
