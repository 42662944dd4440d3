"""The alert latency benchmark runs end to end at a tiny size and reports its figures."""

from __future__ import annotations

import trio

from tradestream.bench import alerts
from tradestream.sim.market import DEFAULT_TICKERS


async def test_alerts_tiny_run_reports_latencies() -> None:
    # one up and one down round over every code: the down round checks direction matching
    n = 2 * len(DEFAULT_TICKERS)
    with trio.fail_after(60):
        result = await alerts.main(alerts=n, tick_rate=500.0)
    assert result["alerts"] == n
    assert isinstance(result["skipped"], int) and result["skipped"] >= 0
    p50, p99, top = (result[f"tick_to_client_ms_{k}"] for k in ("p50", "p99", "max"))
    assert 0 < p50 <= p99 <= top < 10_000  # type: ignore[operator]
