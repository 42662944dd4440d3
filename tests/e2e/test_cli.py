"""`tradestream run` as a user runs it: a real process, a real SIGINT, exit status 0."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import sqlalchemy as sa
import trio

from tradestream.feeds.transport import open_upstream

REPO = Path(__file__).resolve().parents[2]


async def read_until(
    stream: trio.abc.ReceiveStream, buf: bytearray, pattern: bytes
) -> re.Match[bytes]:
    while (m := re.search(pattern, bytes(buf))) is None:
        chunk = await stream.receive_some()
        assert chunk, f"process output ended before {pattern!r}:\n{buf.decode()}"
        buf += chunk
    return m


async def start_run(
    env: dict[str, str], cwd: Path, ready: bytes = rb"tradestream is up: (http://\S+)"
) -> tuple[trio.Process, str]:
    """`tradestream run` as a process, once it serves (its banner's `ready` line); returns it
    and its HTTP base URL (the line's group)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tradestream", "run"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out = bytearray()
    assert proc.stdout is not None
    m = await read_until(proc.stdout, out, ready)
    return proc, m.group(1).decode()


async def kill_if_running(proc: trio.Process) -> None:
    """A test's last word on a process it started: gone, whatever happened."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_run_then_sigint_stores_every_tick_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{db}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
        "TRADESTREAM_SIM_TICK_RATE": "500",
    }
    env.pop("TRADESTREAM_JWT_SECRET", None)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tradestream", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = bytearray(), bytearray()
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None and proc.stderr is not None
            m = await read_until(
                proc.stdout, out, rb"tradestream watch '(ws://[^']+)' price:005930"
            )
            url = m.group(1).decode()
            async with open_upstream(url, connect_timeout_s=5) as ws:
                assert msgspec.json.decode(await ws.get_message())["type"] == "connected"
                await ws.send_message('{"type":"subscribe","topic":"price:005930"}')
                assert msgspec.json.decode(await ws.get_message())["type"] == "subscribed"
                msg = msgspec.json.decode(await ws.get_message())
                assert msg["type"] == "price_update"
                proc.send_signal(signal.SIGINT)
                code = await proc.wait()
            m = await read_until(
                proc.stderr, err, rb"pipeline drained: (\d+) events received, (\d+) stored"
            )
    finally:
        await kill_if_running(proc)
    assert code == 0, err.decode()
    received, stored = int(m.group(1)), int(m.group(2))
    assert received > 0 and stored == received
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = sum(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (
                "stock_prices_realtime",
                "orderbook_snapshots",
                "program_trades",
                "executions",
                "news",
                "feed_gaps",
                "index_ticks",
                "alerts",
                "signals",
                "slot_audit",
            )
        )
    engine.dispose()
    assert rows == received


async def test_just_run_then_ctrl_c_exits_0(tmp_path: Path) -> None:
    """The README's own command, as a terminal runs it: Ctrl-C goes to the whole foreground
    process group (just and the service); the service drains and exits 0, and so does just."""
    just = Path(sys.executable).parent / "just"
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'just.db'}",
        "TRADESTREAM_SIM_TICK_RATE": "200",
    }
    proc = await trio.lowlevel.open_process(
        [str(just), "--justfile", str(REPO / "Justfile"), "--working-directory", str(tmp_path)]
        + ["run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    out, err = bytearray(), bytearray()
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None and proc.stderr is not None
            await read_until(proc.stdout, out, rb"tradestream watch 'ws://")
            os.killpg(proc.pid, signal.SIGINT)
            code = await proc.wait()
            await read_until(proc.stderr, err, rb"pipeline drained: \d+ events received")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # just and the service it started, if left
        await kill_if_running(proc)
    assert code == 0, err.decode()[-2000:]
    assert b"interrupted" not in err


async def test_sim_command_serves_and_stops(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tradestream", "sim"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = bytearray()
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None
            m = await read_until(proc.stdout, out, rb"KIS (ws://\S+)")
            async with open_upstream(m.group(1).decode(), connect_timeout_s=5) as ws:
                await ws.send_message("not json")
                reply = msgspec.json.decode(await ws.get_message())
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    finally:
        await kill_if_running(proc)
    assert reply["body"]["msg_cd"] == "OPSP9999"
    assert code == 0


def test_bench_list_names_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tradestream.bench", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = [line.split()[0] for line in done.stdout.splitlines()]
    for name in ("store", "reconnect", "fanout", "overload", "ingest", "floor", "alerts"):
        assert name in names, done.stdout
    assert all(len(line.split()) > 1 for line in done.stdout.splitlines())  # each described


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradestream", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_errors_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    refused = "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"  # nothing listens on port 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        sqlite = f"sqlite:///{tmp_path / 'ok.db'}"
        cases = [
            (["run"], {"TRADESTREAM_DATABASE_URL": refused}, "TRADESTREAM_DATABASE_URL"),
            (["db", "upgrade"], {"TRADESTREAM_DATABASE_URL": refused}, "TRADESTREAM_DATABASE_URL"),
            (["db", "current"], {"TRADESTREAM_DATABASE_URL": "nosuch://x"}, "nosuch"),
            (
                ["run"],
                {
                    "TRADESTREAM_DATABASE_URL": sqlite,
                    "TRADESTREAM_DB_AUTO_UPGRADE": "1",
                    "TRADESTREAM_HOST": "127.0.0.1",
                    "TRADESTREAM_PORT": port,
                },
                "TRADESTREAM_PORT",
            ),
            (["sim"], {"TRADESTREAM_SIM_PORT": port}, "TRADESTREAM_SIM_PORT"),
            (
                ["run"],
                {
                    "TRADESTREAM_DATABASE_URL": sqlite,
                    "TRADESTREAM_DB_AUTO_UPGRADE": "1",
                    "TRADESTREAM_PORT": "0",
                    "TRADESTREAM_SPOOL_DIR": str(tmp_path / "ok.db" / "spool"),  # under a file
                },
                "TRADESTREAM_SPOOL_DIR",
            ),
        ]
        for args, env, setting in cases:
            done = _cli(args, tmp_path, **env)
            assert done.returncode == 1, (args, env, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and setting in last, (args, last)
            assert "secret" not in done.stderr  # the password is not printed
            if setting == "TRADESTREAM_PORT":  # found before anything started: nothing else said
                assert "WARNING" not in done.stderr and "ERROR" not in done.stderr
    done = _cli(["run"], tmp_path, TRADESTREAM_PORT="abc")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "configuration error: TRADESTREAM_PORT='abc' is not a whole number (default: 8000)"
    )


def test_run_and_sim_help_list_the_main_settings(tmp_path: Path) -> None:
    run = _cli(["run", "--help"], tmp_path).stdout
    for name in ("TRADESTREAM_PORT", "TRADESTREAM_DATABASE_URL", "TRADESTREAM_SIM_PORT"):
        assert name in run
    assert "TRADESTREAM_SIM_PORT" in _cli(["sim", "--help"], tmp_path).stdout


async def test_watch_answers_pings_and_exits_non_zero_when_refused(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from tests.e2e.test_gateway import gw, tok
    from tests.e2e.test_service import service

    # pings every 0.2 s, one unanswered ping closes (4002): watch must answer them all
    s = gw(make_settings(tmp_path), ping_interval_s=0.2, max_missed_pongs=1)
    with trio.fail_after(60):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            # 40 price updates at the simulator's pace take several ping intervals
            done = await trio.run_process(
                [sys.executable, "-m", "tradestream", "watch", url, "price:005930"]
                + ["--count", "40"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            lines = done.stdout.decode().splitlines()
            assert len(lines) == 40
            assert not any('"type":"ping"' in line for line in lines)
            assert sum('"price_update"' in line for line in lines) >= 30
            assert running.metrics.closes.labels("heartbeat")._value.get() == 0
            assert running.metrics.messages_in.labels("pong")._value.get() >= 3  # it was pinged
            bad = await trio.run_process(
                [sys.executable, "-m", "tradestream", "watch", url + "x", "news"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert bad.returncode == 1
            assert bad.stderr.decode().startswith("closed: 4401"), bad.stderr.decode()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]  # nothing listens once this socket is closed
    nobody = await trio.run_process(
        [sys.executable, "-m", "tradestream", "watch", f"ws://127.0.0.1:{closed_port}/x", "news"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    err = nobody.stderr.decode()
    assert nobody.returncode == 1
    assert "Traceback" not in err and err.startswith("error: cannot connect to"), err


STREAMING = {"kis-1", "kis-2", "kiwoom-1"}  # the simulated run's sessions that always stream


async def test_a_killed_run_leaves_a_feed_gap_at_the_next_start(tmp_path: Path) -> None:
    """kill -9, then a restart: the feeds store (and publish) a gap from when the killed run
    was last alive to when they streamed again; a clean stop leaves nothing to report."""
    db = tmp_path / "gap.db"
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{db}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }
    mark = tmp_path / "spool" / "running"

    def gaps() -> list[Any]:
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            rows = list(
                conn.execute(sa.text("SELECT source, started_at, ended_at, reason FROM feed_gaps"))
            )
        engine.dispose()
        return rows

    with trio.fail_after(60):
        first, _ = await start_run(env, tmp_path)
        while not mark.exists():  # noqa: ASYNC110  (the run writes it as intake starts)
            await trio.sleep(0.05)
        first.kill()  # SIGKILL: no drain, no clean stop
        await first.wait()
        killed_at = time.time()
        assert mark.exists()
        second, _ = await start_run(env, tmp_path)
        try:
            while len({r.source for r in gaps()} & STREAMING) < 3:  # noqa: ASYNC110
                await trio.sleep(0.1)
            second.send_signal(signal.SIGINT)
            assert await second.wait() == 0
        finally:
            await kill_if_running(second)
    rows = gaps()
    # both KIS sessions and the Kiwoom one report it (the LS session too, when a headline came
    # in time)
    assert STREAMING <= {r.source for r in rows} <= STREAMING | {"ls-1"}
    for r in rows:
        assert r.reason.startswith("unclean stop")
        started = datetime.fromisoformat(str(r.started_at)).replace(tzinfo=UTC).timestamp()
        ended = datetime.fromisoformat(str(r.ended_at)).replace(tzinfo=UTC).timestamp()
        assert killed_at - 3 < started <= killed_at < ended  # last alive <= the kill < back
    assert not mark.exists()  # the second run stopped cleanly


async def test_run_record_then_replay_from_the_command_line(tmp_path: Path) -> None:
    """`tradestream run --record FILE`, Ctrl-C, then `tradestream replay FILE` into an empty
    database: the same trades, stored once."""
    recording = tmp_path / "rec.jsonl.gz"
    live_db, replay_db = tmp_path / "live.db", tmp_path / "replay.db"
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
        "TRADESTREAM_SIM_TICK_RATE": "500",
    }

    def count(db: Path) -> int:
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM stock_prices_realtime")).scalar_one()
        engine.dispose()
        return int(n)

    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tradestream", "run", "--record", str(recording)],
            env={**env, "TRADESTREAM_DATABASE_URL": f"sqlite:///{live_db}"},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            await read_until(proc.stdout, bytearray(), rb"tradestream is up")
            while not live_db.exists() or count(live_db) < 300:  # noqa: ASYNC110
                await trio.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
        finally:
            await kill_if_running(proc)
        done = await trio.run_process(
            [sys.executable, "-m", "tradestream", "replay", str(recording)],
            env={**env, "TRADESTREAM_DATABASE_URL": f"sqlite:///{replay_db}"},
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert count(replay_db) == count(live_db) >= 300


async def test_daily_picks_from_a_file_at_start_and_the_picks_command(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.conftest import make_settings
    from tests.e2e.test_service import service

    source = tmp_path / "picks.csv"
    source.write_text("# today's picks\n005930,orderbook\n000660\n")
    s = make_settings(tmp_path)
    s = replace(s, kis=replace(s.kis, picks_source=str(source)))
    env = {**os.environ, "TRADESTREAM_JWT_SECRET": s.gateway.jwt_secret}

    async def picks(*args: str) -> str:
        done = await trio.run_process(
            [sys.executable, "-m", "tradestream", "picks", "--url", running.url, *args],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    with trio.fail_after(60):
        async with service(s) as running:
            # the file's picks are in force from the start (the refresh applies at start too)
            assert await picks() == "codes: 000660,005930\norderbook: 005930\n"
            answer = msgspec.json.decode(await picks("--set", "035420,005380"))
            assert answer["picks"] >= 2
            assert await picks() == "codes: 005380,035420\norderbook: \n"


async def test_kill_9_loses_no_received_trade(tmp_path: Path) -> None:
    """Killed with SIGKILL while every trade it took in is still in memory (a 60 s flush
    deadline: nothing written yet), a run loses none of them: the next start stores them from
    the intake journal (the natural keys keep them once each), and a clean stop leaves no
    journal behind. The same kill with the journal off loses them all, so the check can
    fail."""

    async def ticks_seen(http: httpx.AsyncClient) -> int:
        text = (await http.get("/metrics")).text
        m = re.search(r'^tradestream_events_total\{type="Tick"\} (\S+)$', text, re.M)
        return int(float(m.group(1))) if m else 0

    async def run_once(journal: str) -> tuple[int, int, list[Path]]:
        db, spool = tmp_path / f"kill-{journal}.db", tmp_path / f"spool-{journal}"
        env = {
            **os.environ,
            "TRADESTREAM_PORT": "0",
            "TRADESTREAM_DATABASE_URL": f"sqlite:///{db}",
            "TRADESTREAM_DB_AUTO_UPGRADE": "1",
            "TRADESTREAM_FLUSH_INTERVAL_S": "60",
            "TRADESTREAM_FLUSH_ROWS": "1000000",
            "TRADESTREAM_SIM_TICK_RATE": "500",
            "TRADESTREAM_SPOOL_DIR": str(spool),
            "TRADESTREAM_JOURNAL": journal,
        }

        first, base = await start_run(env, tmp_path)
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                while (seen := await ticks_seen(http)) < 300:  # noqa: ASYNC110  (another process)
                    await trio.sleep(0.05)
            first.kill()  # SIGKILL: no drain; the trades taken in are only in memory
            await first.wait()
        finally:
            await kill_if_running(first)
        killed_at = datetime.now(UTC).replace(tzinfo=None)
        second, _ = await start_run(env, tmp_path)
        try:
            second.send_signal(signal.SIGINT)
            assert await second.wait() == 0
        finally:
            await kill_if_running(second)
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            received = [
                datetime.fromisoformat(str(r[0]))
                for r in conn.execute(sa.text("SELECT received_at FROM stock_prices_realtime"))
            ]
        engine.dispose()
        before_kill = sum(r.replace(tzinfo=None) <= killed_at for r in received)
        return seen, before_kill, sorted((spool / "journal").glob("*.journal"))

    with trio.fail_after(90):
        seen, stored, left = await run_once("1")
        assert stored >= seen > 0, (stored, seen)
        assert left == []  # the second run stopped cleanly: every segment settled
        seen_off, stored_off, _ = await run_once("0")
    assert seen_off > 0 and stored_off == 0  # without the journal, the kill loses them all
