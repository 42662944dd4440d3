"""Router -> hub -> connection, without sockets: what is encoded, for whom, and how often.

The connections here are the gateway's real `Connection` objects (their subscribe logic is
synchronous); only the socket is absent, so each client's outbox is read directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pytest

from tradestream import wire
from tradestream.config import GatewaySettings
from tradestream.errors import ProtocolError
from tradestream.events import Alert, Execution, News, Tick
from tradestream.gateway.auth import Authenticator, Identity
from tradestream.gateway.ws import Connection, WsServices
from tradestream.hub import Hub, Msg
from tradestream.pipeline.stages import MarketState, RouterStats, _route
from tradestream.topics import Topic

KST = datetime.fromisoformat("2026-12-01T10:00:00+09:00").tzinfo
SECRET = "unit-secret-unit-secret-unit-secret!"


def tick(code: str, price: int = 70_000, volume: int = 1) -> Tick:
    return Tick(
        "kis-1",
        "KRX",
        code,
        datetime(2026, 12, 1, 10, 0, tzinfo=KST),
        price,
        0,
        0.0,
        price,
        price,
        price,
        price,
        price,
        1,
        volume,
        price,
        100.0,
        1,
    )


def execution(account: str, order_no: str, kind: str = "order") -> Execution:
    return Execution(
        "kis-1",
        "demo",
        account,
        order_no,
        "",
        "buy",
        kind,
        "new",
        False,
        "005930",
        10,
        70_000,
        10,
        70_000,
        datetime(2026, 12, 1, 10, 0, tzinfo=KST),
        "",
        1,
    )


def news(realkey: str, tickers: tuple[str, ...]) -> News:
    return News(
        "ls-1",
        realkey,
        "headline",
        tickers,
        tickers[0] if tickers else None,
        "01",
        "media",
        datetime(2026, 12, 1, 10, 0, tzinfo=KST),
        0,
        1,
    )


class RecordingDemand:
    def __init__(self) -> None:
        self.claims: list[tuple[int, str]] = []
        self.releases: list[tuple[int, str]] = []

    def claim(self, owner: int, topic: Topic, user: str = "") -> None:
        self.claims.append((owner, topic.raw))

    def release(self, owner: int, topic: Topic) -> None:
        self.releases.append((owner, topic.raw))


class Tree:
    """A hub, the router's state and connections that subscribe like the gateway's."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.state = MarketState()
        self.stats = RouterStats()
        self.demand = RecordingDemand()
        self.ctx = WsServices(
            self.hub, Authenticator(SECRET), MarketState(), self.demand, GatewaySettings()
        )

    def connect(
        self, user: str, *, role: str = "user", accounts: tuple[str, ...] = ()
    ) -> Connection:
        client = self.hub.connect(user)
        return Connection(self.ctx, client, Identity(user, role, None, frozenset(accounts)))

    def route(self, *events: Any) -> None:
        for ev in events:
            _route(ev, self.hub, self.hub.has_subscribers, self.state, self.stats, None)


async def drain(conn: Connection) -> list[dict[str, Any]]:
    """Everything queued for the connection, decoded (replies included)."""
    out = conn.client.outbox
    if not len(out):
        return []
    batch = await out.get_batch(10_000)
    assert isinstance(batch, list)
    return [msgspec.json.decode(m.payload) for m in batch]


async def payloads(conn: Connection, kind: str) -> list[dict[str, Any]]:
    return [m for m in await drain(conn) if m["type"] == kind]


async def test_nothing_is_encoded_for_a_topic_nobody_watches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, int] = {}
    for name in ("price_update", "order_update", "news", "alert"):
        real = getattr(wire, name)

        def counting(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> str:
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*a, **kw)

        monkeypatch.setattr(wire, name, counting)
    t = Tree()
    move = Alert(
        "sudden-move",
        "005930",
        "sudden_move",
        "up",
        5.1,
        73_570,
        70_000,
        60.0,
        datetime(2026, 12, 1, 10, 0, tzinfo=KST),
        "005930 +5.10%",
        1,
    )
    t.route(tick("005930"), execution("5012345601", "1"), news("k1", ("005930",)), move)
    assert calls == {}  # nobody watches: nothing encoded
    assert t.stats.published == 0
    # three subscribers of one code: one encoding, the very same message object for each
    conns = [t.connect(f"u{i}") for i in range(3)]
    for c in conns:
        c._subscribe("price:005930")
        await drain(c)
    t.route(tick("005930", 70_100), tick("000660", 1))  # 000660: still nobody
    assert calls == {"price_update": 1}
    pending = [c.client.outbox._latest["price:005930"] for c in conns]  # type: ignore[attr-defined]
    assert pending[0] is pending[1] is pending[2]
    assert msgspec.json.decode(pending[0].payload)["data"]["price"] == 70_100


async def test_order_topics_carry_only_the_callers_accounts_and_that_order() -> None:
    t = Tree()
    alice = t.connect("alice", accounts=("A1",))
    alice_one = t.connect("alice", accounts=("A1",))
    bob = t.connect("bob", accounts=("B1",))
    admin = t.connect("root", role="admin")
    admin_one = t.connect("root", role="admin")
    alice._subscribe("order:*")
    alice_one._subscribe("order:7")
    bob._subscribe("order:*")
    admin._subscribe("order:*")
    admin_one._subscribe("order:9")
    for c in (alice, alice_one, bob, admin, admin_one):
        await drain(c)
    t.route(
        execution("A1", "7"), execution("A1", "8"), execution("B1", "9"), execution("B1", "7")
    )  # an order number of bob's that equals one of alice's
    got = {
        name: [(m["data"]["account"], m["order_id"]) for m in await payloads(c, "order_update")]
        for name, c in (
            ("alice", alice),
            ("alice_one", alice_one),
            ("bob", bob),
            ("admin", admin),
            ("admin_one", admin_one),
        )
    }
    assert got["alice"] == [("A1", "7"), ("A1", "8")]
    assert got["alice_one"] == [("A1", "7")]
    assert got["bob"] == [("B1", "9"), ("B1", "7")]
    assert got["admin"] == [("A1", "7"), ("A1", "8"), ("B1", "9"), ("B1", "7")]
    assert got["admin_one"] == [("B1", "9")]


async def test_a_user_without_accounts_cannot_subscribe_to_orders() -> None:
    t = Tree()
    eve = t.connect("eve")
    with pytest.raises(ProtocolError) as info:
        eve._subscribe_topic("order:*")
    assert info.value.code == "forbidden"


def test_account_claims_cannot_spell_routing_keys() -> None:
    auth = Authenticator(SECRET)
    for bad in ("*", "A1:7", "", "x" * 33, "A 1"):
        token = auth.issue("mallory", accounts=(bad,))
        with pytest.raises(Exception, match="account numbers"):
            auth.verify(token)
    assert auth.verify(auth.issue("ok", accounts=("5012345601", "ACC-1"))).accounts == {
        "5012345601",
        "ACC-1",
    }


async def test_news_goes_to_news_and_each_listed_code() -> None:
    t = Tree()
    every, listed, other = t.connect("a"), t.connect("b"), t.connect("c")
    every._subscribe("news")
    listed._subscribe("news:000660")
    other._subscribe("news:035720")
    for c in (every, listed, other):
        await drain(c)
    t.route(news("k1", ("005930", "000660")), news("k2", ()))
    assert [m["data"]["id"] for m in await payloads(every, "news")] == ["k1", "k2"]
    assert len(await payloads(listed, "news")) == 1
    assert await payloads(other, "news") == []


async def test_a_lost_slot_ends_the_subscription_and_a_new_subscribe_claims_again() -> None:
    t = Tree()
    c = t.connect("alice")
    c._subscribe("price:005930")
    c._subscribe("price:005930@1s")
    c._subscribe("news")
    await drain(c)
    lost = Msg(wire.error("slot_lost", "evicted", "price:005930"), "error")
    assert t.hub.revoke("price:005930", lost) == 2  # both subscriptions to the code
    assert [m["code"] for m in await payloads(c, "error")] == ["slot_lost", "slot_lost"]
    assert t.hub.subscriptions() == {"news": 1}
    t.route(tick("005930"))
    assert await drain(c) == []  # no more prices for a topic without a slot
    # subscribing again is a new claim, not "already subscribed"
    c._subscribe("price:005930")
    assert t.demand.claims.count((c.client.id, "price:005930")) == 2
    assert ("price:005930", "price:005930@1s") == tuple(
        raw for _, raw in t.demand.releases
    )  # the lost ones were let go
    assert t.hub.subscriptions() == {"news": 1, "price:005930": 1}
    assert set(c.subs) == {"price:005930", "news"}
