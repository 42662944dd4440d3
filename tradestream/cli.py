"""Command line: `tradestream run | replay | sim | db upgrade | db current | token | watch`.

Settings are read once here from the environment and passed down. Signals are handled here
too: the first SIGINT/SIGTERM stops intake and lets the tree drain (see roles/service.py); a second
one, or the shutdown timeout, cancels everything.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from tradestream import config as config_mod
from tradestream import logs
from tradestream.config import Settings
from tradestream.errors import ConfigError

log = logging.getLogger("tradestream")


def _setup_logging() -> None:
    logs.setup(
        os.environ.get("TRADESTREAM_LOG_LEVEL", "INFO"),
        os.environ.get("TRADESTREAM_LOG_FORMAT", "text").lower(),
    )


def _banner(s: Settings, running: object) -> str:
    from tradestream.roles import Running

    assert isinstance(running, Running)
    lines = [
        f"tradestream is up: {running.url}",
        f"  WebSocket  {running.ws_url}?token=<JWT>",
        f"  status     {running.url}/api/ws/status",
        "  upstream   "
        + (
            f"built-in broker simulator at {running.sim.rest_url}"
            if running.sim
            else ", ".join(u for u in (s.kis.ws_url, s.ls.ws_url) if u)
        ),
        f"  database   {s.store.url}",
    ]
    if s.gateway.jwt_secret_generated:
        accounts = (s.sim.demo_account,) if running.sim else ()
        token = running.auth.issue("demo", accounts=accounts)
        lines += [
            "  No TRADESTREAM_JWT_SECRET set: made one for this process. A token for user 'demo':",
            f"    {token}",
            "  Try it:",
            f"    .venv/bin/tradestream watch '{running.ws_url}?token={token}' price:005930",
        ]
    lines.append("  Ctrl-C stops (every received tick is stored first).")
    return "\n".join(lines)


async def _run(
    s: Settings, record: Path | None = None, replay: Path | None = None, speed: float = 0.0
) -> None:
    from tradestream.roles import run_service

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:

            async def service(
                task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await run_service(
                    s, record=record, replay=replay, replay_speed=speed, task_status=task_status
                )
                root.cancel_scope.cancel()  # done: stop the signal watcher

            running = await root.start(service)
            # Everything built at start (libraries, engine, app, caches) lives as long as the
            # process: keep it out of the cyclic collector's full passes, which otherwise walk
            # it every few seconds (a pause of tens of ms on the hot path each time).
            gc.freeze()
            print(_banner(s, running), flush=True)

            async def hard_stop() -> None:
                await trio.sleep(s.shutdown_timeout_s)
                log.error("shutdown took longer than %.0fs; cancelling", s.shutdown_timeout_s)
                root.cancel_scope.cancel()

            stopping = False
            async for signum in signals:
                if not stopping:
                    stopping = True
                    log.info("%s: stopping intake, draining", signal.Signals(signum).name)
                    running.stop()
                    root.start_soon(hard_stop)
                else:
                    log.warning("second signal: cancelling now")
                    root.cancel_scope.cancel()


async def _sim(s: Settings) -> None:
    from tradestream.sim.server import run_simulator

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:
            handle = await root.start(run_simulator, s.sim)
            print(
                f"broker simulator: REST {handle.rest_url}  KIS {handle.ws_url}  "
                f"LS {handle.ls_ws_url}",
                flush=True,
            )
            async for _ in signals:
                root.cancel_scope.cancel()


async def _watch(url: str, topics: Sequence[str], count: int) -> None:
    import msgspec
    from trio_websocket import ConnectionClosed

    from tradestream.feeds.transport import open_upstream

    async with open_upstream(url, connect_timeout_s=10) as ws:
        for topic in topics:
            await ws.send_message(
                msgspec.json.encode({"type": "subscribe", "topic": topic}).decode()
            )
        n = 0
        try:
            while count <= 0 or n < count:
                print(await ws.get_message(), flush=True)
                n += 1
        except ConnectionClosed as exc:
            print(f"closed: {exc.reason}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradestream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run", help="run the service (simulator unless TRADESTREAM_KIS_WS_URL is set)"
    )
    run.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="append every raw upstream frame to FILE (gzip JSON lines)",
    )
    replay = sub.add_parser("replay", help="feed a recording through the pipeline, then exit")
    replay.add_argument("file", type=Path)
    replay.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="times the recorded pace (default 0: as fast as possible)",
    )
    sub.add_parser("sim", help="run the broker simulator alone")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    tok = sub.add_parser("token", help="issue a client JWT (needs TRADESTREAM_JWT_SECRET)")
    tok.add_argument("--user", default="demo")
    tok.add_argument("--role", default="user", choices=["user", "producer", "admin"])
    tok.add_argument(
        "--account",
        action="append",
        default=[],
        help="a broker account this user may see (repeatable)",
    )
    tok.add_argument("--ttl", type=float, default=86400.0, help="seconds")
    watch = sub.add_parser("watch", help="subscribe to topics and print what arrives")
    watch.add_argument("url", help="ws://host:port/api/ws?token=...")
    watch.add_argument("topics", nargs="+")
    watch.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    args = parser.parse_args(argv)

    try:
        _setup_logging()
        s = config_mod.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if args.cmd in ("run", "replay"):
        from tradestream.errors import SchemaOutOfDate

        status = 0
        try:
            if args.cmd == "run":
                trio.run(_run, s, args.record)
            else:
                trio.run(_run, s, None, args.file, args.speed)
        except* SchemaOutOfDate as eg:
            print(f"error: {eg.exceptions[0]}", file=sys.stderr)
            status = 1
        return status
    if args.cmd == "sim":
        trio.run(_sim, s)
        return 0
    if args.cmd == "db":
        from tradestream.store import migrate
        from tradestream.store.writer import make_engine

        engine = make_engine(s.store.url)
        if args.action == "upgrade":
            migrate.upgrade(engine)
        print(
            f"{s.store.url}: schema at {migrate.current_revision(engine)} "
            f"(head {migrate.head_revision()})"
        )
        return 0
    if args.cmd == "token":
        if s.gateway.jwt_secret_generated:
            print("set TRADESTREAM_JWT_SECRET to the server's secret first", file=sys.stderr)
            return 2
        from tradestream.gateway.auth import Authenticator

        if s.gateway.jwt_algorithm != "HS256":
            print("tokens for RS256 are issued by the key holder, not here", file=sys.stderr)
            return 2
        print(
            Authenticator(s.gateway.jwt_secret).issue(
                args.user, ttl_s=args.ttl, role=args.role, accounts=tuple(args.account)
            )
        )
        return 0
    if args.cmd == "watch":
        try:
            trio.run(_watch, args.url, args.topics, args.count)
        except KeyboardInterrupt:
            pass
        return 0
    return 2
