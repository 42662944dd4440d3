"""Row-visible latency for the served benchmarks, in a process of its own: how long after the
upstream sent a trade its row could be read from the database.

It polls `stock_prices_realtime` for new rows (by id) every `POLL_S`, from its own connection,
as any reader of the database would. A row's `volume` is the trade's ACML_VOL, which the bench
upstream sets to the send instant in µs; a row whose send instant falls in the measurement
window counts, and its latency is the poll that first saw it minus that instant (so the figures
are up to `POLL_S` late, never early).

Protocol with the parent, on stdin/stdout (one line each), as the upstream's:
    -> "ready"                        connected, newest id noted
    <- "START_NS END_NS"              the measurement window
    -> {"rows": n, "visible_ms": {"p50", "p99", "max"}, "last_row_after_end_s": s}
       once no row of the window has appeared for `QUIET_S` after END_NS (or `GIVE_UP_S`)
Run: ``python -m tradestream.bench.rowwatch DATABASE_URL``.
"""

from __future__ import annotations

import json
import sys
import time

import sqlalchemy as sa

from tradestream.bench.clients import pct

POLL_S = 0.005
QUIET_S = 2.0  # after the window: no new row of it for this long, and the count is final
GIVE_UP_S = 60.0


def watch(url: str) -> dict[str, object]:
    engine = sa.create_engine(url)
    newest = sa.text("SELECT max(id) FROM stock_prices_realtime")
    since = sa.text("SELECT id, volume FROM stock_prices_realtime WHERE id > :last ORDER BY id")
    with engine.connect() as conn:
        last = conn.execute(newest).scalar() or 0
    print("ready", flush=True)
    start_ns, end_ns = map(int, sys.stdin.readline().split())
    start_us, end_us = start_ns // 1000, end_ns // 1000
    latencies: list[int] = []
    last_seen_ns = time.time_ns()
    while True:
        with engine.connect() as conn:  # a fresh snapshot per poll
            rows = conn.execute(since, {"last": last}).all()
        now_ns = time.time_ns()
        now_us = now_ns // 1000
        for row_id, volume in rows:
            last = max(last, row_id)
            if start_us <= volume < end_us:
                latencies.append(now_us - volume)
                last_seen_ns = now_ns
        if now_ns > end_ns and (
            now_ns - max(last_seen_ns, end_ns) > QUIET_S * 1e9 or now_ns - end_ns > GIVE_UP_S * 1e9
        ):
            break
        time.sleep(POLL_S)
    engine.dispose()
    latencies.sort()
    return {
        "rows": len(latencies),
        "visible_ms": {
            "p50": round(pct(latencies, 0.5) / 1000, 1),
            "p99": round(pct(latencies, 0.99) / 1000, 1),
            "max": round(latencies[-1] / 1000, 1) if latencies else None,
        },
        "last_row_after_end_s": round(max(0, last_seen_ns - end_ns) / 1e9, 2),
    }


if __name__ == "__main__":
    print(json.dumps(watch(sys.argv[1])), flush=True)
