"""Prometheus metrics of the gateway and the pipeline (`GET /metrics`).

Hot-path counts (messages queued and written per type, conflations, discards) are plain
integers kept by the hub, the outboxes and the senders and read at scrape time by a collector,
so a delivery costs no metric call. The latency histogram (plain bucket counts, exported by the
same collector) is observed once per frame written,
with the oldest event in the frame: upstream receive (the event's `received_ns`) to the socket
write returning.
Each service instance has its own registry (tests run many services in one process).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tradestream.hub import Hub, Msg

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refusals = 0  # connections refused for lack of room (their log lines are sparse)
        r = self.registry
        self.connections_opened = Counter(
            "tradestream_ws_connections_opened", "WebSocket connections authenticated", registry=r
        )
        self.closes = Counter(
            "tradestream_ws_closes",
            "Connections closed by the server, by reason",
            ["reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "tradestream_ws_auth_failures",
            "Rejected handshakes and tokens, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_in = Counter(
            "tradestream_ws_messages_in", "Client messages, by type", ["type"], registry=r
        )
        self.dropped_in = Counter(
            "tradestream_ws_messages_dropped",
            "Client messages dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "tradestream_ws_errors", "error replies, by code", ["code"], registry=r
        )
        self.recoveries = Counter(
            "tradestream_ws_recoveries",
            "subscribes with `since`, by whether everything missed could be replayed",
            ["recovered"],
            registry=r,
        )
        # Once per frame written, so plain numbers (no lock, no metric call) exported at
        # scrape time: tradestream_ws_frames_out_total and the latency histogram.
        self.frames_out = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, +Inf last
        self.latency_sum_s = 0.0
        self.written: dict[str, int] = {}  # message type -> messages written to sockets

    def _latency(self, ns: int) -> None:
        seconds = (time.time_ns() - ns) / 1e9
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum_s += seconds

    def observe_message(self, m: Msg) -> None:
        """One message written as its own frame."""
        self.frames_out += 1
        self.written[m.kind] = self.written.get(m.kind, 0) + 1
        if m.ns:
            self._latency(m.ns)

    def observe_direct(self, m: Msg) -> None:
        """One message written as its own frame by the publisher's direct path: its age is
        taken at its first such write and reused for the others of the same pass."""
        self.frames_out += 1
        self.written[m.kind] = self.written.get(m.kind, 0) + 1
        if m.ns:
            b = m.bucket
            if b < 0:
                m.age_s = (time.time_ns() - m.ns) / 1e9
                b = m.bucket = bisect_left(LATENCY_BUCKETS, m.age_s)
            self.latency_counts[b] += 1
            self.latency_sum_s += m.age_s

    def observe_frame(self, batch: list[Msg]) -> None:
        self.frames_out += 1
        oldest = 0
        written = self.written
        for m in batch:
            written[m.kind] = written.get(m.kind, 0) + 1
            if m.ns and (oldest == 0 or m.ns < oldest):
                oldest = m.ns
        if oldest:
            self._latency(oldest)

    def attach(self, hub: Hub, status: Callable[[], dict[str, Any]]) -> None:
        """Export the hub's counters and the service status at scrape time."""
        self.registry.register(_StatusCollector(hub, status, self.written, self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatusCollector(Collector):
    def __init__(
        self,
        hub: Hub,
        status: Callable[[], dict[str, Any]],
        written: dict[str, int],
        metrics: GatewayMetrics,
    ) -> None:
        self._hub = hub
        self._status = status
        self._written = written
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        hub, m = self._hub, self._metrics
        c = CounterMetricFamily("tradestream_ws_frames_out", "WebSocket frames written")
        c.add_metric([], m.frames_out)
        yield c
        cumulative, buckets = 0, []
        for le, n in zip((*LATENCY_BUCKETS, math.inf), m.latency_counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(le), cumulative))
        h = HistogramMetricFamily(
            "tradestream_delivery_latency_seconds",
            "Upstream receive to socket write, oldest event of each frame",
        )
        h.add_metric([], buckets, m.latency_sum_s)
        yield h
        g = GaugeMetricFamily("tradestream_ws_connections", "Open WebSocket connections")
        g.add_metric([], len(hub.clients))
        yield g
        g = GaugeMetricFamily(
            "tradestream_ws_handshaking", "Sockets accepted and still authenticating"
        )
        g.add_metric([], hub.handshaking)
        yield g
        g = GaugeMetricFamily("tradestream_ws_subscriptions", "Subscriptions over all connections")
        g.add_metric([], sum(hub.subscriptions().values()))
        yield g
        c = CounterMetricFamily(
            "tradestream_ws_messages_out",
            "Messages written to client sockets, by type",
            labels=["type"],
        )
        for kind, n in sorted(self._written.items()):
            c.add_metric([kind], n)
        yield c
        c = CounterMetricFamily(
            "tradestream_ws_messages_queued",
            "Messages queued to client outboxes, by type",
            labels=["type"],
        )
        for kind, n in sorted(hub.delivered.items()):
            c.add_metric([kind], n)
        yield c
        c = CounterMetricFamily(
            "tradestream_ws_conflated", "Messages replaced by a newer one before being sent"
        )
        c.add_metric([], hub.conflated_total())
        yield c
        c = CounterMetricFamily(
            "tradestream_ws_discarded", "Messages still queued when their connection was closed"
        )
        c.add_metric([], hub.discarded_total())
        yield c
        st = self._status()
        g = GaugeMetricFamily(
            "tradestream_queue_depth", "Items waiting on a pipeline edge", labels=["edge"]
        )
        for edge, q in st.get("queues", {}).items():
            g.add_metric([edge], q["depth"])
        yield g
        g = GaugeMetricFamily(
            "tradestream_upstream_streaming",
            "1 while an upstream session streams",
            labels=["session"],
        )
        c = CounterMetricFamily(
            "tradestream_upstream_frames", "Frames received upstream", labels=["session"]
        )
        for f in st.get("upstream", []):
            g.add_metric([f["name"]], 1 if f["state"] == "streaming" else 0)
            c.add_metric([f["name"]], f.get("frames", 0))
        yield g
        yield c
        c = CounterMetricFamily(
            "tradestream_events", "Events through the router, by type", labels=["type"]
        )
        for kind, n in st.get("router", {}).get("by_type", {}).items():
            c.add_metric([kind], n)
        yield c
        store = st.get("store", {})
        c = CounterMetricFamily("tradestream_store_rows", "Rows written to the database")
        c.add_metric([], store.get("rows", 0))
        yield c
        g = GaugeMetricFamily("tradestream_store_spooled_rows", "Rows waiting in the disk spool")
        g.add_metric([], store.get("spool_rows", 0))
        yield g
        slots = st.get("slots")
        if isinstance(slots, dict):
            g = GaugeMetricFamily(
                "tradestream_slots_used", "Upstream registrations in use", labels=["session"]
            )
            cap = GaugeMetricFamily(
                "tradestream_slots_capacity",
                "Upstream registrations usable for market data",
                labels=["session"],
            )
            for name, u in slots.get("usage", {}).items():
                g.add_metric([name], u["used"])
                cap.add_metric([name], u["capacity"])
            yield g
            yield cap
            g = GaugeMetricFamily("tradestream_slots_pending", "Claims waiting for a slot")
            g.add_metric([], slots.get("pending", 0))
            yield g
