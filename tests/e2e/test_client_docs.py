"""docs/client.md's examples run as they are, each as a program of its own, against the real
service: what the documentation shows works."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import trio

from tests.e2e.test_cli import start_run
from tests.e2e.test_client import SECRET, service_env
from tradestream.gateway.auth import Authenticator

DOC = Path(__file__).parents[2] / "docs" / "client.md"


def examples() -> dict[str, str]:
    blocks = re.findall(r"```python\n# example: (\w+)\n(.*?)```", DOC.read_text(), re.S)
    return dict(blocks)


async def test_the_documented_examples_run(tmp_path: Path) -> None:
    found = examples()
    assert set(found) == {"trio", "asyncio"}
    env = service_env(tmp_path, 0)
    outputs = {}
    with trio.fail_after(90):
        server, url = await start_run(env, tmp_path)
        try:
            for name, code in found.items():
                script = tmp_path / f"example_{name}.py"  # not trio.py: it would shadow trio
                script.write_text(code)
                done = await trio.run_process(
                    [sys.executable, str(script)],
                    env={
                        **os.environ,
                        "TRADESTREAM_WS_URL": url.replace("http://", "ws://") + "/api/ws",
                        "TRADESTREAM_TOKEN": Authenticator(SECRET).issue("alice"),
                    },
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                outputs[name] = (done.returncode, done.stdout.decode(), done.stderr.decode())
        finally:
            server.terminate()
            with trio.move_on_after(20):
                await server.wait()
            if server.returncode is None:
                server.kill()
    code, out, err = outputs["trio"]
    assert code == 0, err
    assert len(re.findall(r"^005930 [\d,]+ \([+-]\d+\.\d\d%\)$", out, re.M)) == 3, out
    code, out, err = outputs["asyncio"]
    assert code == 0, err
    assert re.search(r"^005930 .*: [\d,]+ \(memory\)$", out, re.M), out
    assert "accounts:" in out and "no quote: no_data" in out
