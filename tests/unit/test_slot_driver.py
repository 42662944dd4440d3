"""The slot driver's own rules (pure enough to test without sockets): demand counted per
subscription, and when a session counts as up, lost, or back."""

from __future__ import annotations

from tradestream.feeds.session import FeedStatus
from tradestream.gateway.protocol import ProtocolError
from tradestream.gateway.topics import parse_topic
from tradestream.slots.driver import UP_AFTER_S, SlotDriver, SlotSession
from tradestream.slots.policy import Op, SlotManager


class Sink:
    def __init__(self) -> None:
        self.ops: list[tuple[str, str, str]] = []

    def send_op(self, op: Op) -> None:
        self.ops.append((op.action, op.tr_id, op.code))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def driver(capacity: int = 10, lost_after_s: float = 5.0
           ) -> tuple[SlotDriver, dict[str, Sink], dict[str, FeedStatus], Clock]:
    clock = Clock()
    sinks = {n: Sink() for n in ("kis-1", "kis-2")}
    statuses = {n: FeedStatus(n) for n in sinks}
    for st in statuses.values():
        st.state = "streaming"
    mgr = SlotManager({n: capacity for n in sinks})
    drv = SlotDriver(mgr, [SlotSession(n, capacity, sinks[n], statuses[n]) for n in sinks],
                     lost_after_s=lost_after_s, clock=clock)
    return drv, sinks, statuses, clock


def test_demand_is_held_per_subscription_not_per_connection() -> None:
    drv, _, _, _ = driver()
    plain, paced = parse_topic("price:123456"), parse_topic("price:123456@1s")
    drv.claim(7, plain)
    drv.claim(7, paced)  # the same connection, a second subscription to the code
    drv.claim(8, plain)
    drv.release(7, plain)
    drv.release(8, plain)
    assert drv.manager.slot("H0STCNT0", "123456") is not None  # price:123456@1s still live
    drv.release(7, paced)
    assert drv.manager.slot("H0STCNT0", "123456") is None
    drv.release(7, paced)  # twice is harmless


def test_demand_refused_when_full() -> None:
    drv, _, _, _ = driver(capacity=1)
    drv.claim(1, parse_topic("price:000001"))
    drv.claim(1, parse_topic("price:000002"))
    try:
        drv.claim(1, parse_topic("orderbook:000003"))
    except ProtocolError as exc:
        assert (exc.code, exc.topic) == ("no_slot", "orderbook:000003")
    else:
        raise AssertionError("a third slot on 2 x 1")
    drv.claim(1, parse_topic("news:000003"))  # not a slot topic: nothing to claim


def test_a_session_down_long_enough_is_lost_and_comes_back_when_connected() -> None:
    drv, sinks, statuses, clock = driver(lost_after_s=5.0)
    drv.set_picks([("H0STCNT0", f"00000{i}") for i in range(4)])
    assert {len(drv.registrations(n)) for n in sinks} == {2}
    statuses["kis-2"].state = "backoff"
    for t in range(6):
        clock.now = float(t)
        drv.step()
    assert drv.as_dict()["lost_sessions"] == ["kis-2"]
    assert len(drv.registrations("kis-1")) == 4 and drv.registrations("kis-2") == []
    # back: connected with nothing registered (it cannot stream yet) for UP_AFTER_S
    statuses["kis-2"].state, statuses["kis-2"].connects = "subscribing", 5
    clock.now = 10.0
    drv.step()
    assert drv.as_dict()["lost_sessions"] == ["kis-2"]
    clock.now = 10.0 + UP_AFTER_S
    drv.step()
    assert drv.as_dict()["lost_sessions"] == []
    assert drv.stats["sessions_lost"] == 1


def test_a_session_that_reconnects_over_and_over_is_not_up() -> None:
    """Each attempt passes through "subscribing" (its key in use elsewhere, say): not up."""
    drv, _, statuses, clock = driver(lost_after_s=5.0)
    st = statuses["kis-2"]
    for t in range(20):
        clock.now = float(t)
        st.state, st.connects = "subscribing", t  # a new connection every second
        drv.step()
    assert drv.as_dict()["lost_sessions"] == ["kis-2"]
    assert drv.stats["sessions_lost"] == 1  # lost once, never back: no flapping
