"""What tradestream/serving.py relies on in hypercorn, pinned: it runs its own copy of
hypercorn's trio worker loop with a subclassed connection class, and changes nothing of
hypercorn itself."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import hypercorn.trio.run
import trio
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer
from quart_trio import QuartTrio

from tradestream.serving import ServeConfig, _BoundedTCPServer, serve_app


def test_hypercorn_is_the_version_whose_worker_loop_we_copied() -> None:
    assert version("hypercorn").startswith("0.18."), "re-check serving._worker_serve"
    # the parts of worker_serve that _worker_serve repeats
    src = inspect.getsource(hypercorn.trio.run.worker_serve)
    for part in (
        "Lifespan(app, config, lifespan_state)",
        "WorkerContext(max_requests)",
        "ConnectionState(lifespan_state.copy())",
        "handler_nursery=server_nursery",
        "config.graceful_timeout",
        "lifespan.wait_for_shutdown()",
    ):
        assert part in src, part
    # the methods the bounded server overrides, and what it reads of them
    assert "protocol_send" in TCPServer.__dict__
    read_loop = inspect.getsource(TCPServer._read_data)
    # the read loop ends by handing the protocol a Closed; cancelled, it skips that, which
    # _BoundedTCPServer._read_data then does itself
    assert "await self.protocol.handle(Closed())" in read_loop
    assert "await self.stream.receive_some(MAX_RECV)" in read_loop
    # the WebSocket stream keeps its wsproto connection (the closing handshake's state)
    assert "self.connection: Connection" in inspect.getsource(WSStream.__init__)
    assert "CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)" in inspect.getsource(
        WSStream._handle_events
    )


def test_hypercorn_is_not_patched() -> None:
    assert hypercorn.trio.run.TCPServer is TCPServer
    assert issubclass(_BoundedTCPServer, TCPServer)
    assert ServeConfig().write_timeout_s is None


async def test_serve_app_binds_a_free_port_and_stops_on_cancel() -> None:
    app = QuartTrio("t")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve_app, app, "127.0.0.1", 0)
            assert binds[0].startswith("http://127.0.0.1:") and not binds[0].endswith(":0")
            stream = await trio.open_tcp_stream("127.0.0.1", int(binds[0].rsplit(":", 1)[1]))
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b'"ok"' not in data:
                data += await stream.receive_some(4096)
            assert data.startswith(b"HTTP/1.1 200")
            await stream.aclose()
            nursery.cancel_scope.cancel()
