"""Serve an ASGI app with hypercorn inside the caller's nursery (no signal handling here).

One change to hypercorn's trio server: a bounded socket write. Hypercorn shields every
`send_all`, so a peer that stops reading (a full socket buffer) blocks its connection's task
for ever, out of reach of any cancel scope; the app cannot even close it. `_BoundedTCPServer`
keeps the shield (a cancelled write would corrupt the stream) but gives it a deadline per 64 KiB
chunk: a socket that takes no chunk for `write_timeout_s` aborts the connection, and the app
sees a disconnect. Installed once, by name, where hypercorn's trio runner looks it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import Framework

log = logging.getLogger(__name__)
WRITE_CHUNK = 64 * 1024


class WriteProbe:
    """What the server did with one task's writes (hypercorn writes a WebSocket frame inline,
    in the task that sends it): `writes` counts the ones that reached the socket, `aborted`
    is called when one was aborted or found the connection broken. A send that returns with
    `writes` unchanged was dropped by hypercorn: the connection had already closed."""

    __slots__ = ("writes", "aborted")

    def __init__(self, aborted: Callable[[], None]) -> None:
        self.writes = 0
        self.aborted = aborted


#: Set by the task that writes to a socket (the gateway's sender).
write_probe: ContextVar[WriteProbe | None] = ContextVar("write_probe", default=None)


class _BoundedTCPServer(TCPServer):
    async def protocol_send(self, event: Event) -> None:
        timeout = getattr(self.config, "write_timeout_s", None)
        if not isinstance(event, RawData) or timeout is None:
            await super().protocol_send(event)
            return
        data = memoryview(event.data)
        probe = write_probe.get()
        async with self.send_lock:
            try:
                # The deadline is per chunk: a slow reader that keeps reading is not dropped
                # for one large frame; a reader that takes nothing for `timeout` is.
                with trio.CancelScope(shield=True) as scope:
                    for i in range(0, len(data), WRITE_CHUNK):
                        scope.deadline = trio.current_time() + timeout
                        await self.stream.send_all(data[i:i + WRITE_CHUNK])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if probe is not None:
                    probe.aborted()
                await self.protocol.handle(Closed())
                return
            if scope.cancelled_caught:
                hook: Callable[[], None] | None = getattr(self.config, "on_write_timeout", None)
                log.warning("socket write blocked for %gs: the peer stopped reading; aborting "
                            "the connection", timeout)
                if hook is not None:
                    hook()
                if probe is not None:
                    probe.aborted()
                await trio.aclose_forcefully(self.stream)
                await self.protocol.handle(Closed())
                return
            if probe is not None:
                probe.writes += 1


hypercorn.trio.run.TCPServer = _BoundedTCPServer  # type: ignore[misc]


async def serve_app(
    app: Framework,
    host: str,
    port: int,
    *,
    graceful_s: float = 2.0,
    max_message_bytes: int = 64 * 1024,
    write_timeout_s: float | None = None,
    on_write_timeout: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled.

    started(): the socket is listening; the value is hypercorn's bound URLs, e.g.
    ``["http://127.0.0.1:39821"]`` (port 0 picks a free port). Signals are the CLI's job, so
    the shutdown trigger never fires: the owner stops the server by cancelling this task,
    after it has closed its WebSocket clients itself (STACK-NOTES §2). With `write_timeout_s`,
    a connection whose socket accepts nothing for that long is aborted (`on_write_timeout`
    is called first).
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = max_message_bytes
    config.write_timeout_s = write_timeout_s  # type: ignore[attr-defined]
    config.on_write_timeout = on_write_timeout  # type: ignore[attr-defined]
    await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)


def ws_url(http_url: str, path: str) -> str:
    """``http://host:port`` + path -> ``ws://host:port/path``."""
    return "ws" + http_url.removeprefix("http").rstrip("/") + path
