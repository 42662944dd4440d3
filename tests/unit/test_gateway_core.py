"""Pure parts of the gateway: topics, the token bucket, RS256 tokens, the account book."""

from __future__ import annotations

import time
from datetime import datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tradestream.accounts import AccountBook, HoldingChange
from tradestream.errors import AuthError, ProtocolError, TokenExpired
from tradestream.events import KST, Execution
from tradestream.gateway.auth import Authenticator, bearer
from tradestream.gateway.limits import TokenBucket
from tradestream.topics import Topic, parse_topic
from tradestream.wire import CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED, close_code_for


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("price:005930", Topic("price:005930", "price:005930", "price", "005930")),
        ("price:005930@1s", Topic("price:005930@1s", "price:005930", "price", "005930", 1.0)),
        (
            "orderbook:00088K@250ms",
            Topic("orderbook:00088K@250ms", "orderbook:00088K", "orderbook", "00088K", 0.25),
        ),
        ("news", Topic("news", "news", "news", None)),
        ("news:005930", Topic("news:005930", "news:005930", "news", "005930")),
        ("order:*", Topic("order:*", "order:*", "order", "*")),
        ("order:0000123", Topic("order:0000123", "order:0000123", "order", "0000123")),
        (
            "strategy:ma-cross_1",
            Topic("strategy:ma-cross_1", "strategy:ma-cross_1", "strategy", "ma-cross_1"),
        ),
        ("signal:vcp", Topic("signal:vcp", "signal:vcp", "signal", "vcp")),
        (
            "signal:daytrading",
            Topic("signal:daytrading", "signal:daytrading", "signal", "daytrading"),
        ),
        ("market-gate", Topic("market-gate", "market-gate", "market-gate", None)),
        ("market-gate@5s", Topic("market-gate@5s", "market-gate", "market-gate", None, 5.0)),
        ("market:kospi", Topic("market:kospi", "market:kospi", "market", "kospi")),
        ("market:kosdaq@1s", Topic("market:kosdaq@1s", "market:kosdaq", "market", "kosdaq", 1.0)),
        ("alert", Topic("alert", "alert", "alert", None)),
        ("alert:005930", Topic("alert:005930", "alert:005930", "alert", "005930")),
    ],
)
def test_valid_topics(raw: str, expected: Topic) -> None:
    assert parse_topic(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("orders", "unknown_topic"),
        ("quote:005930", "unknown_topic"),
        ("", "invalid_topic"),
        ("x" * 200, "invalid_topic"),
        ("price", "invalid_topic"),
        ("price:", "invalid_topic"),
        ("price:5930", "invalid_topic"),
        ("price:0059301", "invalid_topic"),
        ("price:00593a", "invalid_topic"),
        ("orderbook:*", "invalid_topic"),
        ("order:", "invalid_topic"),
        ("order:a b", "invalid_topic"),
        ("strategy:", "invalid_topic"),
        ("signal:momentum", "invalid_topic"),
        ("market:nasdaq", "invalid_topic"),
        ("market-gate:x", "invalid_topic"),
        ("price:005930@", "invalid_topic"),
        ("price:005930@1m", "invalid_topic"),
        ("price:005930@10ms", "invalid_topic"),  # below the 100 ms floor
        ("price:005930@1000s", "invalid_topic"),
        ("order:*@1s", "invalid_topic"),  # lossless topics take no cadence
        ("alert@1s", "invalid_topic"),
        ("signal:vcp@5s", "invalid_topic"),
    ],
)
def test_bad_topics_have_stable_codes(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_topic(raw)
    assert info.value.code == code
    assert str(info.value)  # a human-readable reason


def test_token_bucket_rate_and_burst() -> None:
    bucket = TokenBucket(rate=8.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.0625)  # half a token
    assert bucket.take(100.125)  # one token after 1/8 s
    assert not bucket.take(100.125)
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # capped at burst
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


def test_bearer_prefers_the_header() -> None:
    assert bearer({"Authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert bearer({"Authorization": "bearer abc"}, {}) == "abc"
    assert bearer({}, {"token": "q"}) == "q"
    assert bearer({"Authorization": "Basic x"}, {}) is None


def test_rs256_tokens_verify_with_the_public_key_only() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    issuer = Authenticator(algorithm="RS256", public_key=public, private_key=private)
    verifier = Authenticator(algorithm="RS256", public_key=public)
    ident = verifier.verify(issuer.issue("7", role="admin", accounts=("A1", "A2")))
    assert (ident.user_id, ident.role, ident.accounts) == ("7", "admin", frozenset({"A1", "A2"}))
    with pytest.raises(ValueError, match="only verifies"):
        verifier.issue("7")
    # an HS256 token signed with the public key text (the classic confusion attack) is refused
    forged = jwt.encode({"sub": "7"}, "x" * 40, algorithm="HS256")
    with pytest.raises(AuthError):
        verifier.verify(forged)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = jwt.encode({"sub": "7"}, other, algorithm="RS256")
    with pytest.raises(AuthError, match="invalid token"):
        verifier.verify(bad)


def test_auth_errors_carry_distinct_close_codes() -> None:
    secret = "s" * 32
    auth = Authenticator(secret, leeway_s=0)
    expired = jwt.encode({"sub": "1", "exp": int(time.time()) - 1}, secret, algorithm="HS256")
    with pytest.raises(TokenExpired) as info:
        auth.verify(expired)
    assert close_code_for(info.value) == CLOSE_TOKEN_EXPIRED
    with pytest.raises(AuthError) as info2:
        auth.verify("not.a.token")
    assert close_code_for(info2.value) == CLOSE_UNAUTHORIZED
    with pytest.raises(AuthError, match="role"):
        auth.verify(jwt.encode({"sub": "1", "role": "root"}, secret, algorithm="HS256"))
    with pytest.raises(AuthError, match="accounts"):
        auth.verify(jwt.encode({"sub": "1", "accounts": "A1"}, secret, algorithm="HS256"))


def _ex(
    order_no: str,
    kind: str,
    side: str,
    qty: int,
    price: int,
    *,
    oqty: int = 10,
    correction: str = "new",
    rejected: bool = False,
    orig: str = "",
    account: str = "A1",
    code: str = "005930",
    minute: int = 0,
) -> Execution:
    return Execution(
        source="kis-1",
        customer_id="demo",
        account=account,
        order_no=order_no,
        original_order_no=orig,
        side=side,
        kind=kind,
        correction=correction,
        rejected=rejected,
        code=code,
        quantity=qty,
        price=price,
        order_qty=oqty,
        order_price=price,
        time=datetime(2025, 1, 2, 9, minute, tzinfo=KST),
        name="",
        received_ns=1,
    )


def test_account_book_orders_positions_and_holding_changes() -> None:
    book = AccountBook()
    order, change = book.apply(_ex("1", "order", "buy", 10, 70000))
    assert (order.status, change) == ("accepted", None)
    order, change = book.apply(_ex("1", "fill", "buy", 4, 70000, minute=1))
    assert (order.status, order.filled_qty) == ("partially_filled", 4)
    assert change == HoldingChange("A1", "005930", True, 4)
    order, change = book.apply(_ex("1", "fill", "buy", 6, 71000, minute=2))
    assert (order.status, order.filled_qty, change) == ("filled", 10, None)
    assert order.avg_fill_price == pytest.approx(70600.0)
    snap = book.snapshot(["A1"])
    assert snap["positions"] == [
        {"symbol": "005930", "quantity": 10, "avg_price": 70600.0, "account": "A1"}
    ]
    book.apply(_ex("2", "order", "sell", 10, 72000, minute=3))
    _, change = book.apply(_ex("2", "fill", "sell", 10, 72000, minute=4))
    assert change == HoldingChange("A1", "005930", False, 0)
    assert book.snapshot(["A1"])["positions"] == []
    assert book.held_codes() == set()
    # cancels and rejections
    book.apply(_ex("3", "order", "buy", 5, 1000, code="000660"))
    order, _ = book.apply(
        _ex("4", "order", "buy", 5, 1000, correction="cancel", orig="3", code="000660")
    )
    assert order.status == "cancelled"
    statuses = {o["order_id"]: o["status"] for o in book.snapshot(["A1"])["orders"]}
    assert statuses == {"1": "filled", "2": "filled", "3": "cancelled", "4": "cancelled"}
    order, _ = book.apply(_ex("5", "order", "buy", 5, 1000, rejected=True))
    assert order.status == "rejected"
    # isolation: another account's data is not in A1's snapshot
    book.apply(_ex("9", "fill", "buy", 1, 500, account="B2", code="035420"))
    assert {p["account"] for p in book.snapshot(["A1"])["positions"]} == set()
    assert {o["account"] for o in book.snapshot(["A1"])["orders"]} == {"A1"}
    assert book.snapshot(["B2"])["positions"][0]["symbol"] == "035420"
