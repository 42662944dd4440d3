"""The thin shell around the slot manager: applies its decisions to the live KIS sessions.

`SlotDriver` owns the pure `SlotManager` and:
- sends each `Op` (register / unregister) through the session's live socket; a session that is
  down gets nothing, and on every (re)connect registers exactly `registrations(session)`;
- serves the gateway's client demand (`price:X` -> trades, `orderbook:X` -> order book):
  reference-counted per connection, refused with `no_slot` when there is no room;
- follows holdings (the account book's positions) and the picks and scanner sets;
- runs `tick` once a second: scanner dwell expiry, stale slots (re-registered once per
  episode), and sessions lost for good (not connected for `lost_after_s`) or back;
- hands every audit record to `on_audit` (stored and kept for the status endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from tradestream.feeds.session import FeedStatus
from tradestream.gateway.protocol import ProtocolError
from tradestream.gateway.topics import Topic
from tradestream.slots.policy import (
    ORDER_BOOK_TR_ID,
    TRADES_TR_ID,
    Audit,
    Changes,
    Op,
    Priority,
    Rejection,
    SlotManager,
)

log = logging.getLogger(__name__)

TICK_S = 1.0
UP_AFTER_S = 3.0  # connected this long without streaming: up (see _is_up)
TR_FOR_KIND = {"price": TRADES_TR_ID, "orderbook": ORDER_BOOK_TR_ID}
TRADE_TRS = frozenset({"H0STCNT0", "H0NXCNT0", "H0UNCNT0"})
BOOK_TRS = frozenset({"H0STASP0", "H0NXASP0", "H0UNASP0"})


class OpSink(Protocol):
    def send_op(self, op: Op) -> None: ...


@dataclass
class SlotSession:
    name: str
    capacity: int
    sink: OpSink
    status: FeedStatus


class SlotDriver:
    def __init__(
        self,
        manager: SlotManager,
        sessions: Iterable[SlotSession],
        *,
        static_prices: frozenset[str] = frozenset(),  # served by other feeds (LS): no slot
        static_books: frozenset[str] = frozenset(),
        on_audit: Callable[[Audit], None] | None = None,
        on_dropped: Callable[[Rejection], None] | None = None,
        lost_after_s: float = 120.0,
        market_open: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.manager = manager
        self.sessions = {s.name: s for s in sessions}
        self._static = {TRADES_TR_ID: static_prices, ORDER_BOOK_TR_ID: static_books}
        self._on_audit = on_audit
        self._on_dropped = on_dropped
        self._lost_after_s = lost_after_s
        self._market_open = market_open
        self._clock = clock
        # (tr_id, code) -> the subscriptions holding it: (connection id, topic as subscribed),
        # so price:X and price:X@1s on one connection are two holders
        self._demand: dict[tuple[str, str], set[tuple[int, str]]] = {}
        self._lost: set[str] = set()
        self._down_since: dict[str, float] = {}
        self._connected: dict[str, tuple[float, int] | None] = {}  # since, at connect number
        self.stats = {"ops_sent": 0, "ops_skipped": 0, "refused": 0, "dropped": 0,
                      "stale_reregistered": 0, "sessions_lost": 0}

    # -- applying decisions --------------------------------------------------------------------
    def apply(self, changes: Changes) -> Changes:
        for op in changes.ops:
            session = self.sessions.get(op.session)
            if session is None or op.session in self._lost:
                self.stats["ops_skipped"] += 1
                continue
            session.sink.send_op(op)
            self.stats["ops_sent"] += 1
        for audit in changes.audit:
            if audit.action in ("evict", "refuse", "drop", "move", "stale"):
                log.info("slot %s %s:%s p%d on %s: %s", audit.action, audit.tr_id, audit.code,
                         audit.priority, audit.session, audit.reason)
            if self._on_audit is not None:
                self._on_audit(audit)
        for rejection in changes.dropped:
            self.stats["dropped"] += 1
            self._demand.pop((rejection.tr_id, rejection.code), None)
            if self._on_dropped is not None:
                self._on_dropped(rejection)
        return changes

    # -- the gateway's demand ------------------------------------------------------------------
    def claim(self, owner: int, topic: Topic) -> None:
        tr_id = TR_FOR_KIND.get(topic.kind)
        if tr_id is None or topic.arg is None or topic.arg in self._static[tr_id]:
            return  # not a slot topic, or served without a KIS slot
        key = (tr_id, topic.arg)
        owners = self._demand.get(key)
        if owners:
            owners.add((owner, topic.raw))
            return
        changes = self.apply(self.manager.claim(Priority.DEMAND, tr_id, topic.arg, self._clock()))
        if changes.refused:
            self.stats["refused"] += 1
            raise ProtocolError("no_slot", f"no upstream slot for {topic.name}: "
                                f"{changes.refused[0].reason}", topic.raw)
        self._demand[key] = {(owner, topic.raw)}

    def release(self, owner: int, topic: Topic) -> None:
        tr_id = TR_FOR_KIND.get(topic.kind)
        if tr_id is None or topic.arg is None:
            return
        key = (tr_id, topic.arg)
        owners = self._demand.get(key)
        if not owners or (owner, topic.raw) not in owners:
            return
        owners.discard((owner, topic.raw))
        if not owners:
            del self._demand[key]
            self.apply(self.manager.release(Priority.DEMAND, tr_id, topic.arg, self._clock()))

    # -- holdings, picks, scanner --------------------------------------------------------------
    def set_positions(self, positions: Mapping[str, int]) -> Changes:
        return self.apply(self.manager.set_positions(positions, self._clock()))

    def set_picks(self, keys: Iterable[tuple[str, str]]) -> Changes:
        """Replace the daily picks: (tr_id, code) pairs."""
        return self.apply(self.manager.set_pick_keys(list(keys), self._clock()))

    def set_scanner(self, codes: Iterable[str]) -> Changes:
        return self.apply(self.manager.set_scanner(list(codes), self._clock()))

    def claim_static(self, priority: Priority, tr_id: str, code: str) -> Changes:
        return self.apply(self.manager.claim(priority, tr_id, code, self._clock()))

    def on_data(self, tr_id: str, code: str) -> None:
        self.manager.on_data(tr_id, code, self._clock())

    # -- the periodic part ---------------------------------------------------------------------
    def step(self) -> None:
        now = self._clock()
        for name, session in self.sessions.items():
            if self._is_up(name, session, now):
                self._down_since.pop(name, None)
                if name in self._lost:
                    self._lost.discard(name)
                    log.info("slot session %s is back: %d slots", name, session.capacity)
                    self.apply(self.manager.session_added(name, session.capacity, now))
            else:
                since = self._down_since.setdefault(name, now)
                if name not in self._lost and now - since >= self._lost_after_s:
                    self._lost.add(name)
                    self.stats["sessions_lost"] += 1
                    log.warning("slot session %s down for %.0fs: moving its slots", name,
                                now - since)
                    self.apply(self.manager.session_lost(name, now))
        changes = self.apply(self.manager.tick(now, self._market_open()))
        for rec in changes.stale:
            if rec.session in self._lost:
                continue
            self.stats["stale_reregistered"] += 1
            self.apply(self.manager.reregister(rec.session, rec.tr_id, rec.code, now))

    def _is_up(self, name: str, session: SlotSession, now: float) -> bool:
        """Streaming; or connected without a break for UP_AFTER_S (a lost session comes back
        with nothing registered, so it cannot stream before it gets its slots again). A
        session that reconnects over and over (its key in use elsewhere, say) is not up."""
        st = session.status
        if st.state == "streaming":
            return True
        connected = st.state == "subscribing"
        seen = self._connected.get(name)
        if not connected or seen is None or seen[1] != st.connects:
            self._connected[name] = (now, st.connects) if connected else None
            return False
        return now - seen[0] >= UP_AFTER_S

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            await trio.sleep(TICK_S)
            self.step()

    # -- introspection -------------------------------------------------------------------------
    def registrations(self, session: str) -> list[tuple[str, str]]:
        if session in self._lost:
            return []
        return sorted(self.manager.registrations(session))

    def as_dict(self) -> dict[str, Any]:
        usage = {name: {"used": u.used, "capacity": u.capacity}
                 for name, u in self.manager.usage().items()}
        return {"usage": usage, "lost_sessions": sorted(self._lost),
                "pending": len(self.manager.pending()), "demand": len(self._demand),
                **self.stats,
                "recent": [_audit_dict(a) for a in self.manager.audit_log[-20:]]}

    def slots(self) -> list[dict[str, Any]]:
        return [{"session": r.session, "tr_id": r.tr_id, "code": r.code,
                 "priority": r.priority.name.lower(), "claims": [c.name.lower() for c in r.claims],
                 "subscribed_at": r.subscribed_at, "last_data_at": r.last_data_at,
                 "stale": r.stale, "retiring_at": r.retiring_at}
                for r in self.manager.slots()]

    def pending(self) -> list[dict[str, Any]]:
        return [{"tr_id": p.tr_id, "code": p.code, "priority": p.priority.name.lower(),
                 "claimed_at": p.claimed_at} for p in self.manager.pending()]


def _audit_dict(a: Audit) -> dict[str, Any]:
    return {"at": a.at, "action": a.action, "session": a.session, "tr_id": a.tr_id,
            "code": a.code, "priority": a.priority.name.lower(), "reason": a.reason}
