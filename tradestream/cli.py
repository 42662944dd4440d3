"""Command line: `tradestream run | replay | sim | db upgrade | db current | token | watch | top`.

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
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

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


def _banner(s: Settings, running: Any) -> str:
    if s.role == "gateway":
        return "\n".join(
            [
                f"tradestream gateway is up: {running.url}",
                f"  WebSocket  {running.ws_url}?token=<JWT>",
                f"  fed from   {s.redis_stream} at {_safe_redis(s.detect.redis_url)}",
                "  Ctrl-C stops.",
            ]
        )
    lines = [
        *(
            [f"tradestream {s.role} role: messages out to {s.redis_stream}"]
            if s.role == "ingest"
            else []
        ),  # fmt: skip
        f"tradestream is up: {running.url}",
        f"  dashboard  {running.url}/"
        + ("  (signs in by itself: simulator, no secret)" if s.gateway.dev_token else ""),
        f"  WebSocket  {running.ws_url}?token=<JWT>",
        f"  status     {running.url}/api/ws/status",
        "  upstream   "
        + (
            f"built-in broker simulator at {running.sim.rest_url}"
            if running.sim
            else ", ".join(u for u in (s.kis.ws_url, s.kiwoom.ws_url, s.ls.ws_url) if u)
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
    from tradestream.roles.service import run_remote_gateway

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as root:

            async def service(
                task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                if s.role == "gateway":
                    await run_remote_gateway(s, task_status=task_status)
                else:
                    await run_service(
                        s,
                        record=record,
                        replay=replay,
                        replay_speed=speed,
                        task_status=task_status,
                    )
                root.cancel_scope.cancel()  # done: stop the signal watcher

            # a signal before the service is up (an ingest standing by for the lease): stop
            standing_by, watcher_done = trio.CancelScope(), trio.Event()
            root.start_soon(_stop_on_signal, signals, root.cancel_scope, standing_by, watcher_done)
            running = await root.start(service)
            standing_by.cancel()
            await watcher_done.wait()  # one reader of the signals at a time
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


async def _stop_on_signal(
    signals: Any, root: trio.CancelScope, scope: trio.CancelScope, done: trio.Event
) -> None:
    """Until `scope` is cancelled (the service is up): a signal cancels `root`."""
    try:
        with scope:
            async for signum in signals:
                log.info("%s before the service was up: stopping", signal.Signals(signum).name)
                root.cancel()
    finally:
        done.set()


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


async def _watch(url: str, topics: Sequence[str], count: int) -> int:
    """Print every message but the server's pings (answered with a pong, as docs/protocol.md
    asks); stop after `count` of them (0: never). 0 when done or closed normally (1000,
    1001); 1 on any other close, with its code and reason on stderr."""
    import msgspec
    from trio_websocket import ConnectionClosed

    from tradestream.feeds.transport import open_upstream

    async with open_upstream(url, connect_timeout_s=10) as ws:
        n = 0
        try:  # the server may close at once (a refused token): a send can see the close too
            for topic in topics:
                await ws.send_message(
                    msgspec.json.encode({"type": "subscribe", "topic": topic}).decode()
                )
            while count <= 0 or n < count:
                raw = await ws.get_message()
                try:
                    msg = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    msg = None
                if isinstance(msg, dict) and msg.get("type") == "ping":
                    pong = {"type": "pong", "timestamp": msg.get("timestamp")}
                    await ws.send_message(msgspec.json.encode(pong).decode())
                    continue
                print(raw, flush=True)
                n += 1
        except ConnectionClosed as exc:
            if exc.reason is None:  # trio-websocket always sets it; no close frame at all
                print("closed: 1006 no close frame", file=sys.stderr)
                return 1
            code, reason = exc.reason.code, exc.reason.reason or exc.reason.name
            print(f"closed: {code} {reason}", file=sys.stderr)
            return 0 if code in (1000, 1001) else 1
    return 0


def _safe_redis(url: str) -> str:
    """A Redis URL without its password."""
    head, sep, tail = url.rpartition("@")
    return f"{url.split('://')[0]}://***@{tail}" if sep else url


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a URL at all: say so in its own words)
        return url


def _explain(exc: BaseException, s: Settings) -> str | None:
    """One line, naming the setting to change, for an error a user can fix; None otherwise."""
    from sqlalchemy import exc as sa_exc

    from tradestream.errors import CannotListen, Fenced, SchemaOutOfDate, SpoolUnusable

    if isinstance(exc, CannotListen):
        if exc.port == s.sim.port and exc.port != s.gateway.port:
            setting = "TRADESTREAM_SIM_PORT"
        else:
            setting = "TRADESTREAM_HOST / TRADESTREAM_PORT"
        return f"{exc} (set {setting} to a free address)"
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return (
            f"TRADESTREAM_DATABASE_URL={_safe_url(s.store.url)!r} cannot be used: "
            f"{str(exc).splitlines()[0]}"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        return (
            f"cannot use the database {_safe_url(s.store.url)} (TRADESTREAM_DATABASE_URL): "
            f"{reason[0] if reason else type(exc).__name__}"
        )
    if isinstance(exc, SpoolUnusable):
        return f"{exc} (set TRADESTREAM_SPOOL_DIR to a writable directory)"
    if isinstance(exc, SchemaOutOfDate | ConfigError):
        return str(exc)
    if isinstance(exc, Fenced):
        return f"{exc}; stopped (what the database refused is in the spool for the next start)"
    return None


def _watch_error(exc: BaseException, url: str) -> str | None:
    """One line for a `watch` that could not connect."""
    from trio_websocket import ConnectionRejected, HandshakeError

    from tradestream.client import ConnectionRefused

    if isinstance(exc, ConnectionRefused):
        return f"{url}: {exc} (check the token)"
    if isinstance(exc, ConnectionRejected):
        return f"cannot connect to {url}: the server answered HTTP {exc.status_code}"
    if isinstance(exc, OSError | HandshakeError):
        return f"cannot connect to {url}: {exc.strerror if isinstance(exc, OSError) else exc}"
    if isinstance(exc, trio.TooSlowError):
        return f"cannot connect to {url}: no answer within 10 s"
    return None


def _one_line(exc: Exception, explain: Callable[[BaseException], str | None]) -> int:
    """Print the first explainable error of `exc` (a group, or not) as one line; 1. Re-raise
    when there is none: that is a bug, and its traceback is the report."""
    for leaf in _leaves(exc):
        line = explain(leaf)
        if line is not None:
            print(f"error: {line}", file=sys.stderr)
            return 1
    raise exc


RUN_SETTINGS = """\
main settings (environment variables; README, Configuration, lists them all):
  TRADESTREAM_HOST, TRADESTREAM_PORT  where clients connect (default 127.0.0.1:8000)
  TRADESTREAM_DATABASE_URL   sqlite:///tradestream.db (default), postgresql+psycopg://...,
                             mysql+pymysql://...
  TRADESTREAM_DB_AUTO_UPGRADE=1  migrate the database at start (just run sets it)
  TRADESTREAM_JWT_SECRET     signs client tokens (default: one made up per process, with a
                             demo token printed at start)
  TRADESTREAM_KIS_WS_URL, TRADESTREAM_KIS_REST_URL, TRADESTREAM_KIS_APP_KEY,
  TRADESTREAM_KIS_APP_SECRET  a real KIS account (default: the built-in simulator)
  TRADESTREAM_KIS_ACCOUNT    50012345-01: holdings from its balance inquiry
  TRADESTREAM_SIM_PORT       the built-in simulator's port (default 0: any free port)
  TRADESTREAM_SPOOL_DIR      where rows wait while the database is away (default ./spool)
  TRADESTREAM_JOURNAL        1: journal intake there too, so a kill -9 loses nothing (0: off)
  TRADESTREAM_REDIS_URL      alerts and signals over Redis (default: none)
  TRADESTREAM_ROLE           all (default), ingest (messages out to Redis) or gateway (fed
                             from Redis); TRADESTREAM_REDIS_STREAM names the stream
  TRADESTREAM_LOG_LEVEL, TRADESTREAM_LOG_FORMAT  INFO, text (or json)
"""

SIM_SETTINGS = """\
settings (environment variables):
  TRADESTREAM_SIM_PORT       REST and WebSocket port (default 0: any free port, printed)
  TRADESTREAM_SIM_TICK_RATE  trades per second over its codes (default 200)
  TRADESTREAM_SIM_SEED       the market's random seed (default 7)
  TRADESTREAM_SIM_DROP_EVERY_S  drop every connection this often (default 0: never)
  TRADESTREAM_SIM_MALFORMED_RATE  share of frames sent broken (default 0)
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradestream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run",
        help="run the service (simulator unless TRADESTREAM_KIS_WS_URL is set)",
        epilog=RUN_SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    sub.add_parser(
        "sim",
        help="run the broker simulator alone",
        epilog=SIM_SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    stocks = sub.add_parser("stocks", help="the stock master: load it, or search it")
    stocks_sub = stocks.add_subparsers(dest="stocks_cmd", required=True)
    load = stocks_sub.add_parser(
        "load", help="load the broker's master files into the database (names, markets)"
    )
    load.add_argument("--url", help="where the master files are (TRADESTREAM_KIS_MASTER_URL)")
    find = stocks_sub.add_parser("search", help="codes or names starting with (or holding) Q")
    find.add_argument("q")
    find.add_argument("--limit", type=int, default=20)
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
    picks = sub.add_parser(
        "picks",
        help="show the running service's daily picks, or set them (needs TRADESTREAM_JWT_SECRET)",
    )
    picks.add_argument(
        "--url",
        default="",
        help="the service (default http://127.0.0.1:$TRADESTREAM_PORT, or :8000)",
    )
    picks.add_argument("--set", metavar="CODES", help="comma-separated codes: the new picks")
    picks.add_argument("--orderbook", metavar="CODES", default="", help="order books too")
    picks.add_argument("--file", type=Path, help="set the picks from a JSON or CSV file")
    top = sub.add_parser(
        "top", help="a live terminal view of the running service (prices, alerts, slots)"
    )
    top.add_argument(
        "--url", default="", help="the service (default http://127.0.0.1:$TRADESTREAM_PORT)"
    )
    top.add_argument(
        "--token", default=os.environ.get("TRADESTREAM_TOKEN", ""),
        help="a client token (default $TRADESTREAM_TOKEN, else an admin token made with "
        "TRADESTREAM_JWT_SECRET)",
    )  # fmt: skip
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

    try:
        if args.cmd == "run":
            trio.run(_run, s, args.record)
            return 0
        if args.cmd == "replay":
            trio.run(_run, s, None, args.file, args.speed)
            return 0
        if args.cmd == "sim":
            trio.run(_sim, s)
            return 0
        if args.cmd == "db":
            return _db(args.action, s)
        if args.cmd == "stocks":
            return _stocks(args, s)
    except Exception as exc:  # noqa: BLE001  (a user's error in one line, the rest re-raised)
        return _one_line(exc, partial(_explain, s=s))
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
    if args.cmd == "picks":
        return _picks(args, s)
    if args.cmd == "top":
        return _top(args, s)
    if args.cmd == "watch":
        try:
            return trio.run(_watch, args.url, args.topics, args.count)
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # noqa: BLE001  (a connect failure in one line)
            return _one_line(exc, partial(_watch_error, url=args.url))
    return 2


def _top(args: argparse.Namespace, s: Settings) -> int:
    from tradestream.gateway.auth import Authenticator
    from tradestream.top import run_top

    token = args.token
    if not token:
        if s.gateway.jwt_secret_generated:
            print("pass --token, or set TRADESTREAM_JWT_SECRET to the server's secret",
                  file=sys.stderr)  # fmt: skip
            return 2
        token = Authenticator(s.gateway.jwt_secret).issue("top", role="admin", ttl_s=12 * 3600)
    url = (args.url or f"http://127.0.0.1:{s.gateway.port}").rstrip("/")

    async def until_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def view() -> None:
                    await run_top(url, token)

                nursery.start_soon(view)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(until_signal)
    except Exception as exc:  # noqa: BLE001  (a connect failure in one line)
        return _one_line(exc, partial(_watch_error, url=url))
    return 0


def _picks(args: argparse.Namespace, s: Settings) -> int:
    """GET /api/slots (the pick claims) or PUT /api/watchlist/picks, with an admin token."""
    import httpx

    from tradestream.gateway.auth import Authenticator
    from tradestream.slots.picks import Picks, parse_picks
    from tradestream.upstream import KIS_BOOK, KIS_TRADES

    if s.gateway.jwt_secret_generated:
        print("set TRADESTREAM_JWT_SECRET to the server's secret first", file=sys.stderr)
        return 2
    token = Authenticator(s.gateway.jwt_secret).issue("cli", role="admin", ttl_s=300)
    url = (args.url or f"http://127.0.0.1:{s.gateway.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        new: Picks | None = None
        if args.file is not None:
            new = parse_picks(args.file.read_text())
        elif args.set:
            new = parse_picks(args.set)
            if args.orderbook:
                new = Picks(new.codes, parse_picks(args.orderbook).codes)
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            if new is not None:
                resp = http.put(
                    "/api/watchlist/picks",
                    json={"codes": list(new.codes), "orderbook": list(new.orderbook)},
                )
                if resp.status_code != 200:
                    print(f"error: {resp.status_code} {resp.text.strip()}", file=sys.stderr)
                    return 1
                print(resp.text.strip())
                return 0
            resp = http.get("/api/slots")
            resp.raise_for_status()
            doc = resp.json()
    except (OSError, ValueError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [*doc.get("slots", []), *doc.get("pending", [])]
    picked = [r for r in rows if "pick" in r.get("claims", [])]
    trades = sorted({r["code"] for r in picked if r["tr_id"] == KIS_TRADES})
    books = sorted({r["code"] for r in picked if r["tr_id"] == KIS_BOOK})
    print(f"codes: {','.join(trades)}")
    print(f"orderbook: {','.join(books)}")
    return 0


def _stocks(args: argparse.Namespace, s: Settings) -> int:
    from tradestream.store import migrate
    from tradestream.store.stocks import search
    from tradestream.store.writer import make_engine

    engine = make_engine(s.store.url)
    try:
        if s.store.auto_upgrade:
            migrate.upgrade(engine)
        migrate.check(engine)
        if args.stocks_cmd == "load":
            from tradestream.roles.stocks import load_master

            url = args.url or s.kis.master_url
            if not url:
                print("error: no master URL: set TRADESTREAM_KIS_MASTER_URL or pass --url",
                      file=sys.stderr)  # fmt: skip
                return 1
            from tradestream.errors import FeedError

            try:
                names = trio.run(load_master, engine, url)
            except FeedError as exc:
                print(f"error: the stock master could not be loaded: {exc}", file=sys.stderr)
                return 1
            print(f"{len(names)} stocks loaded from {url}")
            return 0
        for st in search(engine, args.q, max(1, min(args.limit, 100))):
            print(f"{st.code}  {st.market:<6}  {st.name}")
        return 0
    finally:
        engine.dispose()


def _db(action: str, s: Settings) -> int:
    from tradestream.store import migrate
    from tradestream.store.writer import make_engine

    engine = make_engine(s.store.url)
    try:
        if action == "upgrade":
            migrate.upgrade(engine)
        print(
            f"{_safe_url(s.store.url)}: schema at {migrate.current_revision(engine)} "
            f"(head {migrate.head_revision()})"
        )
    finally:
        engine.dispose()
    return 0
