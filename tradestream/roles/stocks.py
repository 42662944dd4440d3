"""The stock master in the running service and the CLI: the broker's master files loaded into
the `stocks` table and the in-memory names (feeds/kis/master.py, store/stocks.py)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import httpx
import sqlalchemy.exc
import trio
from sqlalchemy.engine import Engine

from tradestream.errors import FeedError
from tradestream.feeds.kis.master import fetch_masters
from tradestream.store.stocks import Stock, last_loaded, upsert_stocks

log = logging.getLogger(__name__)

SOURCE = "master"
REFRESH_S = 20 * 3600.0  # a master older than this is loaded again (daily, with slack)
RETRY_S = 300.0


async def load_master(engine: Engine, base_url: str, timeout_s: float = 30.0) -> dict[str, str]:
    """Download both markets' master files and store them; returns code -> name."""
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        rows = await fetch_masters(http, base_url)
    stocks = [Stock(r.code, r.name, r.market) for r in rows]
    await trio.to_thread.run_sync(upsert_stocks, engine, stocks, SOURCE)
    return {s.code: s.name for s in stocks}


async def run_stock_master(
    engine: Engine,
    base_url: str,
    names: dict[str, str],
    *,
    refresh_s: float = REFRESH_S,
    retry_s: float = RETRY_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the master at most `refresh_s` old: at start if it is older (or was never
    loaded), then once it ages again; a failed load is logged and retried after `retry_s`.
    `names` (the router's) gets every loaded name."""
    task_status.started()
    while True:
        try:
            last = await trio.to_thread.run_sync(last_loaded, engine, SOURCE)
            age = math.inf if last is None else (datetime.now(UTC) - last).total_seconds()
            if age >= refresh_s:
                loaded = await load_master(engine, base_url)
                names.update(loaded)
                log.info("stock master: %d codes loaded from %s", len(loaded), base_url)
                age = 0.0
        except (FeedError, httpx.HTTPError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            log.warning("stock master: %s; next try in %.0f s", exc, retry_s)
            await trio.sleep(retry_s)
            continue
        await trio.sleep(max(1.0, refresh_s - age))
