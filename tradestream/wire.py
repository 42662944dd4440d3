"""The client protocol of /api/ws (seed 003): typed client messages and encoded server messages.

Client messages are decoded with msgspec into tagged Structs, so a wrong type or a missing
field becomes a precise `error` reply instead of an exception. Server messages are encoded once
per event into a `str` shared by every subscriber; `ServerMessage` types every one of them for
consumers (tradestream.client decodes with it; tests/unit/test_wire_types.py holds each encoder
to its type).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from tradestream.errors import AuthError, ProtocolError, TokenExpired
from tradestream.events import Execution, FeedGap, News, OrderBook, Tick


class Since(msgspec.Struct, forbid_unknown_fields=True):
    """Where a client left a lossless topic: the last `offset` it saw, in `epoch`."""

    offset: int
    epoch: str


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type"):
    topic: str
    since: Since | None = None  # recover what was missed since then (history.py)


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type"):
    topic: str


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    timestamp: str | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    timestamp: str | None = None


class GetPrice(msgspec.Struct, tag="get_price", tag_field="type"):
    symbol: str


class GetAccount(msgspec.Struct, tag="get_account", tag_field="type"):
    pass


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    """Authenticate (first message, when the URL and headers carry no token) or refresh the
    token of a live connection before it expires (same user only)."""

    token: str


ClientMessage = Subscribe | Unsubscribe | Ping | Pong | GetPrice | GetAccount | Auth
_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)

# -- close codes (docs/protocol.md, "Close codes"): one meaning each ---------------------------
CLOSE_GOING_AWAY = 1001  # server shutdown
CLOSE_TRY_AGAIN_LATER = 1013  # server full (connections, or sockets still authenticating)
CLOSE_HEARTBEAT = 4002  # pings unanswered
CLOSE_SLOW_CONSUMER = 4008  # the lossless queue is full
CLOSE_UNAUTHORIZED = 4401  # missing, malformed or badly signed token, bad claims
CLOSE_TOO_MANY_CONNECTIONS = 4409  # this user already has max_connections_per_user
CLOSE_TOKEN_EXPIRED = 4419  # expired at the handshake, or during the session
CLOSE_RATE_LIMITED = 4429  # the rate limiter dropped too many messages in a row
#: the metrics label of each close the server asks for
CLOSE_REASONS = {
    CLOSE_GOING_AWAY: "shutdown",
    CLOSE_HEARTBEAT: "heartbeat",
    CLOSE_SLOW_CONSUMER: "slow_consumer",
    CLOSE_TOKEN_EXPIRED: "token_expired",
    CLOSE_RATE_LIMITED: "rate_limited",
}


def close_code_for(exc: AuthError) -> int:
    """The close code a failed authentication gets."""
    return CLOSE_TOKEN_EXPIRED if isinstance(exc, TokenExpired) else CLOSE_UNAUTHORIZED


_encoder = msgspec.json.Encoder()


#: Client messages are flat objects; anything nested deeper is refused before decoding (a
#: deep document would otherwise cost the decoder its recursion limit).
MAX_CLIENT_DEPTH = 8


def too_deep(raw: str | bytes, limit: int = MAX_CLIENT_DEPTH) -> bool:
    """The arrays and objects of a JSON text nest more than `limit` deep (brackets inside
    strings do not count). Stops at the first bracket past the limit."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text.count("{") + text.count("[") <= limit:
        return False  # the common case: too few brackets to be too deep, nothing to scan
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > limit:
                return True
        elif ch == "]" or ch == "}":
            depth -= 1
    return False


def decode_client_message(raw: str | bytes) -> ClientMessage:
    if too_deep(raw):
        raise ProtocolError("invalid_message", f"nested more than {MAX_CLIENT_DEPTH} levels deep")
    try:
        return _decoder.decode(raw)
    except RecursionError:  # not reachable past the check above; kept as the last guard
        raise ProtocolError("invalid_message", "nested too deeply") from None
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.type`" in text or "missing required field `type`" in text:
            raise ProtocolError(
                "unknown_type", f"unknown or missing message type ({text})"
            ) from None
        raise ProtocolError("invalid_message", text) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid_json", f"Invalid JSON format ({exc})") from None


# -- server messages ----------------------------------------------------------------------------


class PriceData(msgspec.Struct):
    price: int
    change: int
    change_percent: float
    volume: int
    timestamp: str
    # a price from the store (get_price of a code not traded since the start) has no quote
    open: int = 0
    high: int = 0
    low: int = 0
    ask: int = 0
    bid: int = 0
    trade_volume: int = 0


class PriceUpdate(msgspec.Struct, tag="price_update", tag_field="type"):
    symbol: str
    data: PriceData


class Price(msgspec.Struct, tag="price", tag_field="type"):
    """Reply to get_price; `source` says where the quote came from (memory or store)."""

    symbol: str
    data: PriceData
    source: str
    name: str = ""  # the stock master's name ("" if unknown)


class BookData(msgspec.Struct):
    asks: list[tuple[int, int]]  # (price, size), best first
    bids: list[tuple[int, int]]
    total_ask_size: int
    total_bid_size: int
    expected_price: int
    expected_volume: int
    timestamp: str


class OrderBookUpdate(msgspec.Struct, tag="orderbook_update", tag_field="type"):
    symbol: str
    data: BookData


def encode(obj: object) -> str:
    return _encoder.encode(obj).decode()


def _price_data(t: Tick) -> PriceData:
    return PriceData(
        t.price,
        t.change,
        t.change_percent,
        t.volume,
        t.trade_time.isoformat(),
        t.open,
        t.high,
        t.low,
        t.ask,
        t.bid,
        t.trade_volume,
    )


def price_update(t: Tick) -> str:
    """`price_update` for a trade; `timestamp` is the trade time, ISO 8601 with offset (KST)."""
    return encode(PriceUpdate(t.code, _price_data(t)))


def price(t: Tick, source: str, name: str = "") -> str:
    return encode(Price(t.code, _price_data(t), source, name))


def orderbook_update(b: OrderBook) -> str:
    return encode(
        OrderBookUpdate(
            b.code,
            BookData(
                list(zip(b.ask_prices, b.ask_sizes, strict=True)),
                list(zip(b.bid_prices, b.bid_sizes, strict=True)),
                b.total_ask_size,
                b.total_bid_size,
                b.expected_price,
                b.expected_volume,
                b.quote_time.isoformat(),
            ),
        )
    )


def order_update(ex: Execution, order: dict[str, object]) -> str:
    """A notice about one of the caller's orders (seed 003's shape, with the notice itself):
    `data` is the order as it now stands, `event` what this notice said."""
    return encode(
        {
            "type": "order_update",
            "order_id": ex.order_no,
            "data": order,
            "event": {
                "kind": ex.kind,
                "correction": ex.correction,
                "rejected": ex.rejected,
                "quantity": ex.quantity,
                "price": ex.price,
                "time": ex.time.isoformat(),
            },
        }
    )


def news(n: News) -> str:
    return encode(
        {
            "type": "news",
            "data": {
                "id": n.realkey,
                "title": n.title,
                "tickers": n.tickers,
                "ticker": n.ticker,
                "media": n.media,
                "published_at": n.published_at.isoformat(),
            },
        }
    )


def account(snapshot: dict[str, object]) -> str:
    return encode({"type": "account", "data": snapshot})


def strategy_signal(strategy_id: str, data: dict[str, object]) -> str:
    return encode({"type": "strategy_signal", "strategy_id": strategy_id, "data": data})


def signal_update(signal_type: str, signals: list[dict[str, object]], timestamp: str) -> str:
    """Seed 004's shape: topic signal:{signal_type.lower()}."""
    return encode(
        {
            "type": "signal_update",
            "data": {
                "signal_type": signal_type.upper(),
                "signals": signals,
                "count": len(signals),
                "timestamp": timestamp,
            },
        }
    )


def market_gate_update(data: dict[str, object]) -> str:
    return encode({"type": "market_gate_update", "data": data})


def index_update(index: str, data: dict[str, object]) -> str:
    return encode({"type": "index_update", "index": index, "data": data})


def market_session(data: dict[str, object]) -> str:
    """The trading day's phase (session_calendar.py), on `market:session`."""
    return encode({"type": "market_session", "data": data})


def alert(code: str, data: dict[str, object]) -> str:
    return encode({"type": "alert", "symbol": code, "data": data})


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def connected(client_id: int, user_id: str) -> str:
    return encode(
        {
            "type": "connected",
            "client_id": client_id,
            "user_id": user_id,
            "message": f"Welcome {user_id}!",
        }
    )


def subscribed(topic: str, **recovery: object) -> str:
    """`recovery`: for a subscribe with `since`, `recovered` (and the stream's `epoch` and
    `offset`); on a lossless topic, the stream's `epoch` and `offset` to resume from later."""
    return encode(
        {
            "type": "subscribed",
            "topic": topic,
            "message": f"Successfully subscribed to {topic}",
            **recovery,
        }
    )


def unsubscribed(topic: str) -> str:
    return encode(
        {
            "type": "unsubscribed",
            "topic": topic,
            "message": f"Successfully unsubscribed from {topic}",
        }
    )


def ping() -> str:
    """The server's heartbeat (seed 004); clients answer with {"type": "pong"}."""
    return encode({"type": "ping", "timestamp": now_iso()})


def pong(timestamp: str | None) -> str:
    return encode({"type": "pong", "timestamp": timestamp or now_iso()})


def error(code: str, message: str, topic: str | None = None) -> str:
    if topic is None:
        return encode({"type": "error", "code": code, "message": message})
    return encode({"type": "error", "code": code, "message": message, "topic": topic})


def authenticated(user_id: str, expires_at: float | None) -> str:
    return encode({"type": "authenticated", "user_id": user_id, "expires_at": expires_at})


def feed_gap(g: FeedGap) -> str:
    """Sent to every client when an upstream session streams again after a gap."""
    return encode(
        {
            "type": "feed_gap",
            "source": g.source,
            "start": g.start.isoformat(),
            "end": g.end.isoformat(),
            "reason": g.reason,
            "codes": list(g.codes),
        }
    )


# -- server messages as types, for consumers -----------------------------------------------
# Lossless messages (history.py) carry the stream's `offset` and `epoch` for recovery; 0 and ""
# where the server keeps no history.


class OrderUpdate(msgspec.Struct, tag="order_update", tag_field="type"):
    order_id: str
    data: dict[str, Any]
    event: dict[str, Any]
    offset: int = 0
    epoch: str = ""


class NewsData(msgspec.Struct):
    id: str
    title: str
    tickers: list[str]
    ticker: str | None
    media: str
    published_at: str


class NewsMessage(msgspec.Struct, tag="news", tag_field="type"):
    data: NewsData
    offset: int = 0
    epoch: str = ""


class Account(msgspec.Struct, tag="account", tag_field="type"):
    data: dict[str, Any]


class StrategySignal(msgspec.Struct, tag="strategy_signal", tag_field="type"):
    strategy_id: str
    data: dict[str, Any]
    offset: int = 0
    epoch: str = ""


class SignalData(msgspec.Struct):
    signal_type: str
    signals: list[dict[str, Any]]
    count: int
    timestamp: str


class SignalUpdate(msgspec.Struct, tag="signal_update", tag_field="type"):
    data: SignalData
    offset: int = 0
    epoch: str = ""


class MarketGateUpdate(msgspec.Struct, tag="market_gate_update", tag_field="type"):
    data: dict[str, Any]


class MarketSession(msgspec.Struct, tag="market_session", tag_field="type"):
    data: dict[str, Any]


class IndexUpdate(msgspec.Struct, tag="index_update", tag_field="type"):
    index: str
    data: dict[str, Any]


class AlertMessage(msgspec.Struct, tag="alert", tag_field="type"):
    symbol: str
    data: dict[str, Any]
    offset: int = 0
    epoch: str = ""


class Connected(msgspec.Struct, tag="connected", tag_field="type"):
    client_id: int
    user_id: str
    message: str = ""


class Subscribed(msgspec.Struct, tag="subscribed", tag_field="type"):
    """`recovered` answers a subscribe with `since` (None otherwise); on a lossless topic
    `offset` and `epoch` say where the stream stands."""

    topic: str
    message: str = ""
    recovered: bool | None = None
    recovery: str = ""
    offset: int = 0
    epoch: str = ""


class Unsubscribed(msgspec.Struct, tag="unsubscribed", tag_field="type"):
    topic: str
    message: str = ""


class ServerPing(msgspec.Struct, tag="ping", tag_field="type"):
    timestamp: str = ""


class ServerPong(msgspec.Struct, tag="pong", tag_field="type"):
    timestamp: str = ""


class Error(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str
    topic: str | None = None


class Authenticated(msgspec.Struct, tag="authenticated", tag_field="type"):
    user_id: str
    expires_at: float | None = None


class FeedGapMessage(msgspec.Struct, tag="feed_gap", tag_field="type"):
    source: str
    start: str
    end: str
    reason: str
    codes: list[str] = []  # a failover's moved codes; empty: the whole session's


ServerMessage = (
    PriceUpdate
    | Price
    | OrderBookUpdate
    | OrderUpdate
    | NewsMessage
    | Account
    | StrategySignal
    | SignalUpdate
    | MarketGateUpdate
    | MarketSession
    | IndexUpdate
    | AlertMessage
    | Connected
    | Subscribed
    | Unsubscribed
    | ServerPing
    | ServerPong
    | Error
    | Authenticated
    | FeedGapMessage
)
