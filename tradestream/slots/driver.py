"""The thin shell around the slot manager: applies its decisions to the live KIS sessions.

`SlotDriver` owns the pure `SlotManager` and keeps every session's upstream registrations equal
to the manager's state; the decisions are made by the pure parts it composes:
- `demand.DemandBook`: the gateway's client demand (`price:X` -> trades, `orderbook:X` -> order
  book), reference-counted per subscription, and the per-user quota. The driver makes the
  manager's DEMAND claims and refuses a subscription (`SlotRefused`) with `no_slot` when
  there is no room, `demand_limit` past the quota;
- `liveness.Liveness`: which sessions are up, lost for good (not up for `lost_after_s`, never
  while a connection is coming up: a reconnect just before the deadline keeps its slots) or
  back. The driver tells the manager which sessions are up, so new slots go to live sessions
  first; a session lost while connected unregisters everything first, so its moved slots are
  not registered twice;
- `notice.NoticeCarrier`: the execution-notice registration (one per HTS id) rides on the
  first session and takes one of its registrations; it moves to a survivor (whose capacity
  shrinks by one) when its carrier is lost or not up for a while, and back home;
- `views`: the REST listing and the status section (`as_dict`, `listing`, `summary`).

What the driver itself does:
- each `Op` (register / unregister) goes to the session's live socket at once; a session that
  is down gets nothing (counted as dropped), and on every (re)connect registers exactly
  `registrations(session)`;
- once a second (`step`): liveness, the notice, scanner dwell expiry, stale slots while their
  market is open (re-registered once per episode), and `reconcile`: what each live connection
  has asked for (`OpSink.registered`) compared with the manager, the difference sent, a
  safety net that should find nothing (it logs and counts what it does find);
- follows holdings (the account book's positions) and the picks and scanner sets, and notes
  data per slot from every event type (`on_event`);
- hands every audit record to `on_audit` (stored and kept for the status endpoint; see
  `views.audit_event`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import trio

from tradestream.errors import SlotRefused
from tradestream.events import Event, FeedGap, IndexTick, OrderBook, ProgramTrade, Tick
from tradestream.feeds.session import FeedStatus
from tradestream.slots import views
from tradestream.slots.demand import DemandBook, Key
from tradestream.slots.liveness import Liveness
from tradestream.slots.notice import NOTICE_MOVE_AFTER_S, NoticeCarrier, Seat, survivor
from tradestream.slots.policy import Audit, Changes, Priority, Rejection, SlotManager
from tradestream.topics import Topic
from tradestream.upstream import INDEX_TR, ORDER_BOOK_TRS, PROGRAM_TRADE_TRS, TRADE_TRS, Op

log = logging.getLogger(__name__)

TICK_S = 1.0  # seconds between steps

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
    broker: str = "kis"
    carries: frozenset[str] | None = None  # the tr_ids it can register (None: any)


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
        self._on_audit = on_audit
        self._on_dropped = on_dropped
        self._market_open = market_open
        self._clock = clock
        self._demand = DemandBook(
            static_prices=static_prices, static_books=static_books, max_per_user=max_demand_per_user
        )
        self._liveness = Liveness(self.sessions, lost_after_s=lost_after_s)
        home = next(iter(self.sessions), None)
        self._notice = (
            None
            if notice is None or home is None
            else NoticeCarrier(notice, home, move_after_s=notice_move_after_s)
        )
        # ops_sent: queued on a live socket; ops_dropped: its session was down (the next
        # connect registers the whole state); ops_skipped: its session is lost
        self.stats = {
            "ops_sent": 0,
            "ops_dropped": 0,
            "ops_skipped": 0,
            "refused": 0,
            "dropped": 0,
            "stale_reregistered": 0,
            "sessions_lost": 0,
            "sessions_back": 0,
            "notice_moves": 0,
            "reconciled": 0,
            "failovers": 0,  # a lost session's codes moved to another broker's sessions
        }
        self._gaps: list[FeedGap] = []  # failovers, for the pipeline (`run`)
        if self._notice is not None:
            first = self.sessions[self._notice.home]
            if first.capacity < 1:
                raise ValueError(f"session {first.name!r} cannot carry the execution notice")
            self.apply(self.manager.set_capacity(first.name, first.capacity - 1, clock()))
            self._notice.carried_by(first.name)  # registered at its first connect

    # -- applying decisions --------------------------------------------------------------------
    def apply(self, changes: Changes) -> Changes:
        for op in changes.ops:
            if op.session not in self.sessions or op.session in self._liveness.lost:
                self.stats["ops_skipped"] += 1
                continue
            self._send(op)
        for audit in changes.audit:
            if audit.action in ("evict", "refuse", "drop", "move", "stale", "shrink"):
                log.info(
                    "slot %s %s:%s p%d on %s: %s",
                    audit.action,
                    audit.tr_id,
                    audit.code,
                    audit.priority,
                    audit.session,
                    audit.reason,
                )
            if self._on_audit is not None:
                self._on_audit(audit)
        for rejection in changes.dropped:
            self.stats["dropped"] += 1
            self._demand.drop((rejection.tr_id, rejection.code))
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
        """A client's subscription needs `topic` upstream. Refused (SlotRefused) with
        `no_slot` when the pool has no room for it, or `demand_limit` when `user` already
        holds `max_demand_per_user` slots that exist for their demand alone: one client cannot
        take all the room there is for everybody's demand."""
        key = self._demand.key(topic)
        if key is None:
            return  # not a slot topic, or served without a KIS slot
        holder = (owner, topic.raw)
        if self._demand.join(key, holder):
            return
        fresh = self.manager.slot(*key) is None  # this claim would make a slot
        refusal = self._demand.refusal(user, fresh, topic)
        if refusal is not None:
            self.stats["refused"] += 1
            raise refusal
        changes = self.apply(self.manager.claim(Priority.DEMAND, *key, self._clock()))
        if changes.refused:
            self.stats["refused"] += 1
            raise SlotRefused(
                "no_slot",
                f"no upstream slot for {topic.name}: {changes.refused[0].reason}",
                topic.raw,
            )
        self._demand.hold(key, holder, user=user, fresh=fresh)

    def release(self, owner: int, topic: Topic) -> None:
        key = self._demand.key(topic)
        if key is not None and self._demand.leave(key, (owner, topic.raw)):
            self.apply(self.manager.release(Priority.DEMAND, *key, self._clock()))

    # -- holdings, picks, scanner --------------------------------------------------------------
    def set_positions(self, positions: Mapping[str, int]) -> Changes:
        return self.apply(self.manager.set_positions(positions, self._clock()))

    def set_picks(self, keys: Iterable[Key]) -> Changes:
        """Replace the daily picks: (tr_id, code) pairs."""
        return self.apply(self.manager.set_pick_keys(list(keys), self._clock()))

    def set_scanner(self, codes: Iterable[str], why: Mapping[str, str] | None = None) -> Changes:
        return self.apply(self.manager.set_scanner(list(codes), self._clock(), why=why))

    def is_market_open(self, tr_id: str) -> bool:
        return self._market_open(tr_id)

    def watched(self, tr_id: str, code: str) -> bool:
        """Claimed by something better than the scanner (a holding, a pick, a client)."""
        return any(p is not Priority.SCANNER for p in self.manager.claims(tr_id, code))

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
        up = self._liveness.look({name: s.status for name, s in self.sessions.items()}, now)
        for name, is_up in up.items():
            self.manager.set_session_up(name, is_up)  # a lost session: ignored
        # one session at a time: each one's move is applied before the next is looked at
        for name, session in self.sessions.items():
            verdict = self._liveness.check(name, session.status, now)
            if verdict is None:
                continue
            if verdict.kind == "back":
                self._back(name, now)
            else:
                self._lose(name, now, verdict.down_for)
        self._follow_notice(now)
        changes = self.apply(self.manager.tick(now, self._market_open))
        for rec in changes.stale:
            if rec.session in self._liveness.lost:
                continue
            self.stats["stale_reregistered"] += 1
            self.apply(self.manager.reregister(rec.session, rec.tr_id, rec.code, now))
        self.reconcile()

    def _lose(self, name: str, now: float, down_for: float) -> None:
        """`name` (already lost to `Liveness`) gives up its slots, and the notice if it has it."""
        session = self.sessions[name]
        log.warning("slot session %s not up for %.0fs: moving its slots", name, down_for)
        live = session.sink.registered()
        for key in sorted(live or ()):  # connected after all: unregister before the move
            self._send(Op(name, "unsubscribe", *key))
        self.stats["sessions_lost"] += 1
        resize: dict[str, int] = {}
        target = None
        if self._notice is not None and self._notice.given_up_by(name):
            target = survivor(self._seats())
            if target is not None:
                resize[target] = self.sessions[target].capacity - 1
        changes = self.apply(self.manager.session_lost(name, now, resize=resize))
        if target is not None:
            self._move_notice_to(target, f"{name} lost")
        self._failover(name, changes, down_for)

    def _failover(self, name: str, changes: Changes, down_for: float) -> None:
        """A lost session's codes that went to another broker's sessions: one feed gap names
        the switch (`source` the lost session, from its last frame to now, `codes` those that
        moved), so clients know, and the backfill fills those codes' minutes."""
        broker = self.sessions[name].broker
        moved: dict[str, list[str]] = {}
        for a in changes.audit:
            if a.action == "move" and a.session is not None and a.session != name:
                if self.sessions[a.session].broker != broker:
                    moved.setdefault(a.session, []).append(a.code)
        if not moved:
            return
        self.stats["failovers"] += 1
        end = datetime.now(UTC)
        last = self.sessions[name].status.last_frame_ns
        start = (
            datetime.fromtimestamp(last / 1e9, UTC) if last else end - timedelta(seconds=down_for)
        )
        codes = tuple(sorted({c for cs in moved.values() for c in cs}))
        where = ", ".join(f"{len(set(cs))} codes moved to {to}" for to, cs in moved.items())
        reason = f"failover: {name} lost (down {down_for:.0f}s); {where}"
        log.warning("%s", reason)
        self._gaps.append(FeedGap(name, start, end, reason, codes))

    def _back(self, name: str, now: float) -> None:
        """`name` (no longer lost to `Liveness`) gets its capacity again, less the notice
        when it takes the notice: nobody carries it, or it is the notice's home."""
        capacity = self.sessions[name].capacity
        self.stats["sessions_back"] += 1
        log.info("slot session %s is back: %d slots", name, capacity)
        notice = self._notice
        if notice is None:
            self.apply(self.manager.session_added(name, capacity, now))
        elif notice.at is None:  # nobody carries the notice: this one does
            self.apply(self.manager.session_added(name, capacity - 1, now))
            self._move_notice_to(name, f"{name} back")
        elif name == notice.home:  # home again: the stand-in hands the notice back
            stand_in = notice.at
            self._send(Op(stand_in, "unsubscribe", *notice.key))
            notice.given_up_by(stand_in)
            self.apply(
                self.manager.session_added(
                    name, capacity - 1, now, resize={stand_in: self.sessions[stand_in].capacity}
                )
            )
            self._move_notice_to(name, f"{name} back")
        else:
            self.apply(self.manager.session_added(name, capacity, now))

    def _seats(self) -> list[Seat]:
        """Every session as the notice's choice of carrier sees it, in order."""
        usage = self.manager.usage()  # lost sessions are not in it
        live = self._liveness
        tr = self._notice.key[0] if self._notice is not None else ""
        return [
            Seat(
                name,
                live.up[name],
                name in live.lost,
                s.capacity,
                usage[name].free if name in usage else 0,
            )
            for name, s in self.sessions.items()
            if s.carries is None or tr in s.carries  # another broker's cannot carry it
        ]

    def _follow_notice(self, now: float) -> None:
        """Keep the notice on a live session (`NoticeCarrier.follow` says where)."""
        if self._notice is None:
            return
        move = self._notice.follow(now, self._seats())
        if move is not None:
            self._hand_notice(move.to, now, move.why)

    def _hand_notice(self, to: str, now: float, why: str) -> None:
        """Move the notice to `to` (not lost): `to` gives up a registration for it first, then
        the old carrier, if it is not lost, unregisters it and gets that one back."""
        assert self._notice is not None
        old = self._notice.at
        self.apply(self.manager.set_capacity(to, self.sessions[to].capacity - 1, now))
        if old is not None and old not in self._liveness.lost:
            self._send(Op(old, "unsubscribe", *self._notice.key))
            self.apply(self.manager.set_capacity(old, self.sessions[old].capacity, now))
        self._move_notice_to(to, why)

    def _move_notice_to(self, name: str, why: str) -> None:
        """Register the notice on `name`, whose manager capacity already left room for it."""
        assert self._notice is not None
        self._notice.carried_by(name)
        self.stats["notice_moves"] += 1
        log.warning("execution notices now on %s (%s)", name, why)
        self._send(Op(name, "subscribe", *self._notice.key))

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
            log.warning(
                "slot session %s out of step with the manager: unregistering %s, registering %s",
                name,
                extra,
                missing,
            )
            for key in extra:
                self._send(Op(name, "unsubscribe", *key))
            for key in missing:
                self._send(Op(name, "subscribe", *key))
            sent += len(extra) + len(missing)
        self.stats["reconciled"] += sent
        return sent

    async def run(
        self,
        gaps_out: trio.MemorySendChannel[Event] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Step once a second until cancelled; failover gaps go to `gaps_out` (the pipeline's
        intake: a blocking edge, one gap per lost session at most), which it owns."""
        with gaps_out if gaps_out is not None else contextlib.nullcontext():
            task_status.started()
            while True:
                await trio.sleep(TICK_S)
                self.step()
                gaps, self._gaps = self._gaps, []
                if gaps_out is not None:
                    for gap in gaps:
                        await gaps_out.send(gap)

    def take_gaps(self) -> list[FeedGap]:
        """The failover gaps since the last call (for a caller that steps the driver itself)."""
        gaps, self._gaps = self._gaps, []
        return gaps

    # -- introspection -------------------------------------------------------------------------
    def registrations(self, session: str) -> list[Key]:
        """What `session` registers at a (re)connect: its slots, and the notice if it carries
        it; nothing while it is lost."""
        if session in self._liveness.lost:
            return []
        regs = sorted(self.manager.registrations(session))
        if self._notice is not None and self._notice.at == session:
            regs.append(self._notice.key)
        return regs

    @property
    def notice_session(self) -> str | None:
        return None if self._notice is None else self._notice.at

    def as_dict(self) -> dict[str, Any]:
        return views.status(
            self.manager,
            lost=self._liveness.lost,
            notice_session=self.notice_session,
            demand=len(self._demand),
            stats=self.stats,
        )

    def listing(self, *, admin: bool = True) -> dict[str, Any]:
        """Every slot, the pending claims and the counters (`GET /api/slots`); for anyone
        but an admin without the holdings (`views.without_holdings`)."""
        return views.listing(self.as_dict(), self.slots(), self.pending(), admin=admin)

    def summary(self, *, admin: bool = True) -> dict[str, Any]:
        """The status endpoint's `slots` section: `as_dict()`, or for anyone but an admin the
        same counters from the listing without the holdings."""
        if admin:
            return self.as_dict()
        return views.public_summary(self.listing(admin=False))

    def slots(self) -> list[dict[str, Any]]:
        return views.slot_rows(self.manager.slots())

    def pending(self) -> list[dict[str, Any]]:
        return views.pending_rows(self.manager.pending())
