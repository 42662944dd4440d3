"""The scale benchmark (one ingest and gateway processes over the real Redis, beside the asyncio
peer over pub/sub, then recovery under churn) runs end to end at a tiny size and reports its
figures; its churn counting is checked on hand-made records."""

from __future__ import annotations

import coredis
import trio

from tradestream.bench import scale


async def test_scale_tiny_run_reports_both_systems_and_the_churn(redis_url: str) -> None:
    async with coredis.Redis.from_url(redis_url) as r:  # another run's keys are not this one's
        before = {k async for k in r.scan_iter(match="ts-bench:*")}
    with trio.fail_after(240):
        result = await scale.main(
            clients=50,
            topics_per_client=1,
            rate=100.0,
            gateways=(1, 2),
            duration_s=1.0,
            warmup_s=0.5,
            client_procs=1,
            churn=scale.ChurnParams(clients=4, duration_s=5.0, rate=20.0, every_s=(1.0, 2.0)),
            redis_url=redis_url,
        )
    for kind in scale.SYSTEMS:
        direct = result[f"{kind}.direct"]
        assert isinstance(direct, dict)
        for row in ("direct", "gateways_1", "gateways_2"):
            run = result[f"{kind}.{row}"]
            assert isinstance(run, dict), (kind, row)
            assert run["trades_per_s"] > 0, run
            # every code has one subscriber: a trade sent in the window is one expected delivery
            assert run["deliveries_expected"] > 0 and run["deliveries"] > 0, run
            assert run["delivered_of_expected"] > 0.9, run
            assert 0 < run["latency_ms_p50"] <= run["latency_ms_p99"] <= run["latency_ms_max"]
            assert run["ingest_cpu_us_per_delivery"] > 0 and run["ingest_peak_rss_mb"] > 0, run
            assert "client_errors" not in run, run["client_errors"]
            if kind == "tradestream":  # the status endpoints' counts over the window
                assert isinstance(run["conflated"], int) and run["conflated"] >= 0, run
            else:
                assert run["conflated"] is None, run
            if row == "direct":
                assert "gateway_deliveries" not in run and run["gateway_peak_rss_mb"] is None
                continue
            k = int(row.split("_")[1])
            assert len(run["gateway_deliveries"]) == len(run["gateway_cpu_us_per_delivery"]) == k
            assert sum(run["gateway_deliveries"]) == run["deliveries"], run
            assert all(n > 0 for n in run["gateway_deliveries"]), run
            assert all(x > 0 for x in run["gateway_cpu_us_per_delivery"]), run
            assert run["total_cpu_us_per_delivery"] > run["ingest_cpu_us_per_delivery"], run
            added = run["latency_ms_p99"] - direct["latency_ms_p99"]
            assert abs(run["p99_added_by_redis_ms"] - added) < 0.02, run
    for row in ("direct", "gateways_1", "gateways_2"):
        ratios = result[f"ratio.{row}"]
        assert isinstance(ratios, dict) and "deliveries" in ratios, ratios
        assert set(ratios) <= set(scale.RATIO_KEYS), ratios
    churn = result["churn"]
    assert isinstance(churn, dict)
    assert churn["gateways"] == 2 and churn["signals_produced"] == 100, churn
    assert churn["messages_received"] > 0 and churn["reconnects"] > 0, churn
    assert churn["recovered_true"] + churn["recovered_false"] == churn["reconnects"], churn
    assert "post_errors" not in churn, churn
    # what a gateway gives is never duplicated or reordered, recovered or not
    assert churn["duplicates"] == 0 and churn["out_of_order"] == 0, churn
    # every reconnect to another gateway recovers: all of it, exactly once, in order
    assert churn["recovered_false"] == 0, churn
    assert churn["missing"] == 0 and churn["exactly_once_in_order"], churn
    assert churn["messages_received"] == 4 * churn["signals_produced"], churn
    # the run's stream, lease and fence keys are gone
    async with coredis.Redis.from_url(redis_url) as r:
        assert {k async for k in r.scan_iter(match="ts-bench:*")} - before == set()


def _record(chains: list[dict[str, object]], live: bool = True, **kw: int) -> dict[str, object]:
    return {"chains": chains, "live": live, "recovered": kw.get("recovered", 0),
            "unrecovered": kw.get("unrecovered", 0), "other": 0, "errors": [],
            "latencies_us": [1000]}  # fmt: skip


def test_churn_counts_duplicates_disorder_missing_and_skips() -> None:
    produced = [1, 2, 3, 4, 5, 6]  # offsets 11..16
    whole = _record([{"start": 10, "msgs": [[n, 10 + n] for n in produced]}], recovered=2)
    # 3 twice, 5 before 4, 6 never: a recovered chain owes it
    bad = _record(
        [{"start": 10, "msgs": [[1, 11], [2, 12], [3, 13], [3, 13], [5, 15], [4, 14]]}],
        recovered=1,
    )
    # joined after 2 (offset 12), lost its socket after 3, came back unrecovered after 5
    skipped = _record(
        [{"start": 12, "msgs": [[3, 13]]}, {"start": 15, "msgs": [[6, 16]]}], unrecovered=1
    )
    out = scale.churn_counts(produced, [whole, bad, skipped], 1.0)
    assert out["signals_produced"] == 6 and out["messages_received"] == 6 + 6 + 2
    assert out["duplicates"] == 1 and out["out_of_order"] == 1
    assert out["missing"] == 1  # 6 for `bad`; `skipped` owed 3, then 6
    assert out["skipped_after_recovered_false"] == 2  # 4 and 5
    assert out["recovered_true"] == 3 and out["recovered_false"] == 1
    assert out["exactly_once_in_order"] is False
    assert scale.churn_counts(produced, [whole], 1.0)["exactly_once_in_order"] is True
