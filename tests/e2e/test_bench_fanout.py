"""The fan-out benchmark scenario runs end to end at a tiny size and reports its figures."""

from __future__ import annotations

from tradestream.bench import fanout


async def test_fanout_tiny_run_reports_both_servers() -> None:
    result = await fanout.main(
        clients=5,
        topics_per_client=2,
        tickers=10,
        rate=200.0,
        duration_s=1.0,
        warmup_s=0.3,
        client_procs=1,
        unbatched=False,
        calibrate_s=0.3,
    )
    for kind in ("tradestream_batch", "seed"):
        run = result[kind]
        assert isinstance(run, dict)
        assert run["deliveries_per_s"] > 0, run
        assert run["offered_deliveries_per_s"] > 0, run
        assert run["latency_samples"] > 0 and run["latency_ms_p50"] <= run["latency_ms_p99"]
        assert run["server_cpu_us_per_delivery"] > 0
        assert "client_errors" not in run, run["client_errors"]
    assert "conflated_per_s" in result["tradestream_batch"]
    ratios = result["ratio_tradestream_batch_vs_seed"]
    assert isinstance(ratios, dict)
    assert set(ratios) == {"deliveries_per_s", "latency_p50", "latency_p99", "cpu_per_delivery"}
