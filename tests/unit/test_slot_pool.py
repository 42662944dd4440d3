"""Two brokers in one slot pool (issue 18 item 2): KIS sessions carry anything, a Kiwoom
session trades and order books only; codes go to their preferred broker while it has room;
a lost session's codes fail over to the other broker (one feed gap names the switch) and come
back when their broker does; one trade stream per code (pipeline/canon.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tradestream.events import KST, FeedGap, Tick
from tradestream.feeds.session import FeedStatus
from tradestream.pipeline.canon import TradeCanon
from tradestream.slots.driver import SlotDriver, SlotSession
from tradestream.slots.policy import Priority, SlotManager
from tradestream.upstream import (
    KIS_BOOK,
    KIS_INDEX,
    KIS_TRADES,
    KIS_TRADES_NXT,
    ORDER_BOOK_TRS,
    TRADE_TRS,
    Op,
)

T, B, IDX = KIS_TRADES, KIS_BOOK, KIS_INDEX
KIWOOM_CARRIES = frozenset(TRADE_TRS) | frozenset(ORDER_BOOK_TRS)
ON_KIWOOM = {"000002", "000004", "000006"}


def manager(kis: int = 3, kiwoom: int = 4) -> SlotManager:
    return SlotManager(
        {"kis-1": kis, "kiwoom-1": kiwoom},
        carries={"kiwoom-1": KIWOOM_CARRIES},
        brokers={"kis-1": "kis", "kiwoom-1": "kiwoom"},
        prefer=lambda code: "kiwoom" if code in ON_KIWOOM else "kis",
    )


def where(m: SlotManager) -> dict[str, set[str]]:
    return {s: {f"{tr}/{c}" for tr, c in m.registrations(s)} for s in ("kis-1", "kiwoom-1")}


def test_codes_go_to_their_preferred_broker_while_it_has_room() -> None:
    m = manager()
    m.set_pick_keys([(T, "000001"), (T, "000002"), (B, "000002"), (T, "000003")], 0.0)
    assert where(m) == {
        "kis-1": {f"{T}/000001", f"{T}/000003"},
        "kiwoom-1": {f"{T}/000002", f"{B}/000002"},
    }
    # KIS full (3): a KIS-preferred code overflows onto Kiwoom rather than wait
    m.set_pick_keys([(T, f"00000{i}") for i in (1, 3, 5, 7, 9)], 1.0)
    assert len(m.registrations("kis-1")) == 3 and len(m.registrations("kiwoom-1")) == 2
    assert m.pending() == []


def test_a_key_kiwoom_cannot_carry_waits_for_kis_while_trades_still_fit_on_kiwoom() -> None:
    m = manager(kis=1, kiwoom=4)
    m.set_pick_keys([(IDX, "0001"), (IDX, "1001"), (T, "000001"), (T, "000003")], 0.0)
    # the second index waits (only KIS carries indexes, and it is full); the trades behind it
    # in the queue are not blocked by it: Kiwoom takes them
    assert where(m)["kis-1"] == {f"{IDX}/0001"}
    assert where(m)["kiwoom-1"] == {f"{T}/000001", f"{T}/000003"}
    assert [(p.tr_id, p.code) for p in m.pending()] == [(IDX, "1001")]
    assert all(tr in KIWOOM_CARRIES for tr, _ in m.registrations("kiwoom-1"))


def test_an_eviction_on_kis_sends_the_evicted_trade_to_kiwoom() -> None:
    m = manager(kis=1, kiwoom=2)
    m.claim(Priority.DEMAND, T, "000001", 0.0)
    assert where(m)["kis-1"] == {f"{T}/000001"}
    m.claim(Priority.HOLDING, IDX, "0001", 1.0)  # only KIS can carry it: evicts the demand
    assert where(m) == {"kis-1": {f"{IDX}/0001"}, "kiwoom-1": {f"{T}/000001"}}
    assert m.claims(T, "000001") == (Priority.DEMAND,)  # not dropped: it moved


def test_failover_to_the_other_broker_and_back_home() -> None:
    m = manager(kis=3, kiwoom=4)
    m.set_pick_keys([(T, c) for c in ("000001", "000002", "000004")], 0.0)
    assert where(m)["kiwoom-1"] == {f"{T}/000002", f"{T}/000004"}
    lost = m.session_lost("kiwoom-1", 10.0)
    assert {(o.session, o.action, o.code) for o in lost.ops} == {
        ("kis-1", "subscribe", "000002"),
        ("kis-1", "subscribe", "000004"),
    }
    assert {(a.action, a.session, a.code) for a in lost.audit} == {
        ("move", "kis-1", "000002"),
        ("move", "kis-1", "000004"),
    }
    back = m.session_added("kiwoom-1", 4, 20.0)
    assert where(m)["kiwoom-1"] == {f"{T}/000002", f"{T}/000004"}
    assert set(back.ops) == {
        Op("kis-1", "unsubscribe", T, "000002"),
        Op("kis-1", "unsubscribe", T, "000004"),
        Op("kiwoom-1", "subscribe", T, "000002"),
        Op("kiwoom-1", "subscribe", T, "000004"),
    }
    assert [o.action for o in back.ops[:2]] == ["unsubscribe", "unsubscribe"]
    assert {a.reason for a in back.audit if a.action == "move"} == {"back from kis-1: preferred"}


def test_failover_when_kis_is_lost_keeps_what_fits_and_waits_for_the_rest() -> None:
    m = manager(kis=3, kiwoom=2)
    m.set_pick_keys([(IDX, "0001"), (T, "000001"), (T, "000003")], 0.0)
    m.session_lost("kis-1", 10.0)
    assert where(m)["kiwoom-1"] == {f"{T}/000001", f"{T}/000003"}
    assert [(p.tr_id, p.code) for p in m.pending()] == [(IDX, "0001")]  # Kiwoom cannot
    m.session_added("kis-1", 3, 20.0)
    assert where(m)["kis-1"] == {f"{IDX}/0001", f"{T}/000001", f"{T}/000003"}  # home again
    assert m.registrations("kiwoom-1") == frozenset()


# -------------------------------------------------------------- the driver's failover gap


class Sink:
    """A connected session as the driver sees it."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.connected = True

    def send_op(self, op: Op) -> bool:
        if not self.connected:
            return False
        (self.keys.add if op.action == "subscribe" else self.keys.discard)((op.tr_id, op.code))
        return True

    def registered(self) -> frozenset[tuple[str, str]] | None:
        return frozenset(self.keys) if self.connected else None


def test_a_lost_kiwoom_session_fails_over_to_kis_with_a_gap_naming_the_switch() -> None:
    now = [0.0]
    kis, kiwoom = Sink(), Sink()
    st_kis, st_kiwoom = FeedStatus("kis-1", state="streaming"), FeedStatus("kiwoom-1")
    st_kiwoom.state = "streaming"
    last_frame = datetime(2026, 12, 4, 1, 0, 0, tzinfo=KST)
    st_kiwoom.last_frame_ns = int(last_frame.timestamp() * 1e9)
    driver = SlotDriver(
        manager(kis=3, kiwoom=4),
        [
            SlotSession("kis-1", 3, kis, st_kis, "kis"),
            SlotSession("kiwoom-1", 4, kiwoom, st_kiwoom, "kiwoom", KIWOOM_CARRIES),
        ],
        lost_after_s=10.0,
        clock=lambda: now[0],
    )
    driver.set_picks([(T, c) for c in ("000001", "000002", "000004")])
    assert kiwoom.keys == {(T, "000002"), (T, "000004")} and kis.keys == {(T, "000001")}
    kiwoom.connected, st_kiwoom.state = False, "backoff"
    for _ in range(10):
        now[0] += 1.0
        driver.step()
        assert driver.take_gaps() == [] or now[0] >= 10.0
    now[0] += 1.0
    driver.step()
    gaps = driver.take_gaps()
    assert kis.keys == {(T, "000001"), (T, "000002"), (T, "000004")}
    assert len(gaps) == 1 and driver.stats["failovers"] == 1
    gap = gaps[0]
    assert isinstance(gap, FeedGap) and gap.source == "kiwoom-1"
    assert gap.codes == ("000002", "000004")
    assert gap.start == last_frame
    assert gap.reason.startswith("failover: kiwoom-1 lost (down 1")
    assert "2 codes moved to kis-1" in gap.reason
    # back: the preferred codes go home, no gap (both brokers are up)
    kiwoom.connected, st_kiwoom.state = True, "streaming"
    kiwoom.keys = set()
    now[0] += 1.0
    driver.step()
    assert kiwoom.keys == {(T, "000002"), (T, "000004")} and kis.keys == {(T, "000001")}
    assert driver.take_gaps() == [] and driver.stats["reconciled"] == 0


def test_the_notice_never_moves_to_a_kiwoom_session() -> None:
    now = [0.0]
    kis, kiwoom = Sink(), Sink()
    st_kis, st_kiwoom = FeedStatus("kis-1", state="streaming"), FeedStatus("kiwoom-1")
    st_kiwoom.state = "streaming"
    driver = SlotDriver(
        manager(kis=3, kiwoom=4),
        [
            SlotSession("kis-1", 3, kis, st_kis, "kis"),
            SlotSession("kiwoom-1", 4, kiwoom, st_kiwoom, "kiwoom", KIWOOM_CARRIES),
        ],
        notice=("H0STCNI0", "demo"),
        lost_after_s=5.0,
        notice_move_after_s=1.0,
        clock=lambda: now[0],
    )
    kis.connected, st_kis.state = False, "backoff"
    for _ in range(20):
        now[0] += 1.0
        driver.step()
    assert ("H0STCNI0", "demo") not in kiwoom.keys
    assert driver.notice_session is None  # nobody can carry it until kis-1 is back


# ------------------------------------------------------------------ one trade stream


def tick(source: str, volume: int, at: datetime, venue: str = "KRX") -> Tick:
    return Tick(source, venue, "005930", at, 71000, 500, 0.71, 70600, 71200, 70400, 71000,
                70900, 12, volume, 0, 100.0, 0)  # fmt: skip


def test_one_trade_stream_per_code_whichever_broker_sends_it_first() -> None:
    canon = TradeCanon()
    t0 = datetime(2026, 12, 4, 9, 30, 15, tzinfo=KST)
    assert canon.accept(tick("kis-1", 1000, t0))
    assert not canon.accept(tick("kiwoom-1", 1000, t0))  # the same trade, from Kiwoom
    assert canon.accept(tick("kiwoom-1", 1012, t0))  # Kiwoom is ahead now
    assert not canon.accept(tick("kis-1", 1012, t0))
    assert not canon.accept(tick("kis-1", 1005, t0))  # older than what went on
    assert canon.accept(tick("kis-1", 1000, t0, venue="NXT"))  # another venue, its own stream
    assert canon.accept(tick("kis-1", 10, t0 + timedelta(days=1)))  # a new day starts over
    assert canon.dropped == {"kiwoom-1": 1, "kis-1": 2}


def test_nxt_trades_are_carried_by_kiwoom_too() -> None:
    m = manager(kis=0, kiwoom=2)
    m.set_pick_keys([(KIS_TRADES_NXT, "000001")], 0.0)
    assert m.registrations("kiwoom-1") == frozenset({(KIS_TRADES_NXT, "000001")})
