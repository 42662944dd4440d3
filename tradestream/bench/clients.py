"""The benchmarks' WebSocket clients, in processes of their own, and the helpers to run them.

A client process (`client_main`) opens its connections, subscribes each to its topics, says
"ready", is told the measurement window on stdin ("START_NS END_NS"), counts the
`price_update` messages it receives in the window, samples their latency (receive wall clock
minus the `volume` field, which carries the upstream instant in µs) and prints its figures
as one JSON line. `start_clients` ... `collect` run a set of them from the parent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from array import array
from typing import Any

import msgspec
import trio

from tradestream import topics


def assign(codes: list[str], clients: int, per_client: int) -> list[list[str]]:
    """Client i watches codes i*k .. i*k+k-1 (mod n): every code gets the same audience."""
    return [
        [codes[(i * per_client + j) % len(codes)] for j in range(per_client)]
        for i in range(clients)
    ]


def topic_lists(assignment: list[list[str]]) -> list[list[str]]:
    return [[topics.price(c) for c in watch] for watch in assignment]


class ClientProcess:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buf = bytearray()

    async def line(self) -> bytes:
        assert self.proc.stdout is not None
        return await read_line(self.proc.stdout, self.buf)


async def start_clients(
    urls: list[str], topic_list: list[list[str]], procs: int, stride: int
) -> list[ClientProcess]:
    """`procs` client processes sharing the clients round-robin (client i: urls[i])."""
    out = []
    for p in range(procs):
        mine = range(p, len(urls), procs)
        cfg = {
            "urls": [urls[i] for i in mine],
            "topics": [topic_list[i] for i in mine],
            "stride": stride,
        }
        out.append(
            ClientProcess(
                await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        "-c",
                        "from tradestream.bench.clients import client_main; client_main()",
                        json.dumps(cfg),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        )
    return out


async def wait_ready(procs: list[ClientProcess]) -> None:
    with trio.fail_after(60):
        for cp in procs:
            line = await cp.line()
            assert line == b"ready", line


async def open_window(
    procs: list[ClientProcess],
    warmup_s: float,
    duration_s: float,
    also: tuple[trio.Process, ...] = (),
) -> tuple[int, int]:
    """Tell the clients (and `also`, processes that take the same line) the window."""
    start_ns = time.time_ns() + int(warmup_s * 1e9)
    end_ns = start_ns + int(duration_s * 1e9)
    for proc in (*(cp.proc for cp in procs), *also):
        assert proc.stdin is not None
        await proc.stdin.send_all(f"{start_ns} {end_ns}\n".encode())
    return start_ns, end_ns


async def collect(procs: list[ClientProcess]) -> list[dict[str, Any]]:
    """Each process's figures, once its window is over; the processes end."""
    results = []
    with trio.fail_after(30):
        for cp in procs:
            results.append(json.loads(await cp.line()))
            await cp.proc.wait()
    return results


async def stop(procs: list[ClientProcess]) -> None:
    for cp in procs:
        if cp.proc.returncode is None:
            cp.proc.kill()
            await cp.proc.wait()


async def read_line(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError("stream ended")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


class _ClientStats:
    def __init__(self, stride: int) -> None:
        self.start_ns = math.inf
        self.end_ns = -math.inf
        self.messages = 0
        self.frames = 0
        self.stride = stride
        self.latencies_us = array("q")
        self.errors: list[str] = []


async def _one_client(
    url: str,
    topics: list[str],
    st: _ClientStats,
    ready: trio.Semaphore,
    limiter: trio.CapacityLimiter,
) -> None:
    from trio_websocket import open_websocket_url

    decode = msgspec.json.decode
    async with limiter:  # don't flood the listen backlog
        ws_cm = open_websocket_url(url, max_message_size=16 * 1024 * 1024)
        ws = await ws_cm.__aenter__()
    try:
        for topic in topics:
            await ws.send_message(json.dumps({"type": "subscribe", "topic": topic}))
        pending = len(topics)
        n = 0
        while True:
            raw = await ws.get_message()
            now = time.time_ns()
            obj = decode(raw)
            items = obj if isinstance(obj, list) else (obj,)
            counted = st.start_ns <= now < st.end_ns
            if counted:
                st.frames += 1
            now_us = now // 1000
            for item in items:
                kind = item.get("type")
                if kind == "price_update":
                    if counted:
                        st.messages += 1
                        n += 1
                        if n % st.stride == 0:
                            st.latencies_us.append(now_us - item["data"]["volume"])
                elif kind == "subscribed":
                    pending -= 1
                    if pending == 0:
                        ready.release()
                elif kind == "ping":
                    await ws.send_message(json.dumps({"type": "pong"}))
                elif kind == "error":
                    st.errors.append(str(item))
    finally:
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            try:
                await ws_cm.__aexit__(None, None, None)
            except Exception:
                pass


async def _client_process(cfg: dict[str, Any]) -> None:
    clients: list[list[str]] = cfg["topics"]
    st = _ClientStats(cfg["stride"])
    ready = trio.Semaphore(len(clients))
    for _ in clients:
        ready.acquire_nowait()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = bytearray()
    limiter = trio.CapacityLimiter(20)
    async with trio.open_nursery() as nursery:
        for i, topics in enumerate(clients):
            nursery.start_soon(_one_client, cfg["urls"][i], topics, st, ready, limiter)
        for _ in clients:
            await ready.acquire()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        start_ns, end_ns = map(int, (await read_line(stdin, buf)).split())
        st.start_ns, st.end_ns = start_ns, end_ns
        await trio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        cpu0 = time.process_time()
        await trio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
        cpu1 = time.process_time()
        nursery.cancel_scope.cancel()
    sys.stdout.write(
        json.dumps(
            {
                "messages": st.messages,
                "frames": st.frames,
                "cpu_s": cpu1 - cpu0,
                "errors": st.errors[:5],
                "latencies_us": st.latencies_us.tolist(),
            }
        )
        + "\n"
    )
    sys.stdout.flush()


def client_main() -> None:
    """Entry point of a client process: `python -c '...client_main()' CONFIG_JSON`."""
    trio.run(_client_process, json.loads(sys.argv[1]))


# -- one run --------------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds all processes on this machine have used (Linux /proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pct(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]
