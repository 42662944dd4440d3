"""Client demand across processes, the pure parts (redis_demand.py): a gateway's claims as
(user, topic, generation) members, and the ingest applying them to the slot driver."""

from __future__ import annotations

from tradestream.errors import SlotRefused
from tradestream.redis_demand import SEP, RemoteClaims, RemoteDemand
from tradestream.topics import Topic, parse_topic


class Driver:
    """The slot driver's claim/release, recording; refuses the codes in `full`."""

    def __init__(self, full: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.full = full
        self.held: dict[tuple[int, str], str] = {}
        self.log: list[str] = []

    def claim(self, owner: int, topic: Topic, user: str = "") -> None:
        if topic.arg in self.full:
            raise SlotRefused("no_slot", f"no upstream slot for {topic.name}", topic.raw)
        self.held[owner, topic.raw] = user
        self.log.append(f"claim {owner} {topic.raw}")

    def release(self, owner: int, topic: Topic) -> None:
        del self.held[owner, topic.raw]
        self.log.append(f"release {owner} {topic.raw}")


def test_a_gateway_keeps_one_member_per_user_and_topic() -> None:
    d = RemoteDemand()
    price, book = parse_topic("price:005930"), parse_topic("orderbook:005930")
    d.claim(1, price, "u")
    d.claim(2, price, "u")  # two connections of one user: one claim
    d.claim(3, parse_topic("signal:vcp"), "u")  # no upstream slot needed: not sent
    d.claim(4, book, "v")
    assert d.pairs() == [("u", "price:005930"), ("v", "orderbook:005930")]
    first = d.members()
    d.release(1, price)
    assert d.members() == first
    v = d.version
    d.release(2, price)
    assert d.pairs() == [("v", "orderbook:005930")] and d.version == v + 1
    d.claim(5, price, "u")  # claimed again: a new generation, so a refused one is asked again
    again = [m for m in d.members() if m.startswith("u" + SEP)]
    assert again and again[0] not in first
    d.release(99, price)  # never claimed: nothing happens
    assert len(d.members()) == 2


def test_the_ingest_brings_each_gateways_claims_to_its_set() -> None:
    driver = Driver(full={"035420"})
    rc = RemoteClaims(driver)
    a = {("u", "price:005930", "1"), ("v", "price:005930", "2")}
    assert rc.apply("gw-a", a) == []
    owners = {owner for owner, _ in driver.held}
    assert len(owners) == 2 and all(o < 0 for o in owners)  # one per (gateway, user)
    assert rc.apply("gw-b", {("u", "price:005930", "1")}) == []
    assert len({owner for owner, _ in driver.held}) == 3  # gw-b's u is another owner
    refused = rc.apply("gw-a", a | {("u", "price:035420", "3")})
    assert [(v.user, v.topic, v.code) for v in refused] == [("u", "price:035420", "no_slot")]
    assert rc.apply("gw-a", a | {("u", "price:035420", "3")}) == []  # not asked again
    again = rc.apply("gw-a", a | {("u", "price:035420", "4")})  # a new generation is
    assert [v.code for v in again] == ["no_slot"]
    driver.log.clear()
    rc.apply("gw-a", {("u", "price:005930", "1")})  # v let go
    assert driver.log == [f"release {rc.owner('gw-a', 'v')} price:005930"]
    rc.apply("gw-a", None)  # the gateway is gone: everything it held
    assert list(driver.held) == [(rc.owner("gw-b", "u"), "price:005930")]
    assert rc.stats.claims == 3 and rc.stats.releases == 2 and rc.stats.refused == 2


def test_members_that_are_not_claims_are_dropped_and_counted() -> None:
    rc = RemoteClaims(Driver())
    good = f"u{SEP}price:005930{SEP}1".encode()
    got = rc.claims([good, b"no separators", f"u{SEP}price:{SEP}1".encode(), b"\xff\xfe"])
    assert got == {("u", "price:005930", "1")} and rc.stats.bad_members == 3
