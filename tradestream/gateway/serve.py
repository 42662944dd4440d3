"""Serve an ASGI app with hypercorn inside the caller's nursery (no signal handling here)."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework


async def serve_app(
    app: Framework,
    host: str,
    port: int,
    *,
    graceful_s: float = 2.0,
    max_message_bytes: int = 64 * 1024,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled.

    started(): the socket is listening; the value is hypercorn's bound URLs, e.g.
    ``["http://127.0.0.1:39821"]`` (port 0 picks a free port). Signals are the CLI's job, so
    the shutdown trigger never fires: the owner stops the server by cancelling this task,
    after it has closed its WebSocket clients itself (STACK-NOTES §2).
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = max_message_bytes
    await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)


def ws_url(http_url: str, path: str) -> str:
    """``http://host:port`` + path -> ``ws://host:port/path``."""
    return "ws" + http_url.removeprefix("http").rstrip("/") + path
