"""A consumer library for tradestream's WebSocket API, for Trio and asyncio programs alike
(anyio underneath, wsproto for the WebSocket protocol). docs/client.md has runnable examples.

    async with Client("ws://127.0.0.1:8000/api/ws", token) as client:
        await client.subscribe("price:005930", "signal:vcp")
        async for msg in client:          # wire.PriceUpdate, wire.SignalUpdate, ...
            ...
        quote = await client.get_price("005930")   # wire.Price

What it does for the program:
- typed messages: every server message decodes into its `wire.ServerMessage` type (the
  server's own types); a type this version does not know comes as `Unknown`;
- reconnects with backoff (0.25 s doubling to 5 s, with jitter) and subscribes again to every
  topic it had; lossless topics (orders, alerts, signals, news, strategies) resume with
  `since: {offset, epoch}` so what was missed while away is replayed, once, in order; the
  `subscribed` reply comes through with `recovered` (False: the gap could not be filled, the
  program may want to reload state) and `Client.recoveries` counts both outcomes;
- answers the server's heartbeat pings, and treats a silent connection (no frame for
  `idle_timeout_s`, three server heartbeats by default) as lost;
- unpacks `?batch=1` frames (JSON arrays) into single messages;
- `get_price` and `get_account` send the request and return the reply (or raise
  `RequestFailed` with the server's error code), one request of each kind at a time.

Back-pressure: received messages wait in a bounded buffer (`buffer` messages) for the
program's `async for`; when the program falls behind, the reader stops reading the socket, and
the server conflates prices for this client or, for lossless messages, closes it as a slow
consumer, after which this client reconnects and recovers. Nothing is dropped silently here.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import msgspec
from anyio.abc import ByteStream, TaskGroup
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tradestream import wire
from tradestream.topics import parse_topic

log = logging.getLogger(__name__)

__all__ = ["Client", "ClientStats", "ConnectionRefused", "RequestFailed", "Unknown"]

_decoder = msgspec.json.Decoder(wire.ServerMessage)
_encoder = msgspec.json.Encoder()


class Unknown(msgspec.Struct):
    """A server message of a type this version of the library does not know."""

    type: str
    raw: dict[str, Any]


class RequestFailed(Exception):
    """The server answered a request with an error (`code`, as in docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ConnectionRefused(Exception):
    """The server refused this client for good: the handshake (HTTP `status`, e.g. 401), or
    a close for the token (4401 unauthorized, 4419 expired). Not retried with the same token:
    raised from the `async with` block and from the iterator."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"the server refused the connection: {status} {reason}".rstrip())
        self.status = status


@dataclass
class ClientStats:
    connects: int = 0
    reconnects: int = 0
    received: int = 0
    recovered: int = 0  # subscriptions that got back everything they missed
    not_recovered: int = 0  # ... that could not (a new server epoch, or beyond its history)
    last_error: str = ""


@dataclass
class _Position:
    """Where this client stands in the server's stream of lossless messages."""

    offset: int = 0
    epoch: str = ""

    def see(self, offset: int, epoch: str) -> None:
        if not epoch:
            return
        if epoch != self.epoch:
            self.offset, self.epoch = offset, epoch
        elif offset > self.offset:
            self.offset = offset


@dataclass
class _Pending:
    """One request in flight: the reply types that answer it, and where the reply goes."""

    answers: tuple[type, ...]
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: Any = None
    error: RequestFailed | None = None


# a get_price answered with an error carries no topic: these codes are its answers
_REQUEST_ERRORS = {"no_data", "store_unavailable", "busy", "invalid_message"}


class Client:
    """One logical connection to a tradestream gateway, across reconnects."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        topics: Iterable[str] = (),
        batch: bool = False,
        idle_timeout_s: float = 90.0,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.25,
        backoff_cap_s: float = 5.0,
        buffer: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        self._host, self._tls = parts.hostname, parts.scheme == "wss"
        self._port = parts.port or (443 if self._tls else 80)
        query = [(k, v) for k, v in (q.split("=", 1) for q in parts.query.split("&") if "=" in q)]
        query += [("token", token)] + ([("batch", "1")] if batch else [])
        self._target = (parts.path or "/") + "?" + urlencode(query)
        self._ssl = ssl_context
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._backoff = (backoff_initial_s, backoff_cap_s)
        self._topics: dict[str, None] = dict.fromkeys(topics)  # in subscription order
        self._position = _Position()
        self._out, self._in = anyio.create_memory_object_stream[Any](buffer)
        self._pending: list[_Pending] = []
        self._locks = {"price": anyio.Lock(), "account": anyio.Lock()}
        self._send_lock = anyio.Lock()
        self._stream: ByteStream | None = None
        self._ws: WSConnection | None = None
        self._connected = anyio.Event()
        self._tg: TaskGroup | None = None
        self._fatal: BaseException | None = None
        self.stats = ClientStats()

    # -- lifetime -------------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._out.close()
            self._in.close()

    async def wait_connected(self) -> None:
        """Until the client is connected (again)."""
        await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- what the program asks ----------------------------------------------------------------
    async def subscribe(self, *topics: str) -> None:
        """Subscribe now (if connected) and after every reconnect. The `subscribed` or
        `error` reply comes through the message iterator."""
        for t in topics:
            parse_topic(t)  # a malformed topic is the caller's error, said here
        new = [t for t in topics if t not in self._topics]
        self._topics.update(dict.fromkeys(new))
        if self.connected:
            for t in new:
                await self._send({"type": "subscribe", "topic": t})

    async def unsubscribe(self, *topics: str) -> None:
        for t in topics:
            self._topics.pop(t, None)
            if self.connected:
                await self._send({"type": "unsubscribe", "topic": t})

    async def get_price(self, symbol: str) -> wire.Price:
        """The latest price of `symbol` (from memory, or the store's last trade)."""
        reply = await self._request("price", {"type": "get_price", "symbol": symbol}, (wire.Price,))
        assert isinstance(reply, wire.Price)
        return reply

    async def get_account(self) -> wire.Account:
        """Positions and today's orders of the accounts this token may see."""
        reply = await self._request("account", {"type": "get_account"}, (wire.Account,))
        assert isinstance(reply, wire.Account)
        return reply

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._in.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    # -- the connection loop --------------------------------------------------------------------
    async def _run(self) -> None:
        delay, cap = self._backoff
        first = True
        try:
            while True:
                try:
                    await self._session(first)
                except ConnectionRefused as exc:
                    self._fatal = exc
                    raise
                except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, TimeoutError,
                        _Closed, msgspec.DecodeError) as exc:  # fmt: skip
                    self.stats.last_error = repr(exc)[:300]
                    log.warning("tradestream client: connection lost (%r)", exc)
                else:
                    delay = self._backoff[0]
                first = False
                self._connected = anyio.Event() if self._connected.is_set() else self._connected
                self._fail_pending(RequestFailed("disconnected", "the connection was lost"))
                await anyio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, cap)
        finally:
            self._out.close()

    async def _session(self, first: bool) -> None:
        stream: ByteStream
        with anyio.fail_after(self._connect_timeout_s):
            if self._tls:
                stream = await anyio.connect_tcp(
                    self._host,
                    self._port,
                    tls=True,
                    ssl_context=self._ssl,
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(self._host, self._port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            self._stream, self._ws = stream, ws
            await stream.send(ws.send(Request(host=self._host, target=self._target)))
            with anyio.fail_after(self._connect_timeout_s):
                await self._handshake(stream, ws)
            self.stats.connects += 1
            if not first:
                self.stats.reconnects += 1
            for topic in self._topics:
                await self._send(self._subscribe_message(topic))
            self._connected.set()
            await self._read(stream, ws)

    async def _handshake(self, stream: ByteStream, ws: WSConnection) -> None:
        while True:
            ws.receive_data(await stream.receive())
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise ConnectionRefused(event.status_code)

    def _subscribe_message(self, topic: str) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "subscribe", "topic": topic}
        pos = self._position
        if pos.epoch and not parse_topic(topic).conflatable:
            msg["since"] = {"offset": pos.offset, "epoch": pos.epoch}
        return msg

    async def _read(self, stream: ByteStream, ws: WSConnection) -> None:
        text: list[str] = []
        while True:
            with anyio.fail_after(self._idle_timeout_s):
                data = await stream.receive()
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        raw, text = "".join(text), []
                        await self._deliver(raw)
                elif isinstance(event, Ping):
                    await stream.send(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    try:
                        await stream.send(ws.send(event.response()))
                    except (OSError, anyio.BrokenResourceError):
                        pass
                    if event.code in (wire.CLOSE_UNAUTHORIZED, wire.CLOSE_TOKEN_EXPIRED):
                        raise ConnectionRefused(event.code, event.reason or "")
                    raise _Closed(event.code, event.reason or "")
                elif isinstance(event, BytesMessage):
                    continue

    async def _deliver(self, raw: str) -> None:
        if raw.startswith("["):  # a ?batch=1 frame: several messages
            items = [msgspec.json.encode(x) for x in msgspec.json.decode(raw)]
        else:
            items = [raw.encode()]
        for item in items:
            msg = self._decode(item)
            self.stats.received += 1
            if isinstance(msg, wire.ServerPing):
                await self._send({"type": "pong", "timestamp": msg.timestamp})
                continue
            offset, epoch = getattr(msg, "offset", 0), getattr(msg, "epoch", "")
            if isinstance(msg, wire.Subscribed):
                if msg.recovered is True:
                    self.stats.recovered += 1
                elif msg.recovered is False and msg.recovery != "snapshot":
                    self.stats.not_recovered += 1
            if epoch:
                self._position.see(offset, epoch)
            if self._answers(msg):
                continue
            await self._out.send(msg)

    @staticmethod
    def _decode(item: bytes) -> Any:
        try:
            return _decoder.decode(item)
        except msgspec.ValidationError:
            raw = msgspec.json.decode(item)
            return Unknown(str(raw.get("type", "")) if isinstance(raw, dict) else "", raw)

    def _answers(self, msg: Any) -> bool:
        """A reply to a request in flight: handed to it, not to the iterator."""
        for p in self._pending:
            if isinstance(msg, p.answers):
                p.reply = msg
            elif isinstance(msg, wire.Error) and msg.topic is None and msg.code in _REQUEST_ERRORS:
                p.error = RequestFailed(msg.code, msg.message)
            else:
                continue
            self._pending.remove(p)
            p.done.set()
            return True
        return False

    def _fail_pending(self, error: RequestFailed) -> None:
        for p in self._pending:
            p.error = error
            p.done.set()
        self._pending.clear()

    async def _request(self, kind: str, body: dict[str, Any], answers: tuple[type, ...]) -> Any:
        async with self._locks[kind]:
            while True:
                if self._fatal is not None:
                    raise self._fatal
                await self.wait_connected()
                p = _Pending(answers)
                self._pending.append(p)
                try:
                    await self._send(body)
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._pending.remove(p)
                    continue  # lost while sending: ask again once connected
                await p.done.wait()
                if p.error is not None and p.error.code == "disconnected":
                    continue
                if p.error is not None:
                    raise p.error
                return p.reply

    async def _send(self, msg: dict[str, Any]) -> None:
        stream, ws = self._stream, self._ws
        if stream is None or ws is None:
            return
        data = ws.send(TextMessage(data=_encoder.encode(msg).decode()))
        async with self._send_lock:
            await stream.send(data)


class _Closed(Exception):
    """The server closed the WebSocket (code, reason): reconnect."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}")
        self.code = code
