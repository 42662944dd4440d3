"""Client WebSocket connections to a broker, owned end to end by the calling task.

trio-websocket's `open_websocket_url` leaves the TCP stream open when the server closes first
(its `aclose` returns early once a close reason is set), and a cancelled caller cannot finish
the close handshake because the reader task is cancelled with it. Here the caller's task owns
the stream, the reader's nursery and the close: the socket is always closed on exit, and a
close frame with code 1000 is always sent when the connection is still open.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

CLOSE_TIMEOUT_S = 1.0  # wait for the server's close reply when we are not cancelled
CLOSE_GRACE_S = 0.05  # when cancelled: the reader is gone, just let the close frame out
_TLS: ssl.SSLContext | None = None  # built once: it costs tens of ms (certificate store)


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def split_ws_url(url: str) -> tuple[str, int, str, bool, str]:
    """``ws[s]://host[:port]/path?q`` -> (host, port, resource, secure, Host header)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    return parts.hostname, port, resource, secure, host_header


@asynccontextmanager
async def open_upstream(url: str, connect_timeout_s: float) -> AsyncIterator[WebSocketConnection]:
    """Connect (TCP, TLS for wss, handshake) within `connect_timeout_s`; yield the connection.

    Errors surface as trio-websocket's (`ConnectionClosed`, `ConnectionRejected`, ...),
    `OSError` or `trio.TooSlowError`, inside an ExceptionGroup when they pass the reader's
    nursery.
    """
    host, port, resource, secure, host_header = split_ws_url(url)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    with trio.fail_after(connect_timeout_s):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=_tls(), https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as reader:
            with trio.fail_after(connect_timeout_s):
                ws = await wrap_client_stream(reader, stream, host_header, resource)
            try:
                yield ws
            finally:
                # trio-websocket's aclose is not shielded: shield it, so that a shutdown closes
                # upstream with 1000 rather than dropping the socket (1006).
                cancelled = trio.current_effective_deadline() == -math.inf
                with trio.move_on_after(
                    CLOSE_GRACE_S if cancelled else CLOSE_TIMEOUT_S, shield=True
                ):
                    await ws.aclose(1000, "client closing")
                await trio.aclose_forcefully(stream)  # ends the reader task too
    finally:
        await trio.aclose_forcefully(stream)
