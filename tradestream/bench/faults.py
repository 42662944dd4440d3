"""Fault runs: every trade the broker wrote to a socket is stored, whatever goes wrong.

Each scenario starts `tradestream run` as its own process, fed by the bench upstream
(bench/upstream.py, ``--control``: two KIS app keys, 50 codes) and storing into a scratch
PostgreSQL database, applies one fault while trades flow, stops the upstream, stops the service
the way an operator would, starts it once more if its spool holds rows (the next start writes
them), and counts:
- `written`: trade records the upstream wrote onto the service's sockets since the start;
- `stored`: rows in stock_prices_realtime (one per trade: inserts are idempotent);
- `lost`: written - stored; and how the process ended (exit code, seconds to stop).

Scenarios (issue 14's fault table): SIGTERM at 5,000 trades/s; a 10 s database outage at 3,000
trades/s; the upstream dropping every connection every 3 s; SIGTERM at 5,000/s while the
database is down; a spool that cannot be written (refused at start); a database that hangs with
its connections open (a freezing proxy) for longer than the write timeout, then SIGTERM during
a second hang; kill -9 and a restart.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import sqlalchemy as sa
import trio

from tradestream.bench.clients import read_line
from tradestream.bench.fanout import SECRET
from tradestream.bench.served import _free_port, _start, _wait_http, service_env
from tradestream.bench.store import PG_URL, scratch
from tradestream.gateway.auth import Authenticator
from tradestream.sim.market import DEFAULT_TICKERS

CODES = [t.code for t in DEFAULT_TICKERS]


@dataclass
class Run:
    """One scenario's upstream, database and service."""

    tmp: Path
    db: str
    up: trio.Process
    env: dict[str, str]
    port: int
    buf: bytearray = field(default_factory=bytearray)
    server: trio.Process | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    async def upstream(self, cmd: str) -> dict[str, Any]:
        assert self.up.stdin is not None and self.up.stdout is not None
        await self.up.stdin.send_all(cmd.encode() + b"\n")
        with trio.fail_after(30):
            answer: dict[str, Any] = json.loads(await read_line(self.up.stdout, self.buf))
            return answer

    async def status(self) -> dict[str, Any]:
        token = Authenticator(SECRET).issue("bench-admin", role="admin")
        async with httpx.AsyncClient(timeout=10) as http:
            doc: dict[str, Any] = (
                await http.get(
                    f"http://127.0.0.1:{self.port}/api/ws/status", params={"token": token}
                )
            ).json()
            return doc

    async def start(self, *, streaming: bool = True, **env: str) -> trio.Process:
        """Start the service; returns once it serves and (`streaming`) both upstream sessions
        stream (not while the upstream is paused: they stream on its first trade)."""
        self.server = await _start(
            [sys.executable, "-m", "tradestream", "run"],
            env={**self.env, **env},
            cwd=self.tmp,
        )
        await _wait_http(self.port, timeout_s=60)
        if not streaming:
            return self.server
        with trio.fail_after(60):
            while not await self._streaming():  # noqa: ASYNC110  (another process: polled)
                await trio.sleep(0.1)
        return self.server

    async def finish(self) -> None:
        """The upstream stops sending; a moment later the service is stopped (SIGTERM)."""
        await self.upstream("pause")
        await trio.sleep(1)
        await self.stop()

    async def _streaming(self) -> bool:
        return all(f["state"] == "streaming" for f in (await self.status())["upstream"])

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the service with `sig`; records its exit code and how long it took."""
        assert self.server is not None
        t0 = time.monotonic()
        self.server.send_signal(sig)
        with trio.fail_after(90):
            code = await self.server.wait()
        self.notes.setdefault("exits", []).append(
            {"signal": signal.Signals(sig).name, "code": code, "s": round(time.monotonic() - t0, 2)}
        )

    def spooled(self) -> int:
        return sum(1 for _ in (self.tmp / "spool").glob("*.spool"))


def _count(db: str, sql: str) -> Any:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).all()
    finally:
        engine.dispose()


class _Outage:
    """The scratch database refuses connections and its sessions end (server side)."""

    def __init__(self, db: str) -> None:
        self.name = sa.engine.make_url(db).database
        self.admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")

    def _sql(self, *stmts: str) -> None:
        with self.admin.connect() as conn:
            for stmt in stmts:
                conn.exec_driver_sql(stmt)

    def begin(self) -> None:
        self._sql(
            f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
        )

    def end(self) -> None:
        self._sql(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")
        self.admin.dispose()


class FreezingProxy:
    """TCP to the database server through this process; frozen, nothing passes either way
    while the connections stay open (a hung server)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.thawed = trio.Event()
        self.thawed.set()
        self.port = 0

    def freeze(self) -> None:
        self.thawed = trio.Event()

    def thaw(self) -> None:
        self.thawed.set()

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await self.thawed.wait()
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # either side went away (an abandoned write's connection, the end of a run)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await dst.send_eof()

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self.target)
            async with client, server, trio.open_nursery() as n:
                n.start_soon(self._pump, client, server)
                n.start_soon(self._pump, server, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)


# -- the scenarios: each applies its fault and stops the service its own way --------------------


async def sigterm(run: Run) -> None:
    await run.start()
    await trio.sleep(8)
    await run.stop()  # while trades flow at full rate


async def db_outage(run: Run) -> None:
    await run.start()
    await trio.sleep(3)
    outage = _Outage(run.db)
    await trio.to_thread.run_sync(outage.begin)
    await trio.sleep(10)
    await trio.to_thread.run_sync(outage.end)
    await trio.sleep(5)
    await run.finish()


async def upstream_drops(run: Run) -> None:
    await run.start()
    for _ in range(5):
        await trio.sleep(3)
        await run.upstream("drop")
    await trio.sleep(3)
    await run.finish()


async def sigterm_during_outage(run: Run) -> None:
    await run.start()
    await trio.sleep(3)
    outage = _Outage(run.db)
    await trio.to_thread.run_sync(outage.begin)
    await trio.sleep(5)
    try:
        await run.stop()  # the database is down: what is held goes to the spool
    finally:
        await trio.to_thread.run_sync(outage.end)


async def spool_unwritable(run: Run) -> None:
    (run.tmp / "not-a-dir").write_text("a file where the spool's parent should be")
    proc = await _start(
        [sys.executable, "-m", "tradestream", "run"],
        env={**run.env, "TRADESTREAM_SPOOL_DIR": str(run.tmp / "not-a-dir" / "spool")},
        cwd=run.tmp,
        stderr=-1,
    )
    with trio.fail_after(60):
        code = await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.receive_some(65536)).decode().strip().splitlines()
    run.notes["refused_at_start"] = {"code": code, "last_line": err[-1] if err else ""}


async def db_hang(run: Run) -> None:
    real = sa.engine.make_url(run.db)
    assert real.host is not None and real.port is not None
    proxy = FreezingProxy(real.host, real.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        via = real.set(port=proxy.port).render_as_string(hide_password=False)
        await run.start(TRADESTREAM_DATABASE_URL=via)
        await trio.sleep(3)
        proxy.freeze()  # connections open, no bytes: longer than the 30 s write timeout
        await trio.sleep(35)
        run.notes["during_hang"] = {
            k: (await run.status())["store"][k] for k in ("retries", "last_error", "writing")
        }
        proxy.thaw()
        await trio.sleep(10)
        proxy.freeze()  # a second hang, and the operator stops the service during it
        await trio.sleep(5)
        try:
            await run.stop()
        finally:
            proxy.thaw()
            nursery.cancel_scope.cancel()


async def kill_restart(run: Run) -> None:
    await run.start()
    await trio.sleep(5)
    run.notes["not_stored_before_kill"] = (await run.status())["journal"]["pending"]
    await run.stop(signal.SIGKILL)
    await trio.sleep(1.5)
    await run.start()
    await trio.sleep(5)
    await run.finish()


async def kill_quiet_restart(run: Run) -> None:
    """kill -9 once the upstream has paused and everything it wrote has been read, with a 60 s
    flush deadline so that what was read is only in memory (and the journal) at the kill: what
    this loses is what the service had read. The mid-stream kill also loses what was still on
    the wire (the sockets' buffers), which no receiver can get back."""
    await run.start(TRADESTREAM_FLUSH_INTERVAL_S="60", TRADESTREAM_FLUSH_ROWS="1000000")
    await trio.sleep(5)
    await run.upstream("pause")
    await trio.sleep(0.5)
    st = await run.status()
    run.notes["not_stored_at_kill"] = st["journal"]["pending"]  # read, in memory only
    await run.stop(signal.SIGKILL)
    await trio.sleep(1.5)
    await run.start(streaming=False)
    await run.upstream("resume")
    await trio.sleep(5)
    await run.finish()


SCENARIOS: dict[str, tuple[float, Callable[[Run], Awaitable[None]]]] = {
    "sigterm_5000": (5000.0, sigterm),
    "db_outage_10s_3000": (3000.0, db_outage),
    "upstream_drops_every_3s_3000": (3000.0, upstream_drops),
    "sigterm_during_db_outage_5000": (5000.0, sigterm_during_outage),
    "spool_unwritable": (3000.0, spool_unwritable),
    "db_hung_35s_then_sigterm_in_a_hang_3000": (3000.0, db_hang),
    "kill9_restart_3000": (3000.0, kill_restart),
    "kill9_with_everything_read_in_memory_3000": (3000.0, kill_quiet_restart),
}


async def _one(
    name: str, rate: float, scenario: Callable[[Run], Awaitable[None]]
) -> dict[str, Any]:
    with (
        TemporaryDirectory(prefix="ts-fault-") as tmpdir,
        scratch("postgresql", Path(tmpdir)) as db,
    ):
        tmp = Path(tmpdir)
        up = await _start(
            [sys.executable, "-m", "tradestream.bench.upstream", str(rate), "10", "--control"]
        )
        try:
            assert up.stdout is not None
            buf = bytearray()
            _, http_port, ws_port = (await read_line(up.stdout, buf)).decode().split()
            port = _free_port()
            env = service_env(http_port, ws_port, CODES, port, db, tmp)
            run = Run(tmp, db, up, env, port, buf)
            await scenario(run)
            written = (await run.upstream("pause"))["written"]
            if run.spooled():  # the next start writes what the last one spooled
                run.notes["spooled_segments"] = run.spooled()
                await run.start(streaming=False)
                with trio.fail_after(120):
                    while run.spooled():  # noqa: ASYNC110  (a directory: polled)
                        await trio.sleep(0.2)
                await run.stop()
            stored = _count(db, "SELECT count(*) FROM stock_prices_realtime")[0][0]
            gaps = _count(db, "SELECT reason, count(*) FROM feed_gaps GROUP BY reason")
            assert up.stdin is not None
            await up.stdin.send_all(b"quit\n")
        finally:
            if up.returncode is None:
                up.kill()
            await up.wait()
    return {
        "rate": rate,
        "written": written,
        "stored": stored,
        "lost": written - stored,
        "gaps": {str(reason)[:40]: n for reason, n in gaps},
        **run.notes,
    }


async def main(only: tuple[str, ...] = ()) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, (rate, scenario) in SCENARIOS.items():
        if only and name not in only:
            continue
        out[name] = await _one(name, rate, scenario)
    return out
