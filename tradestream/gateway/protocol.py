"""The client protocol of /api/ws (seed 003): typed client messages and encoded server messages.

Client messages are decoded with msgspec into tagged Structs, so a wrong type or a missing
field becomes a precise `error` reply instead of an exception. Server messages are encoded once
per event into a `str` shared by every subscriber.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from tradestream.events import FeedGap, Tick


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type"):
    topic: str


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type"):
    topic: str


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    timestamp: str | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    timestamp: str | None = None


ClientMessage = Subscribe | Unsubscribe | Ping | Pong
_decoder = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    """A client message we cannot act on; `code` is stable, the message is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_client_message(raw: str | bytes) -> ClientMessage:
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.type`" in text or "missing required field `type`" in text:
            raise ProtocolError("unknown_type", f"unknown or missing message type ({text})") from None
        raise ProtocolError("invalid_message", text) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid_json", f"Invalid JSON format ({exc})") from None


_PRICE_TOPIC = re.compile(r"price:([0-9A-Z]{6})")


def price_topic_code(topic: str) -> str:
    """The stock code of a `price:{code}` topic; ProtocolError for anything else."""
    m = _PRICE_TOPIC.fullmatch(topic)
    if m is None:
        raise ProtocolError("unknown_topic", f"unknown topic {topic!r}; expected price:{{6-char code}}")
    return m.group(1)


# -- server messages ----------------------------------------------------------------------------


class PriceData(msgspec.Struct):
    price: int
    change: int
    change_percent: float
    volume: int
    timestamp: str


class PriceUpdate(msgspec.Struct, tag="price_update", tag_field="type"):
    symbol: str
    data: PriceData


def encode(obj: object) -> str:
    return _encoder.encode(obj).decode()


def price_update(t: Tick) -> str:
    """`price_update` for a trade; `timestamp` is the trade time, ISO 8601 with offset (KST)."""
    return encode(
        PriceUpdate(t.code, PriceData(t.price, t.change, t.change_percent, t.volume,
                                      t.trade_time.isoformat()))
    )


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def connected(client_id: int, user_id: str) -> str:
    return encode({"type": "connected", "client_id": client_id, "user_id": user_id,
                   "message": f"Welcome {user_id}!"})


def subscribed(topic: str) -> str:
    return encode({"type": "subscribed", "topic": topic,
                   "message": f"Successfully subscribed to {topic}"})


def unsubscribed(topic: str) -> str:
    return encode({"type": "unsubscribed", "topic": topic,
                   "message": f"Successfully unsubscribed from {topic}"})


def ping() -> str:
    """The server's heartbeat (seed 004); clients answer with {"type": "pong"}."""
    return encode({"type": "ping", "timestamp": now_iso()})


def pong(timestamp: str | None) -> str:
    return encode({"type": "pong", "timestamp": timestamp or now_iso()})


def error(code: str, message: str) -> str:
    return encode({"type": "error", "code": code, "message": message})


def feed_gap(g: FeedGap) -> str:
    """Sent to every client when an upstream session streams again after a gap."""
    return encode({"type": "feed_gap", "source": g.source, "start": g.start.isoformat(),
                   "end": g.end.isoformat(), "reason": g.reason})
