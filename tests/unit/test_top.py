"""`tradestream top`'s board (top.py): what it keeps of each message and how it draws it."""

from __future__ import annotations

import io
import re

import msgspec
from rich.console import Console

from tradestream import wire
from tradestream.top import Board


def draw(board: Board, width: int = 110) -> str:
    console = Console(file=io.StringIO(), width=width, color_system="truecolor", record=True)
    console.print(board.render(now=0))
    return console.export_text(styles=True)


def price(code: str, p: int, change: int, pct: float) -> wire.PriceUpdate:
    return wire.PriceUpdate(
        code, wire.PriceData(p, change, pct, 1_000, "2026-12-04T09:00:00+09:00")
    )


def test_the_board_draws_movers_first_in_korean_colours() -> None:
    b = Board(names={"005930": "Samsung Electronics"})
    b.take(price("005930", 71_000, 500, 0.71))
    b.take(price("000660", 120_000, -6_000, -4.76))
    b.take(msgspec.json.decode(wire.signal_update("vcp", [{"symbol": "035420"}], "t"),
                               type=wire.ServerMessage))  # fmt: skip
    b.take(wire.Error("slot_lost", "price:000270: session lost", "price:000270"))
    b.slots = {
        "usage": {"kis-1": {"used": 2, "capacity": 40}},
        "slots": [
            {"session": "kis-1", "priority": "pick", "tr_id": "H0STCNT0", "code": "005930"},
            {"session": "kis-1", "priority": "demand", "tr_id": "H0STCNT0", "code": "000660"},
        ],
        "pending": [],
    }
    b.status = {"active_connections": 3, "upstream": [{"name": "kis-1", "state": "streaming"}]}
    b.connected = True
    out = draw(b)
    lines = out.splitlines()
    row_a = next(i for i, line in enumerate(lines) if "000660" in line and "120,000" in line)
    row_b = next(i for i, line in enumerate(lines) if "005930" in line and "71,000" in line)
    assert row_a < row_b  # the bigger move first
    assert "Samsung Electronics" in lines[row_b]
    assert re.search(r"\x1b\[34m\s*-4\.76", lines[row_a])  # down: blue
    assert re.search(r"\x1b\[31m\s*\+0\.71", lines[row_b])  # up: red
    assert "signal VCP" in out and "035420" in out and "slot_lost" in out
    slot_row = next(line for line in lines if "kis-1" in line and "40" in line)
    cells = [c.strip() for c in slot_row.split("│") if c.strip()]
    assert cells == ["kis-1", "2", "40", "0", "1", "0", "1"]  # holding pick scanner demand
    assert "clients 3" in out and "kis-1:streaming" in out and "connected" in out


def test_a_board_without_a_connection_says_so() -> None:
    out = draw(Board())
    assert "reconnecting" in out and "nothing yet" in out
