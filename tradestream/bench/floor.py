"""The intake floor: what reading the upstream costs a bare WebSocket client, before any work.

The bench upstream (bench/upstream.py, its own process) sends H0STCNT0 trades, one record per
frame, for the 50 codes at `rate` per second. A client process registers every code on one
connection and reads frames for `duration_s` after a warm-up, doing nothing with them (or
decoding them with the shared decoder), and reports its own CPU per frame:
- `trio-websocket`: the client library the feeds use (`get_message` in a loop);
- `trio-websocket+decode`: the same, each frame through `KisDecoder.decode`;
- `websockets`: the asyncio `websockets` client, the peer's (`async for` over the connection).

Run one client: ``python -m tradestream.bench.floor KIND WS_URL DURATION_S WARMUP_FRAMES``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import trio

from tradestream.bench.served import _start
from tradestream.universe import DEFAULT_TICKERS

KINDS = ("trio-websocket", "trio-websocket+decode", "websockets")
WARMUP_FRAMES = 2000


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _registration(code: str) -> str:
    return json.dumps(
        {
            "header": {"approval_key": "k", "custtype": "P", "tr_type": "1"},
            "body": {"input": {"tr_id": "H0STCNT0", "tr_key": code}},
        }
    )


def _client(kind: str, url: str, duration_s: float, warmup: int) -> dict[str, Any]:
    codes = [t.code for t in DEFAULT_TICKERS]
    if kind == "websockets":
        import asyncio

        from websockets.asyncio.client import connect

        async def read_asyncio() -> dict[str, Any]:
            async with connect(url, compression=None, max_size=None) as ws:
                for c in codes:
                    await ws.send(_registration(c))
                n = 0
                async for _ in ws:
                    n += 1
                    if n == warmup:
                        cpu0, t0 = _cpu_s(), time.monotonic()
                    elif n > warmup and time.monotonic() - t0 >= duration_s:
                        break
                return {"frames": n - warmup, "cpu_s": _cpu_s() - cpu0}

        return asyncio.run(read_asyncio())

    from trio_websocket import open_websocket_url

    from tradestream.feeds.kis.codec import KisDecoder

    decoder = KisDecoder("floor") if kind.endswith("+decode") else None

    async def read_trio() -> dict[str, Any]:
        async with open_websocket_url(url) as ws:
            for c in codes:
                await ws.send_message(_registration(c))
            n = 0
            while True:
                frame = await ws.get_message()
                n += 1
                if decoder is not None and isinstance(frame, str) and frame[:1] in ("0", "1"):
                    decoder.decode(frame, time.time_ns())
                if n == warmup:
                    cpu0, t0 = _cpu_s(), time.monotonic()
                elif n > warmup and time.monotonic() - t0 >= duration_s:
                    return {"frames": n - warmup, "cpu_s": _cpu_s() - cpu0}

    return trio.run(read_trio)


async def main(
    rate: float = 1000.0, duration_s: float = 8.0, warmup_frames: int = WARMUP_FRAMES
) -> dict[str, object]:
    py = sys.executable
    up = await _start([py, "-m", "tradestream.bench.upstream", str(rate), "1"])
    assert up.stdout is not None
    try:
        line = b""
        while not line.endswith(b"\n"):
            line += await up.stdout.receive_some(1)
        _, _, ws_port = line.decode().split()
        url = f"ws://127.0.0.1:{ws_port}/"
        out: dict[str, object] = {"setup": f"{rate:g} frames/s, one record each, {duration_s:g} s"}
        for kind in KINDS:
            done = await trio.run_process(
                [
                    py,
                    "-m",
                    "tradestream.bench.floor",
                    kind,
                    url,
                    str(duration_s),
                    str(warmup_frames),
                ],
                capture_stdout=True,
            )
            r = json.loads(done.stdout)
            out[kind] = {
                "frames": r["frames"],
                "cpu_us_per_frame": round(r["cpu_s"] / r["frames"] * 1e6, 1),
            }
        return out
    finally:
        up.kill()
        await up.wait()


if __name__ == "__main__":
    print(json.dumps(_client(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
