"""Slot policy: which real-time registrations each upstream session holds, and why.

KIS allows 41 real-time registrations per WebSocket session, summed over all TR IDs, the
execution-notice registration included (kis.md §3); a registration is one (tr_id, code) pair. This
module decides who gets those scarce registrations. It owns the claims (who wants which
(tr_id, code) at which `Priority`), the slots (which session holds which registration) and the
pending queue, and answers every state-changing call with a `Changes`: the subscribe/unsubscribe
`Op`s to send, in a safe order, plus `Audit` events and the demand claims the caller must refuse
or drop towards its clients.

It is a pure core (STYLE.md §6): no I/O, no Trio, no clock reads; `now` is always an argument.
The feed task applies `Changes.ops`, and on every (re)connect registers exactly
`registrations(session)`, so a reconnect needs no special handling here.

Improvements over seed 002's design:
- the limit is per session over all TR IDs (not "40 per TR_ID"), and capacity is explicit;
- a slot carries all its claims, so priority changes happen in place (no unsubscribe/subscribe
  churn, which KIS warns can get an app key blocked, kis.md §3);
- evicted and refused claims of priority HOLDING/PICK/SCANNER stay pending and come back by
  themselves; nothing ever evicts an equal or higher priority;
- scanner churn is damped by a dwell time; slots with no data are reported once per episode;
- several sessions (app keys) form one pool, balanced by free capacity; new slots go to the
  sessions that are up first (one that is reconnecting keeps what it has, but gets nothing new
  while an up session can take it), and a lost session's slots move to the others;
- a session's capacity can change while it runs (the execution-notice registration moving to
  or from it), taking its lowest-priority slots away if it must.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from tradestream.upstream import KIS_BOOK, KIS_REGISTRATION_LIMIT, KIS_TRADES, Op

TRADES_TR_ID = KIS_TRADES  # domestic stock executions (kis.md §7.1)
ORDER_BOOK_TR_ID = KIS_BOOK  # 10-level order book (kis.md §7.2)
DEFAULT_TR_IDS: tuple[str, ...] = (TRADES_TR_ID,)

KIS_REGISTRATIONS_PER_SESSION = KIS_REGISTRATION_LIMIT  # kis.md §3: per session, all TR IDs
SCANNER_DWELL_S = 300.0  # a scanner find keeps its slot at least this long (anti-churn)
STALE_S = 120.0  # no data on a slot this long while the market is open: report it
AUDIT_MAX = 1000  # audit events kept in memory for the status endpoint
NO_SLOT = "no_slot"  # the gateway's error code for a refused or dropped DEMAND claim


class Priority(IntEnum):
    """Who wants a registration; a lower number is more important."""

    HOLDING = 1  # a position we hold: must be watched
    PICK = 2  # today's picks
    SCANNER = 3  # scanner finds (movers, volume leaders)
    DEMAND = 4  # a gateway client asked for it


AuditAction = Literal[
    "grant",  # a pending key got a slot
    "evict",  # a slot was taken for a better claim
    "refuse",  # a new DEMAND claim found no slot (relay as error code `no_slot`)
    "pending",  # a HOLDING/PICK/SCANNER claim waits for capacity
    "release",  # the last claim on a key went away
    "upgrade",  # a better claim joined a granted slot: priority raised in place
    "downgrade",  # the best claim left a granted slot: priority lowered in place
    "move",  # a slot of a lost session was re-granted on another session
    "drop",  # a DEMAND claim was dropped (evicted or its session lost)
    "defer",  # a scanner release waits for the dwell time
    "stale",  # no data for stale_s while the market is open (once per episode)
    "reregister",  # the caller re-registers a stale slot
    "shrink",  # a slot was taken away because its session's capacity shrank
]
Side = Literal["buy", "sell"]

_Key = tuple[str, str]  # (tr_id, code)
_Stamp = tuple[float, int]  # (claimed_at, sequence): a total order for "oldest first"


def usable_capacity(
    limit: int = KIS_REGISTRATIONS_PER_SESSION, notices: int = 1, margin: int = 1
) -> int:
    """Registrations usable for market data on one KIS session.

    kis.md §3: `limit` (41) counts every registration of the session over all TR IDs, so the
    execution-notice registration (H0STCNI0/H0STCNI9, one per HTS id: `notices`) takes one of
    them, contrary to the seed's belief. `margin` keeps one spare, as the official sample (> 40)
    and python-kis (40) do, so that a reregister or a late ack never hits OPSP0008."""
    usable = limit - notices - margin
    if usable < 0 or min(limit, notices, margin) < 0:
        raise ValueError(f"no usable capacity: limit={limit} notices={notices} margin={margin}")
    return usable


@dataclass(frozen=True, slots=True)
class Audit:
    """Why a slot changed; `session` is None for pending or refused claims."""

    at: float
    action: AuditAction
    session: str | None
    tr_id: str
    code: str
    priority: Priority
    reason: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A DEMAND claim that was refused (new) or dropped (evicted, session lost): tell the
    clients, with error code `NO_SLOT`."""

    tr_id: str
    code: str
    priority: Priority
    reason: str


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """A granted slot, for the status endpoint and for stale reports."""

    session: str
    tr_id: str
    code: str
    priority: Priority
    claims: tuple[Priority, ...]  # best first
    subscribed_at: float  # granted (the eviction and dwell clock)
    last_data_at: float | None
    stale: bool
    retiring_at: float | None  # a released scanner claim ends then (dwell)


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A key waiting for capacity; `pending()` lists them in the order they will be granted."""

    tr_id: str
    code: str
    priority: Priority
    claims: tuple[Priority, ...]
    claimed_at: float


@dataclass(frozen=True, slots=True)
class Usage:
    used: int
    capacity: int

    @property
    def free(self) -> int:
        return self.capacity - self.used


@dataclass(frozen=True, slots=True)
class Changes:
    """The result of one state-changing call.

    `ops`: apply in order; all unsubscribes come before all subscribes, so no session ever
    exceeds its capacity mid-way. Ops are the net difference for the call (a slot evicted and
    re-granted in one call yields nothing), and a lost session gets none (its socket is gone).
    `refused`: new DEMAND claims that got no slot (relay as `no_slot`); `dropped`: DEMAND claims
    that lost their slot. `stale`: slots `tick` found silent."""

    ops: tuple[Op, ...] = ()
    audit: tuple[Audit, ...] = ()
    refused: tuple[Rejection, ...] = ()
    dropped: tuple[Rejection, ...] = ()
    stale: tuple[SlotRecord, ...] = ()

    def ops_for(self, session: str) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.session == session)


class _Slot:
    """A granted registration; mutable so that `on_data` is one dict lookup and two stores."""

    __slots__ = ("session", "granted_at", "seq", "last_data_at", "stale")

    def __init__(self, session: str, granted_at: float, seq: int) -> None:
        self.session = session
        self.granted_at = granted_at
        self.seq = seq
        self.last_data_at: float | None = None
        self.stale = False


class _Call:
    """Scratch state of one call: what the registrations were before, and what to report."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.before: dict[tuple[str, _Key], bool] = {}  # (session, key) -> registered before
        self.extra_ops: list[Op] = []
        self.audit: list[Audit] = []
        self.refused: list[Rejection] = []
        self.dropped: list[Rejection] = []
        self.stale: list[SlotRecord] = []
        # dicts, not sets: ordered, so the audit order is reproducible
        self.new_pending: dict[_Key, None] = {}  # keys that became (or re-became) pending
        self.new_demand: dict[_Key, None] = {}  # keys that got a DEMAND claim in this call
        self.dirty = False  # something changed that may let a pending key in
        self.moved_from: dict[_Key, str] = {}  # keys unseated by session_lost / set_capacity:
        # why, for the "move" audit of their next grant


class SlotManager:
    """Grants scarce upstream registrations to claims by priority, over a pool of sessions.

    A claim is (priority, tr_id, code); claims are idempotent (the caller counts its clients).
    A slot is one registration (tr_id, code) on one session, holding every live claim on that
    key; its priority is the best of them. Keys with claims but no slot are pending. After
    every call this invariant holds: if a key is pending at priority p, every session is full
    and no slot has a priority worse than p. Hence nothing waits that could be granted, and no
    slot is ever taken by an equal or lower priority. With sessions that carry only some
    tr_ids (`carries`), "every session" reads "every session that can carry the key".

    The set-based calls own their priority: `set_picks` replaces every PICK claim,
    `set_scanner` every SCANNER claim and `set_positions` every HOLDING claim, including any
    made through `claim`. Not thread-safe; one task owns it."""

    def __init__(
        self,
        sessions: Mapping[str, int],
        *,
        scanner_dwell_s: float = SCANNER_DWELL_S,
        stale_s: float = STALE_S,
        holding_tr_ids: Sequence[str] = DEFAULT_TR_IDS,
        audit_max: int = AUDIT_MAX,
        carries: Mapping[str, frozenset[str]] | None = None,
        brokers: Mapping[str, str] | None = None,
        prefer: Callable[[str], str | None] | None = None,
    ) -> None:
        """`carries`: the tr_ids a session can register, for sessions that cannot take every
        key (a second broker: trades and books, no index or notice); others take any key.
        `brokers`: each session's broker (by default, one broker for all), and `prefer`: the
        broker preferred for a code (None: no preference). A key goes to an up session of its
        preferred broker when one has room, else wherever there is the most room."""
        if scanner_dwell_s < 0 or stale_s <= 0 or audit_max < 0:
            raise ValueError("scanner_dwell_s >= 0, stale_s > 0 and audit_max >= 0 required")
        self._carries: dict[str, frozenset[str]] = dict(carries or {})  # kept while lost
        self._broker: dict[str, str] = dict(brokers or {})
        self._prefer = prefer
        self.scanner_dwell_s = scanner_dwell_s
        self.stale_s = stale_s
        self._holding_default = _tr_ids(holding_tr_ids)
        self._capacity: dict[str, int] = {}  # insertion order is the stable tie order
        self._by_session: dict[str, dict[_Key, None]] = {}
        for name, capacity in sessions.items():
            self._add_session(name, capacity)
        self._slots: dict[_Key, _Slot] = {}
        self._claims: dict[_Key, dict[Priority, _Stamp]] = {}  # every key with a live claim
        self._pending: dict[_Key, None] = {}  # keys in _claims without a slot
        self._retiring: dict[_Key, float] = {}  # key -> when its SCANNER claim ends
        self._scanner_why: dict[str, str] = {}  # code -> where the scanner found it
        self._positions: dict[str, int] = {}
        self._holding_tr_ids: dict[str, tuple[str, ...]] = {}
        self._open_since: dict[str, float] = {}  # tr_id -> its market open, as tick() saw it
        self._down: set[str] = set()  # sessions known not to be connected (set_session_up)
        self._seq = 0
        self._audit_log: deque[Audit] = deque(maxlen=audit_max)

    # ----------------------------------------------------------------- claims

    def claim(self, priority: Priority, tr_id: str, code: str, now: float) -> Changes:
        """Add the claim (idempotent). A DEMAND claim that finds no slot is refused and not
        kept (see `Changes.refused`); other priorities wait in `pending()` if they must."""
        call = _Call(now)
        self._add_claim(call, Priority(priority), (tr_id, code))
        return self._finish(call)

    def release(self, priority: Priority, tr_id: str, code: str, now: float) -> Changes:
        """Remove the claim (no-op if absent). The slot is unsubscribed when its last claim
        goes, else downgraded in place. A SCANNER release on a slot younger than the dwell
        time is deferred to `tick`."""
        call = _Call(now)
        self._release(call, Priority(priority), (tr_id, code), "released")
        return self._finish(call)

    def set_picks(
        self, codes: Iterable[str], now: float, tr_ids: Sequence[str] = DEFAULT_TR_IDS
    ) -> Changes:
        """Replace the PICK claims by `codes` x `tr_ids`; earlier codes rank first if pending."""
        call = _Call(now)
        self._replace(call, Priority.PICK, _keys(codes, tr_ids), "no longer a pick")
        return self._finish(call)

    def set_pick_keys(self, keys: Iterable[tuple[str, str]], now: float) -> Changes:
        """Replace the PICK claims by explicit (tr_id, code) pairs, e.g. trades for a watchlist
        plus order books for a few of its codes; earlier pairs rank first if pending."""
        call = _Call(now)
        self._replace(call, Priority.PICK, list(keys), "no longer a pick")
        return self._finish(call)

    def set_scanner(
        self,
        codes: Iterable[str],
        now: float,
        tr_ids: Sequence[str] = DEFAULT_TR_IDS,
        why: Mapping[str, str] | None = None,
    ) -> Changes:
        """Replace the SCANNER claims by `codes` x `tr_ids`. A find that drops out keeps its
        slot until `scanner_dwell_s` after it was granted (hysteresis: scanners flicker).
        `why` (code -> where it was found, e.g. "fluctuation #3 +12.40%") goes into the
        audit of its grant or wait."""
        self._scanner_why = dict(why or {})
        call = _Call(now)
        self._replace(call, Priority.SCANNER, _keys(codes, tr_ids), "no longer a scanner find")
        return self._finish(call)

    # --------------------------------------------------------------- holdings

    def on_fill(
        self, code: str, side: Side, qty: int, now: float, tr_ids: Sequence[str] | None = None
    ) -> Changes:
        """Track a fill. A buy claims HOLDING at once (on `tr_ids`, else the code's current
        ones, else the default); a sell that empties the position releases it. A sell beyond
        the known quantity empties it too; `set_positions` repairs any drift."""
        if qty <= 0:
            raise ValueError(f"fill quantity must be positive, got {qty}")
        call = _Call(now)
        if side == "buy":
            self._positions[code] = self._positions.get(code, 0) + qty
            self._hold(call, code, tr_ids)
        elif side == "sell":
            left = self._positions.get(code, 0) - qty
            if left > 0:
                self._positions[code] = left
            else:
                self._positions.pop(code, None)
                self._unhold(call, code, "position closed")
        else:
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        return self._finish(call)

    def set_positions(
        self, positions: Mapping[str, int], now: float, tr_ids: Sequence[str] | None = None
    ) -> Changes:
        """Reconcile with the broker's balance: codes with qty > 0 are held (HOLDING on
        `tr_ids`, else each code's current ones, else the default); every other HOLDING claim
        is released."""
        call = _Call(now)
        held = {code: qty for code, qty in positions.items() if qty > 0}
        given = None if tr_ids is None else _tr_ids(tr_ids)
        self._holding_tr_ids = {
            code: given or self._holding_tr_ids.get(code, self._holding_default) for code in held
        }
        self._positions = held
        desired = [(tr, code) for code, trs in self._holding_tr_ids.items() for tr in trs]
        self._replace(call, Priority.HOLDING, desired, "not held")
        return self._finish(call)

    @property
    def positions(self) -> dict[str, int]:
        return dict(self._positions)

    # --------------------------------------------------------------- sessions

    def session_added(
        self, name: str, capacity: int, now: float, *, resize: Mapping[str, int] | None = None
    ) -> Changes:
        """Add a session (new, or back after `session_lost`) and grant pending claims on it.
        `resize`: other sessions' new capacities, applied in the same call (as `set_capacity`
        would), so the ops are the net change of both."""
        if name in self._capacity:
            raise ValueError(f"session {name!r} already exists")
        call = _Call(now)
        self._add_session(name, capacity)
        call.dirty = True
        for other, cap in (resize or {}).items():
            self._resize(call, other, cap)
        self._settle(call)
        self._come_home(call, name)
        return self._finish(call)

    def session_lost(
        self, name: str, now: float, *, resize: Mapping[str, int] | None = None
    ) -> Changes:
        """Forget a session for good (not for a plain reconnect: see `registrations`).

        Its slots are re-placed on the other sessions like any pending claim, best priority
        first, with all their claims: HOLDING and PICK evict lower priorities as needed;
        SCANNER can only displace DEMAND, DEMAND only takes free capacity. What cannot be
        placed waits (HOLDING, PICK, SCANNER) or is dropped (DEMAND, in `Changes.dropped`).
        No ops are emitted for the lost session. `resize`: other sessions' new capacities,
        applied first in the same call (as `set_capacity` would; e.g. the execution notice moving
        to a survivor), so the ops are the net change. Unknown names are ignored."""
        call = _Call(now)
        if name not in self._capacity:
            return self._finish(call)
        for other, cap in (resize or {}).items():
            if other != name:
                self._resize(call, other, cap)
        keys = sorted(self._by_session[name], key=self._grant_order)
        for key in keys:
            call.moved_from[key] = f"from lost session {name}"
            self._unseat(call, key, f"session {name} lost")
        del self._capacity[name]
        del self._by_session[name]
        self._down.discard(name)
        return self._finish(call)

    def set_capacity(self, name: str, capacity: int, now: float) -> Changes:
        """Change a session's capacity (e.g. the execution-notice registration moved to or
        from it). Growing grants pending claims. Shrinking below what the session holds takes
        slots away in eviction order (lowest priority, retiring scanners first, then oldest,
        audited "shrink"); they are re-placed like any pending claim: free capacity elsewhere,
        else in place of a lower priority, else they wait (DEMAND is dropped). Unknown names
        are ignored."""
        call = _Call(now)
        self._resize(call, name, capacity)
        return self._finish(call)

    def set_session_up(self, name: str, up: bool) -> None:
        """Tell the manager whether a session is connected. Placement prefers sessions that are
        up: a new slot goes to a down (reconnecting) session only when no up session can take
        it, neither in free capacity nor in place of a lower priority. Nothing moves: a session
        that is down keeps its slots (it registers them when it is back); `session_lost` is
        for a session gone for good. Every session starts up. Unknown names are ignored."""
        if name not in self._capacity:
            return
        if up:
            self._down.discard(name)
        else:
            self._down.add(name)

    def broker(self, name: str) -> str | None:
        """The session's broker, when the pool was told (`brokers`)."""
        return self._broker.get(name)

    def is_up(self, name: str) -> bool:
        return name in self._capacity and name not in self._down

    def registrations(self, session: str) -> frozenset[tuple[str, str]]:
        """The (tr_id, code) pairs `session` should have registered: what a feed registers on
        every (re)connect."""
        return frozenset(self._by_session.get(session, ()))

    # ------------------------------------------------------- liveness, timers

    def on_data(self, tr_id: str, code: str, now: float, session: str | None = None) -> None:
        """Note data on a slot; runs per event, so it is one dict lookup. With `session`, data
        counts only from the session holding the slot (a stray registration elsewhere must not
        hide a silent slot)."""
        slot = self._slots.get((tr_id, code))
        if slot is not None and (session is None or slot.session == session):
            slot.last_data_at = now
            slot.stale = False

    def tick(self, now: float, market_open: bool | Callable[[str], bool] = True) -> Changes:
        """Run periodically: end scanner claims whose dwell expired, and report slots with no
        data for `stale_s` while their market is open (`Changes.stale`, once per silent
        episode; the silence counts from the later of last data, grant, and market open).
        `market_open` is one answer for every slot, or a function of the slot's tr_id (KRX and
        NXT keep different hours)."""
        call = _Call(now)
        for key, until in list(self._retiring.items()):
            if until <= now:
                del self._retiring[key]
                self._remove_claim(call, Priority.SCANNER, key, "scanner dwell expired")
        self._settle(call)
        is_open: dict[str, bool] = {}
        for tr in {key[0] for key in self._slots} | set(self._open_since):
            is_open[tr] = market_open(tr) if callable(market_open) else market_open
            if not is_open[tr]:
                self._open_since.pop(tr, None)
            elif tr not in self._open_since:  # a new trading session: a fresh start
                self._open_since[tr] = now
                for key, slot in self._slots.items():
                    if key[0] == tr:
                        slot.stale = False
        for key, slot in self._slots.items():
            if slot.stale or not is_open[key[0]]:
                continue
            quiet_since = max(slot.granted_at, self._open_since[key[0]])
            if slot.last_data_at is not None:
                quiet_since = max(quiet_since, slot.last_data_at)
            if now - quiet_since >= self.stale_s:
                slot.stale = True
                record = self._record(key, slot)
                call.stale.append(record)
                self._audit(
                    call,
                    "stale",
                    slot.session,
                    key,
                    record.priority,
                    f"no data for {now - quiet_since:.1f}s",
                )
        return self._finish(call)

    def reregister(self, session: str, tr_id: str, code: str, now: float) -> Changes:
        """Unsubscribe + subscribe a granted slot (e.g. a stale one). The stale episode goes on
        until data arrives, so a silent code is reported, and re-registered, once."""
        call = _Call(now)
        key = (tr_id, code)
        slot = self._slots.get(key)
        if slot is not None and slot.session == session:
            call.extra_ops += [
                Op(session, "unsubscribe", tr_id, code),
                Op(session, "subscribe", tr_id, code),
            ]
            self._audit(call, "reregister", session, key, self._priority(key), "requested")
        return self._finish(call)

    # ---------------------------------------------------------- introspection

    def slots(self) -> list[SlotRecord]:
        """Granted slots by session (stable order), then priority, then age."""
        return [
            self._record(key, self._slots[key])
            for session in self._capacity
            for key in sorted(self._by_session[session], key=self._grant_order)
        ]

    def slot(self, tr_id: str, code: str) -> SlotRecord | None:
        slot = self._slots.get((tr_id, code))
        return None if slot is None else self._record((tr_id, code), slot)

    def usage(self) -> dict[str, Usage]:
        return {s: Usage(len(self._by_session[s]), cap) for s, cap in self._capacity.items()}

    def pending(self) -> list[PendingRecord]:
        """Waiting keys in the order they will be granted: best priority, then oldest claim."""
        out = []
        for key in sorted(self._pending, key=self._pending_order):
            claims = self._claims[key]
            best = min(claims)
            out.append(PendingRecord(key[0], key[1], best, tuple(sorted(claims)), claims[best][0]))
        return out

    def claims(self, tr_id: str, code: str) -> tuple[Priority, ...]:
        """Live claims on a key (granted or pending), best first."""
        return tuple(sorted(self._claims.get((tr_id, code), ())))

    @property
    def audit_log(self) -> tuple[Audit, ...]:
        """The last `audit_max` audit events, oldest first."""
        return tuple(self._audit_log)

    # ------------------------------------------------------------- internals

    def _add_session(self, name: str, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"session {name!r}: capacity must be >= 0, got {capacity}")
        self._capacity[name] = capacity
        self._by_session[name] = {}

    def _resize(self, call: _Call, name: str, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"session {name!r}: capacity must be >= 0, got {capacity}")
        if name not in self._capacity or self._capacity[name] == capacity:
            return
        self._capacity[name] = capacity
        call.dirty = True
        held = self._by_session[name]
        while len(held) > capacity:
            victim = min(held, key=self._victim_order)
            self._audit(
                call,
                "shrink",
                name,
                victim,
                self._priority(victim),
                f"capacity of {name} now {capacity}",
            )
            call.moved_from[victim] = f"from {name} (capacity now {capacity})"
            self._unseat(call, victim, f"capacity of {name} reduced")

    def _carriers(self, tr_id: str) -> frozenset[str]:
        """The sessions (lost ones aside) that can register `tr_id`."""
        return frozenset(
            name
            for name in self._capacity
            if name not in self._carries or tr_id in self._carries[name]
        )

    def _come_home(self, call: _Call, name: str) -> None:
        """Slots on other brokers' sessions whose code prefers `name`'s broker move back to
        it while it has room (after a failover, the preferred broker is back)."""
        broker = self._broker.get(name)
        if self._prefer is None or broker is None:
            return
        room = self._capacity[name] - len(self._by_session[name])
        for key in sorted(self._slots, key=self._grant_order):
            if room <= 0:
                break
            slot = self._slots[key]
            if (
                self._broker.get(slot.session) == broker
                or self._prefer(key[1]) != broker
                or name not in self._carriers(key[0])
            ):
                continue
            was = slot.session
            self._ungrant(call, key, slot)
            self._slots[key] = _Slot(name, call.now, self._next_seq())
            self._by_session[name][key] = None
            call.before.setdefault((name, key), False)
            room -= 1
            self._audit(call, "move", name, key, self._priority(key), f"back from {was}: preferred")
        call.dirty = True

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _priority(self, key: _Key) -> Priority:
        return min(self._claims[key])

    def _grant_order(self, key: _Key) -> tuple[Priority, float, int]:
        slot = self._slots[key]
        return (self._priority(key), slot.granted_at, slot.seq)

    def _pending_order(self, key: _Key) -> tuple[Priority, _Stamp]:
        claims = self._claims[key]
        best = min(claims)
        return (best, claims[best])

    def _record(self, key: _Key, slot: _Slot) -> SlotRecord:
        claims = tuple(sorted(self._claims[key]))
        return SlotRecord(
            slot.session,
            key[0],
            key[1],
            claims[0],
            claims,
            slot.granted_at,
            slot.last_data_at,
            slot.stale,
            self._retiring.get(key),
        )

    def _audit(
        self,
        call: _Call,
        action: AuditAction,
        session: str | None,
        key: _Key,
        priority: Priority,
        reason: str,
    ) -> None:
        call.audit.append(Audit(call.now, action, session, key[0], key[1], priority, reason))

    def _replace(
        self, call: _Call, priority: Priority, desired: Iterable[_Key], reason: str
    ) -> None:
        """Make the claims of `priority` exactly `desired`: releases first (they free slots
        for the newcomers), then claims in the given order."""
        wanted = dict.fromkeys(desired)
        for key in [k for k, claims in self._claims.items() if priority in claims]:
            if key not in wanted:
                self._release(call, priority, key, reason)
        for key in wanted:
            self._add_claim(call, priority, key)

    def _hold(self, call: _Call, code: str, tr_ids: Sequence[str] | None) -> None:
        old = self._holding_tr_ids.get(code, ())
        new = _tr_ids(tr_ids) if tr_ids is not None else old or self._holding_default
        self._holding_tr_ids[code] = new
        for tr in old:
            if tr not in new:
                self._remove_claim(call, Priority.HOLDING, (tr, code), "holding tr_ids changed")
        for tr in new:
            self._add_claim(call, Priority.HOLDING, (tr, code))

    def _unhold(self, call: _Call, code: str, reason: str) -> None:
        self._holding_tr_ids.pop(code, None)
        for key in [
            k for k, claims in self._claims.items() if k[1] == code and Priority.HOLDING in claims
        ]:
            self._remove_claim(call, Priority.HOLDING, key, reason)

    def _add_claim(self, call: _Call, priority: Priority, key: _Key) -> None:
        if priority is Priority.SCANNER:
            self._retiring.pop(key, None)  # wanted again: the deferred release is off
        claims = self._claims.setdefault(key, {})
        if priority in claims:
            return
        previous = min(claims) if claims else None
        claims[priority] = (call.now, self._next_seq())
        slot = self._slots.get(key)
        if slot is not None:
            if previous is not None and priority < previous:
                self._audit(
                    call,
                    "upgrade",
                    slot.session,
                    key,
                    priority,
                    f"{previous.name} -> {priority.name}, in place",
                )
            return
        self._pending[key] = None  # placed (or refused) by _settle when the call finishes
        call.dirty = True
        if previous is None or priority < previous:
            call.new_pending[key] = None
        if priority is Priority.DEMAND:
            call.new_demand[key] = None

    def _release(self, call: _Call, priority: Priority, key: _Key, reason: str) -> None:
        claims = self._claims.get(key)
        if claims is None or priority not in claims:
            return
        slot = self._slots.get(key)
        if priority is Priority.SCANNER and slot is not None:
            until = slot.granted_at + self.scanner_dwell_s
            if call.now < until:
                if key not in self._retiring:
                    self._retiring[key] = until
                    self._audit(
                        call,
                        "defer",
                        slot.session,
                        key,
                        priority,
                        f"{reason}; kept until {until:.1f} (dwell)",
                    )
                return
            self._retiring.pop(key, None)  # released for good: a deferral is moot
        self._remove_claim(call, priority, key, reason)

    def _remove_claim(self, call: _Call, priority: Priority, key: _Key, reason: str) -> None:
        claims = self._claims.get(key)
        if claims is None or priority not in claims:
            return
        best = min(claims)
        del claims[priority]
        call.dirty = True
        slot = self._slots.get(key)
        if not claims:
            del self._claims[key]
            self._pending.pop(key, None)
            if slot is not None:
                self._ungrant(call, key, slot)
            self._audit(call, "release", slot.session if slot else None, key, priority, reason)
        elif slot is not None and priority == best:
            self._audit(
                call,
                "downgrade",
                slot.session,
                key,
                min(claims),
                f"{priority.name} -> {min(claims).name}, in place: {reason}",
            )

    def _grant(self, call: _Call, key: _Key, session: str) -> None:
        self._slots[key] = _Slot(session, call.now, self._next_seq())
        self._by_session[session][key] = None
        del self._pending[key]
        call.before.setdefault((session, key), False)

    def _ungrant(self, call: _Call, key: _Key, slot: _Slot) -> None:
        del self._slots[key]
        del self._by_session[slot.session][key]
        call.before.setdefault((slot.session, key), True)

    def _unseat(self, call: _Call, key: _Key, reason: str) -> None:
        """Take a key's slot away (evicted, session lost); its claims wait in pending. A
        deferred scanner release completes now; DEMAND claims are dropped by `_settle` if the
        key is still pending when it finishes."""
        self._ungrant(call, key, self._slots[key])
        claims = self._claims[key]
        if self._retiring.pop(key, None) is not None:
            del claims[Priority.SCANNER]
        call.dirty = True
        if claims:
            self._pending[key] = None
            call.new_pending[key] = None
        else:
            del self._claims[key]
            self._audit(call, "release", None, key, Priority.SCANNER, f"{reason}; was retiring")

    def _victim_order(self, key: _Key) -> tuple[int, bool, float, int]:
        """Eviction order, smallest first: lowest priority, retiring scanners (they lose
        nothing), oldest grant."""
        slot = self._slots[key]
        return (-self._priority(key), key not in self._retiring, slot.granted_at, slot.seq)

    def _place(self, call: _Call, key: _Key, priority: Priority) -> bool:
        """Grant `key` on the up session with the most free capacity (its preferred broker's
        first), else in place of the
        lowest-priority, oldest slot strictly below `priority` on an up session (retiring
        scanners first: they lose nothing); failing both, the same on the sessions that are
        down (they register it when they are back). False if none of it is possible.

        Whether it succeeds depends on the priority only (is there free capacity, or a worse
        slot, anywhere), which `_settle` relies on."""
        carriers = self._carriers(key[0])
        preferred = self._prefer(key[1]) if self._prefer is not None else None
        for up in (True, False):
            session, rank = None, (False, 0)
            for name, capacity in self._capacity.items():
                room = capacity - len(self._by_session[name])
                if (name not in self._down) != up or room <= 0 or name not in carriers:
                    continue
                this = (self._broker.get(name) == preferred, room)
                if session is None or this > rank:
                    session, rank = name, this
            reason = "free capacity"
            if session is None:
                victim = None
                victim_order: tuple[int, bool, float, int] | None = None
                for other, slot in self._slots.items():
                    if (
                        (slot.session not in self._down) != up
                        or slot.session not in carriers
                        or self._priority(other) <= priority
                    ):
                        continue
                    order = self._victim_order(other)
                    if victim_order is None or order < victim_order:
                        victim, victim_order = other, order
                if victim is None:
                    continue
                session = self._slots[victim].session
                self._audit(
                    call,
                    "evict",
                    session,
                    victim,
                    self._priority(victim),
                    f"for {key[0]}/{key[1]} at {priority.name}",
                )
                self._unseat(call, victim, "evicted")
                reason = f"evicted {victim[0]}/{victim[1]}"
            self._grant(call, key, session)
            moved = call.moved_from.get(key)
            if moved is not None:
                self._audit(call, "move", session, key, priority, moved)
            else:
                self._audit(call, "grant", session, key, priority, self._noted(key, reason))
            return True
        return False

    def _settle(self, call: _Call) -> None:
        """Grant pending keys, best priority then oldest claim first, until one cannot be
        placed: then no worse one can either (placement depends on priority only). Keys that
        went pending in this call and stay so lose their DEMAND claims, which never wait;
        keys pending from earlier calls already satisfy that."""
        if not call.dirty:
            return  # the invariant held before the call and nothing touched it
        call.dirty = False
        # A key that cannot be placed blocks every worse key its carriers could carry (the
        # same sessions, or fewer); a key of another broker's may still fit. An eviction
        # makes a pending key that may fit elsewhere: another pass then.
        progress = True
        while progress and self._pending:
            progress = False
            blocked: list[frozenset[str]] = []
            for key in sorted(self._pending, key=self._pending_order):
                if key not in self._pending:
                    continue
                carriers = self._carriers(key[0])
                if any(carriers <= b for b in blocked):
                    continue
                if self._place(call, key, self._priority(key)):
                    progress = True
                else:
                    blocked.append(carriers)
        new_pending, new_demand = call.new_pending, call.new_demand
        call.new_pending, call.new_demand = {}, {}  # audit each pending episode once
        left = [key for key in {**new_pending, **new_demand} if key in self._pending]
        if not left:
            return
        used = sum(len(keys) for keys in self._by_session.values())
        capacity = sum(self._capacity.values())
        for key in sorted(left, key=self._pending_order):
            claims = self._claims[key]
            reason = f"no slot: pool full ({used}/{capacity}) and none below {min(claims).name}"
            if Priority.DEMAND in claims:
                del claims[Priority.DEMAND]
                record = Rejection(key[0], key[1], Priority.DEMAND, reason)
                if key in new_demand:
                    call.refused.append(record)
                    self._audit(call, "refuse", None, key, Priority.DEMAND, reason)
                else:
                    call.dropped.append(record)
                    self._audit(call, "drop", None, key, Priority.DEMAND, reason)
                if not claims:
                    del self._claims[key]
                    del self._pending[key]
                    continue
            if key in new_pending:
                self._audit(call, "pending", None, key, min(claims), self._noted(key, reason))

    def _noted(self, key: _Key, reason: str) -> str:
        """`reason`, with where a scanner find came from when the scanner said so."""
        why = (
            self._scanner_why.get(key[1]) if Priority.SCANNER in self._claims.get(key, {}) else None
        )
        return f"{reason}; {why}" if why else reason

    def _finish(self, call: _Call) -> Changes:
        """Settle once per call (a batch frees before it claims, so nothing is granted only
        to be evicted a moment later), then report the net registration changes."""
        self._settle(call)
        unsubscribes: list[Op] = []
        subscribes: list[Op] = []
        for (session, key), was in call.before.items():
            if session not in self._capacity:
                continue  # a lost session: its socket is gone, nothing to send
            now = key in self._by_session[session]
            if was and not now:
                unsubscribes.append(Op(session, "unsubscribe", key[0], key[1]))
            elif now and not was:
                subscribes.append(Op(session, "subscribe", key[0], key[1]))
        self._audit_log.extend(call.audit)
        return Changes(
            tuple(unsubscribes + call.extra_ops + subscribes),
            tuple(call.audit),
            tuple(call.refused),
            tuple(call.dropped),
            tuple(call.stale),
        )


def _tr_ids(tr_ids: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tr_ids, str):  # a bare "H0STCNT0" would iterate as characters
        tr_ids = (tr_ids,)
    out = tuple(dict.fromkeys(tr_ids))
    if not out:
        raise ValueError("at least one tr_id is required")
    return out


def _keys(codes: Iterable[str], tr_ids: Sequence[str]) -> list[_Key]:
    """Claims for codes in order: each code takes one registration per tr_id."""
    trs = _tr_ids(tr_ids)
    if isinstance(codes, str):
        codes = (codes,)
    return [(tr, code) for code in codes for tr in trs]
