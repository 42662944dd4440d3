"""`tradestream top` against the real service: it subscribes to the streamed codes, shows
their prices, a signal as it arrives and the slots; the command starts and stops on a signal."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio
from rich.console import Console

from tests.conftest import make_settings
from tests.e2e.test_cli import kill_if_running, read_until, start_run
from tests.e2e.test_client import post_signal
from tests.e2e.test_gateway import tok
from tests.e2e.test_service import TIMEOUT_S, service
from tradestream.top import Board, run_top


async def test_top_shows_prices_signals_and_slots(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=120, record=True)
    board = Board()
    with trio.fail_after(TIMEOUT_S):
        async with service(make_settings(tmp_path)) as running:
            producer = tok(running, "bot", role="producer")

            async def signal_once_prices_flow() -> None:
                while len(board.prices) < 3:  # noqa: ASYNC110  (the view's own state)
                    await trio.sleep(0.05)
                await post_signal(running.url, producer, 1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(signal_once_prices_flow)
                await run_top(
                    running.url,
                    tok(running, "ops", role="admin"),
                    console=console,
                    board=board,
                    poll_s=0.2,
                    until=lambda b: any(k.startswith("signal") for k, _ in b.events),
                )
    out = console.export_text()
    assert len(board.prices) >= 3 and board.slots["slots"]
    assert "signal VCP" in out and "prices (biggest moves first)" in out and "kis-1" in out
    assert any(f"{d.price:,}" in out for d in board.prices.values())


async def test_the_top_command_runs_until_interrupted(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_JWT_SECRET": "top-test-secret-top-test-secret-top-x",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }
    with trio.fail_after(60):
        server, url = await start_run(env, tmp_path)
        try:
            top = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tradestream", "top", "--url", url],
                env={**env, "COLUMNS": "120", "TTY_COMPATIBLE": "1"},  # draw as on a terminal
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert top.stdout is not None
                await read_until(top.stdout, bytearray(), rb"kis-1:streaming")
                top.send_signal(signal.SIGINT)
                code = await top.wait()
            finally:
                await kill_if_running(top)
        finally:
            server.terminate()
            with trio.move_on_after(20):
                await server.wait()
            await kill_if_running(server)
    assert code == 0
