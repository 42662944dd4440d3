"""Client message decoding, server message shapes (seed 003) and JWT checks."""

from __future__ import annotations

import time
from datetime import datetime

import jwt
import msgspec
import pytest

from tradestream import wire
from tradestream.errors import AuthError, ProtocolError
from tradestream.events import KST, Tick
from tradestream.gateway.auth import Authenticator

SECRET = "unit-test-secret-of-at-least-32-bytes"


def test_decode_client_messages() -> None:
    assert wire.decode_client_message(
        '{"type":"subscribe","topic":"price:005930"}'
    ) == wire.Subscribe("price:005930")
    assert wire.decode_client_message(b'{"type":"unsubscribe","topic":"x"}') == wire.Unsubscribe(
        "x"
    )
    assert wire.decode_client_message('{"type":"ping"}') == wire.Ping(None)
    assert wire.decode_client_message(
        '{"type":"ping","timestamp":"2024-01-01T00:00:00","extra":1}'
    ) == wire.Ping("2024-01-01T00:00:00")
    assert wire.decode_client_message('{"type":"get_price","symbol":"005930"}') == wire.GetPrice(
        "005930"
    )
    assert wire.decode_client_message('{"type":"get_account"}') == wire.GetAccount()
    assert wire.decode_client_message('{"type":"auth","token":"t"}') == wire.Auth("t")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"topic":"price:005930"}', "unknown_type"),
        ('{"type":"subscribe"}', "invalid_message"),
        ('{"type":"subscribe","topic":5}', "invalid_message"),
        ("[1,2]", "invalid_message"),
        ('{"type":"get_price"}', "invalid_message"),
        ('{"type":"get_price","symbol":5930}', "invalid_message"),
        ('{"type":"auth"}', "invalid_message"),
    ],
)
def test_bad_client_messages_have_stable_codes(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode_client_message(raw)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        ("[" * 8 + "]" * 8, False),  # at the bound
        ("[" * 9 + "]" * 9, True),
        ('{"type": "ping", "timestamp": "' + "[{" * 50 + '"}', False),  # brackets in a string
        ('{"a": "\\\\", "b": ' + "[" * 9 + "1" + "]" * 9 + "}", True),  # an escaped backslash
        ('{"a": "\\"[[[[[[[[[[", "b": 1}', False),  # an escaped quote keeps the string open
        ("[" * 100_000, True),  # unbalanced: refused without a full scan
        ('{"type": "subscribe", "topic": "price:005930"}', False),
    ],
)
def test_too_deep(raw: str, deep: bool) -> None:
    assert wire.too_deep(raw) is deep
    assert wire.too_deep(raw.encode()) is deep


def test_deep_messages_are_invalid_not_a_recursion_error() -> None:
    for raw in ("[" * 100_000 + "]" * 100_000, '{"type": ' + "[" * 5000 + "]" * 5000 + "}"):
        with pytest.raises(ProtocolError) as info:
            wire.decode_client_message(raw)
        assert info.value.code == "invalid_message"


def test_price_update_shape() -> None:
    t = Tick(
        source="kis-1",
        venue="KRX",
        code="005930",
        trade_time=datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST),
        price=71000,
        change=-500,
        change_percent=-0.7,
        open=1,
        high=2,
        low=1,
        ask=71100,
        bid=71000,
        trade_volume=3,
        volume=1233600,
        value=9,
        strength=1.0,
        received_ns=1,
    )
    assert msgspec.json.decode(wire.price_update(t)) == {
        "type": "price_update",
        "symbol": "005930",
        "data": {
            "price": 71000,
            "change": -500,
            "change_percent": -0.7,
            "volume": 1233600,
            "timestamp": "2025-01-02T09:30:15+09:00",
            "open": 1,
            "high": 2,
            "low": 1,
            "ask": 71100,
            "bid": 71000,
            "trade_volume": 3,
        },
    }


def test_jwt_round_trip_and_failures() -> None:
    auth = Authenticator(SECRET)
    ident = auth.verify(auth.issue("42", role="admin"))
    assert (ident.user_id, ident.role) == ("42", "admin")
    assert ident.expires_at is not None and ident.expires_at > time.time()
    with pytest.raises(AuthError, match="missing token"):
        auth.verify(None)
    with pytest.raises(AuthError, match="invalid token"):
        auth.verify(Authenticator("other-" + SECRET).issue("42"))
    with pytest.raises(AuthError, match="invalid token"):
        auth.verify(jwt.encode({"role": "user"}, SECRET, algorithm="HS256"))  # no sub
    expired = jwt.encode({"sub": "42", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="token expired"):
        auth.verify(expired)
    with pytest.raises(ValueError):
        Authenticator("")
    with pytest.raises(ValueError):
        Authenticator("short")


def test_token_expiry_follows_the_injected_clock() -> None:
    now = [1_700_000_000.0]
    auth = Authenticator(SECRET, leeway_s=5.0, clock=lambda: now[0])
    token = auth.issue("42", ttl_s=60)
    ident = auth.verify(token)
    assert ident.expires_at == 1_700_000_060
    now[0] += 64.9  # past exp, inside the leeway: still accepted
    assert auth.verify(token).user_id == "42"
    now[0] += 0.1  # exp + leeway: expired
    with pytest.raises(AuthError, match="token expired"):
        auth.verify(token)
    # a token from the future of a wall clock is judged by the injected clock, not the wall's
    later = Authenticator(SECRET, clock=lambda: time.time() + 3600).issue("7", ttl_s=60)
    assert auth.verify(later).user_id == "7"
    bad_exp = jwt.encode({"sub": "42", "exp": "soon"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token"):
        auth.verify(bad_exp)
