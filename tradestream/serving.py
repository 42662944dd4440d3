"""Serve an ASGI app with hypercorn inside the caller's nursery (no signal handling here).

Two changes to hypercorn's trio server. A bounded socket write: hypercorn shields every
`send_all`, so a peer that stops reading (a full socket buffer) blocks its connection's task
for ever, out of reach of any cancel scope; the app cannot even close it. `_BoundedTCPServer`
keeps the shield (a cancelled write would corrupt the stream) but gives it a deadline per 64 KiB
chunk: a socket that takes no chunk for `write_timeout_s` aborts the connection, and the app
sees a disconnect. And a bounded closing handshake: once a close frame is out (hypercorn's 1009
for an oversized message among them), a client that neither answers nor closes is dropped after
CLOSE_HANDSHAKE_S, where hypercorn would keep the connection (and the app) alive for ever.

Hypercorn's `serve` builds its connections from a module global (`hypercorn.trio.run.
TCPServer`), so using the subclass there would mean patching hypercorn for every user of the
process. Instead `serve_app` runs its own copy of hypercorn's worker loop (`worker_serve` of
hypercorn 0.18: lifespan, listeners, graceful deadline) that names our server class; nothing
of hypercorn is changed. tests/unit/test_serving.py pins the hypercorn parts this relies on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, Framework, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app
from wsproto.connection import ConnectionState as WsState

from tradestream.errors import CannotListen

log = logging.getLogger(__name__)
WRITE_CHUNK = 64 * 1024
#: Once the server has written a WebSocket close frame (its own close, hypercorn's 1009 for an
#: oversized message, or the answer to the client's close), the client has this long to finish
#: the closing handshake and close its end; then the connection is dropped. Until then what the
#: client sends is still read (and discarded), so the close frame is not lost to a reset.
CLOSE_HANDSHAKE_S = 1.0


class WriteProbe:
    """What the server did with one task's writes (hypercorn writes a WebSocket frame inline,
    in the task that sends it): `writes` counts the ones that reached the socket, `aborted`
    is called when one was aborted or found the connection broken. A send that returns with
    `writes` unchanged was dropped by hypercorn: the connection had already closed."""

    __slots__ = ("writes", "aborted", "server")

    def __init__(self, aborted: Callable[[], None]) -> None:
        self.writes = 0
        self.aborted = aborted
        self.server: _BoundedTCPServer | None = None  # the connection, from its first write

    async def send_frames(self, frames: bytes) -> bool | None:
        """Write WebSocket frames built by the caller (unmasked, RFC 6455 §5.2) straight to the
        connection's socket, in one write, under the connection's send lock and the bounded
        write's deadline: none of hypercorn's per-message layers (ASGI, wsproto, h11) run.
        None: no write of this task has gone through hypercorn yet, so the connection is
        not known (send one message the ordinary way first). False: the WebSocket is closed
        or the write was aborted; True: written."""
        server = self.server
        if server is None:
            return None
        return await server.write_frames(frames, self)

    def can_write_now(self) -> bool:
        """`try_send` would write now (the connection is known, idle and open)."""
        server = self.server
        return server is not None and server.idle()

    def direct_writer(self) -> Callable[[bytes], int | None]:
        """The connection's own `try_send`, for a caller that writes many times (the direct
        path): one call per write instead of two. Only once the connection is known."""
        server = self.server
        assert server is not None, "no write of this task has reached the connection yet"
        return server.try_send

    def try_send(self, frame: bytes) -> int | None:
        """Write a built frame now, without waiting, if nothing else is being written on the
        connection: None when it cannot (no connection known yet, a write in progress or
        unfinished, the WebSocket closed, the socket broken); else the bytes the socket took.
        The rest, if any, is kept by the connection and written first by its next write:
        the caller must make sure one comes (the sender's `send_frames(b"")`)."""
        server = self.server
        if server is None:
            return None
        return server.try_send(frame)


#: Set by the task that writes to a socket (the gateway's sender).
write_probe: ContextVar[WriteProbe | None] = ContextVar("write_probe", default=None)


class ServeConfig(Config):
    """Hypercorn's settings plus the bounded write's."""

    write_timeout_s: float | None = None  # None: hypercorn's unbounded write
    on_write_timeout: Callable[[], None] | None = None  # called when a write is aborted


class _BoundedTCPServer(TCPServer):
    config: ServeConfig
    _reading: trio.CancelScope | None = None  # hypercorn's read loop, once it runs

    async def _read_data(self) -> None:
        """Hypercorn's read loop, ended CLOSE_HANDSHAKE_S after a close frame was written
        (`_close_written`) if the client has not closed by then; the app sees a disconnect."""
        with trio.CancelScope() as scope:
            self._reading = scope
            await super()._read_data()
        if scope.cancelled_caught:
            await self.protocol.handle(Closed())

    def _close_written(self) -> None:
        """A close frame has gone out (wsproto says the closing handshake has begun or is
        done): start the clock on the client's part of it, once."""
        scope = self._reading
        if scope is None or scope.deadline != math.inf:
            return
        stream = getattr(getattr(self.protocol, "protocol", None), "stream", None)
        connection = getattr(stream, "connection", None) if isinstance(stream, WSStream) else None
        if connection is not None and connection.state in (WsState.LOCAL_CLOSING, WsState.CLOSED):
            scope.deadline = trio.current_time() + CLOSE_HANDSHAKE_S

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        probe = write_probe.get()
        if probe is not None:
            probe.server = self
        elif self.config.write_timeout_s is None and not self._pending:
            await super().protocol_send(event)
            self._close_written()
            return
        await self._write(event.data, probe)
        self._close_written()

    def _websocket_open(self) -> bool:
        """An HTTP/1.1 connection upgraded to a WebSocket that is accepted and not closed."""
        stream = getattr(getattr(self.protocol, "protocol", None), "stream", None)
        return (
            isinstance(stream, WSStream)
            and stream.state is ASGIWebsocketState.CONNECTED
            and not stream.closed
        )

    _pending = b""  # a direct write's unfinished bytes: written first, under the lock
    _ws: WSStream | None = None  # the upgraded stream, once found
    _fd = -1

    def idle(self) -> bool:
        """Nothing is being written or left unfinished, and the WebSocket is open."""
        return not self._pending and not self.send_lock.locked() and self._websocket_open()

    def try_send(self, frame: bytes) -> int | None:
        """`WriteProbe.try_send`. Safe without the lock: nothing awaits here, and a write
        under the lock (ours or hypercorn's) is never left half done while the lock is free
        (the unfinished bytes of this one are `_pending`, which that write sends first).
        Called once per delivery: it keeps to a few attribute reads and one system call."""
        if self._pending or self.send_lock.locked():
            return None
        ws = self._ws
        if ws is None:
            if not self._websocket_open():
                return None
            stream = getattr(self.protocol.protocol, "stream", None)
            assert isinstance(stream, WSStream)  # _websocket_open() said so
            ws = self._ws = stream
            self._fd = self.stream.socket.fileno()
        if ws.closed or ws.state is not ASGIWebsocketState.CONNECTED:
            return None
        try:
            n = os.write(self._fd, frame)
        except BlockingIOError:
            n = 0
        except OSError:
            return None  # broken: the sender's next write finds out and reports it
        if n < len(frame):
            self._pending = frame[n:]
        return n

    async def write_frames(self, data: bytes, probe: WriteProbe) -> bool:
        """`WriteProbe.send_frames`: ordered with hypercorn's own writes by the send lock."""
        if not self._websocket_open():
            return False
        before = probe.writes
        await self._write(data, probe)
        return probe.writes != before

    async def _write(self, raw: bytes, probe: WriteProbe | None) -> None:
        timeout = self.config.write_timeout_s
        async with self.send_lock:
            if self._pending:  # a direct write's rest goes first
                raw, self._pending = self._pending + raw, b""
            data = memoryview(raw)
            try:
                # The deadline is per chunk: a slow reader that keeps reading is not dropped
                # for one large frame; a reader that takes nothing for `timeout` is.
                with trio.CancelScope(shield=True) as scope:
                    for i in range(0, len(data), WRITE_CHUNK):
                        if timeout is not None:
                            scope.deadline = trio.current_time() + timeout
                        await self.stream.send_all(data[i : i + WRITE_CHUNK])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if probe is not None:
                    probe.aborted()
                await self.protocol.handle(Closed())
                return
            if scope.cancelled_caught:
                hook = self.config.on_write_timeout
                log.warning(
                    "socket write blocked for %gs: the peer stopped reading; aborting "
                    "the connection",
                    timeout,
                )
                if hook is not None:
                    hook()
                if probe is not None:
                    probe.aborted()
                await trio.aclose_forcefully(self.stream)
                await self.protocol.handle(Closed())
                return
            if probe is not None:
                probe.writes += 1


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
    config = ServeConfig()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = max_message_bytes
    config.write_timeout_s = write_timeout_s
    config.on_write_timeout = on_write_timeout
    await _worker_serve(app, config, task_status=task_status)


async def _worker_serve(
    app: Framework, config: ServeConfig, *, task_status: trio.TaskStatus[list[str]]
) -> None:
    """hypercorn.trio.run.worker_serve (0.18) for plain TCP listeners, with `_BoundedTCPServer`
    as the connection class and no shutdown trigger (the owner cancels)."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            try:
                sockets = config.create_sockets()
            except OSError as exc:  # the caller knows which setting gave this address
                host, _, port = config.bind[0].rpartition(":")
                raise CannotListen(host, int(port), exc.strerror or str(exc)) from None
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                await trio.serve_listeners(
                    partial(
                        _BoundedTCPServer,
                        wrapped,
                        config,
                        context,
                        ConnectionState(lifespan_state.copy()),
                    ),
                    listeners,
                    handler_nursery=server_nursery,
                )
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def ws_url(http_url: str, path: str) -> str:
    """``http://host:port`` + path -> ``ws://host:port/path``."""
    return "ws" + http_url.removeprefix("http").rstrip("/") + path
