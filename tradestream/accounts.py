"""Account state from execution notices (pure): positions and orders per account.

Fed by the router with every `Execution` (order notices and fills, KIS H0STCNI0/H0STCNI9) and,
at start, with the day's stored executions, so a restart does not forget the morning. It
answers the gateway's `get_account` (only for the caller's own accounts) and tells the slot
manager when a holding appears or disappears.

Positions count only what this service has seen fill: an account's positions at start come
from `set_position` (a reconciliation against the broker), fills then move them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tradestream.events import Execution

MAX_ORDERS_PER_ACCOUNT = 2000  # oldest orders are forgotten beyond this (a day's worth)


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
        return {"order_id": self.order_no, "account": self.account, "symbol": self.code,
                "side": self.side, "status": self.status, "quantity": self.order_qty,
                "price": self.order_price, "filled_quantity": self.filled_qty,
                "filled_price": self.last_fill_price,
                "avg_fill_price": round(self.avg_fill_price, 2),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


@dataclass(slots=True)
class Position:
    code: str
    quantity: int = 0
    cost: int = 0  # quantity x average buy price, KRW

    @property
    def avg_price(self) -> float:
        return self.cost / self.quantity if self.quantity else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"symbol": self.code, "quantity": self.quantity,
                "avg_price": round(self.avg_price, 2)}


@dataclass(frozen=True, slots=True)
class HoldingChange:
    """A position opened (`held` True) or emptied (False) by a fill."""

    account: str
    code: str
    held: bool
    quantity: int


class AccountBook:
    def __init__(self) -> None:
        self._orders: dict[str, OrderedDict[str, Order]] = {}
        self._positions: dict[str, dict[str, Position]] = {}

    def apply(self, ex: Execution) -> tuple[Order, HoldingChange | None]:
        """Fold one notice in; returns the order as it now stands and any holding change.

        Re-sent notices (same natural key) must be filtered before this by the caller if it
        replays; live notices are not re-sent by the broker within a session.
        """
        orders = self._orders.setdefault(ex.account, OrderedDict())
        order = orders.get(ex.order_no)
        if order is None:
            order = Order(ex.account, ex.order_no, ex.code, ex.side, ex.order_qty or ex.quantity,
                          ex.order_price or ex.price)
            orders[ex.order_no] = order
            if len(orders) > MAX_ORDERS_PER_ACCOUNT:
                orders.popitem(last=False)
        order.updated_at = ex.time
        change = None
        if ex.kind == "fill" and not ex.rejected:
            order.filled_qty += ex.quantity
            order.filled_value += ex.quantity * ex.price
            order.last_fill_price = ex.price
            order.status = ("filled" if order.order_qty and order.filled_qty >= order.order_qty
                            else "partially_filled")
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
        positions = [dict(p.as_dict(), account=a) for a in accounts
                     for p in self._positions.get(a, {}).values()]
        orders: list[dict[str, Any]] = []
        for a in accounts:
            orders.extend(o.as_dict() for o in list(self._orders.get(a, {}).values())[-max_orders:])
        orders.sort(key=lambda o: o["updated_at"] or "", reverse=True)
        return {"accounts": accounts, "positions": positions, "orders": orders[:max_orders]}

    def accounts(self) -> list[str]:
        return sorted(set(self._orders) | set(self._positions))
