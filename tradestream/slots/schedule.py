"""The daily picks refresh: at start (a service started after the morning refresh runs on
today's list) and at `at` (KST) on every trading day, read the picks source (a file or an HTTP
URL, slots/picks.py) and apply it as `PUT /api/watchlist/picks` does."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container
from datetime import date, datetime, time
from pathlib import Path

import httpx
import trio

from tradestream.events import KST
from tradestream.slots.picks import Picks, next_run, parse_picks

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0
RETRY_S = 300.0  # a source that fails is tried again this much later (the same morning)


async def read_source(source: str) -> str:
    """The text of a picks source: ``http(s)://`` is fetched, anything else is a file."""
    if source.startswith(("http://", "https://")):
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S) as http:
            resp = await http.get(source)
            resp.raise_for_status()
            return resp.text
    return await trio.to_thread.run_sync(Path(source).read_text)


async def run_scheduled_picks(
    source: str,
    at: time,
    holidays: Container[date],
    apply: Callable[[Picks], object],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(KST),
    read: Callable[[str], Awaitable[str]] = read_source,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply the source's picks now, then at each trading day's `at`, for ever. A source that
    cannot be read or parsed is logged and tried again RETRY_S later; the picks in force stay.
    started(): after the first attempt."""
    due = now()
    started = False
    while True:
        await trio.sleep(max(0.0, (due - now()).total_seconds()))
        try:
            picks = parse_picks(await read(source))
        except (OSError, ValueError, httpx.HTTPError) as exc:
            if not started:
                started = True
                task_status.started()
            log.error("daily picks from %s failed (%s); trying again in %.0f s", source, exc,
                      RETRY_S)  # fmt: skip
            due = min(
                datetime.fromtimestamp(now().timestamp() + RETRY_S, KST),
                next_run(now(), at, holidays),
            )
            continue
        apply(picks)
        if not started:
            started = True
            task_status.started()
        log.info("daily picks from %s: %d codes, %d order books", source, len(picks.codes),
                 len(picks.orderbook))  # fmt: skip
        due = next_run(now(), at, holidays)
