"""The daily VCP end to end: the broker's daily bars (the simulator's period-price TR) cached
for the streamed codes at start, and the VCP scan over them finding the codes whose history
forms the pattern."""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import tok
from tests.e2e.test_service import TIMEOUT_S, service, wait_for
from tradestream.sim.history import DAYS, vcp_codes
from tradestream.sim.market import DEFAULT_TICKERS


async def test_daily_bars_cached_and_the_vcp_scan_finds_the_pattern(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    pattern = vcp_codes([t.code for t in DEFAULT_TICKERS], s.sim.seed)
    others = [t.code for t in DEFAULT_TICKERS if t.code not in pattern][:3]
    watch = (*sorted(pattern), *others)
    s = make_settings(tmp_path, watchlist=watch)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(
                lambda: all(running.state.tick(c) is not None for c in watch), "every code trades"
            )
            engine = sa.create_engine(s.store.url)

            def cached() -> dict[str, int]:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.text("SELECT stock_code, count(*) FROM daily_bars GROUP BY stock_code")
                    )
                    return {r[0]: r[1] for r in rows}

            await wait_for(lambda: len(cached()) == len(watch), "daily bars cached", 20)
            counts = cached()
            engine.dispose()
            admin = {"Authorization": f"Bearer {tok(running, 'ops', role='admin')}"}
            async with httpx.AsyncClient(base_url=running.url, headers=admin) as http:
                r = await http.post("/api/signals/vcp/scan")
    assert set(counts.values()) == {DAYS}  # paged: 200 days over calls of at most 100
    assert r.status_code == 200, r.text
    found = {x["symbol"] for x in r.json()["signals"]}
    assert found == pattern  # the pattern's codes and none of the random walks
