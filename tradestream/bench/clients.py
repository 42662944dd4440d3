"""The benchmarks' WebSocket clients, in processes of their own, and the helpers to run them.

A client process (`client_main`) opens its connections, subscribes each to its topics, says
"ready", is told the measurement window on stdin ("START_NS END_NS"), counts the
`price_update` messages it receives in the window, samples their latency (receive wall clock
minus the `volume` field, which carries the upstream instant in µs) and prints its figures
as one JSON line. `start_clients` ... `collect` run a set of them from the parent.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import select
import socket
import subprocess
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

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


class _Conn:
    """One client: a non-blocking socket after the upgrade, and what it has not parsed yet."""

    __slots__ = ("sock", "buf", "pending", "fragments", "closed")

    def __init__(self, sock: socket.socket, buf: bytes, pending: int) -> None:
        self.sock = sock
        self.buf = buf
        self.pending = pending  # subscriptions not yet acknowledged
        self.fragments: list[bytes] = []
        self.closed = False


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client-to-server frame (RFC 6455: masked)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + body


def _send(sock: socket.socket, data: bytes) -> None:
    sock.setblocking(True)  # rare and small (subscribe, pong): block rather than queue
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def _connect(url: str) -> tuple[socket.socket, bytes]:
    """Open `url` (ws://) and upgrade it; returns the socket and any bytes after the headers."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"{url}: closed during the upgrade")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"{url}: {head.splitlines()[0]!r}")
    sock.setblocking(False)
    return sock, rest


class _ClientStats:
    def __init__(self, stride: int) -> None:
        self.start_ns = math.inf
        self.end_ns = math.inf
        self.messages = 0
        self.frames = 0
        self.seen = 0  # price updates seen, in the window, for the sampling stride
        self.stride = stride
        self.latencies_us = array("q")
        self.errors: list[str] = []


_PRICE = b'"price_update"'
# any other message a client must act on (it may share a `?batch=1` frame with prices)
_OTHER = re.compile(rb'"type":\s*"(?!price_update")')


def _on_text(conn: _Conn, payload: bytes, now_ns: int, st: _ClientStats) -> int:
    """Count the price updates of a message (or a `?batch=1` array), answer pings, note
    acknowledgements and errors; returns 1 when the connection's last subscription was
    acknowledged. A frame of prices only is counted without being decoded."""
    k = payload.count(_PRICE)
    items: list[Any] | None = None
    if not k or _OTHER.search(payload):
        obj = msgspec.json.decode(payload)
        items = obj if isinstance(obj, list) else [obj]
    if k and st.start_ns <= now_ns < st.end_ns:
        st.frames += 1
        st.messages += k
        before = st.seen
        st.seen += k
        if st.seen // st.stride != before // st.stride:  # this frame holds a sampled message
            if items is None:
                obj = msgspec.json.decode(payload)
                items = obj if isinstance(obj, list) else [obj]
            prices = [x for x in items if x.get("type") == "price_update"]
            now_us = now_ns // 1000
            for i, item in enumerate(prices, start=before + 1):
                if i % st.stride == 0:
                    st.latencies_us.append(now_us - item["data"]["volume"])
    acked = 0
    for item in items if items is not None and (not k or len(items) > k) else ():
        kind = item.get("type")
        if kind == "subscribed":
            conn.pending -= 1
            acked = int(conn.pending == 0)
        elif kind == "ping":
            _send(conn.sock, _masked(b'{"type":"pong"}'))
        elif kind == "error":
            st.errors.append(str(item))
    return acked


def _on_bytes(conn: _Conn, chunk: bytes, now_ns: int, st: _ClientStats) -> int:
    """Parse every complete frame in the connection's buffer; returns subscriptions acked."""
    data = conn.buf + chunk if conn.buf else chunk
    pos, end, acked = 0, len(data), 0
    while end - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        n, head = b1 & 0x7F, 2
        if n == 126:
            if end - pos < 4:
                break
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            if end - pos < 10:
                break
            n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if end - pos < head + n:
            break
        payload = data[pos + head : pos + head + n]
        pos += head + n
        opcode = b0 & 0x0F
        if not b0 & 0x80:  # a fragment: keep it until the final one
            conn.fragments.append(payload)
            continue
        if opcode == 0x0 and conn.fragments:
            payload = b"".join((*conn.fragments, payload))
            conn.fragments.clear()
            opcode = 0x1
        if opcode == 0x1 or opcode == 0x2:
            acked += _on_text(conn, payload, now_ns, st)
        elif opcode == 0x9:
            _send(conn.sock, _masked(payload, 0xA))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            st.errors.append(f"closed {code} {payload[2:].decode(errors='replace')}")
            conn.closed = True
            break
    conn.buf = data[pos:]
    return acked


def _client_process(cfg: dict[str, Any]) -> None:
    """Every connection of this process on one epoll loop, no framework: the clients must
    cost the machine as little as possible, so the servers are what the figures measure."""
    st = _ClientStats(cfg["stride"])
    poller = select.epoll()
    conns: dict[int, _Conn] = {}
    for url, watch in zip(cfg["urls"], cfg["topics"], strict=True):
        sock, rest = _connect(url)
        conn = _Conn(sock, b"", len(watch))
        conns[sock.fileno()] = conn
        for topic in watch:
            _send(sock, _masked(json.dumps({"type": "subscribe", "topic": topic}).encode()))
        if rest:
            _on_bytes(conn, rest, time.time_ns(), st)
        poller.register(sock.fileno(), select.EPOLLIN)
    unacked = sum(1 for c in conns.values() if c.pending)
    stdin_buf = b""
    said_ready = False
    cpu0 = cpu1 = math.nan
    poller.register(0, select.EPOLLIN)
    while True:
        now = time.time_ns()
        if not said_ready and unacked == 0:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            said_ready = True
        if math.isnan(cpu0) and now >= st.start_ns:
            cpu0 = time.process_time()
        if now >= st.end_ns:
            cpu1 = time.process_time()
            break
        timeout = 0.05 if math.isinf(st.start_ns) else max(0.0, (st.start_ns - now) / 1e9)
        if now >= st.start_ns:
            timeout = max(0.0, (st.end_ns - now) / 1e9)
        for fd, _ in poller.poll(min(timeout, 0.05)):
            if fd == 0:
                stdin_buf += os.read(0, 4096)
                if b"\n" in stdin_buf:
                    start_ns, end_ns = map(int, stdin_buf.split(b"\n", 1)[0].split())
                    st.start_ns, st.end_ns = start_ns, end_ns
                    poller.unregister(0)
                continue
            conn = conns[fd]
            try:
                chunk = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError as exc:
                chunk = b""
                st.errors.append(f"recv: {exc!r}")
            if not chunk:
                conn.closed = True
            else:
                acked = _on_bytes(conn, chunk, time.time_ns(), st)
                unacked -= acked
            if conn.closed:
                poller.unregister(fd)
                if conn.pending:
                    unacked -= 1
                    conn.pending = 0
                    st.errors.append("closed before every subscription was acknowledged")
    for conn in conns.values():
        conn.sock.close()
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
    _client_process(json.loads(sys.argv[1]))


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
