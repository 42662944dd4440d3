"""The gateway's hot-path metrics are plain numbers exported at scrape time in the
Prometheus text format: frames written, messages per type, the delivery latency histogram."""

from __future__ import annotations

import time

from tradestream.gateway.metrics import GatewayMetrics
from tradestream.hub import Hub, Msg


def _scrape(m: GatewayMetrics) -> dict[str, float]:
    values = {}
    for line in m.render().decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_frames_and_latency_buckets_are_exported_cumulatively() -> None:
    m = GatewayMetrics()
    m.attach(Hub(), dict)
    now = time.time_ns()
    m.observe_message(Msg("a", "price_update", now - 3_000_000))  # about 3 ms old
    m.observe_frame([Msg("b", "alert", now - 2_000_000_000), Msg("c", "alert", now)])  # 2 s
    m.observe_message(Msg("reply"))  # no upstream time: no latency
    v = _scrape(m)
    assert v["tradestream_ws_frames_out_total"] == 3
    assert v['tradestream_delivery_latency_seconds_bucket{le="0.0025"}'] == 0
    assert v['tradestream_delivery_latency_seconds_bucket{le="0.005"}'] == 1
    assert v['tradestream_delivery_latency_seconds_bucket{le="1.0"}'] == 1
    assert v['tradestream_delivery_latency_seconds_bucket{le="2.5"}'] == 2
    assert v['tradestream_delivery_latency_seconds_bucket{le="+Inf"}'] == 2
    assert v["tradestream_delivery_latency_seconds_count"] == 2
    assert 2.0 < v["tradestream_delivery_latency_seconds_sum"] < 2.5
