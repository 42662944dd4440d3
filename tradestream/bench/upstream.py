"""A KIS-compatible upstream for the benchmarks, in a process of its own.

It speaks what a KIS client needs: ``POST /oauth2/Approval`` on a plain HTTP port, and on a
WebSocket port the JSON registrations with their acks (kis.md §5) and H0STCNT0 data frames
(§6, §7.1) of one record each (or a few, below) for the codes a connection registered. Trades
come from the simulator's deterministic market at `rate` per second over its 50 codes, paced
every 5 ms; a trade is sent to every connection that registered its code. The record's
ACML_VOL (cumulative volume) carries the send instant in µs, so a client can compute upstream
send -> client receive latency from `price_update.data.volume`.

Protocol with the parent, on stdin/stdout (one line each):
    -> "ports HTTP WS"                once listening
    <- "START_NS END_NS"              the measurement window
    -> {"ticks": n, "sent": m}        after END_NS: trades made, frames sent in the window
Run: ``python -m tradestream.bench.upstream RATE [RECORDS]``: with RECORDS > 1, the trades of one
5 ms pace step for the same connection share frames of up to RECORDS records (as KIS packs
records under load); the default is one record per frame.

With ``--control`` (the fault runs, bench/faults.py) stdin takes commands instead of a window,
one per line, each answered with a JSON line: ``pause`` and ``resume`` (trades stop and start),
``drop`` (every connection is closed, as a broker that goes away), ``count`` (trades made and
records *written* to sockets, which a client can then read, since the start), ``quit``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from tradestream.bench.clients import read_line
from tradestream.events import KST
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame
from tradestream.upstream import KIS_TRADES

PACE_S = 0.005
ACML_VOL = 13  # H0STCNT0 field index of the cumulative volume (kis.md §7.1)
OUTBOX_FRAMES = 100_000  # frames queued per connection before the upstream gives up on it


class _Upstream:
    def __init__(self, rate: float, records: int = 1) -> None:
        self.rate = rate
        self.records = records  # most records per frame (kis.md §6: the count field)
        self.market = SimMarket(DEFAULT_TICKERS, seed=7)
        self.subs: dict[str, set[trio.MemorySendChannel[Any]]] = {}
        self.window = (0, 0)
        self.ticks = 0
        self.sent = 0
        self.made = 0  # every trade since the start (control mode)
        self.written = 0  # records whose frame went onto a socket
        self.paused = False
        self.conns: set[Any] = set()

    def register(self, out: trio.MemorySendChannel[Any], text: str) -> str | None:
        """A registration message; returns the ack to send."""
        try:
            msg = msgspec.json.decode(text)
            tr_type = msg["header"]["tr_type"]
            body = msg["body"]["input"]
            tr_id, tr_key = body["tr_id"], body["tr_key"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return None
        if tr_type == "1":
            self.subs.setdefault(tr_key, set()).add(out)
            code = ("0", "OPSP0000", "SUBSCRIBE SUCCESS")
        else:
            self.subs.get(tr_key, set()).discard(out)
            code = ("0", "OPSP0001", "UNSUBSCRIBE SUCCESS")
        return msgspec.json.encode(
            {
                "header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"},
                "body": {"rt_cd": code[0], "msg_cd": code[1], "msg1": code[2]},
            }
        ).decode()

    async def run_market(self) -> None:
        start = trio.current_time()
        scheduled = 0
        while True:
            due = int((trio.current_time() - start) * self.rate)
            now = datetime.now(KST)
            # with records > 1, a connection's trades of this pace step share frames
            pending: dict[trio.MemorySendChannel[Any], list[tuple[list[str], bool]]] = {}
            if self.paused:
                scheduled = due  # nothing owed for the pause
            while scheduled < due:
                scheduled += 1
                self.made += 1
                fields = self.market.trade(now)
                now_ns = time.time_ns()
                fields[ACML_VOL] = str(now_ns // 1000)
                counted = self.window[0] <= now_ns < self.window[1]
                self.ticks += counted
                for out in self.subs.get(fields[0], ()):
                    pending.setdefault(out, []).append((fields, counted))
            for out, trades in pending.items():
                for i in range(0, len(trades), self.records):
                    chunk = trades[i : i + self.records]
                    try:
                        out.send_nowait((data_frame(KIS_TRADES, [f for f, _ in chunk]), len(chunk)))
                        self.sent += sum(c for _, c in chunk)
                    except (trio.WouldBlock, trio.BrokenResourceError):
                        pass  # a reader that stopped reading: the bench reports fewer frames
            await trio.sleep(PACE_S)

    async def handle_ws(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        out, frames = trio.open_memory_channel[tuple[str, int]](OUTBOX_FRAMES)
        self.conns.add(ws)

        async def writer() -> None:
            async for frame, records in frames:
                await ws.send_message(frame)  # returns once the bytes are on the socket
                self.written += records

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    ack = self.register(out, str(await ws.get_message()))
                    if ack is not None:
                        out.send_nowait((ack, 0))
        except* ConnectionClosed:
            pass  # the reader or the writer saw the client go
        finally:
            self.conns.discard(ws)
            for subs in self.subs.values():
                subs.discard(out)

    async def handle_http(self, stream: trio.SocketStream) -> None:
        """Answer every request with an approval key (kis.md §2); one request per connection."""
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            reply = b'{"approval_key": "bench-approval-key"}'
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply
            )
        except (trio.BrokenResourceError, ValueError):
            pass
        finally:
            await stream.aclose()


async def _control(up: _Upstream, stdin: trio.lowlevel.FdStream) -> None:
    """The command protocol of ``--control`` (module docstring)."""
    buf = bytearray()
    while True:
        try:
            cmd = (await read_line(stdin, buf)).decode().strip()
        except EOFError:
            return
        if cmd == "pause":
            up.paused = True
        elif cmd == "resume":
            up.paused = False
        elif cmd == "drop":
            for ws in list(up.conns):
                await ws.aclose(1001, "bench: upstream going away")
        elif cmd == "quit":
            return
        print(json.dumps({"made": up.made, "written": up.written, "cmd": cmd}), flush=True)


async def main(rate: float, records: int = 1, control: bool = False) -> None:
    up = _Upstream(rate, records)
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with trio.open_nursery() as nursery:
        http = await nursery.start(partial(trio.serve_tcp, up.handle_http, 0, host="127.0.0.1"))
        ws = await nursery.start(
            partial(serve_websocket, up.handle_ws, "127.0.0.1", 0, ssl_context=None)
        )
        http_port = http[0].socket.getsockname()[1]
        ws_port = ws.port
        nursery.start_soon(up.run_market)
        print(f"ports {http_port} {ws_port}", flush=True)
        if control:
            await _control(up, stdin)
            nursery.cancel_scope.cancel()
            return
        buf = bytearray()
        start_ns, end_ns = map(int, (await read_line(stdin, buf)).split())
        up.window = (start_ns, end_ns)
        await trio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9) + 0.05)
        print(json.dumps({"ticks": up.ticks, "sent": up.sent}), flush=True)
        try:
            await read_line(stdin, buf)  # anything, or EOF: stop
        except EOFError:
            pass
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--control"]
    trio.run(main, float(args[0]), int(args[1]) if len(args) > 1 else 1, "--control" in sys.argv)
