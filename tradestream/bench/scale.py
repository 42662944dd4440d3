"""Scale-out over Redis as users see it: one ingest process and 1, 2, 3 gateway processes, fed
over a real WebSocket, clients in other processes, beside the strong peer doing the same job
in the same run.

Per system and run, one cluster: the bench upstream (bench/upstream.py in its control mode:
H0STCNT0 trades at `rate` per second over 50 codes, the send instant in ACML_VOL), the ingest
and the gateways as processes of their own.
- tradestream: `tradestream run` with TRADESTREAM_ROLE=ingest (two KIS app keys, SQLite, every
  client-facing message appended to a Redis stream of this run's own, deleted afterwards),
  gateways with TRADESTREAM_ROLE=gateway reading it;
- peer (bench/scale_peer.py): an asyncio ingest that decodes as bench/peer.py, stores every
  trade and PUBLISHes each encoded trade on Redis pub/sub; asyncio `websockets` gateways that
  SUBSCRIBE and `broadcast()`.

Rows, one measured window each (the fan-out bench's clients, bench/clients.py: `clients` x
`topics_per_client` price topics, every code with the same audience):
- `direct`: the clients on the ingest itself, no Redis hop (the reference);
- `gateways_K` for each K of `gateways` (started one after the other, so exactly K run): the
  clients spread evenly over the K gateways, each gateway's in client processes of its own.

Each row: deliveries expected (trades sent in the window x subscribers of their code) and
received, per second too; latency upstream send -> client receive (p50, p99, max) and, for a
gateway row, `p99_added_by_redis_ms` (its p99 minus the direct row's); CPU (/proc/<pid>/stat)
of the ingest and of each gateway per delivery (the ingest's per trade too; `total_...` is the
ingest's and the gateways' together) and as % of a core; Redis's CPU (INFO cpu) per trade; peak
RSS (VmHWM); the machine's idle share. `ratio.<row>`: tradestream / peer.

Then, tradestream only (the peer's pub/sub has no lossless topics and no recovery), recovery
under churn with the largest number of gateways, while the trades flow: a producer POSTs
`churn_rate` lossless signals a second to the ingest's REST (`POST /api/signals/{kind}`, a
producer JWT, each signal `{"symbol": "005930", "n": seq, "t": µs}`) for `churn_s`; `churn_clients`
clients (one process of their own) each subscribe to `signal:{kind}` on a random gateway and,
every 2-5 s, drop the socket and come back on another one with `since` (the last offset and
the epoch seen). Counted: signals produced; messages received; duplicates; out of order;
missing (a produced signal after the start of a client's chain of recovered subscriptions
that the chain never got); recoveries true / false; and what `recovered: false` skipped.
Exactly once, in order, is duplicates = out of order = missing = 0 with no `recovered: false`.
(Signal kinds are `vcp` and `daytrading`: `signal:bench` is not a topic.)

`python -m tradestream.bench scale` runs it once with the defaults; ``python -m
tradestream.bench.scale --runs 3`` (and the other parameters, `--help`) for several runs, with
each run's figures and a summary of the ratios across them.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import coredis
import httpx
import msgspec
import trio

from tradestream import topics
from tradestream.bench.clients import (
    ClientProcess,
    assign,
    collect,
    machine_busy_s,
    open_window,
    pct,
    read_line,
    start_clients,
    stop,
    topic_lists,
    wait_ready,
)
from tradestream.bench.fanout import SECRET
from tradestream.bench.served import (
    MAX_LATENCY_SAMPLES,
    _free_port,
    _peak_rss_mb,
    _proc_cpu_s,
    _start,
    _wait_http,
    service_env,
)
from tradestream.bench.store import scratch
from tradestream.feeds.transport import open_upstream
from tradestream.gateway.auth import Authenticator
from tradestream.sim.market import DEFAULT_TICKERS

SYSTEMS = ("tradestream", "peer")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
STOP_WAIT_S = 30.0
RATIO_KEYS = (
    "deliveries",
    "latency_ms_p50",
    "latency_ms_p99",
    "p99_added_by_redis_ms",
    "ingest_cpu_us_per_delivery",
    "gateway_cpu_us_per_delivery_mean",
    "total_cpu_us_per_delivery",
    "redis_cpu_us_per_trade",
    "ingest_peak_rss_mb",
)
ROW_SUMMARY = ("latency_ms_p99", "p99_added_by_redis_ms", "total_cpu_us_per_delivery")


@dataclass
class Params:
    clients: int
    topics_per_client: int
    rate: float
    duration_s: float
    warmup_s: float
    client_procs: int
    codes: list[str]
    redis_url: str

    @property
    def per_code(self) -> int:  # subscribers of every code
        return self.clients * self.topics_per_client // len(self.codes)

    @property
    def stride(self) -> int:  # latency: one delivery in `stride` sampled
        deliveries = self.rate * self.duration_s * self.per_code
        return max(1, math.ceil(deliveries / MAX_LATENCY_SAMPLES))


@dataclass
class _Server:
    name: str  # "ingest", "gateway-1", ...
    proc: trio.Process
    port: int


@dataclass
class _Sample:
    made: int  # trades the upstream made since its start
    cpu_s: dict[str, float]  # per server name
    redis_cpu_s: float
    busy_s: float
    upstream_cpu_s: float
    conflated: dict[str, int]  # per tradestream server: updates its outboxes conflated


@dataclass
class _Cluster:
    """One system's processes for one run: the upstream, the ingest, the gateways so far."""

    kind: str
    p: Params
    tmp: Path
    redis: coredis.Redis[bytes]
    name: str = field(default_factory=lambda: f"ts-bench:{uuid.uuid4().hex[:12]}")
    up: trio.Process | None = None
    up_buf: bytearray = field(default_factory=bytearray)
    ingest: _Server | None = None
    gateways: list[_Server] = field(default_factory=list)
    auth: Authenticator = field(default_factory=lambda: Authenticator(SECRET))

    @property
    def stream(self) -> str:
        return f"{self.name}:stream"

    async def upstream(self, command: str) -> dict[str, Any]:
        assert self.up is not None and self.up.stdin is not None and self.up.stdout is not None
        await self.up.stdin.send_all(f"{command}\n".encode())
        with trio.fail_after(10):
            answer: dict[str, Any] = json.loads(await read_line(self.up.stdout, self.up_buf))
        return answer

    async def start(self, db: str) -> None:
        py, p = sys.executable, self.p
        argv = [py, "-m", "tradestream.bench.upstream", str(p.rate), "1", "--control"]
        self.up = await _start(argv)
        assert self.up.stdout is not None
        _, http_port, ws_port = (await read_line(self.up.stdout, self.up_buf)).decode().split()
        port = _free_port()
        if self.kind == "peer":
            proc = await _start(
                [py, "-m", "tradestream.bench.scale_peer", "ingest", f"ws://127.0.0.1:{ws_port}",
                 str(port), db, ",".join(p.codes), p.redis_url, f"{self.name}:"]
            )  # fmt: skip
            self.ingest = _Server("ingest", proc, port)
            await _said_ready(proc)
            return
        env = service_env(http_port, ws_port, p.codes, port, db, self.tmp) | {
            "TRADESTREAM_ROLE": "ingest",
            "TRADESTREAM_REDIS_URL": p.redis_url,
            "TRADESTREAM_REDIS_STREAM": self.stream,
            "TRADESTREAM_DAILY_BARS": "0",  # the bench upstream has no daily bars to give,
            "TRADESTREAM_KIS_MASTER_URL": "none",  # nor stock master files
        }
        proc = await _start([py, "-m", "tradestream", "run"], env=env, cwd=self.tmp)
        self.ingest = _Server("ingest", proc, port)
        await _wait_http(port)
        await trio.sleep(2.0)  # both sessions connect and register

    async def add_gateway(self) -> _Server:
        p, port = self.p, _free_port()
        name = f"gateway-{len(self.gateways) + 1}"
        if self.kind == "peer":
            proc = await _start(
                [sys.executable, "-m", "tradestream.bench.scale_peer", "gateway", str(port),
                 ",".join(p.codes), p.redis_url, f"{self.name}:"]
            )  # fmt: skip
            self.gateways.append(_Server(name, proc, port))
            await _said_ready(proc)
            return self.gateways[-1]
        env = {
            **os.environ,
            "TRADESTREAM_ROLE": "gateway",
            "TRADESTREAM_REDIS_URL": p.redis_url,
            "TRADESTREAM_REDIS_STREAM": self.stream,
            "TRADESTREAM_JWT_SECRET": SECRET,
            "TRADESTREAM_PORT": str(port),
            "TRADESTREAM_LOG_LEVEL": "WARNING",
        }
        proc = await _start([sys.executable, "-m", "tradestream", "run"], env=env, cwd=self.tmp)
        self.gateways.append(_Server(name, proc, port))
        await _wait_http(port)
        await self._caught_up(port)
        return self.gateways[-1]

    async def _caught_up(self, port: int) -> None:
        """A new gateway reads the stream from its first entry: wait until it has read what the
        stream held (at most 30 s; the window's warm-up follows anyway)."""
        with trio.move_on_after(30):
            while True:
                doc = await self.status(port)
                if doc["redis"]["received"] >= await self.redis.xlen(self.stream) - self.p.rate:
                    return
                await trio.sleep(0.2)

    async def status(self, port: int) -> dict[str, Any]:
        admin = self.auth.issue("bench-admin", role="admin")
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"http://127.0.0.1:{port}/api/ws/status", params={"token": admin})
            doc: dict[str, Any] = r.json()
        return doc

    def ws_url(self, server: _Server, user: str) -> str:
        if self.kind == "peer":
            return f"ws://127.0.0.1:{server.port}/"
        return f"ws://127.0.0.1:{server.port}/api/ws?token={self.auth.issue(user)}"

    def servers(self) -> list[_Server]:
        assert self.ingest is not None
        return [self.ingest, *self.gateways]

    async def sample(self) -> _Sample:
        made = (await self.upstream("count"))["made"]
        info: dict[str, Any] = await self.redis.info("cpu")
        conflated = {}
        if self.kind == "tradestream":
            for s in self.servers():
                conflated[s.name] = (await self.status(s.port))["outboxes"]["conflated"]
        return _Sample(
            made,
            {s.name: _proc_cpu_s(s.proc.pid) for s in self.servers()},
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            machine_busy_s(),
            _proc_cpu_s(self.up.pid) if self.up is not None else 0.0,
            conflated,
        )

    async def close(self) -> None:
        """Gateways, then the ingest (SIGINT: tradestream drains, marks the stream's end and
        frees its lease), the upstream last; this run's Redis keys are deleted."""
        if self.up is not None and self.up.returncode is None:
            with trio.move_on_after(5):
                try:
                    await self.upstream("pause")  # the ingest's drain finds its upstream quiet
                except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the upstream is gone already
        for server in (*reversed(self.gateways), *([self.ingest] if self.ingest else [])):
            if server.proc.returncode is None:
                server.proc.send_signal(signal.SIGINT)
            with trio.move_on_after(STOP_WAIT_S):
                await server.proc.wait()
        for proc in (
            *(s.proc for s in self.gateways),
            *([self.ingest.proc] if self.ingest else []),
        ):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        if self.up is not None:
            if self.up.returncode is None:
                self.up.kill()
            await self.up.wait()
        keys = [k async for k in self.redis.scan_iter(match=f"*{self.name}*")]
        if keys:
            await self.redis.delete(keys)


async def _said_ready(proc: trio.Process) -> None:
    assert proc.stdout is not None
    with trio.fail_after(30):
        line = await read_line(proc.stdout, bytearray())
    assert line == b"ready", line


async def _sleep_until_ns(t_ns: int) -> None:
    await trio.sleep(max(0.0, (t_ns - time.time_ns()) / 1e9))


def _r(x: float, nd: int = 2) -> float | None:
    return round(x, nd) if math.isfinite(x) else None


async def _row(cl: _Cluster, on: list[_Server]) -> dict[str, Any]:
    """One measured window with the clients spread evenly over `on`: client i on on[i % k],
    the clients of each server in client processes of their own."""
    p, k = cl.p, len(on)
    lists = topic_lists(assign(p.codes, p.clients, p.topics_per_client))
    groups: list[list[ClientProcess]] = []
    try:
        for g, server in enumerate(on):
            mine = range(g, p.clients, k)
            urls = [cl.ws_url(server, f"bench-{i}") for i in mine]
            procs = max(1, p.client_procs // k)
            groups.append(await start_clients(urls, [lists[i] for i in mine], procs, p.stride))
        every = [cp for group in groups for cp in group]
        await wait_ready(every)
        start_ns, end_ns = await open_window(every, p.warmup_s, p.duration_s)
        await _sleep_until_ns(start_ns)
        a = await cl.sample()
        await _sleep_until_ns(end_ns)
        b = await cl.sample()
        rss = {s.name: _peak_rss_mb(s.proc.pid) for s in cl.servers()}
        results = [await collect(group) for group in groups]
    finally:
        await stop([cp for group in groups for cp in group])
    return _figures(cl, on, a, b, rss, results)


def _figures(
    cl: _Cluster,
    on: list[_Server],
    a: _Sample,
    b: _Sample,
    rss: dict[str, float],
    results: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    p, d = cl.p, cl.p.duration_s
    trades = b.made - a.made
    expected = trades * p.per_code
    per_server = [sum(r["messages"] for r in group) for group in results]
    delivered = sum(per_server)
    lat = sorted(x for group in results for r in group for x in r["latencies_us"])
    errors = [e for group in results for r in group for e in r["errors"]]
    cpu = {name: b.cpu_s[name] - a.cpu_s[name] for name in b.cpu_s}
    gateways = [] if on == [cl.ingest] else [s.name for s in on]
    redis_cpu = b.redis_cpu_s - a.redis_cpu_s
    busy = b.busy_s - a.busy_s
    clients_cpu = sum(r["cpu_s"] for group in results for r in group)
    ours = sum(cpu.values()) + redis_cpu + clients_cpu + b.upstream_cpu_s - a.upstream_cpu_s
    cores = os.cpu_count() or 1

    def per(x: float, n: int) -> float | None:
        return round(x * 1e6 / n, 2) if n else None

    out: dict[str, Any] = {
        "clients_on": "the ingest" if on == [cl.ingest] else f"{len(on)} gateway(s)",
        "trades_per_s": round(trades / d),
        "deliveries_expected": expected,
        "deliveries": delivered,
        "delivered_of_expected": round(delivered / expected, 4) if expected else None,
        # tradestream: price updates its clients' servers conflated (a client behind gets
        # the latest price, not a backlog); the peer never conflates
        "conflated": (
            sum(b.conflated[s.name] - a.conflated[s.name] for s in on) if b.conflated else None
        ),
        "deliveries_per_s_expected": round(expected / d),
        "deliveries_per_s": round(delivered / d),
        "latency_ms_p50": _r(pct(lat, 0.5) / 1000),
        "latency_ms_p99": _r(pct(lat, 0.99) / 1000),
        "latency_ms_max": round(lat[-1] / 1000, 2) if lat else None,
        "ingest_cpu_pct": round(100 * cpu["ingest"] / d, 1),
        "ingest_cpu_us_per_trade": per(cpu["ingest"], trades),
        "ingest_cpu_us_per_delivery": per(cpu["ingest"], delivered),
    }
    if gateways:
        gw_per_delivery = [per(cpu[g], n) for g, n in zip(gateways, per_server, strict=True)]
        gw_vals = [v for v in gw_per_delivery if v is not None]
        out |= {
            "gateway_deliveries": per_server,
            "gateway_cpu_pct": [round(100 * cpu[g] / d, 1) for g in gateways],
            "gateway_cpu_us_per_delivery": gw_per_delivery,
            "gateway_cpu_us_per_delivery_mean": (
                round(sum(gw_vals) / len(gw_vals), 2) if gw_vals else None
            ),
        }
    out |= {
        "total_cpu_us_per_delivery": per(sum(cpu.values()), delivered),
        "redis_cpu_pct": round(100 * redis_cpu / d, 1),
        "redis_cpu_us_per_trade": per(redis_cpu, trades),
        "ingest_peak_rss_mb": rss["ingest"],
        "gateway_peak_rss_mb": [rss[g] for g in gateways] if gateways else None,
        "machine_idle_pct": round(100 * (1 - busy / (d * cores)), 1),
        # everyone else's: figures taken while it is high are not comparable between runs
        "other_processes_cpu_pct": round(100 * (busy - ours) / d, 1),
        "client_cpu_pct": [round(100 * r["cpu_s"] / d, 1) for group in results for r in group],
    }
    if errors:
        out["client_errors"] = errors[:5]
    return out


# -- recovery under churn -------------------------------------------------------------------------


@dataclass
class ChurnParams:
    clients: int = 20
    duration_s: float = 20.0
    rate: float = 50.0  # signals posted per second
    every_s: tuple[float, float] = (2.0, 5.0)  # each connection lasts a random time in between
    settle_s: float = 2.0  # after the last post: the clients read on, no more drops
    kind: str = "vcp"


async def _churn(cl: _Cluster, c: ChurnParams) -> dict[str, Any]:
    """The producer here, the churn clients in a process of their own (`churn_main`)."""
    assert cl.ingest is not None
    topic = topics.signal(c.kind)
    cfg = {
        "gateways": [f"ws://127.0.0.1:{g.port}/api/ws" for g in cl.gateways],
        "tokens": [cl.auth.issue(f"churn-{i}") for i in range(c.clients)],
        "topic": topic,
        "every_s": list(c.every_s),
        "seed": random.randrange(1 << 30),
    }
    proc = await _start(
        [sys.executable, "-c", "from tradestream.bench.scale import churn_main; churn_main()",
         json.dumps(cfg)]
    )  # fmt: skip
    buf = bytearray()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with trio.fail_after(60):
            assert await read_line(proc.stdout, buf) == b"ready"
        produced, post_errors = await _produce(
            f"http://127.0.0.1:{cl.ingest.port}", cl.auth, c.kind, c.rate, c.duration_s
        )
        await proc.stdin.send_all(b"hold\n")
        await trio.sleep(c.settle_s)
        await proc.stdin.send_all(b"end\n")
        with trio.fail_after(30):
            records = json.loads(await read_line(proc.stdout, buf))
    finally:
        if proc.returncode is None:
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    out: dict[str, Any] = {
        "gateways": len(cl.gateways),
        "clients": c.clients,
        "duration_s": c.duration_s,
    }
    out |= churn_counts(produced, records, c.duration_s)
    if post_errors:
        out["post_errors"] = post_errors[:5]
    return out


async def _produce(
    url: str, auth: Authenticator, kind: str, rate: float, duration_s: float
) -> tuple[list[int], list[str]]:
    """POST one signal `n` after another (each awaited: published in `n` order) at `rate`;
    returns the `n`s the ingest took (200) and the errors."""
    headers = {"Authorization": f"Bearer {auth.issue('bench-producer', role='producer')}"}
    ok: list[int] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        t0 = trio.current_time()
        for n in range(1, int(rate * duration_s) + 1):
            await trio.sleep_until(t0 + (n - 1) / rate)
            item = {"symbol": "005930", "n": n, "t": time.time_ns() // 1000}
            try:
                r = await http.post(f"/api/signals/{kind}", json={"signals": [item]})
            except httpx.HTTPError as exc:
                errors.append(repr(exc)[:200])
                continue
            if r.status_code == 200:
                ok.append(n)
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")
    return ok, errors


def churn_counts(
    produced: list[int], records: list[dict[str, Any]], duration_s: float
) -> dict[str, Any]:
    """Each client's record: `chains`, each a `start` offset (the `subscribed` reply's, when a
    subscription did not continue a previous one) and the `msgs` received in it as [n, offset];
    `live` (subscribed at the end), `recovered` / `unrecovered` counts, `latencies_us`.

    Offsets grow with `n` (one producer, one request at a time), so the first `n` a chain
    owes is the one after the last `n` seen anywhere at an offset up to its start."""
    offset_of: dict[int, int] = {}
    for rec in records:
        for chain in rec["chains"]:
            for n, offset in chain["msgs"]:
                offset_of.setdefault(n, offset)
    known = sorted((o, n) for n, o in offset_of.items())
    offsets = [o for o, _ in known]
    made = sorted(produced)
    last = made[-1] if made else 0

    def first_owed(start: int | None) -> int:
        i = bisect.bisect_right(offsets, start if start is not None else -1)
        return known[i - 1][1] + 1 if i else 1

    def owed(lo: int, hi: int) -> list[int]:  # produced n in [lo, hi]
        return made[bisect.bisect_left(made, lo) : bisect.bisect_right(made, hi)]

    per_client: list[int] = []
    dups = disorder = missing = skipped = other = 0
    for rec in records:
        seen: set[int] = set()
        previous_top: int | None = None
        for i, chain in enumerate(rec["chains"]):
            lo, top, got = first_owed(chain["start"]), 0, set()
            if previous_top is not None:  # after a `recovered: false`: what it skipped
                skipped += len([n for n in owed(previous_top + 1, lo - 1) if n not in seen])
            for n, _ in chain["msgs"]:
                if n in seen:
                    dups += 1
                    continue
                disorder += n < top
                top = max(top, n)
                seen.add(n)
                got.add(n)
            hi = last if i == len(rec["chains"]) - 1 and rec["live"] else top
            missing += len([n for n in owed(lo, hi) if n not in got])
            previous_top = max(top, lo - 1)
        per_client.append(sum(len(chain["msgs"]) for chain in rec["chains"]))
        other += rec["other"]
    lat = sorted(x for rec in records for x in rec["latencies_us"])
    recovered = sum(rec["recovered"] for rec in records)
    unrecovered = sum(rec["unrecovered"] for rec in records)
    return {
        "signals_produced": len(made),
        "signals_per_s": round(len(made) / duration_s, 1),
        "messages_received": sum(per_client),
        "received_per_client_min": min(per_client, default=0),
        "received_per_client_max": max(per_client, default=0),
        "duplicates": dups,
        "out_of_order": disorder,
        "missing": missing,
        "reconnects": recovered + unrecovered,
        "recovered_true": recovered,
        "recovered_false": unrecovered,
        "skipped_after_recovered_false": skipped,
        "other_signal_messages": other,
        "signal_latency_ms_p50": _r(pct(lat, 0.5) / 1000),
        "signal_latency_ms_p99": _r(pct(lat, 0.99) / 1000),
        "signal_latency_ms_max": round(lat[-1] / 1000, 2) if lat else None,
        "exactly_once_in_order": dups == disorder == missing == unrecovered == 0 and len(made) > 0,
        "client_errors": [e for rec in records for e in rec["errors"]][:5],
    }


@dataclass
class _ChurnRecord:
    chains: list[dict[str, Any]] = field(default_factory=list)
    first: bool = True
    epoch: str | None = None
    offset: int | None = None  # the last offset seen (or the stream's, at a new chain)
    live: bool = False
    recovered: int = 0
    unrecovered: int = 0
    other: int = 0  # messages on the topic without our `n` (the ingest's own scans)
    errors: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)

    def subscribed(self, reply: dict[str, Any]) -> None:
        if not self.first and reply.get("recovered") is True and reply.get("epoch") == self.epoch:
            self.recovered += 1
            return
        if not self.first:
            self.unrecovered += 1
        self.first = False
        self.epoch, self.offset = reply.get("epoch"), reply.get("offset")
        self.chains.append({"start": self.offset, "msgs": []})

    def message(self, msg: dict[str, Any], now_ns: int) -> None:
        if msg.get("type") != "signal_update":
            if msg.get("type") == "error":
                self.errors.append(str(msg)[:200])
            return
        self.offset = msg.get("offset", self.offset)
        signals = msg.get("data", {}).get("signals") or [{}]
        n = signals[0].get("n")
        if not isinstance(n, int):
            self.other += 1
            return
        self.chains[-1]["msgs"].append([n, msg.get("offset")])
        self.latencies_us.append(now_ns // 1000 - int(signals[0].get("t", 0)))


async def _churn_client(
    rec: _ChurnRecord,
    url: Callable[[int], str],
    gateways: int,
    cfg: dict[str, Any],
    rng: random.Random,
    hold: trio.Event,
    ready: Callable[[], None],
) -> None:
    """Subscribe on a random gateway; after a random while drop the socket and come back on
    another with `since`; once `hold` is set, stay. Until cancelled; `rec` keeps the count."""
    decode = msgspec.json.decode

    async def read(ws: Any) -> None:
        while True:
            msg = decode(await ws.get_message())
            if msg.get("type") == "ping":
                await ws.send_message('{"type": "pong"}')
            rec.message(msg, time.time_ns())

    async def connection(gateway: int) -> None:
        async with open_upstream(url(gateway), 5) as ws:
            sub: dict[str, Any] = {"type": "subscribe", "topic": cfg["topic"]}
            if not rec.first:
                sub["since"] = {"offset": rec.offset, "epoch": rec.epoch}
            await ws.send_message(json.dumps(sub))
            with trio.fail_after(10):
                while (reply := decode(await ws.get_message())).get("type") != "subscribed":
                    if reply.get("type") == "error":
                        raise RuntimeError(f"subscribe: {reply}")
            rec.subscribed(reply)
            rec.live = True
            ready()
            with trio.move_on_after(rng.uniform(*cfg["every_s"])):
                await read(ws)
            if hold.is_set():
                await read(ws)  # no more drops: until the process is told to end
            rec.live = False  # dropped: the socket closes here

    current = -1
    while True:
        current = rng.choice([g for g in range(gateways) if g != current] or [0])
        try:
            await connection(current)
        except* Exception as group:  # the socket went away on its own: come back
            rec.live = False
            rec.errors.append(repr(group.exceptions[0])[:200])
            await trio.sleep(0.2)


async def _churn_process(cfg: dict[str, Any]) -> None:
    """Every churn client of the run on one Trio loop; stdin says `hold`, then `end`; prints
    "ready" once each has subscribed, and at the end the records as one JSON line."""
    rng = random.Random(cfg["seed"])
    tokens, gateways = cfg["tokens"], cfg["gateways"]
    records = [_ChurnRecord() for _ in tokens]
    hold, pending = trio.Event(), set(range(len(tokens)))
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = bytearray()

    def ready_of(i: int) -> Callable[[], None]:
        def ready() -> None:
            if i in pending:
                pending.discard(i)
                if not pending:
                    print("ready", flush=True)

        return ready

    def url_of(i: int) -> Callable[[int], str]:
        return lambda g: f"{gateways[g]}?token={tokens[i]}"

    async with trio.open_nursery() as nursery:
        for i, rec in enumerate(records):
            nursery.start_soon(
                _churn_client, rec, url_of(i), len(gateways), cfg,
                random.Random(rng.random()), hold, ready_of(i),
            )  # fmt: skip
        assert (await read_line(stdin, buf)) == b"hold"
        hold.set()
        assert (await read_line(stdin, buf)) == b"end"
        nursery.cancel_scope.cancel()
    print(json.dumps([rec.__dict__ for rec in records]), flush=True)


def churn_main() -> None:
    """Entry point of the churn clients' process: `python -c '...churn_main()' CONFIG_JSON`."""
    trio.run(_churn_process, json.loads(sys.argv[1]))


# -- the scenario ---------------------------------------------------------------------------------


async def _run_system(
    kind: str, p: Params, gateways: Sequence[int], churn: ChurnParams | None, tmp: Path
) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    async with coredis.Redis.from_url(p.redis_url) as redis:
        cl = _Cluster(kind, p, tmp, redis)
        try:
            with scratch("sqlite", tmp) as db:
                await cl.start(db)
                assert cl.ingest is not None
                rows["direct"] = await _row(cl, [cl.ingest])
                for k in gateways:
                    while len(cl.gateways) < k:
                        await cl.add_gateway()
                    rows[f"gateways_{k}"] = await _row(cl, cl.gateways[:k])
                    p99 = rows[f"gateways_{k}"]["latency_ms_p99"]
                    direct = rows["direct"]["latency_ms_p99"]
                    rows[f"gateways_{k}"]["p99_added_by_redis_ms"] = (
                        round(p99 - direct, 2) if p99 is not None and direct is not None else None
                    )
                if churn is not None and cl.gateways:
                    rows["churn"] = await _churn(cl, churn)
        finally:
            with trio.CancelScope(shield=True):
                await cl.close()
    return rows


def _ratios(mine: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    return {
        key: round(mine[key] / peer[key], 2)
        if (mine.get(key) or 0) > 0 < (peer.get(key) or 0)
        else None
        for key in RATIO_KEYS
        if key in mine or key in peer
    }


async def main(
    clients: int = 200,
    topics_per_client: int = 5,
    rate: float = 1000.0,
    gateways: Sequence[int] = (1, 2, 3),
    duration_s: float = 10.0,
    warmup_s: float = 3.0,
    client_procs: int = 2,
    systems: Sequence[str] = SYSTEMS,
    runs: int = 1,
    churn: ChurnParams | None = None,
    redis_url: str | None = None,
) -> dict[str, object]:
    """The fan-out benchmark's load (1,000 trades/s, 200 clients x 5 price topics over 50
    codes) through 1, 2 and 3 gateways, beside the direct row and the peer; then recovery under
    churn (tradestream). Keys `<system>.<row>`, `ratio.<row>`, `churn`; with `runs` > 1 each
    run's under `run<N>.` and `summary.*` across the runs."""
    codes = [t.code for t in DEFAULT_TICKERS]
    if clients * topics_per_client % len(codes):
        raise ValueError(f"clients x topics must be a multiple of {len(codes)} (equal audiences)")
    url = redis_url or os.environ.get("TRADESTREAM_REDIS_URL") or DEFAULT_REDIS_URL
    p = Params(clients, topics_per_client, rate, duration_s, warmup_s, client_procs, codes, url)
    c = churn or ChurnParams()
    results: dict[str, object] = {
        "cores": os.cpu_count(),
        "setup": f"{clients} clients x {topics_per_client} price topics over {len(codes)} codes, "
        f"{rate:g} trades/s upstream, gateways {', '.join(map(str, gateways))}, {duration_s:g} s "
        f"after {warmup_s:g} s warm-up per row, {client_procs} client processes (at least one "
        f"per gateway), Redis {url}; churn: {c.clients} clients on signal:{c.kind}, "
        f"{c.rate:g} signals/s for {c.duration_s:g} s, reconnecting every "
        f"{c.every_s[0]:g}-{c.every_s[1]:g} s",
    }
    per_run: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tradestream-bench-") as tmp:
        for run in range(runs):
            order = list(systems) if run % 2 == 0 else list(reversed(systems))
            got: dict[str, dict[str, dict[str, Any]]] = {}
            for kind in order:
                print(f"scale: run {run + 1}/{runs}, {kind}", file=sys.stderr, flush=True)
                got[kind] = await _run_system(
                    kind, p, gateways, c if kind == "tradestream" else None, Path(tmp)
                )
            one: dict[str, Any] = {}
            for kind in systems:
                for row, figures in got[kind].items():
                    one["churn" if row == "churn" else f"{kind}.{row}"] = figures
            if "tradestream" in got and "peer" in got:
                for row, mine in got["tradestream"].items():
                    if row != "churn" and row in got["peer"]:
                        one[f"ratio.{row}"] = _ratios(mine, got["peer"][row])
            per_run.append(one)
    if runs == 1:
        return results | per_run[0]
    for i, one in enumerate(per_run, start=1):
        results |= {f"run{i}.{key}": value for key, value in one.items()}
    results |= _summary(per_run)
    return results


def _summary(per_run: list[dict[str, Any]]) -> dict[str, object]:
    """Across runs: each ratio, each p99 added by the Redis hop, the churn counts, as lists."""
    out: dict[str, object] = {}
    for key in per_run[0]:
        if key.startswith("ratio."):
            out[f"summary.{key}"] = {
                k: [one[key].get(k) for one in per_run] for k in per_run[0][key]
            }
    for key in per_run[0]:
        if key.split(".")[0] in SYSTEMS and ".gateways_" in key:
            out[f"summary.{key}"] = {f: [one[key].get(f) for one in per_run] for f in ROW_SUMMARY}
    if "churn" in per_run[0]:
        counts = ("signals_produced", "duplicates", "out_of_order", "missing", "recovered_true",
                  "recovered_false", "exactly_once_in_order")  # fmt: skip
        out["summary.churn"] = {f: [one["churn"].get(f) for one in per_run] for f in counts}
    return out


def _cli() -> int:
    ap = argparse.ArgumentParser(prog="python -m tradestream.bench.scale", description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--topics-per-client", type=int, default=5)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--gateways", default="1,2,3", help="comma-separated, ascending")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--churn-clients", type=int, default=ChurnParams.clients)
    ap.add_argument("--churn-duration", type=float, default=ChurnParams.duration_s)
    ap.add_argument("--churn-rate", type=float, default=ChurnParams.rate)
    ap.add_argument("--redis-url", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = trio.run(
        partial(
            main,
            clients=a.clients,
            topics_per_client=a.topics_per_client,
            rate=a.rate,
            gateways=[int(g) for g in a.gateways.split(",")],
            duration_s=a.duration,
            warmup_s=a.warmup,
            client_procs=a.client_procs,
            systems=a.systems.split(","),
            runs=a.runs,
            churn=ChurnParams(a.churn_clients, a.churn_duration, a.churn_rate),
            redis_url=a.redis_url,
        )
    )
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"scale.{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
