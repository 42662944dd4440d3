"""`python -m tradestream.bench [scenario ...]`: run benchmark scenarios, print their figures."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio

from tradestream.bench import (
    alerts,
    failover,
    fanout,
    faults,
    floor,
    reconnect,
    scale,
    served,
    store,
)

SCENARIOS = {
    "store": store.main,
    "reconnect": reconnect.main,
    "fanout": served.main,  # the service as its own process, beside the asyncio peer
    "overload": served.overload,  # the same at 3,000 trades/s
    "ingest": served.ingest,  # into PostgreSQL, no clients, beside the peer
    "floor": floor.main,  # what bare WebSocket clients spend per upstream frame
    "faults": faults.main,  # every trade written to the service's sockets stored, per fault
    "fanout-inprocess": fanout.main,  # the gateway in this process, fed in memory
    "alerts": alerts.main,
    "scale": scale.main,  # one ingest, 1-3 gateways over Redis, beside the asyncio peer
    "failover": failover.main,  # one of two brokers down: its codes move to the other
}

ABOUT = {
    "store": "per-row commits against the flusher, SQLite and PostgreSQL",
    "reconnect": "the simulated broker goes away and comes back: time to data",
    "fanout": "the service as a process, 1,000 trades/s, 200 clients, beside the asyncio peer",
    "overload": "the same at 3,000 trades/s",
    "ingest": "5,000 trades/s into PostgreSQL, no clients, beside the peer",
    "floor": "CPU per frame of bare WebSocket clients reading the upstream",
    "faults": "faults while trades flow (database, upstream, signals): written / stored / lost",
    "fanout-inprocess": "the gateway fed in memory, beside a seed-style server",
    "alerts": "a 5% move in the trades -> the alert on a client: latency",
    "scale": "ingest + 1, 2, 3 gateways over Redis, 1,000 trades/s, 200 clients; churn recovery",
    "failover": "KIS + Kiwoom, one broker down 30 s: its codes' silence, beside KIS alone",
}
assert ABOUT.keys() == SCENARIOS.keys()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tradestream.bench")
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"one of {', '.join(SCENARIOS)} (default: all), or list",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    if args.scenarios == ["list"]:
        for name in SCENARIOS:
            print(f"{name:18} {ABOUT[name]}")
        return 0
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.ERROR)
    results = {}
    for name in args.scenarios or list(SCENARIOS):
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = trio.run(SCENARIOS[name])
        if not args.json:
            for key, value in results[name].items():
                print(f"{name}.{key}: {value}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


raise SystemExit(main())
