"""The account book's reconciliation against the broker's positions (pure), and the
positions document."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
import pytest

from tradestream.accounts import (
    SEEN_NOTICES_MAX,
    AccountBook,
    BrokerPosition,
    Correction,
    parse_positions,
)
from tradestream.errors import PositionsError
from tradestream.events import KST, Execution

ACCT = "5012345601"


def fill(
    code: str,
    side: str,
    qty: int,
    price: int = 1000,
    account: str = ACCT,
    order_no: str = "1",
    received_ns: int = 0,
) -> Execution:
    return Execution(
        "kis-1",
        "demo",
        account,
        order_no,
        "0",
        side,
        "fill",
        "new",
        False,
        code,
        qty,
        price,
        qty,
        price,
        datetime.now(KST),
        code,
        received_ns,
    )


def held(*items: tuple[str, int, float]) -> dict[str, BrokerPosition]:
    return {c: BrokerPosition(c, q, p) for c, q, p in items}


def test_reconcile_corrects_drift_both_ways() -> None:
    book = AccountBook()
    book.apply(fill("005930", "buy", 10))
    book.apply(fill("000660", "buy", 5, order_no="2"))
    # the broker: 005930 is 12 (a fill missed), 000660 gone (sold elsewhere), 035720 held
    # from before today
    fixed = book.reconcile(ACCT, held(("005930", 12, 70_000.0), ("035720", 3, 45_000.0)))
    assert fixed == [
        Correction(ACCT, "000660", 5, 0),
        Correction(ACCT, "005930", 10, 12),
        Correction(ACCT, "035720", 0, 3),
    ]
    assert book.positions_by_code() == {"005930": 12, "035720": 3}
    snap = book.snapshot([ACCT])["positions"]
    assert {(p["symbol"], p["quantity"], p["avg_price"]) for p in snap} == {
        ("005930", 12, 70_000.0),
        ("035720", 3, 45_000.0),
    }
    assert book.reconcile(ACCT, held(("005930", 12, 70_000.0), ("035720", 3, 45_000.0))) == []
    # fills go on from the broker's figures
    _, change = book.apply(fill("035720", "sell", 3, order_no="3"))
    assert change is not None and not change.held and book.held_codes() == {"005930"}


def test_reconcile_leaves_codes_filled_since_the_question_alone() -> None:
    book = AccountBook()
    book.apply(fill("005930", "buy", 10, received_ns=100))
    asked = 200  # the question goes out ...
    book.apply(fill("000660", "buy", 5, order_no="2", received_ns=250))  # ... a fill meanwhile
    fixed = book.reconcile(ACCT, held(("005930", 10, 1000.0)), asked_ns=asked)
    assert fixed == [] and book.positions_by_code() == {"005930": 10, "000660": 5}
    assert book.reconcile(ACCT, held(("005930", 10, 1000.0)), asked_ns=300) == [
        Correction(ACCT, "000660", 5, 0)
    ]


def test_a_notice_received_before_the_question_but_applied_late_is_corrected_once() -> None:
    # held 10; a sell of 4 is executed and its notice received (at 150) before the question
    # (at 200), but it reaches the book only after the answer (the router behind). The sync
    # waits for it (`routed`), so the answer replaces a book that has it: 6, not 2.
    book = AccountBook()
    book.apply(fill("005930", "buy", 10, received_ns=100))
    book.apply(fill("005930", "sell", 4, order_no="2", received_ns=150))
    assert book.reconcile(ACCT, held(("005930", 6, 1000.0)), asked_ns=200) == []
    assert book.positions_by_code() == {"005930": 6}
    _, change = book.apply(fill("005930", "sell", 2, order_no="3", received_ns=400))
    assert book.positions_by_code() == {"005930": 4} and change is None


def test_reconcile_touches_only_the_account_given() -> None:
    book = AccountBook()
    book.apply(fill("005930", "buy", 1, account="A"))
    book.apply(fill("005930", "buy", 2, account="B", order_no="2"))
    assert book.reconcile("A", {}) == [Correction("A", "005930", 1, 0)]
    assert book.positions_by_code() == {"005930": 2}
    assert book.reconcile("C", held(("000660", 0, 0.0))) == []  # nothing held either way


def test_positions_document() -> None:
    doc = {
        "accounts": [
            {
                "account": ACCT,
                "positions": [
                    {"code": "005930", "quantity": 10, "avg_price": 71000},
                    {"code": "000660", "quantity": 1, "avg_price": 180000.5},
                ],
            },
            {"account": "other", "positions": []},
        ]
    }
    assert parse_positions(doc) == {
        ACCT: held(("005930", 10, 71000.0), ("000660", 1, 180000.5)),
        "other": {},
    }
    bad: object
    for bad in (
        {},
        {"accounts": [{"positions": []}]},
        {"accounts": "x"},
        {"accounts": [{"account": ACCT, "positions": [{"code": "5930", "quantity": 1}]}]},
        {"accounts": [{"account": ACCT, "positions": [{"code": "005930", "quantity": True}]}]},
        {"accounts": [{"account": "", "positions": []}]},
        [1, 2],
    ):
        with pytest.raises(PositionsError):
            parse_positions(bad)


def test_a_notice_delivered_twice_counts_once() -> None:
    # a handover (old and new socket both deliver it) or a notice TR registered twice
    book = AccountBook()
    buy = fill("005930", "buy", 10)
    _, change = book.apply(buy)
    assert change is not None and change.held
    order, change = book.apply(buy)
    assert change is None and order.filled_qty == 10 and book.duplicates == 1
    assert book.positions_by_code() == {"005930": 10}
    # a second fill of the same order, same quantity and price but another time: a new one
    later = msgspec.structs.replace(buy, time=buy.time + timedelta(seconds=1))
    book.apply(later)
    assert book.positions_by_code() == {"005930": 20} and book.duplicates == 1


def test_the_duplicate_cache_is_bounded() -> None:
    book = AccountBook()
    first = fill("005930", "buy", 1)
    book.apply(first)
    for i in range(SEEN_NOTICES_MAX):
        book.apply(msgspec.structs.replace(first, order_no=str(i + 2)))
    assert book.positions_by_code() == {"005930": SEEN_NOTICES_MAX + 1}
    book.apply(first)  # forgotten: the oldest key left the cache
    assert book.positions_by_code() == {"005930": SEEN_NOTICES_MAX + 2}
    assert book.duplicates == 0
