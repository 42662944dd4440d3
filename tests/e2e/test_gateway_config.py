"""The gateway as configured from the environment: limits, topic ACLs, and RS256 end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import jwt
import msgspec
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import make_settings
from tests.e2e.test_gateway import closed_with, recv_type
from tests.e2e.test_service import (
    TIMEOUT_S,
    open_websocket_url,
    recv,
    send,
    service,
    wait_for,
)
from tradestream import logs
from tradestream.config import from_env
from tradestream.errors import ConfigError


def test_gateway_limits_from_the_environment() -> None:
    g = from_env(
        {
            "TRADESTREAM_WS_RATE_PER_S": "7.5",
            "TRADESTREAM_WS_RATE_BURST": "9",
            "TRADESTREAM_WS_RATE_CLOSE_AFTER": "33",
            "TRADESTREAM_WS_MAX_SUBSCRIPTIONS": "12",
            "TRADESTREAM_WS_MAX_MESSAGE_BYTES": "2048",
            "TRADESTREAM_WS_MAX_CONNECTIONS_PER_USER": "3",
            "TRADESTREAM_WS_MAX_CONNECTIONS": "99",
            "TRADESTREAM_WS_HANDSHAKE_TIMEOUT_S": "2.5",
            "TRADESTREAM_WS_SEND_TIMEOUT_S": "4",
            "TRADESTREAM_WS_BATCH_DELAY_MS": "50",
            "TRADESTREAM_WS_OUTBOX_MAX": "256",
            "TRADESTREAM_WS_PING_INTERVAL_S": "15",
            "TRADESTREAM_WS_MAX_PENDING_HANDSHAKES": "8",
            "TRADESTREAM_WS_MAX_DEMAND_PER_USER": "4",
            "TRADESTREAM_WS_MAX_MISSED_PONGS": "3",
            "TRADESTREAM_WS_TOPIC_ROLES": "strategy=admin|producer; order=admin",
        }
    ).gateway
    assert (g.rate_per_s, g.rate_burst, g.rate_close_after) == (7.5, 9, 33)
    assert (g.max_subscriptions, g.max_message_bytes) == (12, 2048)
    assert (g.max_connections_per_user, g.max_connections) == (3, 99)
    assert (g.handshake_timeout_s, g.send_timeout_s, g.outbox_max) == (2.5, 4.0, 256)
    assert (g.ping_interval_s, g.max_missed_pongs, g.max_pending_handshakes) == (15.0, 3, 8)
    assert g.max_demand_per_user == 4 and from_env({}).gateway.max_demand_per_user == 10
    assert g.batch_delay_s == 0.05 and from_env({}).gateway.batch_delay_s == 0.02
    assert from_env({"TRADESTREAM_WS_BATCH_DELAY_MS": "0"}).gateway.batch_delay_s == 0
    assert g.topic_roles == (("strategy", ("admin", "producer")), ("order", ("admin",)))
    defaults = from_env({}).gateway  # safe defaults when nothing is set
    assert (defaults.rate_per_s, defaults.max_subscriptions, defaults.max_connections) == (
        20.0,
        200,
        10_000,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TRADESTREAM_WS_TOPIC_ROLES": "stratgy=admin"}, "unknown topic kind 'stratgy'"),
        ({"TRADESTREAM_WS_TOPIC_ROLES": "signal=root"}, "unknown roles"),
        ({"TRADESTREAM_WS_MAX_CONNECTIONS": "many"}, "is not a whole number"),
        ({"TRADESTREAM_WS_RATE_PER_S": "-1"}, "must not be negative"),
        ({"TRADESTREAM_JWT_ALGORITHM": "none"}, "HS256 or RS256"),
        ({"TRADESTREAM_JWT_ALGORITHM": "RS256"}, "needs TRADESTREAM_JWT_PUBLIC_KEY_FILE"),
        ({"TRADESTREAM_JWT_SECRET": "short"}, "at least 32 bytes"),
    ],
)
def test_bad_gateway_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


async def test_rs256_tokens_from_the_configured_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file = tmp_path / "issuer.pub.pem"
    key_file.write_bytes(public_pem)
    g = from_env(
        {"TRADESTREAM_JWT_ALGORITHM": "RS256", "TRADESTREAM_JWT_PUBLIC_KEY_FILE": str(key_file)}
    ).gateway
    assert g.jwt_algorithm == "RS256" and not g.jwt_secret_generated
    base = make_settings(tmp_path)
    s = replace(
        base, gateway=replace(base.gateway, jwt_algorithm="RS256", jwt_public_key=g.jwt_public_key)
    )
    exp = time.time() + 600
    good = jwt.encode({"sub": "issuer-user", "exp": exp}, private_pem, algorithm="RS256")

    # the classic confusion: an HS256 token whose HMAC key is the server's own public key
    # (PyJWT refuses to sign with a PEM as an HMAC secret, so build it by hand)
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = (
        b64(b'{"alg":"HS256","typ":"JWT"}')
        + "."
        + b64(json.dumps({"sub": "mallory", "exp": int(exp)}).encode())
    )
    confused = (
        signing_input
        + "."
        + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    )
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "mallory", "exp": exp}, other_key, algorithm="RS256")
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            async with open_websocket_url(f"{running.ws_url}?token={good}") as ws:
                hello = await recv(ws)
                assert (hello["type"], hello["user_id"]) == ("connected", "issuer-user")
                await send(ws, type="ping")
                assert (await recv_type(ws, "pong"))["type"] == "pong"
            for bad in (confused, forged):
                async with open_websocket_url(f"{running.ws_url}?token={bad}") as ws:
                    code, reason = await closed_with(ws)
                    assert code == 4401 and reason.startswith("invalid token"), reason


async def test_connection_events_are_logged_as_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = make_settings(tmp_path)
    caplog.set_level(logging.INFO, logger="tradestream.gateway")
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            token = running.auth.issue("alice")
            async with open_websocket_url(f"{running.ws_url}?token={token}") as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="news")
                await recv_type(ws, "subscribed")
                await send(ws, type="subscribe", topic="bogus")
                await recv_type(ws, "error")
            async with open_websocket_url(f"{running.ws_url}?token=garbage") as ws:
                await closed_with(ws)
            await wait_for(  # the disconnect is logged after the close
                lambda: any(
                    r.getMessage().startswith("ws disconnect") and "alice" in r.getMessage()
                    for r in caplog.records
                ),
                "alice's disconnect logged",
            )
    records = [r for r in caplog.records if r.name == "tradestream.gateway"]
    got = [logs.fields(r.getMessage()) for r in records]
    by_event: dict[str, list[dict[str, str]]] = {}
    for event, f in got:
        by_event.setdefault(event, []).append(f)
    assert by_event["ws connect"][0]["user"] == "alice"
    assert by_event["ws subscribe"][0]["topic"] == "news"
    assert by_event["ws error"][0]["code"] == "unknown_topic"
    assert by_event["ws auth_failure"][0]["reason"].startswith("invalid token")
    assert by_event["ws disconnect"][0] == {
        "client": by_event["ws connect"][0]["client"],
        "user": "alice",
        "close": "client",
        "reason": "",
    }
    # and the JSON form of one of them
    line = msgspec.json.decode(logs.JsonFormatter().format(records[0]))
    assert line["level"] == "INFO" and line["logger"] == "tradestream.gateway"
    assert line["event"] == "ws connect" and line["user"] == "alice"


@pytest.mark.parametrize("tr_id", ["H0STCNI0", "H0STCNI9"])
def test_execution_notices_cannot_be_configured_as_picks(tr_id: str) -> None:
    with pytest.raises(ConfigError, match="execution notices"):
        from_env({"TRADESTREAM_KIS_EXTRA": f"H0STASP0:005930,{tr_id}:demo"})
