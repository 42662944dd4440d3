"""Account state from execution notices: positions and orders per account, and their
reconciliation against the broker's positions.

`AccountBook` (pure) is fed by the router with every `Execution` (order notices and fills, KIS
H0STCNI0/H0STCNI9) and, at start, with the day's stored executions, so a restart does not forget
the morning. It answers the gateway's `get_account` (only for the caller's own accounts) and
tells the slot manager when a holding appears or disappears.

Fills alone only know what this service has seen. `run_positions_sync` (the thin shell) asks a
`PositionsSource` for the broker's positions at start and periodically, and
`AccountBook.reconcile` makes them the book's: positions held from before today, notices
missed while no session carried them, trades made elsewhere. The source is pluggable: the
broker's balance inquiry (roles/sources.py, over feeds/kis/rest.py), or `HttpPositions`, a
small JSON document (see `parse_positions`) from a bridge or the simulator's `/sim/positions`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx
import trio

from tradestream.errors import PositionsError
from tradestream.events import Execution

log = logging.getLogger(__name__)

MAX_ORDERS_PER_ACCOUNT = 2000  # oldest orders are forgotten beyond this (a day's worth)
SEEN_NOTICES_MAX = 10_000  # natural keys remembered to drop a notice delivered twice


@dataclass(slots=True)
class Order:
    account: str
    order_no: str
    code: str
    side: str
    order_qty: int
    order_price: int
    status: str = "accepted"  # accepted, modified, partially_filled, filled, cancelled, rejected
    filled_qty: int = 0
    filled_value: int = 0  # sum of qty x price over fills: the average comes from it
    last_fill_price: int = 0
    updated_at: datetime | None = None

    @property
    def avg_fill_price(self) -> float:
        return self.filled_value / self.filled_qty if self.filled_qty else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_no,
            "account": self.account,
            "symbol": self.code,
            "side": self.side,
            "status": self.status,
            "quantity": self.order_qty,
            "price": self.order_price,
            "filled_quantity": self.filled_qty,
            "filled_price": self.last_fill_price,
            "avg_fill_price": round(self.avg_fill_price, 2),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(slots=True)
class Position:
    code: str
    quantity: int = 0
    cost: int = 0  # quantity x average buy price, KRW

    @property
    def avg_price(self) -> float:
        return self.cost / self.quantity if self.quantity else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.code,
            "quantity": self.quantity,
            "avg_price": round(self.avg_price, 2),
        }


@dataclass(frozen=True, slots=True)
class HoldingChange:
    """A position opened (`held` True) or emptied (False) by a fill."""

    account: str
    code: str
    held: bool
    quantity: int


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """One position as the broker reports it."""

    code: str
    quantity: int
    avg_price: float


@dataclass(frozen=True, slots=True)
class Correction:
    """A quantity the reconciliation changed: what the book had, what the broker says."""

    account: str
    code: str
    before: int
    after: int


class AccountBook:
    def __init__(self) -> None:
        self._orders: dict[str, OrderedDict[str, Order]] = {}
        self._positions: dict[str, dict[str, Position]] = {}
        # (account, code) -> the latest received_ns of a fill applied to it
        self._last_fill_ns: dict[tuple[str, str], int] = {}
        self._seen: OrderedDict[tuple[object, ...], None] = OrderedDict()  # Execution.key
        self.duplicates = 0  # notices dropped as already applied

    def apply(self, ex: Execution) -> tuple[Order, HoldingChange | None]:
        """Fold one notice in; returns the order as it now stands and any holding change.

        A notice whose natural key (`Execution.key`) is among the last SEEN_NOTICES_MAX is
        dropped (the order returned as it stands, no change): during a handover the old and
        the new socket may both deliver it, and a notice TR registered twice doubles all.
        """
        orders = self._orders.setdefault(ex.account, OrderedDict())
        key = ex.key
        if key in self._seen:
            self._seen.move_to_end(key)
            self.duplicates += 1
            known = orders.get(ex.order_no)  # None once forgotten (MAX_ORDERS_PER_ACCOUNT)
            return known or Order(
                ex.account,
                ex.order_no,
                ex.code,
                ex.side,
                ex.order_qty or ex.quantity,
                ex.order_price or ex.price,
            ), None
        else:
            self._seen[key] = None
            if len(self._seen) > SEEN_NOTICES_MAX:
                self._seen.popitem(last=False)
        order = orders.get(ex.order_no)
        if order is None:
            order = Order(
                ex.account,
                ex.order_no,
                ex.code,
                ex.side,
                ex.order_qty or ex.quantity,
                ex.order_price or ex.price,
            )
            orders[ex.order_no] = order
            if len(orders) > MAX_ORDERS_PER_ACCOUNT:
                orders.popitem(last=False)
        order.updated_at = ex.time
        change = None
        if ex.kind == "fill" and not ex.rejected:
            order.filled_qty += ex.quantity
            order.filled_value += ex.quantity * ex.price
            order.last_fill_price = ex.price
            order.status = (
                "filled"
                if order.order_qty and order.filled_qty >= order.order_qty
                else "partially_filled"
            )
            change = self._fill(ex)
        elif ex.rejected:
            order.status = "rejected"
        elif ex.correction == "cancel":
            order.status = "cancelled"
            if ex.original_order_no in orders:
                orders[ex.original_order_no].status = "cancelled"
        elif ex.correction == "modify":
            order.status = "modified"
            if ex.order_qty:
                order.order_qty = ex.order_qty
            if ex.order_price:
                order.order_price = ex.order_price
        return order, change

    def _fill(self, ex: Execution) -> HoldingChange | None:
        key = (ex.account, ex.code)
        self._last_fill_ns[key] = max(self._last_fill_ns.get(key, 0), ex.received_ns)
        positions = self._positions.setdefault(ex.account, {})
        pos = positions.get(ex.code)
        before = pos.quantity if pos else 0
        if pos is None:
            pos = positions[ex.code] = Position(ex.code)
        if ex.side == "buy":
            pos.quantity += ex.quantity
            pos.cost += ex.quantity * ex.price
        else:
            sold = min(ex.quantity, pos.quantity)
            pos.cost -= round(pos.avg_price * sold)
            pos.quantity -= sold
        if pos.quantity == 0:
            del positions[ex.code]
            pos.cost = 0
        if before == 0 and pos.quantity > 0:
            return HoldingChange(ex.account, ex.code, True, pos.quantity)
        if before > 0 and pos.quantity == 0:
            return HoldingChange(ex.account, ex.code, False, 0)
        return None

    def set_position(self, account: str, code: str, quantity: int, avg_price: float) -> None:
        """Reconcile one position against the broker's figures."""
        positions = self._positions.setdefault(account, {})
        if quantity <= 0:
            positions.pop(code, None)
        else:
            positions[code] = Position(code, quantity, round(quantity * avg_price))

    def reconcile(
        self, account: str, positions: Mapping[str, BrokerPosition], *, asked_ns: int | None = None
    ) -> list[Correction]:
        """Make `account`'s positions the broker's: codes it reports are set to its quantity
        and average price, codes it does not report (or with quantity <= 0) are removed.

        With `asked_ns` (wall clock, like `Execution.received_ns`, when the broker was
        asked), codes with a fill received at or after it are left alone: the answer may or
        may not include that fill, and the next reconciliation sees both. The caller must
        apply this only after every notice received before the answer came (`routed` in
        run_positions_sync): a notice applied later would count a second time what the
        answer already holds. Returns the quantity changes (average-price changes are made
        silently)."""
        mine = self._positions.setdefault(account, {})
        out: list[Correction] = []
        for code in sorted(set(mine) | set(positions)):
            if asked_ns is not None and self._last_fill_ns.get((account, code), -1) >= asked_ns:
                continue
            have = mine.get(code)
            theirs = positions.get(code)
            before = have.quantity if have else 0
            after = theirs.quantity if theirs is not None and theirs.quantity > 0 else 0
            self.set_position(account, code, after, theirs.avg_price if theirs else 0.0)
            if before != after:
                out.append(Correction(account, code, before, after))
        if not mine:
            self._positions.pop(account, None)
        return out

    def positions_by_code(self) -> dict[str, int]:
        """Quantity held per code over every account (the slot manager's holdings)."""
        out: dict[str, int] = {}
        for positions in self._positions.values():
            for code, p in positions.items():
                out[code] = out.get(code, 0) + p.quantity
        return out

    def held_codes(self) -> set[str]:
        """Codes with a position in any account."""
        return {code for positions in self._positions.values() for code in positions}

    def snapshot(self, accounts: Iterable[str], *, max_orders: int = 200) -> dict[str, Any]:
        """Positions and the latest orders of `accounts` (the caller's own, and only those)."""
        accounts = sorted(set(accounts))
        positions = [
            dict(p.as_dict(), account=a)
            for a in accounts
            for p in self._positions.get(a, {}).values()
        ]
        orders: list[dict[str, Any]] = []
        for a in accounts:
            orders.extend(o.as_dict() for o in list(self._orders.get(a, {}).values())[-max_orders:])
        orders.sort(key=lambda o: o["updated_at"] or "", reverse=True)
        return {"accounts": accounts, "positions": positions, "orders": orders[:max_orders]}

    def accounts(self) -> list[str]:
        return sorted(set(self._orders) | set(self._positions))


# -- reconciliation against the broker (the thin shell) ---------------------------------------

POSITIONS_SETTLE_S = 2.0  # after a positions answer: notices in flight arrive meanwhile
POSITIONS_FETCH_TIMEOUT_S = 5.0  # one fetch in all; httpx's own timeout is per read
POSITIONS_CLOSE_S = 1.0  # closing the source's connections at a stop
POSITIONS_ROUTED_WAIT_S = 10.0  # for the router to apply the notices ahead of an answer
POSITIONS_ROUTED_POLL_S = 0.05


def parse_positions(body: object) -> dict[str, dict[str, BrokerPosition]]:
    """The positions document: account -> code -> position. Shape::

        {"accounts": [{"account": "5012345601",
                       "positions": [{"code": "005930", "quantity": 10, "avg_price": 71000}]}]}

    An account listed with no positions holds nothing; accounts not listed are not touched.
    """
    try:
        accounts = body["accounts"]  # type: ignore[index]
        out: dict[str, dict[str, BrokerPosition]] = {}
        for acct in accounts:
            name = acct["account"]
            if not isinstance(name, str) or not name:
                raise PositionsError(f"bad account {name!r}")
            held: dict[str, BrokerPosition] = {}
            for p in acct["positions"]:
                code, qty, avg = p["code"], p["quantity"], p.get("avg_price", 0)
                if not (
                    isinstance(code, str)
                    and len(code) == 6
                    and isinstance(qty, int)
                    and not isinstance(qty, bool)
                    and isinstance(avg, int | float)
                ):
                    raise PositionsError(f"bad position {p!r}")
                held[code] = BrokerPosition(code, qty, float(avg))
            out[name] = held
        return out
    except (KeyError, TypeError, AttributeError) as exc:
        raise PositionsError(f"not a positions document: {exc!r}") from None


class PositionsSource(Protocol):
    """Where the broker's positions come from."""

    name: str  # for the status endpoint and logs: no credentials (see `safe_source`)

    async def fetch(self) -> dict[str, dict[str, BrokerPosition]]:
        """The positions now; PositionsError if they cannot be had. The caller owns the
        deadline."""

    async def aclose(self) -> None:
        """Release what fetch() opened; called once, when the sync task returns."""


def safe_source(url: str) -> str:
    """`url` as scheme://host:port/path: no user, password, query or fragment, any of which
    may carry a token. Anything that does not parse as a URL shows as its scheme or '?'."""
    try:
        u = httpx.URL(url)
        port = f":{u.port}" if u.port is not None else ""
        return f"{u.scheme}://{u.host}{port}{u.path}" if u.host else (u.scheme or "?")
    except (httpx.InvalidURL, TypeError, ValueError):
        return "?"


class HttpPositions:
    """GET a positions document (`parse_positions`) from `url`: the simulator's
    `/sim/positions`, or a bridge to the broker's balance inquiry.

    One client (connection pool, SSL context) for the object's lifetime: building an SSL
    context blocks the event loop for tens of milliseconds, too much to pay every sync.
    `timeout_s` is httpx's, per connect and per read: a server trickling its body is not
    bounded by it, so the caller wraps fetch() in a deadline (run_positions_sync does)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.name = safe_source(url)
        self._url = url
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def fetch(self) -> dict[str, dict[str, BrokerPosition]]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        try:
            resp = await self._http.get(self._url)
            body = resp.json() if resp.status_code == 200 else None
        # InvalidURL is not an HTTPError; a body that is not UTF-8 or not JSON is a ValueError
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise PositionsError(f"GET {self.name}: {exc!r}"[:300]) from None
        if resp.status_code != 200:
            raise PositionsError(f"GET {self.name}: HTTP {resp.status_code} {resp.text[:200]}")
        return parse_positions(body)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


@dataclass
class SyncStats:
    source: str = ""  # the source's name, credentials stripped (safe_source)
    syncs: int = 0  # answers reconciled
    failures: int = 0
    corrected: int = 0  # positions whose quantity the broker's answer changed
    last_at: float | None = None  # trio time of the last reconciliation
    last_error: str = ""  # of the last attempt; cleared by an answer

    def as_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["source"] = safe_source(self.source) if "://" in self.source else self.source
        return out


class RouterProgress:
    """How far the router has got through the events edge, for `run_positions_sync(routed=)`.

    The router calls `observe(ev)` after applying each event. `routed(cutoff_ns)` is true
    once every notice received before `cutoff_ns` has been applied: an event received at or
    after it has been (the edge is FIFO, and feeds send in the order they receive), or the
    edge is empty with the router waiting on it (a value handed straight to a waiting router
    takes it off the waiting list, so this does not hold while one is still unapplied)."""

    def __init__(self, events_out: trio.MemorySendChannel[Any]) -> None:
        self._events_out = events_out
        self.last_ns = 0  # the latest received_ns the router has applied

    def observe(self, ev: object) -> None:
        self.last_ns = max(self.last_ns, getattr(ev, "received_ns", 0))

    def routed(self, cutoff_ns: int) -> bool:
        if self.last_ns >= cutoff_ns:
            return True
        st = self._events_out.statistics()
        return st.current_buffer_used == 0 and st.tasks_waiting_receive > 0


async def run_positions_sync(
    source: PositionsSource,
    book: AccountBook,
    on_change: Callable[[], None],
    every_s: float,
    stats: SyncStats,
    *,
    fetch_timeout_s: float = POSITIONS_FETCH_TIMEOUT_S,
    settle_s: float = POSITIONS_SETTLE_S,
    routed: Callable[[int], bool] | None = None,
    routed_wait_s: float = POSITIONS_ROUTED_WAIT_S,
    now_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reconcile `book` with `source` now and every `every_s` until cancelled; `on_change()`
    after the first answer and after every answer that changed a quantity (the slot manager
    follows the holdings). Owns `source`: closes it when this task returns.

    Notices reach the book through the router, possibly late (its input channel behind): an
    answer is applied only once `routed(cutoff_ns)` says every notice received before
    `cutoff_ns` (`now_ns()` after the settle wait) has been applied, so each fill the answer
    holds is in the book before the answer replaces it, never applied again after. Codes
    with a fill received since the question are left alone (`AccountBook.reconcile`). If
    the router is not there within `routed_wait_s`, the answer is dropped as a failure.

    Every fetch gets `fetch_timeout_s` in all (connect, a slow or trickled body included).
    started(): after the first attempt, answered, failed or timed out, so within
    `fetch_timeout_s`: the holdings are known before the feeds register, and a slow source
    cannot hold the feeds back longer than that. After later answers it waits `settle_s`
    before reconciling, and leaves alone the codes filled since the question was asked
    (notices in flight would otherwise be counted twice: once in the answer, once when they
    arrive). A failed fetch is logged, counted and retried at the next period; this task
    never raises for one."""
    stats.source = source.name
    first = True
    try:
        while True:
            asked_ns = now_ns()
            snapshot: dict[str, dict[str, BrokerPosition]] | None = None
            try:
                with trio.fail_after(fetch_timeout_s):
                    snapshot = await source.fetch()
            except trio.TooSlowError:
                _failed(stats, source, f"no answer within {fetch_timeout_s:g}s")
            except PositionsError as exc:
                _failed(stats, source, str(exc))
            if snapshot is not None and not first:
                await trio.sleep(settle_s)  # notices still upstream of the feeds
                if not await _wait_routed(routed, now_ns(), routed_wait_s):
                    _failed(
                        stats,
                        source,
                        f"the router did not catch up within {routed_wait_s:g}s: answer dropped",
                    )
                    snapshot = None
            if snapshot is not None:
                fixed = [
                    c
                    for account, held in snapshot.items()
                    for c in book.reconcile(account, held, asked_ns=asked_ns)
                ]
                stats.syncs += 1
                stats.corrected += len(fixed)
                stats.last_at = trio.current_time()
                stats.last_error = ""
                for c in fixed:
                    log.warning(
                        "position %s %s: %d in the book, %d at the broker: corrected",
                        c.account,
                        c.code,
                        c.before,
                        c.after,
                    )
                if fixed or first:
                    on_change()
            if first:
                first = False
                task_status.started()
            await trio.sleep(every_s)
    finally:
        with trio.move_on_after(POSITIONS_CLOSE_S, shield=True):
            await source.aclose()


async def _wait_routed(routed: Callable[[int], bool] | None, cutoff_ns: int, wait_s: float) -> bool:
    if routed is None:
        return True
    with trio.move_on_after(wait_s):
        # a poll: the router's progress is channel statistics, which signal nothing
        while not routed(cutoff_ns):  # noqa: ASYNC110
            await trio.sleep(POSITIONS_ROUTED_POLL_S)
        return True
    return False


def _failed(stats: SyncStats, source: PositionsSource, error: str) -> None:
    stats.failures += 1
    stats.last_error = error[:300]
    log.warning("positions from %s: %s", source.name, error)
