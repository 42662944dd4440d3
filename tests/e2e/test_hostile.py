"""Hostile clients over a real socket: oversized messages of any size get close 1009 at once,
deeply nested JSON gets an error; the connection's neighbours never notice."""

from __future__ import annotations

import struct
import time
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import (
    TIMEOUT_S,
    open_websocket_url,
    recv,
    send,
    service,
    wait_for,
)
from tradestream.config import Settings
from tradestream.serving import CLOSE_HANDSHAKE_S

CLOSE_WITHIN_S = 1.0


class RawClient:
    """A WebSocket client on a plain socket (wsproto for the handshake and the server's frames),
    so a test can send what no well-behaved client library would: one frame announcing
    megabytes, written while the server's answer is read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[object] = []

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        u = urlsplit(url)
        assert u.hostname is not None and u.port is not None
        client = cls(await trio.open_tcp_stream(u.hostname, u.port))
        target = u.path + (f"?{u.query}" if u.query else "")
        await client.stream.send_all(client.ws.send(Request(host=u.netloc, target=target)))
        assert isinstance(await client.next_event(), AcceptConnection)
        return client

    async def next_event(self) -> object:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    async def text(self) -> str:
        ev = await self.next_event()
        assert isinstance(ev, TextMessage), ev
        return ev.data

    async def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            ev = await self.next_event()
            if isinstance(ev, CloseConnection):
                return ev.code

    async def until_dropped(self) -> None:
        """Read (and ignore) until the server ends the connection."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # a reset is an end too

    async def send_huge(self, size: int, chunk: int = 256 * 1024) -> int:
        """One masked text frame of `size` bytes (a zero mask: the payload is sent as is),
        written in chunks until done or the server stops reading; the bytes written."""
        if size < 126:
            length = bytes([0x80 | size])
        elif size < 1 << 16:
            length = bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            length = bytes([0x80 | 127]) + struct.pack("!Q", size)  # minimal encoding (§5.2)
        header = b"\x81" + length + b"\0\0\0\0"
        sent = 0
        try:
            await self.stream.send_all(header + b'{"type": "subscribe", "topic": "')
            block = b"a" * chunk
            while sent < size:
                n = min(chunk, size - sent)
                await self.stream.send_all(block[:n])
                sent += n
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server closed the connection: what the test waits for
        return sent


async def test_oversized_messages_of_any_size_close_with_1009_at_once(settings: Settings) -> None:
    """A client that announces megabytes and keeps writing gets close 1009 within a second,
    and once it has not answered the close for CLOSE_HANDSHAKE_S, the connection is dropped
    (the server reads what it sends meanwhile, so the close frame is not lost to a reset)."""
    limit = settings.gateway.max_message_bytes
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as neighbour:
                await recv(neighbour)
                for size in (limit + 1, 100 * 1024, 1024 * 1024, 10 * 1024 * 1024):
                    client = await RawClient.connect(url)
                    await client.text()  # the greeting
                    started = time.monotonic()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.send_huge, size)
                        code = await client.close_code()
                        took = time.monotonic() - started
                        await client.until_dropped()
                        dropped = time.monotonic() - started
                        nursery.cancel_scope.cancel()
                    await client.stream.aclose()
                    assert code == 1009, (size, code)
                    assert took < CLOSE_WITHIN_S, (size, took)
                    assert dropped < took + CLOSE_HANDSHAKE_S + 1.0, (size, dropped)
                    await send(neighbour, type="ping", timestamp=str(size))
                    assert (await recv_type(neighbour, "pong"))["timestamp"] == str(size)
                # a well-behaved library client sending too much: the same close, and its end
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    started = time.monotonic()
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.send_message("x" * (10 * 1024 * 1024))
                        while True:
                            await ws.get_message()
                    assert info.value.reason.code == 1009
                    assert time.monotonic() - started < CLOSE_WITHIN_S
            await wait_for(lambda: len(running.hub.clients) == 0, "every connection ended")


async def test_deeply_nested_json_is_an_invalid_message(settings: Settings) -> None:
    depth = 2000  # inside the message size limit, far past the recursion limit of a decoder
    nested = "[" * depth + "]" * depth
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            async with open_websocket_url(f"{running.ws_url}?token={tok(running)}") as ws:
                await recv(ws)
                for raw in (
                    nested,
                    '{"type": "subscribe", "topic": ' + nested + "}",
                    '{"type": ' + nested + ', "topic": "news"}',
                    '{"type": "ping", "timestamp": ' + '{"a": ' * depth + "1" + "}" * depth + "}",
                ):
                    await ws.send_message(raw)
                    err = await recv_type(ws, "error")
                    assert err["code"] == "invalid_message", (raw[:40], err)
                await send(ws, type="ping")
                assert (await recv_type(ws, "pong"))["type"] == "pong"
