"""The failover benchmark (the service as its own process, a client in this one) runs end to
end at a small size and reports figures that make sense: each broker's outage is bridged by
the other well before the outage ends, while the one-broker peer is silent for all of it."""

from __future__ import annotations

import trio

from tradestream.bench import failover


async def test_failover_tiny_run_reports_both_brokers_and_the_peer() -> None:
    with trio.fail_after(240):
        result = await failover.main(rounds=1, down_s=8.0, failover_after_s=2.0)
    pooled, peer = result["pooled"], result["peer_kis_only"]
    assert isinstance(pooled, dict) and isinstance(peer, dict)
    rounds = pooled["rounds"]
    assert [r["broker_down"] for r in rounds] == ["kiwoom", "kis"]
    for r in rounds:
        assert r["codes"] > 0
        # back on the other broker after about failover_after_s (+ a step, + registration)
        assert 2.0 <= r["fault_to_data_s_max"] < 8.0, r
        assert r["home_gap_max_s"] < 2.0, r  # home again, streaming
    (alone,) = peer["rounds"]
    assert alone["fault_to_data_s_max"] >= 8.0, alone  # nothing bridges the outage
    assert pooled["repeated_or_older_updates"] == 0
    assert any("kiwoom-1 lost" in g for g in pooled["feed_gaps"])
    assert any("kis-1 lost" in g for g in pooled["feed_gaps"])
