"""The thin shell around the slot manager: applies its decisions to the live KIS sessions.

`SlotDriver` owns the pure `SlotManager` and keeps every session's upstream registrations equal
to the manager's state:
- each `Op` (register / unregister) goes to the session's live socket at once; a session that
  is down gets nothing (counted as dropped), and on every (re)connect registers exactly
  `registrations(session)`;
- a session is lost for good when it has not been up for `lost_after_s`, but never while a
  connection of it is coming up (within UP_AFTER_S of the deadline): a reconnect just before the
  deadline keeps its slots. A session lost while connected unregisters everything first, so its
  moved slots are not registered twice. Once a second, `step` compares what each live
  connection has asked for (`OpSink.registered`) with the manager and sends the difference, a
  safety net that should find nothing (it logs and counts what it does find);
- the execution-notice registration (one per HTS id) rides on the first session and takes one
  of its registrations; if that session is lost it moves to a survivor (whose capacity shrinks
  by one) and back when the first session is back;
- it tells the manager which sessions are up, so new slots go to live sessions first;
- serves the gateway's client demand (`price:X` -> trades, `orderbook:X` -> order book):
  reference-counted per subscription, refused with `no_slot` when there is no room;
- follows holdings (the account book's positions) and the picks and scanner sets;
- notes data per slot from every event type (`on_event`), and runs `tick` once a second:
  scanner dwell expiry, stale slots while their market is open (re-registered once per
  episode), sessions lost or back;
- hands every audit record to `on_audit` (stored and kept for the status endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from tradestream.errors import ProtocolError
from tradestream.events import Event, IndexTick, OrderBook, ProgramTrade, Tick
from tradestream.feeds.session import CONNECTED, FeedStatus
from tradestream.slots.policy import (
    ORDER_BOOK_TR_ID,
    TRADES_TR_ID,
    Audit,
    Changes,
    Priority,
    Rejection,
    SlotManager,
)
from tradestream.topics import Topic
from tradestream.upstream import INDEX_TR, ORDER_BOOK_TRS, PROGRAM_TRADE_TRS, TRADE_TRS, Op

log = logging.getLogger(__name__)

TICK_S = 1.0
UP_AFTER_S = 3.0  # connected this long without streaming: up (see _is_up)
# the notice's carrier not up this long while another session is: the notice moves there
# (KIS does not resend missed notices, so it cannot wait for lost_after_s)
NOTICE_MOVE_AFTER_S = 5.0
TR_FOR_KIND = {"price": TRADES_TR_ID, "orderbook": ORDER_BOOK_TR_ID}

Key = tuple[str, str]  # (tr_id, code)

# The registration an event arrived on, by event type and venue (kis.py's TR tables).
_TR_BY_VENUE: dict[type, dict[str, str]] = {
    Tick: {venue: tr for tr, venue in TRADE_TRS.items()},
    OrderBook: {venue: tr for tr, venue in ORDER_BOOK_TRS.items()},
    ProgramTrade: {venue: tr for tr, venue in PROGRAM_TRADE_TRS.items()},
}


def data_key(ev: Event) -> Key | None:
    """The (tr_id, code) registration a market-data event came from, or None for events that
    are not slot data (notices, news, derived events). A KIS record does not name its TR,
    but its type and venue do: H0STCNT0 ticks are "KRX", H0NXASP0 books "NXT" and so on."""
    if type(ev) is IndexTick:
        return (INDEX_TR, ev.code)
    trs = _TR_BY_VENUE.get(type(ev))
    if trs is None:
        return None
    tr = trs.get(ev.venue)  # type: ignore[union-attr]
    return None if tr is None else (tr, ev.code)  # type: ignore[union-attr]


def _always_open(tr_id: str) -> bool:
    return True


class OpSink(Protocol):
    """A session's socket, as the driver sees it (KisAdapter)."""

    def send_op(self, op: Op) -> bool:
        """Queue one register/unregister on the live connection; False (dropped) when down."""

    def registered(self) -> frozenset[Key] | None:
        """What the live connection has asked for so far (at connect and since), in the order
        the broker gets it; None when there is no live connection."""


@dataclass
class SlotSession:
    name: str
    capacity: int  # market-data registrations when it does not carry the execution notice
    sink: OpSink
    status: FeedStatus


class SlotDriver:
    def __init__(
        self,
        manager: SlotManager,
        sessions: Iterable[SlotSession],
        *,
        notice: Key | None = None,  # (H0STCNI0 or H0STCNI9, HTS id)
        static_prices: frozenset[str] = frozenset(),  # served by other feeds (LS): no slot
        static_books: frozenset[str] = frozenset(),
        on_audit: Callable[[Audit], None] | None = None,
        on_dropped: Callable[[Rejection], None] | None = None,
        lost_after_s: float = 120.0,
        notice_move_after_s: float = NOTICE_MOVE_AFTER_S,
        market_open: Callable[[str], bool] = _always_open,  # per tr_id (slots/hours.py)
        clock: Callable[[], float] = trio.current_time,
        max_demand_per_user: int = 0,  # codes a user's demand alone may hold (0: no cap)
    ) -> None:
        """`manager` must know every session at its `capacity`; with `notice`, the first
        session is the notice's home and its capacity shrinks by one here."""
        self.manager = manager
        self.sessions = {s.name: s for s in sessions}
        self._static = {TRADES_TR_ID: static_prices, ORDER_BOOK_TR_ID: static_books}
        self._on_audit = on_audit
        self._on_dropped = on_dropped
        self._max_demand_per_user = max_demand_per_user
        self._user_demand: dict[str, set[Key]] = {}  # user -> demand slots made for them
        self._demand_by: dict[Key, str] = {}  # such a slot -> the user it was made for
        self._lost_after_s = lost_after_s
        self._notice_move_after_s = notice_move_after_s
        self._market_open = market_open
        self._clock = clock
        # (tr_id, code) -> the subscriptions holding it: (connection id, topic as subscribed),
        # so price:X and price:X@1s on one connection are two holders
        self._demand: dict[Key, set[tuple[int, str]]] = {}
        self._lost: set[str] = set()
        self._up: dict[str, bool] = {name: False for name in self.sessions}
        self._down_since: dict[str, float] = {}
        self._connected: dict[str, tuple[float, int] | None] = {}  # since, at connect number
        self._notice = notice
        self._home = next(iter(self.sessions), None) if notice is not None else None
        self._notice_at: str | None = None
        self._notice_down_since: float | None = None  # its carrier not up since then
        # ops_sent: queued on a live socket; ops_dropped: its session was down (the next
        # connect registers the whole state); ops_skipped: its session is lost
        self.stats = {"ops_sent": 0, "ops_dropped": 0, "ops_skipped": 0, "refused": 0,
                      "dropped": 0, "stale_reregistered": 0, "sessions_lost": 0,
                      "sessions_back": 0, "notice_moves": 0, "reconciled": 0}
        if self._home is not None:
            home = self.sessions[self._home]
            if home.capacity < 1:
                raise ValueError(f"session {home.name!r} cannot carry the execution notice")
            self.apply(self.manager.set_capacity(home.name, home.capacity - 1, clock()))
            self._notice_at = home.name  # registered at its first connect

    # -- applying decisions --------------------------------------------------------------------
    def apply(self, changes: Changes) -> Changes:
        for op in changes.ops:
            if op.session not in self.sessions or op.session in self._lost:
                self.stats["ops_skipped"] += 1
                continue
            self._send(op)
        for audit in changes.audit:
            if audit.action in ("evict", "refuse", "drop", "move", "stale", "shrink"):
                log.info("slot %s %s:%s p%d on %s: %s", audit.action, audit.tr_id, audit.code,
                         audit.priority, audit.session, audit.reason)
            if self._on_audit is not None:
                self._on_audit(audit)
        for rejection in changes.dropped:
            self.stats["dropped"] += 1
            self._drop_demand((rejection.tr_id, rejection.code))
            if self._on_dropped is not None:
                self._on_dropped(rejection)
        return changes

    def _send(self, op: Op) -> None:
        if self.sessions[op.session].sink.send_op(op):
            self.stats["ops_sent"] += 1
        else:
            self.stats["ops_dropped"] += 1

    # -- the gateway's demand ------------------------------------------------------------------
    def claim(self, owner: int, topic: Topic, user: str = "") -> None:
        """A client's subscription needs `topic` upstream. Refused (ProtocolError) with
        `no_slot` when the pool has no room for it, or `demand_limit` when `user` already
        holds `max_demand_per_user` slots that exist for their demand alone: one client cannot
        take all the room there is for everybody's demand."""
        tr_id = TR_FOR_KIND.get(topic.kind)
        if tr_id is None or topic.arg is None or topic.arg in self._static[tr_id]:
            return  # not a slot topic, or served without a KIS slot
        key = (tr_id, topic.arg)
        owners = self._demand.get(key)
        if owners:
            owners.add((owner, topic.raw))
            return
        fresh = self.manager.slot(tr_id, topic.arg) is None  # this claim would make a slot
        cap = self._max_demand_per_user
        if fresh and user and cap and len(self._user_demand.get(user, ())) >= cap:
            self.stats["refused"] += 1
            raise ProtocolError("demand_limit", f"no upstream slot for {topic.name}: you "
                                f"already hold {cap} streams that only your subscriptions "
                                "need", topic.raw)
        changes = self.apply(self.manager.claim(Priority.DEMAND, tr_id, topic.arg, self._clock()))
        if changes.refused:
            self.stats["refused"] += 1
            raise ProtocolError("no_slot", f"no upstream slot for {topic.name}: "
                                f"{changes.refused[0].reason}", topic.raw)
        self._demand[key] = {(owner, topic.raw)}
        if fresh and user:
            self._user_demand.setdefault(user, set()).add(key)
            self._demand_by[key] = user

    def _drop_demand(self, key: Key) -> None:
        """No subscription holds `key` any more (released, or its slot dropped)."""
        self._demand.pop(key, None)
        user = self._demand_by.pop(key, None)
        if user is not None:
            keys = self._user_demand[user]
            keys.discard(key)
            if not keys:
                del self._user_demand[user]

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
            self._drop_demand(key)
            self.apply(self.manager.release(Priority.DEMAND, tr_id, topic.arg, self._clock()))

    # -- holdings, picks, scanner --------------------------------------------------------------
    def set_positions(self, positions: Mapping[str, int]) -> Changes:
        return self.apply(self.manager.set_positions(positions, self._clock()))

    def set_picks(self, keys: Iterable[Key]) -> Changes:
        """Replace the daily picks: (tr_id, code) pairs."""
        return self.apply(self.manager.set_pick_keys(list(keys), self._clock()))

    def set_scanner(self, codes: Iterable[str]) -> Changes:
        return self.apply(self.manager.set_scanner(list(codes), self._clock()))

    def claim_static(self, priority: Priority, tr_id: str, code: str) -> Changes:
        return self.apply(self.manager.claim(priority, tr_id, code, self._clock()))

    def on_data(self, tr_id: str, code: str, session: str | None = None) -> None:
        self.manager.on_data(tr_id, code, self._clock(), session)

    def on_event(self, ev: Event) -> None:
        """Note data for the slot an event of a KIS session came on (per event: cheap)."""
        if ev.source in self.sessions:
            key = data_key(ev)
            if key is not None:
                self.manager.on_data(key[0], key[1], self._clock(), ev.source)

    # -- the periodic part ---------------------------------------------------------------------
    def step(self) -> None:
        now = self._clock()
        self._up = {name: self._is_up(name, s, now) for name, s in self.sessions.items()}
        for name, up in self._up.items():
            self.manager.set_session_up(name, up)  # a lost session: ignored
        for name, session in self.sessions.items():
            if self._up[name]:
                self._down_since.pop(name, None)
                if name in self._lost:
                    self._back(name, now)
                continue
            down_for = now - self._down_since.setdefault(name, now)
            # A connection coming up gets UP_AFTER_S to prove itself: it has registered its
            # slots already, and losing it now would only move them away and back.
            coming_up = session.status.state in CONNECTED
            if name not in self._lost and down_for >= self._lost_after_s and (
                    not coming_up or down_for >= self._lost_after_s + UP_AFTER_S):
                self._lose(name, now, down_for)
        self._follow_notice(now)
        changes = self.apply(self.manager.tick(now, self._market_open))
        for rec in changes.stale:
            if rec.session in self._lost:
                continue
            self.stats["stale_reregistered"] += 1
            self.apply(self.manager.reregister(rec.session, rec.tr_id, rec.code, now))
        self.reconcile()

    def _lose(self, name: str, now: float, down_for: float) -> None:
        session = self.sessions[name]
        log.warning("slot session %s not up for %.0fs: moving its slots", name, down_for)
        live = session.sink.registered()
        for key in sorted(live or ()):  # connected after all: unregister before the move
            self._send(Op(name, "unsubscribe", *key))
        self._lost.add(name)
        self.stats["sessions_lost"] += 1
        resize: dict[str, int] = {}
        target = None
        if self._notice_at == name:
            self._notice_at = None
            target = self._notice_target()
            if target is not None:
                resize[target] = self.sessions[target].capacity - 1
        self.apply(self.manager.session_lost(name, now, resize=resize))
        if target is not None:
            self._move_notice_to(target, f"{name} lost")

    def _back(self, name: str, now: float) -> None:
        capacity = self.sessions[name].capacity
        self._lost.discard(name)
        self.stats["sessions_back"] += 1
        log.info("slot session %s is back: %d slots", name, capacity)
        if self._notice is None:
            self.apply(self.manager.session_added(name, capacity, now))
        elif self._notice_at is None:  # nobody carries the notice: this one does
            self.apply(self.manager.session_added(name, capacity - 1, now))
            self._move_notice_to(name, f"{name} back")
        elif name == self._home:  # home again: the stand-in hands the notice back
            stand_in = self._notice_at
            self._send(Op(stand_in, "unsubscribe", *self._notice))
            self._notice_at = None
            self.apply(self.manager.session_added(
                name, capacity - 1, now, resize={stand_in: self.sessions[stand_in].capacity}))
            self._move_notice_to(name, f"{name} back")
        else:
            self.apply(self.manager.session_added(name, capacity, now))

    def _notice_target(self) -> str | None:
        """A survivor for the notice: up first, then the most free registrations."""
        usage = self.manager.usage()
        best = [n for n in self.sessions if n not in self._lost and self.sessions[n].capacity]
        best.sort(key=lambda n: (not self._up[n], -usage[n].free))
        return best[0] if best else None

    def _follow_notice(self, now: float) -> None:
        """Keep the notice on a live session. KIS does not resend a notice missed while no
        socket carried it, so it does not wait for its carrier to be lost: home takes it back
        as soon as home is up, and a carrier not up for NOTICE_MOVE_AFTER_S (a stand-in picked
        when nothing was up, or home down briefly) hands it to a session that is."""
        if self._notice is None or self._home is None:
            return
        at, home = self._notice_at, self._home
        if at != home and home not in self._lost and self._up[home]:
            self._hand_notice(home, now, f"{home} up again")
            return
        if at is not None and self._up[at]:
            self._notice_down_since = None
            return
        if self._notice_down_since is None:
            self._notice_down_since = now
        if now - self._notice_down_since < self._notice_move_after_s:
            return
        usage = self.manager.usage()
        up = [n for n in self.sessions if self._up[n] and n not in self._lost and n != at
              and self.sessions[n].capacity >= 1]
        if up:
            target = max(up, key=lambda n: usage[n].free)
            self._hand_notice(target, now, f"{at or 'nobody'} not up for "
                                           f"{now - self._notice_down_since:.0f}s")

    def _hand_notice(self, to: str, now: float, why: str) -> None:
        """Move the notice to `to` (not lost): `to` gives up a registration for it first, then
        the old carrier, if it is not lost, unregisters it and gets that one back."""
        assert self._notice is not None
        old = self._notice_at
        self.apply(self.manager.set_capacity(to, self.sessions[to].capacity - 1, now))
        if old is not None and old not in self._lost:
            self._send(Op(old, "unsubscribe", *self._notice))
            self.apply(self.manager.set_capacity(old, self.sessions[old].capacity, now))
        self._move_notice_to(to, why)

    def _move_notice_to(self, name: str, why: str) -> None:
        """Register the notice on `name`, whose manager capacity already left room for it."""
        assert self._notice is not None
        self._notice_at = name
        self._notice_down_since = None
        self.stats["notice_moves"] += 1
        log.warning("execution notices now on %s (%s)", name, why)
        self._send(Op(name, "subscribe", *self._notice))

    def reconcile(self) -> int:
        """Make every live connection's registrations the manager's: send what differs.
        Returns how many ops that took; 0 unless something went wrong elsewhere."""
        sent = 0
        for name, session in self.sessions.items():
            actual = session.sink.registered()
            if actual is None:
                continue
            want = frozenset(self.registrations(name))
            if actual == want:
                continue
            extra, missing = sorted(actual - want), sorted(want - actual)
            log.warning("slot session %s out of step with the manager: unregistering %s, "
                        "registering %s", name, extra, missing)
            for key in extra:
                self._send(Op(name, "unsubscribe", *key))
            for key in missing:
                self._send(Op(name, "subscribe", *key))
            sent += len(extra) + len(missing)
        self.stats["reconciled"] += sent
        return sent

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
    def registrations(self, session: str) -> list[Key]:
        """What `session` registers at a (re)connect: its slots, and the notice if it carries
        it; nothing while it is lost."""
        if session in self._lost:
            return []
        regs = sorted(self.manager.registrations(session))
        if self._notice is not None and self._notice_at == session:
            regs.append(self._notice)
        return regs

    @property
    def notice_session(self) -> str | None:
        return self._notice_at

    def as_dict(self) -> dict[str, Any]:
        usage = {name: {"used": u.used, "capacity": u.capacity, "up": self.manager.is_up(name)}
                 for name, u in self.manager.usage().items()}
        return {"usage": usage, "lost_sessions": sorted(self._lost),
                "notice_session": self._notice_at,
                "pending": len(self.manager.pending()), "demand": len(self._demand),
                **self.stats,
                "recent": [_audit_dict(a) for a in self.manager.audit_log[-20:]]}

    def listing(self, *, admin: bool = True) -> dict[str, Any]:
        """Every slot, the pending claims and the counters (`GET /api/slots`); for anyone
        but an admin without the holdings (`without_holdings`)."""
        out = {**self.as_dict(), "slots": self.slots(), "pending": self.pending()}
        return out if admin else without_holdings(out)

    def summary(self, *, admin: bool = True) -> dict[str, Any]:
        """The status endpoint's `slots` section: `as_dict()`, or for anyone but an admin the
        same counters from the listing without the holdings."""
        if admin:
            return self.as_dict()
        public = self.listing(admin=False)
        public["pending"] = len(public.pop("pending"))
        del public["slots"]
        return public

    def slots(self) -> list[dict[str, Any]]:
        return [{"session": r.session, "tr_id": r.tr_id, "code": r.code,
                 "priority": r.priority.name.lower(), "claims": [c.name.lower() for c in r.claims],
                 "subscribed_at": r.subscribed_at, "last_data_at": r.last_data_at,
                 "stale": r.stale, "retiring_at": r.retiring_at}
                for r in self.manager.slots()]

    def pending(self) -> list[dict[str, Any]]:
        return [{"tr_id": p.tr_id, "code": p.code, "priority": p.priority.name.lower(),
                 "claims": [c.name.lower() for c in p.claims], "claimed_at": p.claimed_at}
                for p in self.manager.pending()]


def _audit_dict(a: Audit) -> dict[str, Any]:
    return {"at": a.at, "action": a.action, "session": a.session, "tr_id": a.tr_id,
            "code": a.code, "priority": a.priority.name.lower(), "reason": a.reason}


def without_holdings(listing: dict[str, Any]) -> dict[str, Any]:
    """The slots listing for a non-admin: no audits, no holding claims (a slot held only for
    a holding is left out; others keep their next-best claim as their priority).

    Nothing may tell the holdings apart: each session's `used` counts the rows listed (the
    manager's count less the listed rows would be the holding-only slots), and rows are
    sorted by (session, tr_id, code), not by priority (holdings first would show which
    listed slots also carry a holding claim)."""
    out = {k: v for k, v in listing.items() if k not in ("recent", "slots", "pending", "usage")}
    for part in ("slots", "pending"):
        rows = []
        for row in listing[part]:
            claims = [c for c in row["claims"] if c != "holding"]
            if claims:
                rows.append({**row, "claims": claims, "priority": claims[0]})
        rows.sort(key=lambda r: (r.get("session") or "", r["tr_id"], r["code"]))
        out[part] = rows
    if "usage" in listing:
        used: dict[str, int] = {}
        for row in out["slots"]:
            used[row.get("session") or ""] = used.get(row.get("session") or "", 0) + 1
        out["usage"] = {name: {**u, "used": used.get(name, 0)}
                        for name, u in listing["usage"].items()}
    return out
