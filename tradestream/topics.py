"""Topics: every topic string is built and parsed here (bottom layer, pure).

Builders (`price(code)`, `order_keys(...)`, ...) are what the pipeline publishes to; `parse_topic`
validates what a client subscribes to, with the per-subscription cadence suffix.

A client subscribes to a topic string. Valid topics (README, "Topics"):

    price:{code}  orderbook:{code}  news  news:{code}  order:*  order:{id}  strategy:{id}
    signal:vcp  signal:daytrading  market-gate  market:kospi  market:kosdaq  market:session
    alert  alert:{code}

Conflatable topics (prices, order books, index and gate state) accept a cadence suffix,
``price:005930@1s`` or ``@250ms``: that subscription gets at most one update per period, the
latest. Everything else is lossless and takes no suffix. Unknown kinds get ``unknown_topic``;
a known kind with a malformed argument or suffix gets ``invalid_topic``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tradestream.errors import ProtocolError
from tradestream.upstream import KIS_BOOK, KIS_TRADES

#: every topic kind (the part before the first ':'), e.g. for topic ACLs
KINDS = frozenset(
    {"price", "orderbook", "news", "order", "strategy", "signal", "market", "market-gate", "alert"}
)
#: kinds whose subscribers only need the latest value (the outbox conflates them)
CONFLATABLE = frozenset({"price", "orderbook", "market", "market-gate"})
#: kinds that carry one user's data: routed per account, never to other users
PRIVATE = frozenset({"order"})
SIGNAL_KINDS = frozenset({"vcp", "daytrading"})
INDEXES = frozenset({"kospi", "kosdaq"})
MARKET_GATE = "market-gate"
MARKET_SESSION = "market:session"  # the trading day's phase on KRX and NXT
ALERTS = "alert"  # every alert
NEWS = "news"  # every headline
ADMIN_ORDERS = "orders-all"  # hub key of every account's orders (admin only)
MIN_CADENCE_S = 0.1
MAX_CADENCE_S = 300.0

_CODE = re.compile(r"[0-9A-Z]{6}")
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CADENCE = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")


@dataclass(frozen=True, slots=True)
class Topic:
    raw: str  # as subscribed, suffix included: the subscription's identity for the client
    name: str  # without the cadence suffix: what the pipeline publishes to
    kind: str
    arg: str | None  # code, order id, strategy id, signal kind or index; None when bare
    cadence_s: float = 0.0  # 0: every update

    @property
    def conflatable(self) -> bool:
        return self.kind in CONFLATABLE


def _cadence(topic: str, suffix: str) -> float:
    m = _CADENCE.fullmatch(suffix)
    if m is None:
        raise ProtocolError("invalid_topic", f"{topic!r}: cadence must look like @1s or @500ms")
    value = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if not MIN_CADENCE_S <= value <= MAX_CADENCE_S:
        raise ProtocolError(
            "invalid_topic",
            f"{topic!r}: cadence must be between "
            f"{MIN_CADENCE_S * 1000:.0f}ms and {MAX_CADENCE_S:.0f}s",
        )
    return value


def parse_topic(topic: str) -> Topic:
    """Parse and validate a client's topic string; ProtocolError says what is wrong."""
    if not isinstance(topic, str) or not topic or len(topic) > 128:
        raise ProtocolError("invalid_topic", "a topic is a non-empty string of at most 128 chars")
    name, at, suffix = topic.partition("@")
    kind, colon, arg = name.partition(":")
    if kind in ("price", "orderbook", "alert", "news"):
        if not colon:
            if kind in ("alert", "news"):
                return _done(topic, name, kind, None, at, suffix)
            raise ProtocolError("invalid_topic", f"{topic!r}: expected {kind}:{{6-char code}}")
        if not _CODE.fullmatch(arg):
            raise ProtocolError(
                "invalid_topic", f"{topic!r}: {arg!r} is not a 6-character stock code"
            )
    elif kind == "order":
        if not (arg == "*" or _ID.fullmatch(arg)):
            raise ProtocolError("invalid_topic", f"{topic!r}: expected order:* or order:{{id}}")
    elif kind == "strategy":
        if not _ID.fullmatch(arg):
            raise ProtocolError("invalid_topic", f"{topic!r}: expected strategy:{{id}}")
    elif kind == "signal":
        if arg not in SIGNAL_KINDS:
            raise ProtocolError(
                "invalid_topic",
                f"{topic!r}: signal kinds are "
                + ", ".join(f"signal:{k}" for k in sorted(SIGNAL_KINDS)),
            )
    elif kind == "market":
        if arg not in INDEXES and arg != "session":
            raise ProtocolError(
                "invalid_topic",
                f"{topic!r}: expected market:kospi, market:kosdaq or market:session",
            )
    elif kind == "market-gate":
        if colon:
            raise ProtocolError("invalid_topic", f"{topic!r}: market-gate takes no argument")
        return _done(topic, name, kind, None, at, suffix)
    else:
        raise ProtocolError("unknown_topic", f"unknown topic {topic!r}")
    return _done(topic, name, kind, arg, at, suffix)


def _done(topic: str, name: str, kind: str, arg: str | None, at: str, suffix: str) -> Topic:
    cadence = 0.0
    if at:
        if kind not in CONFLATABLE:
            raise ProtocolError(
                "invalid_topic",
                f"{topic!r}: a cadence applies only to "
                "price, orderbook, market and market-gate topics",
            )
        cadence = _cadence(topic, suffix)
    return Topic(topic, name, kind, arg, cadence)


# -- builders: what is published -------------------------------------------------------------


def price(code: str) -> str:
    return "price:" + code


def orderbook(code: str) -> str:
    return "orderbook:" + code


def news(code: str) -> str:
    """Headlines that name `code` (NEWS has them all)."""
    return "news:" + code


def alert(code: str) -> str:
    """Alerts on `code` (ALERTS has them all)."""
    return "alert:" + code


def market(index: str) -> str:
    """An index by name: market:kospi, market:kosdaq."""
    return "market:" + index


def signal(kind: str) -> str:
    """signal:vcp, signal:daytrading."""
    return "signal:" + kind


def strategy(strategy_id: str) -> str:
    return "strategy:" + strategy_id


#: the client topic kinds served by a slot-managed registration, and its TR id
SLOT_TR_FOR_KIND = {"price": KIS_TRADES, "orderbook": KIS_BOOK}
_KIND_FOR_TR = {tr: kind for kind, tr in SLOT_TR_FOR_KIND.items()}


def for_registration(tr_id: str, code: str) -> str:
    """The topic a (tr_id, code) registration serves: price:X for trades, orderbook:X for
    books, and `{tr_id}:{code}` for a registration no client topic names."""
    return _KIND_FOR_TR.get(tr_id, tr_id) + ":" + code


# -- order routing: private topics become per-account hub keys ------------------------------


def account_orders(account: str, order_no: str | None = None) -> str:
    """The hub key of one account's orders (all of them, or one order). Account names are
    validated at the handshake (gateway/auth.py), so none can spell another account's key
    or ADMIN_ORDERS."""
    return f"order@{account}" if order_no is None else f"order@{account}:{order_no}"


def admin_orders(order_no: str | None = None) -> str:
    """The hub key of every account's orders (all, or one order): admins only."""
    return ADMIN_ORDERS if order_no is None else f"{ADMIN_ORDERS}:{order_no}"


def order_keys(account: str, order_no: str) -> tuple[str, str, str, str]:
    """Hub keys of one execution: its account's (all orders, this order), and the admin's."""
    return (
        account_orders(account),
        account_orders(account, order_no),
        admin_orders(),
        admin_orders(order_no),
    )


def public_key(hub_key: str) -> str:
    """A hub key as a client topic: per-account and admin order keys become order:* or
    order:{id} (no account named); every other key is its topic."""
    if hub_key.startswith(("order@", ADMIN_ORDERS)):
        _, _, order_id = hub_key.partition(":")
        return "order:" + (order_id or "*")
    return hub_key
