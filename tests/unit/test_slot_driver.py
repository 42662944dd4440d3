"""The slot driver against model KIS sessions: the real KisAdapter (its op queue and its record
of what the connection asked for) in front of a strict model broker that forgets a connection's
registrations when it closes. Time is an injected clock; nothing sleeps.

Rules: demand counted per subscription; when a session counts as up, lost or back (never lost
while a reconnect is coming up); the execution notice moving to a survivor and back; new slots
on up sessions first; stale slots re-registered; data noted for every event type. A
hypothesis state machine drives all of it at random and checks, after every step, that what
each connected session has registered at the broker is exactly the driver's state.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tradestream.config import KisSettings
from tradestream.errors import ProtocolError
from tradestream.events import KST, Execution, IndexTick, OrderBook, ProgramTrade, Tick
from tradestream.feeds.kis.adapter import KisAdapter
from tradestream.feeds.session import FeedStatus
from tradestream.slots.driver import SlotDriver, SlotSession, data_key
from tradestream.slots.liveness import UP_AFTER_S
from tradestream.slots.notice import NOTICE_MOVE_AFTER_S
from tradestream.slots.policy import Priority, SlotManager
from tradestream.topics import parse_topic
from tradestream.upstream import Op

NOTICE = ("H0STCNI0", "demo")
T, B = "H0STCNT0", "H0STASP0"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Req(msgspec.Struct):
    header: dict[str, str]
    body: dict[str, dict[str, str]]


class Session:
    """One KIS session: the real adapter, its FeedStatus as run_feed would set it, and a
    strict broker side (KIS §5.2: a duplicate registration is OPSP0002, an unknown
    unregistration OPSP0003, one too many OPSP0008; here each is a test failure)."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.status = FeedStatus(name)
        self.adapter = KisAdapter(
            KisSettings(approval_key="approval"),
            name,
            desired=lambda: self.driver.registrations(name),
        )
        self.broker: set[tuple[str, str]] = set()
        self.driver: SlotDriver  # set once the driver exists

    @property
    def connected(self) -> bool:
        return self.status.state in ("subscribing", "streaming")

    def receive(self, message: str) -> None:
        req = msgspec.json.decode(message, type=_Req)
        key = (req.body["input"]["tr_id"], req.body["input"]["tr_key"])
        if req.header["tr_type"] == "1":
            assert key not in self.broker, f"{self.name}: OPSP0002 {key}"
            self.broker.add(key)
            assert len(self.broker) <= self.limit, f"{self.name}: OPSP0008 at {key}"
        else:
            assert key in self.broker, f"{self.name}: OPSP0003 {key}"
            self.broker.remove(key)

    def connect(self) -> None:
        """What run_feed does on a connect: a new connection registers the driver's state."""
        assert not self.connected
        self.status.connects += 1
        self.status.state = "subscribing"
        self.adapter.on_connect(self.status)
        self.broker = set()
        for message in self.adapter.registrations():
            self.receive(message)

    def pump(self) -> None:
        """What the adapter's pump sends next on the live socket: every queued op (a closed
        connection's pump is gone; the next connect discards its queue)."""
        while self.connected and self.adapter._ops:
            self.receive(self.adapter._ops.popleft())

    def drop(self) -> None:
        """The connection closes: the broker forgets its registrations; run_feed backs off."""
        self.status.state = "backoff"
        self.status.reconnects += 1
        self.broker = set()


class Pool:
    def __init__(
        self,
        n: int = 2,
        capacity: int = 4,
        *,
        notice: bool = False,
        lost_after_s: float = 20.0,
        stale_s: float = 120.0,
    ) -> None:
        self.clock = Clock()
        self.s = {f"kis-{i + 1}": Session(f"kis-{i + 1}", capacity) for i in range(n)}
        self.manager = SlotManager({name: capacity for name in self.s}, stale_s=stale_s)
        self.market_open = True
        self.driver = SlotDriver(
            self.manager,
            [SlotSession(x.name, capacity, x.adapter, x.status) for x in self.s.values()],
            notice=NOTICE if notice else None,
            lost_after_s=lost_after_s,
            market_open=lambda tr: self.market_open,
            clock=self.clock,
        )
        for x in self.s.values():
            x.driver = self.driver

    def pump(self) -> None:
        for x in self.s.values():
            x.pump()

    def step(self, dt: float = 1.0) -> None:
        self.clock.now += dt
        self.driver.step()
        self.pump()

    def run(self, seconds: float, dt: float = 1.0) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)

    def connect_all(self, stream: bool = True) -> None:
        for x in self.s.values():
            x.connect()
            if stream:
                x.status.state = "streaming"
        self.step()

    def in_sync(self) -> None:
        """Every connected session has exactly the driver's state registered upstream, which
        is the manager's plus the notice where it rides; no key is registered twice."""
        self.pump()
        seen: set[tuple[str, str]] = set()
        for name, x in self.s.items():
            want = set(self.driver.registrations(name))
            if name not in self.driver.as_dict()["lost_sessions"]:
                market = set(self.manager.registrations(name))
                assert want - market == ({NOTICE} if self.driver.notice_session == name else set())
            if x.connected:
                assert x.broker == want, (name, x.broker ^ want)
                assert seen.isdisjoint(x.broker), (name, seen & x.broker)
                seen |= x.broker
            else:
                assert x.broker == set()
        assert self.driver.stats["reconciled"] == 0  # the safety net found nothing to fix

    def codes(self, name: str) -> set[str]:
        return {c for _, c in self.manager.registrations(name)}


def picks(*codes: str) -> list[tuple[str, str]]:
    return [(T, c) for c in codes]


# ------------------------------------------------------------------ demand


def test_demand_is_held_per_subscription_not_per_connection() -> None:
    p = Pool(capacity=10)
    plain, paced = parse_topic("price:123456"), parse_topic("price:123456@1s")
    p.driver.claim(7, plain)
    p.driver.claim(7, paced)  # the same connection, a second subscription to the code
    p.driver.claim(8, plain)
    p.driver.release(7, plain)
    p.driver.release(8, plain)
    assert p.manager.slot(T, "123456") is not None  # price:123456@1s still live
    p.driver.release(7, paced)
    assert p.manager.slot(T, "123456") is None
    p.driver.release(7, paced)  # twice is harmless


def test_demand_refused_when_full() -> None:
    p = Pool(capacity=1)
    p.driver.claim(1, parse_topic("price:000001"))
    p.driver.claim(1, parse_topic("price:000002"))
    with pytest.raises(ProtocolError) as refused:
        p.driver.claim(1, parse_topic("orderbook:000003"))
    assert (refused.value.code, refused.value.topic) == ("no_slot", "orderbook:000003")
    assert p.driver.stats["refused"] == 1
    p.driver.claim(1, parse_topic("news:000003"))  # not a slot topic: nothing to claim


def test_ops_are_sent_to_live_sockets_and_counted_dropped_otherwise() -> None:
    p = Pool(capacity=4)
    p.s["kis-1"].connect()
    p.driver.set_picks(picks("000001", "000002"))  # one each: kis-2 is not connected
    assert p.driver.stats["ops_sent"] == 1 and p.driver.stats["ops_dropped"] == 1
    p.pump()
    p.s["kis-2"].connect()  # registers its state at connect: the dropped op is not needed
    p.in_sync()
    assert p.s["kis-2"].broker == {(T, "000002")} or p.s["kis-1"].broker == {(T, "000002")}


# ------------------------------------------------------------------ up, lost, back


def test_a_session_down_long_enough_is_lost_and_comes_back_when_connected() -> None:
    p = Pool(capacity=10, lost_after_s=5.0)
    p.driver.set_picks(picks(*(f"00000{i}" for i in range(4))))
    p.connect_all()
    assert {len(p.driver.registrations(n)) for n in p.s} == {2}
    p.s["kis-2"].drop()
    p.run(5)
    assert p.driver.as_dict()["lost_sessions"] == []  # down 4 s: not yet
    p.step()
    assert p.driver.as_dict()["lost_sessions"] == ["kis-2"]
    assert len(p.codes("kis-1")) == 4 and p.driver.registrations("kis-2") == []
    p.in_sync()
    # back: connected with nothing registered (it cannot stream yet) for UP_AFTER_S
    p.s["kis-2"].connect()
    assert p.s["kis-2"].broker == set()
    p.step()
    assert p.driver.as_dict()["lost_sessions"] == ["kis-2"]
    p.run(UP_AFTER_S)
    assert p.driver.as_dict()["lost_sessions"] == []
    assert p.driver.stats["sessions_lost"] == p.driver.stats["sessions_back"] == 1
    p.in_sync()
    assert len(p.codes("kis-1")) == 4  # moved slots stay where they went: no churn back


def test_a_reconnect_just_before_the_deadline_is_not_lost() -> None:
    """The audit's bug: a session that reconnected (and registered its slots) within
    UP_AFTER_S before lost_after_s was declared lost while connected; its slots moved and
    stayed registered on it too. Now it gets UP_AFTER_S to come up, and it does."""
    p = Pool(capacity=10, lost_after_s=20.0)
    p.driver.set_picks(picks(*(f"00000{i}" for i in range(6))))
    p.connect_all()
    mine = p.codes("kis-2")
    p.s["kis-2"].drop()
    p.run(18)  # down for 18 s at the last step
    p.s["kis-2"].connect()  # no data yet (a quiet market): "subscribing"
    assert {c for _, c in p.s["kis-2"].broker} == mine
    p.run(4)  # the deadline passes while it comes up
    assert p.driver.as_dict()["lost_sessions"] == []
    assert p.driver.stats["sessions_lost"] == 0
    assert p.codes("kis-2") == mine
    assert "move" not in {a.action for a in p.manager.audit_log}
    p.in_sync()


def test_a_session_lost_while_connected_unregisters_what_moved_away() -> None:
    """A connection that never proves itself (a new connect every second, each one
    registering) is lost at lost_after_s + UP_AFTER_S at the latest, even when every look
    finds it connected; what it registered is unregistered before its slots move."""
    p = Pool(capacity=10, lost_after_s=10.0)
    p.driver.set_picks(picks(*(f"00000{i}" for i in range(6))))
    p.connect_all()
    x = p.s["kis-2"]
    first_down = p.clock.now + 1.0  # the first step that sees it
    for _ in range(30):
        if x.connected:
            x.drop()
        x.connect()
        p.step()
        p.in_sync()
        if p.driver.as_dict()["lost_sessions"]:
            break
    assert p.driver.as_dict()["lost_sessions"] == ["kis-2"]
    assert p.clock.now - first_down == pytest.approx(10.0 + UP_AFTER_S)
    assert x.connected and x.broker == set()
    assert len(p.codes("kis-1")) == 6
    assert p.driver.stats["sessions_lost"] == 1


def test_a_session_that_reconnects_over_and_over_is_not_up() -> None:
    """Each attempt passes through "subscribing" (its key in use elsewhere, say): not up, so
    lost once, and never back while it keeps doing that."""
    p = Pool(capacity=10, lost_after_s=5.0)
    p.connect_all()
    x = p.s["kis-2"]
    for t in range(20):
        x.drop()
        if t % 2:
            x.connect()
        p.step()
    assert p.driver.as_dict()["lost_sessions"] == ["kis-2"]
    assert p.driver.stats["sessions_lost"] == 1  # lost once, never back: no flapping
    p.in_sync()


# ------------------------------------------------------------------ placement


def test_new_slots_go_to_up_sessions_and_a_reconnecting_one_keeps_its_own() -> None:
    p = Pool(capacity=4, lost_after_s=60.0)
    p.driver.set_picks(picks("000001", "000002"))  # one on each
    p.connect_all()
    theirs = p.codes("kis-2")
    p.s["kis-2"].drop()
    p.step()  # the driver sees it down
    p.driver.claim(1, parse_topic("price:000010"))  # demand: kis-1, though kis-2 has more room
    p.driver.set_positions({"000011": 5})  # a buy fill's holding: kis-1 too
    p.driver.claim(1, parse_topic("price:000012"))
    assert p.codes("kis-1") == {"000001", "000010", "000011", "000012"} - theirs | (
        {"000001", "000002"} - theirs
    )
    assert p.codes("kis-2") == theirs  # not taken away while it reconnects
    # kis-1 is full: a holding evicts demand on the up session; the evicted demand takes the
    # reconnecting session's free room instead of being dropped
    p.driver.set_positions({"000011": 5, "000013": 1})
    assert ("H0STCNT0", "000013") in p.manager.registrations("kis-1")
    assert ("H0STCNT0", "000010") in p.manager.registrations("kis-2")
    assert p.driver.stats["dropped"] == 0
    p.in_sync()
    p.s["kis-2"].connect()  # back before the deadline: registers its own and the newcomer
    p.step()
    p.in_sync()
    assert {c for _, c in p.s["kis-2"].broker} == theirs | {"000010"}


# ------------------------------------------------------------------ the execution notice


def test_the_notice_moves_to_a_survivor_and_back() -> None:
    p = Pool(n=2, capacity=3, notice=True, lost_after_s=5.0)
    usage = p.manager.usage()
    assert (usage["kis-1"].capacity, usage["kis-2"].capacity) == (2, 3)
    # five picks fill both: kis-1 2 + notice, kis-2 3
    p.driver.set_picks(picks("000001", "000002", "000003", "000004", "000005"))
    p.connect_all()
    assert NOTICE in p.s["kis-1"].broker and len(p.s["kis-1"].broker) == 3
    assert p.manager.pending() == []
    p.in_sync()

    p.s["kis-1"].drop()
    p.run(6)
    assert p.driver.as_dict()["lost_sessions"] == ["kis-1"]
    assert p.driver.notice_session == "kis-2"
    assert NOTICE in p.s["kis-2"].broker and len(p.s["kis-2"].broker) == 3  # within 3
    assert p.manager.usage()["kis-2"].capacity == 2
    assert len(p.manager.pending()) == 3  # 5 picks, 2 places left
    assert "shrink" in {a.action for a in p.manager.audit_log}
    p.in_sync()

    p.s["kis-1"].connect()
    p.run(UP_AFTER_S + 1)  # the first look starts the clock
    assert p.driver.as_dict()["lost_sessions"] == []
    assert p.driver.notice_session == "kis-1"
    assert NOTICE in p.s["kis-1"].broker and NOTICE not in p.s["kis-2"].broker
    assert {n: (u.used, u.capacity) for n, u in p.manager.usage().items()} == {
        "kis-1": (2, 2),
        "kis-2": (3, 3),
    }
    assert p.manager.pending() == []
    assert p.driver.stats["notice_moves"] == 2
    p.in_sync()


def test_the_notice_moves_off_a_carrier_down_briefly_and_back_home() -> None:
    # kis-1 is down far less than lost_after_s; notices missed meanwhile are never resent,
    # so the notice goes to kis-2 after NOTICE_MOVE_AFTER_S, and home again when kis-1 is up
    p = Pool(n=2, capacity=3, notice=True, lost_after_s=120.0)
    p.driver.set_picks(picks("000001", "000002", "000003", "000004"))
    p.connect_all()
    p.in_sync()
    p.s["kis-1"].drop()
    p.run(NOTICE_MOVE_AFTER_S)  # the first look starts the clock
    assert p.driver.notice_session == "kis-1"
    p.run(1)
    assert p.driver.notice_session == "kis-2" and p.driver.as_dict()["lost_sessions"] == []
    assert NOTICE in p.s["kis-2"].broker and len(p.s["kis-2"].broker) == 3
    assert {n: u.capacity for n, u in p.manager.usage().items()} == {"kis-1": 3, "kis-2": 2}
    p.in_sync()
    p.s["kis-1"].connect()
    p.s["kis-1"].status.state = "streaming"
    p.step()
    assert p.driver.notice_session == "kis-1"
    assert NOTICE in p.s["kis-1"].broker and NOTICE not in p.s["kis-2"].broker
    assert {n: u.capacity for n, u in p.manager.usage().items()} == {"kis-1": 2, "kis-2": 3}
    assert p.manager.pending() == [] and p.driver.stats["notice_moves"] == 2
    p.in_sync()


def test_the_notice_leaves_a_down_carrier_once_another_session_is_up() -> None:
    # everyone drops; the first session back takes the notice (its carrier has been down
    # longer than NOTICE_MOVE_AFTER_S), long before the carrier would be lost
    p = Pool(n=3, capacity=4, notice=True, lost_after_s=60.0)
    p.driver.set_picks(picks("000001", "000002"))
    p.connect_all()
    for x in p.s.values():
        x.drop()
    p.run(10)
    assert p.driver.notice_session == "kis-1"  # nobody up: nowhere better
    p.s["kis-3"].connect()
    p.s["kis-3"].status.state = "streaming"
    p.step()
    assert p.driver.notice_session == "kis-3" and NOTICE in p.s["kis-3"].broker
    assert p.manager.usage()["kis-3"].capacity == 3
    p.in_sync()
    p.run(60)  # kis-1 and kis-2 are lost: the notice stays where it is live
    assert p.driver.as_dict()["lost_sessions"] == ["kis-1", "kis-2"]
    assert p.driver.notice_session == "kis-3"
    p.in_sync()


def test_the_notice_waits_when_no_session_survives() -> None:
    p = Pool(n=1, capacity=3, notice=True, lost_after_s=5.0)
    p.driver.set_picks(picks("000001", "000002", "000003"))
    p.connect_all()
    p.s["kis-1"].drop()
    p.run(6)
    assert p.driver.notice_session is None and p.driver.registrations("kis-1") == []
    p.s["kis-1"].connect()
    p.run(UP_AFTER_S + 1)
    assert p.driver.notice_session == "kis-1"
    assert NOTICE in p.s["kis-1"].broker and len(p.s["kis-1"].broker) == 3
    assert [x.code for x in p.manager.pending()] == ["000003"]
    p.in_sync()


# ------------------------------------------------------------------ stale slots, data


def test_a_silent_slot_is_reregistered_once_while_the_market_is_open() -> None:
    p = Pool(n=1, capacity=4, stale_s=10.0)
    p.driver.set_picks(picks("000001", "000002"))
    p.connect_all()
    sent = p.driver.stats["ops_sent"]
    for _ in range(12):
        p.driver.on_data(T, "000002", "kis-1")
        p.step()
    assert p.driver.stats["stale_reregistered"] == 1
    assert p.driver.stats["ops_sent"] == sent + 2  # unsubscribe + subscribe of 000001 only
    assert [a.code for a in p.manager.audit_log if a.action == "reregister"] == ["000001"]
    p.in_sync()
    for _ in range(20):  # the same silent episode: not again
        p.driver.on_data(T, "000002", "kis-1")
        p.step()
    assert p.driver.stats["stale_reregistered"] == 1
    p.driver.on_data(T, "000001", "kis-1")  # data: the episode is over
    p.market_open = False
    p.run(30)  # closed: silence is normal
    assert p.driver.stats["stale_reregistered"] == 1
    p.market_open = True  # the next open is a fresh start: 10 s of silence from the step
    p.run(10)  # that sees it open
    assert p.driver.stats["stale_reregistered"] == 1
    p.step()
    assert p.driver.stats["stale_reregistered"] == 3
    p.in_sync()


def _tick(source: str, venue: str, code: str) -> Tick:
    now = datetime.now(KST)
    return Tick(source, venue, code, now, 100, 0, 0.0, 100, 100, 100, 101, 100, 1, 1, 100, 100.0, 0)


def test_data_is_noted_for_every_slot_type() -> None:
    now = datetime.now(KST)
    book = OrderBook("kis-1", "KRX", "000002", now, (1,), (1,), (1,), (1,), 1, 1, 0, 0, 0, 0)
    nxt_book = OrderBook("kis-1", "NXT", "000002", now, (1,), (1,), (1,), (1,), 1, 1, 0, 0, 0, 0)
    program = ProgramTrade("kis-1", "KRX", "000003", now, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0)
    index = IndexTick("kis-1", "kospi", "0001", now, 1.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0)
    notice = Execution(
        "kis-1",
        "demo",
        "1",
        "1",
        "0",
        "buy",
        "fill",
        "new",
        False,
        "000001",
        1,
        1,
        1,
        1,
        now,
        "x",
        0,
    )
    assert [
        data_key(e)
        for e in (
            _tick("kis-1", "KRX", "000001"),
            _tick("kis-1", "UN", "1"),
            book,
            nxt_book,
            program,
            index,
            notice,
        )
    ] == [
        (T, "000001"),
        ("H0UNCNT0", "1"),
        (B, "000002"),
        ("H0NXASP0", "000002"),
        ("H0STPGM0", "000003"),
        ("H0UPCNT0", "0001"),
        None,
    ]

    p = Pool(n=2, capacity=4)
    p.driver.set_picks([(T, "000001"), (B, "000002"), ("H0STPGM0", "000003"), ("H0UPCNT0", "0001")])
    p.clock.now = 5.0
    for ev in (
        _tick("ls-1", "KRX", "000001"),  # LS: not a KIS slot's data
        _tick("kis-9", "KRX", "000001"),
    ):  # not one of ours
        p.driver.on_event(ev)
    assert {r.code: r.last_data_at for r in p.manager.slots()} == {
        "000001": None,
        "000002": None,
        "000003": None,
        "0001": None,
    }
    holder = p.manager.slot(T, "000001")
    assert holder is not None
    other = "kis-2" if holder.session == "kis-1" else "kis-1"
    p.driver.on_event(_tick(other, "KRX", "000001"))  # from the session without the slot
    assert p.manager.slot(T, "000001").last_data_at is None  # type: ignore[union-attr]
    for rec in p.manager.slots():
        for data in (_tick(rec.session, "KRX", rec.code), book, program, index):
            p.driver.on_event(msgspec.structs.replace(data, source=rec.session))
    assert {r.code: r.last_data_at for r in p.manager.slots()} == {
        "000001": 5.0,
        "000002": 5.0,
        "000003": 5.0,
        "0001": 5.0,
    }


def test_reconcile_unregisters_a_stray_registration() -> None:
    """The safety net: something registered behind the driver's back is undone next step."""
    p = Pool(n=1, capacity=4)
    p.driver.set_picks(picks("000001"))
    p.connect_all()
    assert p.s["kis-1"].adapter.send_op(Op("kis-1", "subscribe", T, "999999"))
    p.pump()
    assert (T, "999999") in p.s["kis-1"].broker
    p.step()
    assert p.s["kis-1"].broker == {(T, "000001")}
    assert p.driver.stats["reconciled"] == 1


def test_the_adapter_reports_nothing_registered_when_not_connected() -> None:
    p = Pool(n=1, capacity=4)
    a = p.s["kis-1"].adapter
    assert a.registered() is None and not a.send_op(Op("kis-1", "subscribe", T, "000001"))
    p.driver.set_picks(picks("000001"))
    p.s["kis-1"].connect()
    assert a.registered() == frozenset({(T, "000001")})
    p.s["kis-1"].drop()  # run_feed says backoff, even if pump never ran
    assert a.registered() is None and not a.send_op(Op("kis-1", "subscribe", T, "000002"))


# ------------------------------------------------------------------ the state machine

CODES = ("000001", "000002", "000003", "000004", "000005", "000006")
topics = st.sampled_from([f"{kind}:{c}" for kind in ("price", "orderbook") for c in CODES[:4]])
LOST_AFTER_S = 20.0


class DriverMachine(RuleBasedStateMachine):
    """Random connects, drops, data, time and claims over 1-3 sessions; ops sent while a
    session is down are dropped by its adapter, each connect registers the driver's state,
    and the lost/back deadlines are crossed at every phase of a reconnect."""

    @initialize(n=st.integers(1, 3), capacity=st.integers(2, 4), notice=st.booleans())
    def start(self, n: int, capacity: int, notice: bool) -> None:
        self.p = Pool(n, capacity, notice=notice, lost_after_s=LOST_AFTER_S, stale_s=10.0)
        self.capacity = capacity
        self.notice = notice
        self.owners: dict[str, int] = {}

    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        x = self.p.s[data.draw(st.sampled_from(sorted(self.p.s)))]
        if x.connected:
            x.drop()
        x.connect()

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        x = self.p.s[data.draw(st.sampled_from(sorted(self.p.s)))]
        if x.connected:
            x.drop()

    @rule(data=st.data())
    def stream(self, data: st.DataObject) -> None:
        x = self.p.s[data.draw(st.sampled_from(sorted(self.p.s)))]
        if x.connected:
            x.status.state = "streaming"

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, UP_AFTER_S, 5.0, LOST_AFTER_S - 2, LOST_AFTER_S]))
    def advance(self, dt: float) -> None:
        self.p.clock.now += dt
        self.p.driver.step()

    @rule(topic=topics, owner=st.integers(1, 2))
    def subscribe(self, topic: str, owner: int) -> None:
        try:
            self.p.driver.claim(owner, parse_topic(topic))
        except ProtocolError as exc:
            assert exc.code == "no_slot"

    @rule(topic=topics, owner=st.integers(1, 2))
    def unsubscribe(self, topic: str, owner: int) -> None:
        self.p.driver.release(owner, parse_topic(topic))

    @rule(codes=st.lists(st.sampled_from(CODES), unique=True, max_size=5))
    def set_picks(self, codes: list[str]) -> None:
        self.p.driver.set_picks(picks(*codes))

    @rule(codes=st.lists(st.sampled_from(CODES), unique=True, max_size=3))
    def set_scanner(self, codes: list[str]) -> None:
        self.p.driver.set_scanner(codes)

    @rule(held=st.dictionaries(st.sampled_from(CODES), st.integers(0, 3), max_size=3))
    def set_positions(self, held: dict[str, int]) -> None:
        self.p.driver.set_positions(held)

    @precondition(lambda self: bool(self.p.manager.slots()))
    @rule(data=st.data())
    def data(self, data: st.DataObject) -> None:
        rec = data.draw(st.sampled_from(self.p.manager.slots()))
        self.p.driver.on_data(rec.tr_id, rec.code, rec.session)

    @invariant()
    def upstream_is_the_managers_state(self) -> None:
        self.p.pump()  # what the adapters queued reaches the broker
        self.p.in_sync()
        lost = set(self.p.driver.as_dict()["lost_sessions"])
        usage = self.p.manager.usage()
        assert set(usage) == set(self.p.s) - lost
        holder = self.p.driver.notice_session
        if self.notice and set(self.p.s) - lost:
            assert holder in set(self.p.s) - lost  # someone always carries the notice
        if not self.notice:
            assert holder is None
        for name, u in usage.items():
            assert u.capacity == self.capacity - (name == holder)
            assert u.used <= u.capacity
        for name in lost:
            x = self.p.s[name]
            assert self.p.driver.registrations(name) == []
            assert not x.connected or x.broker == set()


DriverMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDriverMachine = DriverMachine.TestCase


def test_priority_of_a_moved_holding() -> None:
    """A holding of a lost session moves with its priority and evicts demand elsewhere."""
    p = Pool(n=2, capacity=2, lost_after_s=5.0)
    p.connect_all()
    p.driver.set_positions({"000001": 1})
    held_on = p.manager.slot(T, "000001").session  # type: ignore[union-attr]
    other = "kis-2" if held_on == "kis-1" else "kis-1"
    p.driver.claim(1, parse_topic("price:000002"))
    p.driver.claim(1, parse_topic("price:000003"))
    p.driver.claim(1, parse_topic("price:000004"))
    p.s[held_on].drop()
    p.run(6)
    rec = p.manager.slot(T, "000001")
    assert rec is not None and rec.session == other and rec.priority is Priority.HOLDING
    assert p.driver.stats["dropped"] >= 1
    p.in_sync()


def test_one_users_demand_cannot_take_all_the_room() -> None:
    p = Pool(capacity=10)
    p.driver = SlotDriver(
        p.manager,
        [SlotSession(x.name, 10, x.adapter, x.status) for x in p.s.values()],
        clock=p.clock,
        max_demand_per_user=3,
    )
    p.driver.set_picks(picks("000001"))
    for i, code in enumerate(("100001", "100002", "100003")):
        p.driver.claim(i, parse_topic(f"price:{code}"), "mallory")
    with pytest.raises(ProtocolError) as refused:
        p.driver.claim(9, parse_topic("price:100004"), "mallory")
    assert (refused.value.code, refused.value.topic) == ("demand_limit", "price:100004")
    # what exists anyway costs nothing: a pick, or a code someone else's demand streams
    p.driver.claim(9, parse_topic("price:000001"), "mallory")
    p.driver.claim(20, parse_topic("price:200001"), "alice")
    p.driver.claim(21, parse_topic("price:200001"), "mallory")
    p.driver.claim(22, parse_topic("price:200002"), "alice")  # others are not held back
    # a released code gives the room back
    p.driver.release(0, parse_topic("price:100001"))
    p.driver.claim(9, parse_topic("price:100004"), "mallory")
    assert p.manager.slot(T, "100004") is not None
    # a dropped one too: the pool fills with picks, which evict demand (oldest first)
    p.driver.set_picks(
        picks("000001", *(f"30000{i}" for i in range(8)), *(f"40000{i}" for i in range(8)))
    )
    assert p.manager.slot(T, "100002") is None  # evicted
    p.driver.set_picks(picks("000001"))
    p.driver.claim(10, parse_topic("price:100005"), "mallory")
