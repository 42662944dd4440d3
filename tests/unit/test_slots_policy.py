"""Slot policy (pure): seed 002's test plan, each rule of the issue, and property tests over
random operation sequences against a model upstream that applies the emitted ops."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tradestream.slots import (
    ORDER_BOOK_TR_ID,
    TRADES_TR_ID,
    Audit,
    Changes,
    Priority,
    SlotManager,
    SlotRecord,
    Usage,
    usable_capacity,
)
from tradestream.upstream import Op

T = TRADES_TR_ID
B = ORDER_BOOK_TR_ID
H, P, S, D = Priority.HOLDING, Priority.PICK, Priority.SCANNER, Priority.DEMAND


class Upstream:
    """What the broker has registered per session, built only from the emitted ops; strict
    like KIS: a duplicate subscribe, an unknown unsubscribe or one too many is an error. A
    session that is `down` has no connection: the broker forgot its registrations and its
    ops are dropped, until a reconnect registers the manager's snapshot."""

    def __init__(self, capacity: dict[str, int]) -> None:
        self.capacity = dict(capacity)
        self.regs: dict[str, set[tuple[str, str]]] = {s: set() for s in capacity}
        self.down: set[str] = set()

    def apply(self, changes: Changes) -> None:
        for op in changes.ops:
            if op.session in self.down:
                continue  # no socket: dropped (the reconnect's snapshot supersedes it)
            regs = self.regs[op.session]
            key = (op.tr_id, op.code)
            if op.action == "subscribe":
                assert key not in regs, f"duplicate subscribe {op}"
                regs.add(key)
                assert len(regs) <= self.capacity[op.session], f"over capacity at {op}"
            else:
                assert key in regs, f"unsubscribe of an unregistered key {op}"
                regs.remove(key)

    def lost(self, session: str) -> None:
        del self.regs[session], self.capacity[session]
        self.down.discard(session)

    def added(self, session: str, capacity: int) -> None:
        self.regs[session] = set()
        self.capacity[session] = capacity


def sub(session: str, code: str, tr_id: str = T) -> Op:
    return Op(session, "subscribe", tr_id, code)


def unsub(session: str, code: str, tr_id: str = T) -> Op:
    return Op(session, "unsubscribe", tr_id, code)


def slot_of(m: SlotManager, code: str, tr_id: str = T) -> SlotRecord:
    rec = m.slot(tr_id, code)
    assert rec is not None, f"{tr_id}/{code} has no slot"
    return rec


def actions(changes: Changes) -> list[tuple[str, str]]:
    return [(a.action, a.code) for a in changes.audit]


def codes(regs: Iterable[tuple[str, str]]) -> set[str]:
    return {code for _, code in regs}


def fill(m: SlotManager, n: int, priority: Priority, start: float = 0.0) -> None:
    """Claim n codes 000000.. at `priority`, one second apart."""
    for i in range(n):
        m.claim(priority, T, f"{i:06d}", start + i)


# ------------------------------------------------------------------ capacity rule


def test_usable_capacity_follows_kis_session_rule() -> None:
    # kis.md §3: 41 per session over all TR IDs, minus the execution notice, minus a spare
    assert usable_capacity() == 39
    assert usable_capacity(41, notices=0, margin=0) == 41
    assert usable_capacity(41, notices=2, margin=1) == 38
    with pytest.raises(ValueError):
        usable_capacity(1, notices=1, margin=1)


# ------------------------------------------------------------------ seed 002's test plan


def test_subscribe() -> None:
    m = SlotManager({"kis": usable_capacity()})
    ch = m.claim(H, T, "005930", now=1.0)
    assert ch.ops == (sub("kis", "005930"),)
    assert actions(ch) == [("grant", "005930")]
    assert m.registrations("kis") == {(T, "005930")}
    [rec] = m.slots()
    assert (rec.session, rec.tr_id, rec.code, rec.priority) == ("kis", T, "005930", H)
    assert rec.claims == (H,) and rec.subscribed_at == 1.0 and rec.last_data_at is None


def test_slot_limit_with_eviction() -> None:
    m = SlotManager({"kis": 40})
    fill(m, 40, S)
    assert m.usage() == {"kis": Usage(40, 40)}

    # a 41st scanner find: nothing below SCANNER to evict, so it waits
    ch = m.claim(S, T, "999998", now=50.0)
    assert ch.ops == () and actions(ch) == [("pending", "999998")]
    assert "no slot" in ch.audit[0].reason and ch.audit[0].session is None
    # a client's demand is refused outright, with a reason for `no_slot`
    ch = m.claim(D, T, "999997", now=50.0)
    assert ch.ops == () and [r.code for r in ch.refused] == ["999997"]
    assert ch.refused[0].priority is D and "pool full (40/40)" in ch.refused[0].reason
    assert actions(ch) == [("refuse", "999997")]

    # a holding evicts the oldest scanner find, on its session, unsubscribing first
    ch = m.claim(H, T, "999999", now=51.0)
    assert ch.ops == (unsub("kis", "000000"), sub("kis", "999999"))
    assert actions(ch) == [("evict", "000000"), ("grant", "999999"), ("pending", "000000")]
    assert m.usage()["kis"].used == 40
    assert [(p.code, p.priority) for p in m.pending()] == [("000000", S), ("999998", S)]


def test_portfolio_sync() -> None:
    m = SlotManager({"kis": 10})
    ch = m.on_fill("005930", "buy", 10, now=1.0)
    assert ch.ops == (sub("kis", "005930"),)
    assert slot_of(m, "005930").priority is H
    assert m.positions == {"005930": 10}

    assert m.on_fill("005930", "buy", 5, now=2.0).ops == ()  # already held
    assert m.on_fill("005930", "sell", 12, now=3.0).ops == ()  # 3 left
    assert m.positions == {"005930": 3}
    ch = m.on_fill("005930", "sell", 3, now=4.0)  # sold out: released
    assert ch.ops == (unsub("kis", "005930"),)
    assert actions(ch) == [("release", "005930")]
    assert m.positions == {} and m.registrations("kis") == frozenset()

    # drift: a missed buy fill and a missed sell fill; the reconcile repairs both
    m.on_fill("000660", "buy", 1, now=5.0)
    ch = m.set_positions({"035720": 7, "000660": 0, "068270": -1}, now=6.0)
    assert ch.ops == (unsub("kis", "000660"), sub("kis", "035720"))
    assert m.positions == {"035720": 7}
    assert {(r.code, r.priority) for r in m.slots()} == {("035720", H)}


# ------------------------------------------------------------------ priority in place


def test_upgrade_and_downgrade_in_place_emit_no_ops() -> None:
    m = SlotManager({"kis": 5}, scanner_dwell_s=60.0)
    assert m.claim(D, T, "005930", 1.0).ops == (sub("kis", "005930"),)
    ch = m.claim(H, T, "005930", 2.0)
    assert ch.ops == () and actions(ch) == [("upgrade", "005930")]
    assert slot_of(m, "005930").priority is H
    assert m.claim(S, T, "005930", 3.0).ops == ()  # a worse claim just joins: no audit either
    ch = m.release(H, T, "005930", 4.0)
    assert ch.ops == () and actions(ch) == [("downgrade", "005930")]
    assert ch.audit[0].priority is S and slot_of(m, "005930").claims == (S, D)
    assert slot_of(m, "005930").subscribed_at == 1.0
    ch = m.release(S, T, "005930", 100.0)  # old enough: no dwell; DEMAND remains
    assert ch.ops == () and actions(ch) == [("downgrade", "005930")]
    ch = m.release(D, T, "005930", 101.0)
    assert ch.ops == (unsub("kis", "005930"),) and actions(ch) == [("release", "005930")]


def test_claims_are_idempotent() -> None:
    m = SlotManager({"kis": 5})
    m.claim(D, T, "005930", 1.0)
    assert m.claim(D, T, "005930", 2.0) == Changes()
    assert m.release(D, T, "005930", 3.0).ops == (unsub("kis", "005930"),)
    assert m.release(D, T, "005930", 4.0) == Changes()  # absent: no-op


def test_downgrade_lets_a_pending_claim_evict() -> None:
    m = SlotManager({"kis": 2})
    m.claim(H, T, "A", 1.0)
    m.claim(D, T, "A", 1.0)
    m.claim(H, T, "B", 2.0)
    m.claim(P, T, "C", 3.0)  # full of holdings: waits
    ch = m.release(H, T, "A", 4.0)  # A is DEMAND now: below the waiting pick
    assert ch.ops == (unsub("kis", "A"), sub("kis", "C"))
    assert actions(ch) == [("downgrade", "A"), ("evict", "A"), ("grant", "C"), ("drop", "A")]
    assert [r.code for r in ch.dropped] == ["A"] and ch.refused == ()
    assert m.pending() == [] and m.claims(T, "A") == ()


# ------------------------------------------------------------------ eviction rules


def test_never_evicts_equal_or_higher_priority() -> None:
    m = SlotManager({"kis": 3})
    fill(m, 3, P)
    for priority in (P, S):
        ch = m.claim(priority, T, f"new{priority}", 10.0)
        assert ch.ops == () and actions(ch) == [("pending", f"new{priority}")]
    ch = m.claim(D, T, "newD", 10.0)
    assert ch.ops == () and len(ch.refused) == 1 and m.claims(T, "newD") == ()
    ch = m.claim(H, T, "newH", 11.0)
    assert ch.ops == (unsub("kis", "000000"), sub("kis", "newH"))
    assert ch.audit[0] == Audit(
        11.0, "evict", "kis", T, "000000", P, "for H0STCNT0/newH at HOLDING"
    )
    # full of holdings: even a holding waits
    m2 = SlotManager({"kis": 2})
    fill(m2, 2, H)
    ch = m2.claim(H, T, "late", 5.0)
    assert ch.ops == () and [p.code for p in m2.pending()] == ["late"]


def test_evicts_lowest_priority_then_oldest_across_the_pool() -> None:
    m = SlotManager({"a": 2, "b": 2})
    m.claim(S, T, "s-old", 1.0)  # a
    m.claim(D, T, "d-new", 2.0)  # b
    m.claim(S, T, "s-new", 3.0)  # a
    m.claim(D, T, "d-old", 0.5)  # b: claimed last, but...
    m.release(D, T, "d-new", 4.0)
    m.claim(D, T, "d-new", 5.0)  # ...b again, granted after d-old
    assert codes(m.registrations("b")) == {"d-old", "d-new"}
    ch = m.claim(P, T, "pick", 6.0)
    # lowest priority first (DEMAND), then the oldest grant; the newcomer takes its session
    assert ch.ops == (unsub("b", "d-old"), sub("b", "pick"))
    assert [r.code for r in ch.dropped] == ["d-old"]  # evicted DEMAND: reported, not pending
    ch = m.claim(P, T, "pick2", 7.0)
    assert ch.ops == (unsub("b", "d-new"), sub("b", "pick2"))
    ch = m.claim(P, T, "pick3", 8.0)  # no DEMAND left: the oldest scanner find goes
    assert ch.ops == (unsub("a", "s-old"), sub("a", "pick3"))
    assert [p.code for p in m.pending()] == ["s-old"]


def test_pending_is_granted_best_priority_then_oldest_claim() -> None:
    m = SlotManager({"kis": 2})
    fill(m, 2, H)
    m.claim(S, T, "s1", 10.0)
    m.claim(P, T, "p1", 11.0)
    m.claim(S, T, "s2", 12.0)
    m.claim(P, T, "p0", 9.0)  # claimed last, but the claim time orders
    m.claim(D, T, "d", 13.0)  # refused, not kept
    assert [(p.code, p.priority) for p in m.pending()] == [
        ("p0", P),
        ("p1", P),
        ("s1", S),
        ("s2", S),
    ]
    assert m.release(H, T, "000000", 20.0).ops == (unsub("kis", "000000"), sub("kis", "p0"))
    assert m.release(H, T, "000001", 21.0).ops == (unsub("kis", "000001"), sub("kis", "p1"))
    assert m.release(P, T, "p0", 22.0).ops == (unsub("kis", "p0"), sub("kis", "s1"))
    assert m.release(P, T, "p1", 23.0).ops == (unsub("kis", "p1"), sub("kis", "s2"))
    assert m.pending() == [] and m.claims(T, "d") == ()


def test_evicted_claim_comes_back_when_capacity_frees() -> None:
    m = SlotManager({"kis": 1})
    m.set_scanner(["X"], 0.0)
    assert m.claim(P, T, "Y", 1.0).ops == (unsub("kis", "X"), sub("kis", "Y"))
    ch = m.release(P, T, "Y", 2.0)
    assert ch.ops == (unsub("kis", "Y"), sub("kis", "X"))
    assert actions(ch) == [("release", "Y"), ("grant", "X")]
    assert slot_of(m, "X").subscribed_at == 2.0


def test_refused_demand_is_not_kept_pending() -> None:
    m = SlotManager({"kis": 1})
    m.claim(S, T, "X", 0.0)
    assert len(m.claim(D, T, "Y", 1.0).refused) == 1
    ch = m.release(S, T, "X", 1000.0)
    assert ch.ops == (unsub("kis", "X"),) and m.pending() == []


def test_demand_on_a_pending_key_is_refused_but_the_pending_claim_stays() -> None:
    m = SlotManager({"kis": 1})
    m.claim(S, T, "X", 0.0)
    m.claim(S, T, "Y", 1.0)  # pending
    ch = m.claim(D, T, "Y", 2.0)
    assert [r.code for r in ch.refused] == ["Y"] and actions(ch) == [("refuse", "Y")]
    assert [(p.code, p.claims) for p in m.pending()] == [("Y", (S,))]


# ------------------------------------------------------------------ picks and scanner sets


def test_set_picks_replaces_the_set_and_counts_each_tr_id() -> None:
    m = SlotManager({"kis": 4})
    ch = m.set_picks(["A", "B"], 1.0, tr_ids=(T, B))
    assert ch.ops == (sub("kis", "A"), sub("kis", "A", B), sub("kis", "B"), sub("kis", "B", B))
    assert m.usage()["kis"] == Usage(4, 4)
    ch = m.set_picks(["B", "C"], 2.0, tr_ids=(T, B))  # full: A's two go before C's two come
    assert ch.ops == (unsub("kis", "A"), unsub("kis", "A", B), sub("kis", "C"), sub("kis", "C", B))
    ch = m.set_picks(["B"], 3.0)  # trades only now
    assert set(ch.ops) == {unsub("kis", "B", B), unsub("kis", "C"), unsub("kis", "C", B)}
    assert m.registrations("kis") == {(T, "B")}


def test_set_picks_frees_before_it_claims_so_nothing_churns() -> None:
    m = SlotManager({"kis": 2})
    m.set_picks(["A", "B"], 0.0)
    m.set_scanner(["X"], 0.0)  # waits
    ch = m.set_picks(["C", "D"], 1.0)
    assert ch.ops == (unsub("kis", "A"), unsub("kis", "B"), sub("kis", "C"), sub("kis", "D"))
    assert "evict" not in [a.action for a in ch.audit]  # X was never granted in between
    assert [p.code for p in m.pending()] == ["X"]


def test_set_picks_ranks_earlier_codes_first() -> None:
    m = SlotManager({"kis": 2})
    m.set_picks(["first", "second", "third"], 0.0)
    assert codes(m.registrations("kis")) == {"first", "second"}
    assert [p.code for p in m.pending()] == ["third"]


def test_scanner_dwell_defers_release_to_tick() -> None:
    m = SlotManager({"kis": 5}, scanner_dwell_s=60.0)
    m.set_scanner(["X", "Y"], 0.0)
    ch = m.set_scanner(["Y"], 10.0)  # X granted 10 s ago: kept
    assert ch.ops == () and actions(ch) == [("defer", "X")]
    assert slot_of(m, "X").retiring_at == 60.0
    assert m.set_scanner(["Y"], 11.0) == Changes()  # deferral audited once
    assert m.tick(59.9).ops == ()
    ch = m.tick(60.0)
    assert ch.ops == (unsub("kis", "X"),) and actions(ch) == [("release", "X")]
    ch = m.set_scanner([], 61.0)  # Y is old enough: released at once
    assert ch.ops == (unsub("kis", "Y"),)


def test_scanner_back_within_dwell_keeps_its_slot() -> None:
    m = SlotManager({"kis": 5}, scanner_dwell_s=60.0)
    m.set_scanner(["X"], 0.0)
    m.set_scanner([], 10.0)
    assert m.set_scanner(["X"], 20.0).ops == ()
    assert slot_of(m, "X").retiring_at is None
    assert m.tick(100.0).ops == () and m.registrations("kis") == {(T, "X")}


def test_retiring_scanner_is_evicted_before_an_active_one() -> None:
    m = SlotManager({"kis": 2}, scanner_dwell_s=60.0)
    m.set_scanner(["old"], 0.0)
    m.set_scanner(["old", "new"], 5.0)
    m.set_scanner(["old"], 10.0)  # "new" retires
    ch = m.claim(P, T, "pick", 11.0)
    assert ch.ops == (unsub("kis", "new"), sub("kis", "pick"))
    assert m.pending() == []  # a retiring claim does not wait: it ended
    assert m.claims(T, "new") == ()


# ------------------------------------------------------------------ sessions


def test_balance_across_sessions_most_free_first_ties_in_order() -> None:
    m = SlotManager({"a": 3, "b": 3, "c": 2})
    placed = [m.claim(S, T, str(i), float(i)).ops[0].session for i in range(8)]
    assert placed == ["a", "b", "a", "b", "c", "a", "b", "c"]
    assert m.usage() == {"a": Usage(3, 3), "b": Usage(3, 3), "c": Usage(2, 2)}


def test_session_lost_moves_holdings_and_picks_evicting_lower() -> None:
    m = SlotManager({"a": 2, "b": 2})
    m.claim(H, T, "h", 1.0)  # a
    m.claim(S, T, "s", 2.0)  # b
    m.claim(P, T, "p", 3.0)  # a
    m.claim(D, T, "d", 4.0)  # b
    m.claim(D, T, "h", 5.0)  # a client also watches h: it rides along
    up = Upstream({"a": 2, "b": 2})
    up.regs = {"a": {(T, "h"), (T, "p")}, "b": {(T, "s"), (T, "d")}}
    up.lost("a")
    ch = m.session_lost("a", 10.0)
    up.apply(ch)
    assert all(op.session == "b" for op in ch.ops)  # nothing for the dead socket
    assert ch.ops == (unsub("b", "d"), unsub("b", "s"), sub("b", "h"), sub("b", "p"))
    assert [a.action for a in ch.audit] == ["evict", "move", "evict", "move", "pending", "drop"]
    assert [r.code for r in ch.dropped] == ["d"]
    assert m.registrations("b") == {(T, "h"), (T, "p")} == up.regs["b"]
    assert slot_of(m, "h").claims == (H, D)
    assert [(p.code, p.priority) for p in m.pending()] == [("s", S)]
    assert m.usage() == {"b": Usage(2, 2)} and m.registrations("a") == frozenset()

    ch = m.session_added("a", 2, 20.0)  # back: the pending find gets a slot there
    assert ch.ops == (sub("a", "s"),)
    assert m.pending() == [] and m.claims(T, "d") == ()


def test_session_lost_slots_take_free_capacity_elsewhere() -> None:
    m = SlotManager({"a": 2, "b": 3})
    m.claim(S, T, "s", 1.0)  # b
    m.claim(D, T, "d", 2.0)  # a
    m.claim(D, T, "x", 3.0)  # b
    ch = m.session_lost("b", 4.0)
    assert ch.ops == (sub("a", "s"),)
    assert [r.code for r in ch.dropped] == ["x"]  # no room left for it
    assert actions(ch) == [("move", "s"), ("drop", "x")]


def test_session_lost_with_no_other_session_and_back() -> None:
    m = SlotManager({"kis": 3})
    m.on_fill("H1", "buy", 1, 0.0)
    m.set_picks(["P1"], 0.0)
    m.claim(D, T, "D1", 0.0)
    ch = m.session_lost("kis", 1.0)
    assert ch.ops == () and [r.code for r in ch.dropped] == ["D1"]
    assert [p.code for p in m.pending()] == ["H1", "P1"] and m.usage() == {}
    assert m.session_lost("kis", 2.0) == Changes()  # unknown: ignored
    ch = m.session_added("kis", 3, 3.0)
    assert ch.ops == (sub("kis", "H1"), sub("kis", "P1"))
    with pytest.raises(ValueError):
        m.session_added("kis", 3, 4.0)


def test_new_slots_prefer_up_sessions_and_a_down_one_keeps_its_own() -> None:
    m = SlotManager({"a": 3, "b": 3})
    m.claim(P, T, "p1", 0.0)  # a
    m.claim(P, T, "p2", 0.0)  # b
    m.set_session_up("b", False)  # reconnecting: not lost
    assert m.registrations("b") == {(T, "p2")} and not m.is_up("b") and m.is_up("a")
    assert [m.claim(D, T, c, 1.0).ops for c in ("d1", "d2")] == [
        (sub("a", "d1"),),
        (sub("a", "d2"),),
    ]  # b has more room, but a is up
    ch = m.claim(H, T, "h", 2.0)  # a is full: the holding evicts demand on the up session,
    assert ch.ops == (unsub("a", "d1"), sub("a", "h"), sub("b", "d1"))  # which moves to b
    assert actions(ch) == [("evict", "d1"), ("grant", "h"), ("grant", "d1")]
    ch = m.claim(D, T, "d3", 3.0)  # nothing below DEMAND on a: b's free room, not a refusal
    assert ch.ops == (sub("b", "d3"),) and ch.refused == ()
    m.set_session_up("b", True)
    m.release(D, T, "d3", 4.0)
    assert m.claim(D, T, "d4", 4.0).ops == (sub("b", "d4"),)
    m.set_session_up("nope", False)  # unknown: ignored
    assert not m.is_up("nope")


def test_set_capacity_shrinks_in_eviction_order_and_grows_into_pending() -> None:
    m = SlotManager({"a": 3})
    m.claim(P, T, "p", 0.0)
    m.claim(S, T, "s", 1.0)
    m.claim(H, T, "h", 2.0)
    m.session_added("b", 2, 3.0)
    m.claim(D, T, "d", 4.0)  # b
    m.claim(S, T, "s2", 5.0)  # b
    ch = m.set_capacity("a", 1, 6.0)  # keeps h; s, then p, must go: p evicts d on b, s waits
    assert ch.ops == (unsub("a", "s"), unsub("a", "p"), unsub("b", "d"), sub("b", "p"))
    assert actions(ch) == [
        ("shrink", "s"),
        ("shrink", "p"),
        ("evict", "d"),
        ("move", "p"),
        ("pending", "s"),
        ("drop", "d"),
    ]
    assert ch.audit[0].reason == "capacity of a now 1" and ch.audit[3].session == "b"
    assert [r.code for r in ch.dropped] == ["d"]
    assert m.usage() == {"a": Usage(1, 1), "b": Usage(2, 2)}
    ch = m.set_capacity("a", 2, 7.0)
    assert ch.ops == (sub("a", "s"),) and m.pending() == []
    assert m.set_capacity("a", 2, 8.0) == Changes() == m.set_capacity("nope", 1, 8.0)
    with pytest.raises(ValueError):
        m.set_capacity("a", -1, 9.0)


def test_session_lost_and_added_resize_others_in_the_same_call() -> None:
    m = SlotManager({"a": 2, "b": 2})
    m.set_picks(["p1", "p2", "p3"], 0.0)  # a: p1, p3; b: p2
    ch = m.session_lost("a", 1.0, resize={"b": 1})  # the notice moves to b
    assert ch.ops == ()  # b keeps p2; p1 and p3 wait: net nothing to send
    assert [p.code for p in m.pending()] == ["p1", "p3"]
    ch = m.session_added("a", 1, 2.0, resize={"b": 2})  # a back with the notice: b grows
    assert set(ch.ops) == {sub("b", "p1"), sub("a", "p3")}  # a re-added: b first in ties
    assert m.usage() == {"a": Usage(1, 1), "b": Usage(2, 2)}


def test_stale_hours_per_tr_id() -> None:
    m = SlotManager({"kis": 3}, stale_s=10.0)
    m.claim(P, T, "A", 0.0)
    m.claim(P, "H0NXCNT0", "A", 0.0)
    nxt_only = {"H0NXCNT0"}.__contains__  # KRX closed, NXT open (say 16:00)
    m.tick(0.0, nxt_only)
    assert [r.tr_id for r in m.tick(10.0, nxt_only).stale] == ["H0NXCNT0"]
    m.tick(20.0, True)  # KRX opens: its slots count from now
    assert m.tick(29.0, True).stale == ()
    assert [r.tr_id for r in m.tick(30.0, True).stale] == [T]


def test_on_data_from_another_session_does_not_count() -> None:
    m = SlotManager({"a": 1, "b": 1}, stale_s=10.0)
    m.claim(P, T, "A", 0.0)
    m.on_data(T, "A", 5.0, "b")
    assert slot_of(m, "A").last_data_at is None
    m.on_data(T, "A", 6.0, "a")
    assert slot_of(m, "A").last_data_at == 6.0


def test_registrations_are_the_reconnect_state() -> None:
    m = SlotManager({"a": 3, "b": 3})
    m.set_picks(["A", "B", "C"], 0.0, tr_ids=(T, B))
    regs = m.registrations("a") | m.registrations("b")
    assert regs == {(tr, c) for c in "ABC" for tr in (T, B)}
    assert m.registrations("a").isdisjoint(m.registrations("b"))
    assert m.registrations("nope") == frozenset()


# ------------------------------------------------------------------ stale slots


def test_stale_detection_once_per_episode() -> None:
    m = SlotManager({"kis": 2}, stale_s=10.0)
    m.claim(H, T, "A", 0.0)
    assert m.tick(0.0).stale == ()  # the first tick sees the market open
    m.on_data(T, "A", 5.0)
    assert m.tick(14.9).stale == ()
    ch = m.tick(15.0)
    assert [(r.session, r.code) for r in ch.stale] == [("kis", "A")]
    assert actions(ch) == [("stale", "A")] and ch.ops == ()
    assert slot_of(m, "A").stale
    assert m.tick(30.0).stale == ()  # same episode: reported once
    m.on_data(T, "A", 31.0)  # episode over
    assert m.tick(40.0).stale == ()
    assert [r.code for r in m.tick(41.0).stale] == ["A"]
    m.on_data(B, "nope", 42.0)  # not a slot: ignored


def test_stale_waits_for_the_market_and_counts_from_the_open() -> None:
    m = SlotManager({"kis": 2}, stale_s=10.0)
    m.claim(H, T, "A", 0.0)
    assert m.tick(100.0, market_open=False).stale == ()
    assert m.tick(200.0, market_open=True).stale == ()  # the open: a fresh start
    assert m.tick(209.0, market_open=True).stale == ()
    assert [r.code for r in m.tick(210.0, market_open=True).stale] == ["A"]
    m.tick(300.0, market_open=False)  # closed overnight: the next open starts afresh
    assert m.tick(400.0, market_open=True).stale == ()
    assert [r.code for r in m.tick(410.0, market_open=True).stale] == ["A"]


def test_reregister_returns_unsubscribe_then_subscribe() -> None:
    m = SlotManager({"kis": 2})
    m.claim(P, T, "A", 0.0)
    ch = m.reregister("kis", T, "A", 5.0)
    assert ch.ops == (unsub("kis", "A"), sub("kis", "A"))
    assert actions(ch) == [("reregister", "A")]
    assert m.reregister("other", T, "A", 5.0) == Changes()
    assert m.reregister("kis", T, "B", 5.0) == Changes()


# ------------------------------------------------------------------ introspection, checks


def test_introspection_records() -> None:
    m = SlotManager({"a": 1, "b": 1}, audit_max=3)
    m.claim(S, T, "X", 1.0)
    m.claim(D, T, "X", 2.0)
    m.claim(H, T, "Y", 3.0)
    m.on_data(T, "X", 4.0)
    m.claim(P, T, "Z", 5.0)  # evicts X (SCANNER)
    [x] = [r for r in m.slots() if r.code == "Z"]
    assert (x.session, x.priority, x.claims, x.subscribed_at) == ("a", P, (P,), 5.0)
    assert [(p.code, p.priority, p.claims, p.claimed_at) for p in m.pending()] == [
        ("X", S, (S,), 1.0)
    ]
    assert m.usage() == {"a": Usage(1, 1), "b": Usage(1, 1)}
    assert m.usage()["a"].free == 0
    log = m.audit_log
    assert len(log) == 3 and [a.action for a in log] == ["grant", "drop", "pending"]


def test_argument_checks() -> None:
    with pytest.raises(ValueError):
        SlotManager({"kis": -1})
    with pytest.raises(ValueError):
        SlotManager({"kis": 1}, stale_s=0.0)
    m = SlotManager({"kis": 1})
    with pytest.raises(ValueError):
        m.on_fill("A", "buy", 0, 0.0)
    with pytest.raises(ValueError):
        m.on_fill("A", "hold", 1, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.set_picks(["A"], 0.0, tr_ids=())
    m.set_picks(["A"], 0.0, tr_ids=T)  # a bare tr_id is one tr_id, not eight characters
    assert m.registrations("kis") == {(T, "A")}


def test_holding_tr_ids_follow_the_code() -> None:
    m = SlotManager({"kis": 5}, holding_tr_ids=(T, B))
    assert len(m.on_fill("A", "buy", 1, 0.0).ops) == 2
    assert m.on_fill("A", "buy", 1, 1.0, tr_ids=(T,)).ops == (unsub("kis", "A", B),)
    assert m.set_positions({"A": 2, "C": 1}, 2.0).ops == (sub("kis", "C"), sub("kis", "C", B))
    assert m.registrations("kis") == {(T, "A"), (T, "C"), (B, "C")}
    assert len(m.on_fill("C", "sell", 5, 3.0).ops) == 2  # oversold: closed, both released


# ------------------------------------------------------------------ properties

CODES = ("A", "B", "C", "D", "E", "F", "G")
TR_SETS = ((T,), (T, B))
SESSIONS = ("s0", "s1", "s2")
priorities = st.sampled_from(list(Priority))
keys = st.tuples(st.sampled_from((T, B)), st.sampled_from(CODES))
code_lists = st.lists(st.sampled_from(CODES), unique=True, max_size=5)


class SlotMachine(RuleBasedStateMachine):
    """Random sequences of every call; a model upstream applies only the emitted ops (and
    replaces a session's registrations on a simulated reconnect)."""

    @initialize(
        caps=st.lists(st.integers(0, 4), min_size=1, max_size=3),
        dwell=st.sampled_from([0.0, 5.0, 30.0]),
    )
    def start(self, caps: list[int], dwell: float) -> None:
        capacity = dict(zip(SESSIONS, caps, strict=False))
        self.m = SlotManager(capacity, scanner_dwell_s=dwell, stale_s=10.0)
        self.up = Upstream(capacity)
        self.now = 0.0
        # the HOLDING and PICK claims the manager must have: they are never dropped
        self.model: dict[Priority, set[tuple[str, str]]] = {H: set(), P: set()}
        self.holding_trs: dict[str, tuple[str, ...]] = {}
        self.demand: set[tuple[str, str]] = set()  # claimed and neither released nor lost
        self.scanner: set[tuple[str, str]] = set()

    def apply(self, ch: Changes) -> None:
        self.up.apply(ch)
        # new slots go to a down session only when no up session had room for them
        if any(a.action in ("grant", "move") and a.session in self.up.down for a in ch.audit):
            assert all(u.free == 0 for n, u in self.m.usage().items() if n not in self.up.down)
        assert all(r.priority is D for r in ch.refused + ch.dropped)
        for r in ch.refused + ch.dropped:
            self.demand.discard((r.tr_id, r.code))
        for i, a in enumerate(ch.audit):
            if a.action == "evict":  # the next grant is the newcomer: strictly better
                nxt = next(b for b in ch.audit[i + 1 :] if b.action in ("grant", "move"))
                assert nxt.priority < a.priority and nxt.session == a.session

    @rule(priority=priorities, key=keys, dt=st.sampled_from([0.0, 1.0]))
    def claim(self, priority: Priority, key: tuple[str, str], dt: float) -> None:
        self.now += dt
        self.apply(self.m.claim(priority, *key, self.now))
        if priority in self.model:
            self.model[priority].add(key)
        elif priority is S:
            self.scanner.add(key)
        elif self.m.claims(*key) and D in self.m.claims(*key):
            self.demand.add(key)

    @rule(priority=priorities, key=keys)
    def release(self, priority: Priority, key: tuple[str, str]) -> None:
        self.apply(self.m.release(priority, *key, self.now))
        if priority in self.model:
            self.model[priority].discard(key)
        elif priority is S:
            self.scanner.discard(key)
        else:
            self.demand.discard(key)

    @rule(picks=code_lists, trs=st.sampled_from(TR_SETS))
    def set_picks(self, picks: list[str], trs: tuple[str, ...]) -> None:
        self.apply(self.m.set_picks(picks, self.now, trs))
        self.model[P] = {(tr, c) for c in picks for tr in trs}

    @rule(finds=code_lists, trs=st.sampled_from(TR_SETS))
    def set_scanner(self, finds: list[str], trs: tuple[str, ...]) -> None:
        self.apply(self.m.set_scanner(finds, self.now, trs))
        self.scanner = {(tr, c) for c in finds for tr in trs}

    @rule(
        code=st.sampled_from(CODES),
        side=st.sampled_from(["buy", "sell"]),
        qty=st.integers(1, 3),
        trs=st.sampled_from([None, *TR_SETS]),
    )
    def on_fill(self, code: str, side: str, qty: int, trs: tuple[str, ...] | None) -> None:
        held = self.m.positions.get(code, 0)
        self.apply(self.m.on_fill(code, side, qty, self.now, trs))  # type: ignore[arg-type]
        if side == "buy":
            old = self.holding_trs.get(code, ())
            new = trs or old or (T,)
            self.holding_trs[code] = new
            self.model[H] -= {(tr, code) for tr in old}
            self.model[H] |= {(tr, code) for tr in new}
            assert self.m.positions[code] == held + qty
        elif held - qty <= 0:
            self.holding_trs.pop(code, None)
            self.model[H] = {k for k in self.model[H] if k[1] != code}
            assert code not in self.m.positions

    @rule(
        positions=st.dictionaries(st.sampled_from(CODES), st.integers(-1, 3), max_size=4),
        trs=st.sampled_from([None, *TR_SETS]),
    )
    def set_positions(self, positions: dict[str, int], trs: tuple[str, ...] | None) -> None:
        self.apply(self.m.set_positions(positions, self.now, trs))
        held = [c for c, q in positions.items() if q > 0]
        self.holding_trs = {c: trs or self.holding_trs.get(c, (T,)) for c in held}
        self.model[H] = {(tr, c) for c, t in self.holding_trs.items() for tr in t}
        assert self.m.positions == {c: q for c, q in positions.items() if q > 0}

    @precondition(lambda self: len(self.up.regs) > 0)
    @rule(data=st.data())
    def session_lost(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.up.regs)))
        self.up.lost(name)
        self.apply(self.m.session_lost(name, self.now))
        assert self.m.registrations(name) == frozenset()

    @rule(name=st.sampled_from(SESSIONS), cap=st.integers(0, 4))
    def session_added(self, name: str, cap: int) -> None:
        if name in self.up.regs:
            with pytest.raises(ValueError):
                self.m.session_added(name, cap, self.now)
            return
        self.up.added(name, cap)
        self.apply(self.m.session_added(name, cap, self.now))

    @rule(dt=st.sampled_from([0.5, 3.0, 11.0, 40.0]), market_open=st.booleans())
    def tick(self, dt: float, market_open: bool) -> None:
        self.now += dt
        ch = self.m.tick(self.now, market_open)
        self.apply(ch)
        assert market_open or ch.stale == ()
        assert len({(r.tr_id, r.code) for r in ch.stale}) == len(ch.stale)

    @rule(key=keys)
    def on_data(self, key: tuple[str, str]) -> None:
        self.m.on_data(*key, self.now)

    @precondition(lambda self: len(self.m.slots()) > 0)
    @rule(data=st.data())
    def reregister(self, data: st.DataObject) -> None:
        rec = data.draw(st.sampled_from(self.m.slots()))
        self.apply(self.m.reregister(rec.session, rec.tr_id, rec.code, self.now))

    @precondition(lambda self: len(set(self.up.regs) - self.up.down) > 0)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        """A plain disconnect: the session keeps its slots, gets nothing new while an up
        session can take it, and its ops are dropped meanwhile."""
        name = data.draw(st.sampled_from(sorted(set(self.up.regs) - self.up.down)))
        before = self.m.registrations(name)
        self.up.down.add(name)
        self.up.regs[name] = set()
        self.m.set_session_up(name, False)
        assert self.m.registrations(name) == before and not self.m.is_up(name)

    @precondition(lambda self: len(self.up.down) > 0)
    @rule(data=st.data())
    def reconnect(self, data: st.DataObject) -> None:
        """The reconnect registers the snapshot; from then on the ops apply strictly to it
        (no duplicate subscribe, no unknown unsubscribe), which the invariant and `apply`
        check."""
        name = data.draw(st.sampled_from(sorted(self.up.down)))
        snapshot = self.m.registrations(name)
        assert len(snapshot) <= self.up.capacity[name]
        self.up.down.discard(name)
        self.up.regs[name] = set(snapshot)
        self.m.set_session_up(name, True)

    @precondition(lambda self: len(self.up.regs) > 0)
    @rule(data=st.data(), cap=st.integers(0, 4))
    def set_capacity(self, data: st.DataObject, cap: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.up.regs)))
        self.up.capacity[name] = cap
        self.apply(self.m.set_capacity(name, cap, self.now))
        assert self.m.usage()[name].used <= cap

    @invariant()
    def upstream_matches_and_fits(self) -> None:
        usage = self.m.usage()
        assert set(usage) == set(self.up.regs)
        seen: set[tuple[str, str]] = set()
        for name, regs in self.up.regs.items():
            if name in self.up.down:
                assert regs == set()
                regs = set(self.m.registrations(name))  # what its reconnect will register
            else:
                assert regs == self.m.registrations(name)
            assert usage[name] == Usage(len(regs), self.up.capacity[name])
            assert usage[name].used <= usage[name].capacity
            assert seen.isdisjoint(regs)  # one registration per key in the pool
            seen |= regs

    @invariant()
    def nothing_waits_that_could_be_granted(self) -> None:
        slots, pending = self.m.slots(), self.m.pending()
        usage = self.m.usage().values()
        for p in pending:
            assert D not in p.claims  # DEMAND is never kept waiting
            assert sum(u.free for u in usage) == 0
            assert all(s.priority <= p.priority for s in slots), (p, slots)

    @invariant()
    def holding_and_pick_claims_are_never_lost(self) -> None:
        held: dict[Priority, set[tuple[str, str]]] = {pr: set() for pr in Priority}
        records = [(r.tr_id, r.code, r.claims) for r in self.m.slots()]
        records += [(r.tr_id, r.code, r.claims) for r in self.m.pending()]
        for tr, code, claims in records:
            assert claims and claims == tuple(sorted(set(claims)))
            for pr in claims:
                held[pr].add((tr, code))
        assert held[H] == self.model[H] and held[P] == self.model[P]
        assert held[D] <= self.demand
        assert self.scanner <= held[S]
        for key in held[S] - self.scanner:  # a dropped find lingers only while it dwells
            rec = self.m.slot(*key)
            assert rec is not None and rec.retiring_at is not None


SlotMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSlotMachine = SlotMachine.TestCase


def test_set_pick_keys_replaces_picks_by_pairs_without_churn() -> None:
    m = SlotManager({"s1": 5})
    first = m.set_pick_keys([("H0STCNT0", "005930"), ("H0STASP0", "005930")], 0.0)
    assert sorted((o.action, o.tr_id) for o in first.ops) == [
        ("subscribe", "H0STASP0"),
        ("subscribe", "H0STCNT0"),
    ]
    again = m.set_pick_keys(
        [("H0STCNT0", "005930"), ("H0STASP0", "005930"), ("H0STCNT0", "000660")], 1.0
    )
    assert [(o.action, o.tr_id, o.code) for o in again.ops] == [("subscribe", "H0STCNT0", "000660")]
    assert m.registrations("s1") == {
        ("H0STCNT0", "005930"),
        ("H0STASP0", "005930"),
        ("H0STCNT0", "000660"),
    }
