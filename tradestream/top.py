"""`tradestream top`: a live terminal view for operators on a server without a browser:
prices of the streamed codes (the biggest movers first), alerts and signals as they arrive,
slot usage by priority and session, the upstream sessions and the clients connected.

`Board` is the view's state and its rendering (pure: no I/O, tested directly); `run_top` is
the shell: a `tradestream.client.Client` feeds the board, the REST reads (slots, status) are
polled every `poll_s`, and a rich `Live` redraws it. `tradestream watch` stays the command for
scripts (JSON lines).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tradestream import wire
from tradestream.client import Client

TRADES = "H0STCNT0"
MAX_CODES = 30  # price topics this view subscribes to (the server's per-connection cap is 50)


@dataclass
class Board:
    prices: dict[str, wire.PriceData] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    events: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=12))
    slots: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    connected: bool = False
    updates: int = 0

    def take(self, msg: Any) -> None:
        """A message from the server."""
        if isinstance(msg, wire.PriceUpdate):
            self.prices[msg.symbol] = msg.data
            self.updates += 1
        elif isinstance(msg, wire.AlertMessage):
            d = msg.data
            self.events.appendleft(("alert", f"{msg.symbol} {d.get('message', d)}"))
        elif isinstance(msg, wire.SignalUpdate):
            codes = ", ".join(str(s.get("symbol", "?")) for s in msg.data.signals[:8])
            self.events.appendleft((f"signal {msg.data.signal_type}", codes or "(none)"))
        elif isinstance(msg, wire.NewsMessage):
            self.events.appendleft(("news", msg.data.title))
        elif isinstance(msg, wire.FeedGapMessage):
            self.events.appendleft(("feed gap", f"{msg.source}: {msg.reason}"))
        elif isinstance(msg, wire.Error):
            self.events.appendleft(("error", f"{msg.code}: {msg.message}"))

    def render(self, now: float | None = None) -> Group:
        return Group(self._header(now), self._prices(), self._events(), self._slots())

    def _header(self, now: float | None) -> Text:
        clock = time.strftime("%H:%M:%S", time.localtime(now))
        state = ("connected", "green") if self.connected else ("reconnecting…", "yellow")
        up = self.status.get("upstream") or []
        sessions = "  ".join(f"{u.get('name')}:{u.get('state')}" for u in up) or "-"
        text = Text(f"tradestream top  {clock}  ")
        text.append(state[0], style=state[1])
        text.append(
            f"  clients {self.status.get('active_connections', '-')}"
            f"  upstream {sessions}  updates {self.updates}"
        )
        return text

    def _prices(self) -> Table:
        t = Table(title="prices (biggest moves first)", expand=True)
        for col, justify in (("code", "left"), ("name", "left"), ("price", "right"),
                             ("change %", "right"), ("volume", "right")):  # fmt: skip
            t.add_column(col, justify=justify)  # type: ignore[arg-type]
        rows = sorted(self.prices.items(), key=lambda kv: -abs(kv[1].change_percent))
        for code, d in rows[:MAX_CODES]:
            # the Korean convention: red up, blue down
            style = "red" if d.change > 0 else "blue" if d.change < 0 else ""
            t.add_row(
                code,
                self.names.get(code, ""),
                f"{d.price:,}",
                Text(f"{d.change_percent:+.2f}", style=style),
                f"{d.volume:,}",
            )
        return t

    def _events(self) -> Panel:
        lines = Text()
        for kind, what in self.events:
            lines.append(f"{kind:>14}  ", style="bold")
            lines.append(f"{what}\n")
        return Panel(lines or Text("nothing yet"), title="alerts, signals, news")

    def _slots(self) -> Table:
        t = Table(title="slots", expand=True)
        for col in ("session", "used", "capacity", *PRIORITIES):
            t.add_column(col, justify="right" if col != "session" else "left")
        usage = self.slots.get("usage") or {}
        by: dict[str, Counter[str]] = {}
        for row in self.slots.get("slots") or []:
            by.setdefault(row.get("session") or "-", Counter())[row.get("priority", "?")] += 1
        for name in sorted(set(usage) | set(by)):
            u = usage.get(name) or {}
            counts = by.get(name, Counter())
            t.add_row(
                name,
                str(u.get("used", sum(counts.values()))),
                str(u.get("capacity", "-")),
                *(str(counts.get(p, 0)) for p in PRIORITIES),
            )
        pending = self.slots.get("pending")
        t.caption = f"pending {len(pending) if isinstance(pending, list) else pending or 0}"
        return t


PRIORITIES = ("holding", "pick", "scanner", "demand")


async def run_top(
    base_url: str,
    token: str,
    *,
    poll_s: float = 2.0,
    refresh_per_s: float = 4.0,
    console: Console | None = None,
    board: Board | None = None,
    until: Callable[[Board], bool] = lambda board: False,
) -> Board:
    """Show the board until cancelled or `until(board)` (tests); returns it."""
    board = board if board is not None else Board()
    ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://") + "/api/ws"
    async with (
        Client(ws_url, token) as client,
        httpx.AsyncClient(base_url=base_url, params={"token": token}, timeout=5) as http,
        trio.open_nursery() as nursery,
    ):
        await _poll(http, board)
        codes = sorted(
            {r["code"] for r in board.slots.get("slots") or [] if r.get("tr_id") == TRADES}
        )[:MAX_CODES]
        await client.subscribe(*(f"price:{c}" for c in codes), "alert", "signal:vcp",
                               "signal:daytrading", "news")  # fmt: skip

        async def feed() -> None:
            async for msg in client:
                board.take(msg)

        async def poll() -> None:
            while True:
                await trio.sleep(poll_s)
                await _poll(http, board)

        nursery.start_soon(feed)
        nursery.start_soon(poll)
        with Live(board.render(), console=console, auto_refresh=False) as live:
            while True:
                board.connected = client.connected
                live.update(board.render(), refresh=True)
                if until(board):
                    break
                await trio.sleep(1 / refresh_per_s)
        nursery.cancel_scope.cancel()
    return board


async def _poll(http: httpx.AsyncClient, board: Board) -> None:
    """The slots and the status; a failed read keeps what was there (the header says why)."""
    try:
        slots = await http.get("/api/slots")
        status = await http.get("/api/ws/status")
    except httpx.HTTPError as exc:
        board.events.appendleft(("rest", f"unreachable: {exc!r}"[:120]))
        return
    if slots.status_code == 200:
        board.slots = slots.json()
        board.names.update({r["code"]: r.get("name", "") for r in board.slots.get("slots", [])})
    if status.status_code == 200:
        board.status = status.json()
