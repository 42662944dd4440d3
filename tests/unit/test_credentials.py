"""The credential manager (feeds/credentials.py) against a model broker, on trio's mock clock
(autojump) with the wall clock tied to it: one issuance for concurrent callers, renewal
before expiry, the issuance interval and "too soon" answers waited out, refusals, the token
file across a restart, and a status that never shows a secret. The shared store is modelled
in memory here (Redis itself: tests/e2e/test_credentials_redis.py)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tradestream.errors import CredentialRejected
from tradestream.feeds.credentials import (
    Credential,
    CredentialKind,
    Credentials,
    IssuedTooSoon,
    SharedStoreDown,
    Token,
    TokenFile,
    credential_identity,
    key_identity,
)

APP_KEY = "PSappkey-1234567890"
SECRET = "s3cr3t-app-secret-value"
URL = "https://broker.example:9443"
EPOCH = 1_750_000_000.0  # the wall clock at trio time 0


def wall() -> float:
    """The epoch clock, moving with trio's (mock) clock."""
    return EPOCH + trio.current_time()


class Broker:
    """The issuing endpoint: a token per issue (`life_s` long), after a round trip of
    `delay_s`; the next `too_soon` asks are answered "too soon", the next `refuse` refused."""

    def __init__(self, life_s: float = 86_400.0, delay_s: float = 0.1) -> None:
        self.life_s = life_s
        self.delay_s = delay_s
        self.too_soon = 0
        self.refuse = 0
        self.asked: list[float] = []  # trio times of every ask
        self.issued: list[str] = []

    async def issue(self, http: httpx.AsyncClient, app_key: str, secret: str) -> Token:
        assert (app_key, secret) == (APP_KEY, SECRET)
        self.asked.append(trio.current_time())
        await trio.sleep(self.delay_s)
        if self.too_soon:
            self.too_soon -= 1
            raise IssuedTooSoon("EGW00133 once a minute")
        if self.refuse:
            self.refuse -= 1
            raise CredentialRejected(f"HTTP 403 bad app key {app_key} / {secret}")
        value = f"token-{len(self.issued) + 1}"
        self.issued.append(value)
        now = time.time()  # the issuer's own clock: only the lifetime counts
        return Token(value, now + self.life_s, now)


def kind_of(broker: Broker, **kw: Any) -> CredentialKind:
    return CredentialKind("test-access", broker.issue, **kw)


def registry(tmp_path: Path | None = None, **kw: Any) -> Credentials:
    path = tmp_path / "state" / "tokens.json" if tmp_path is not None else None
    return Credentials(token_file=path, wall=wall, **kw)


async def test_concurrent_callers_share_one_issuance(autojump_clock: object) -> None:
    broker = Broker(delay_s=1.0)
    creds = registry()
    cred = creds.credential(kind_of(broker), APP_KEY, SECRET, URL)
    got: list[str] = []

    async def one() -> None:
        got.append(await cred.get())

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
    assert got == ["token-1"] * 10 and broker.asked == [0.0]
    assert (cred.issued, cred.reused, cred.source) == (1, 0, "memory")
    # every user of the app key at this endpoint gets the same credential
    assert creds.credential(kind_of(broker), APP_KEY, SECRET, URL + "/") is cred
    assert creds.credential(kind_of(broker), APP_KEY, SECRET, "https://other:29443") is not cred
    await creds.aclose()


async def test_renewed_before_expiry(autojump_clock: object) -> None:
    broker = Broker(life_s=3600.0, delay_s=0.0)
    creds = registry()
    cred = creds.credential(kind_of(broker, renew_before_s=600.0), APP_KEY, SECRET, URL)
    assert await cred.get() == "token-1"
    assert cred.status()["state"] == "valid"
    await trio.sleep(2999.0)  # 601 s left: still the same
    assert await cred.get() == "token-1" and len(broker.issued) == 1
    await trio.sleep(2.0)  # 599 s left: renewed at the next use
    assert cred.status()["state"] == "expiring"
    assert await cred.get() == "token-2"
    st = cred.status()
    assert st["state"] == "valid" and st["issued"] == 2
    assert st["expires_at"] == pytest.approx(wall() + 3600.0)
    await creds.aclose()


async def test_max_life_caps_a_lifetime_the_broker_does_not_state(autojump_clock: object) -> None:
    broker = Broker(life_s=86_400.0, delay_s=0.0)
    creds = registry()
    cred = creds.credential(kind_of(broker, max_life_s=20 * 3600.0), APP_KEY, SECRET, URL)
    await cred.get()
    assert cred.status()["expires_at"] == pytest.approx(wall() + 20 * 3600.0)
    await creds.aclose()


async def test_the_interval_since_the_last_issue_is_waited_out(autojump_clock: object) -> None:
    broker = Broker(delay_s=0.0)
    creds = registry()
    cred = creds.credential(kind_of(broker, min_interval_s=60.0), APP_KEY, SECRET, URL)
    assert await cred.get() == "token-1"
    await trio.sleep(10.0)
    cred.refused("token-1")  # the broker says it is invalid 10 s after its issue
    assert await cred.get() == "token-2"
    assert broker.asked == [0.0, 60.0]  # not before the minute is over
    await creds.aclose()


async def test_too_soon_answers_are_waited_out_and_asked_again(autojump_clock: object) -> None:
    broker = Broker(delay_s=0.0)
    broker.too_soon = 2  # another process issued one a moment ago
    creds = registry()
    cred = creds.credential(kind_of(broker, min_interval_s=60.0), APP_KEY, SECRET, URL)
    assert await cred.get() == "token-1"
    assert broker.asked == [0.0, 60.0, 120.0] and cred.issued == 1

    broker.too_soon = 3  # three times: given up, said
    cred.refused("token-1")
    with pytest.raises(IssuedTooSoon):
        await cred.get()
    assert broker.asked[3:] == [180.0, 240.0, 300.0]
    st = cred.status()
    assert st["state"] == "refused" and "IssuedTooSoon" in st["last_error"]
    await creds.aclose()


async def test_refusals_of_the_current_and_of_an_older_value(
    autojump_clock: object, tmp_path: Path
) -> None:
    broker = Broker(delay_s=0.0)
    creds = registry(tmp_path)
    cred = creds.credential(kind_of(broker), APP_KEY, SECRET, URL)
    assert await cred.get() == "token-1"
    cred.refused("token-0")  # a value this credential no longer holds: nothing happens
    assert cred.status()["state"] == "valid" and await cred.get() == "token-1"
    cred.refused("token-1")
    assert cred.status()["state"] == "refused" and cred.status()["refusals"] == 1
    # the file still holds token-1, fresh: it is not taken again, a new one is issued
    assert await cred.get() == "token-2" and (cred.issued, cred.reused) == (2, 0)
    cred.refused("token-1")  # a late refusal of the old one (another user's request)
    assert await cred.get() == "token-2" and cred.status()["refusals"] == 1
    # a restart: the file's token-2 is reused; token-1 is gone from it
    again = registry(tmp_path).credential(kind_of(broker), APP_KEY, SECRET, URL)
    assert await again.get() == "token-2" and again.reused == 1 and again.source == "file"
    await creds.aclose()


async def test_a_refusal_to_issue_is_raised_and_the_next_get_asks_again(
    autojump_clock: object,
) -> None:
    broker = Broker(delay_s=0.0)
    broker.refuse = 1
    creds = registry()
    cred = creds.credential(kind_of(broker), APP_KEY, SECRET, URL)
    with pytest.raises(CredentialRejected):
        await cred.get()
    st = cred.status()
    assert st["state"] == "refused" and "CredentialRejected" in st["last_error"]
    assert APP_KEY not in st["last_error"] and SECRET not in st["last_error"]  # scrubbed
    assert await cred.get() == "token-1"
    assert cred.status()["state"] == "valid" and cred.status()["last_error"] == ""
    await creds.aclose()


async def test_token_file_is_private_and_survives_a_restart(
    autojump_clock: object, tmp_path: Path
) -> None:
    broker = Broker(delay_s=0.0)
    first = registry(tmp_path)
    cred = first.credential(kind_of(broker), APP_KEY, SECRET, URL)
    value = await cred.get()
    path = tmp_path / "state" / "tokens.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert APP_KEY not in text and SECRET not in text  # named by hashes only
    assert json.loads(text)[cred.ident]["token"] == value
    assert cred.ident == credential_identity("test-access", APP_KEY, URL)
    await first.aclose()

    restarted = registry(tmp_path)  # the next run of the process
    again = restarted.credential(kind_of(broker), APP_KEY, SECRET, URL)
    assert await again.get() == value
    assert (again.issued, again.reused, again.source) == (0, 1, "file")
    assert broker.issued == [value]
    # another endpoint's credential of the same app key is never offered here
    other = restarted.credential(kind_of(broker), APP_KEY, SECRET, "https://paper:29443")
    assert await other.get() == "token-2" and other.issued == 1
    await restarted.aclose()


def test_token_file_round_trip(tmp_path: Path) -> None:
    f = TokenFile(tmp_path / "state" / "kis-tokens.json")
    ident = key_identity("PSappkey-secret-looking")
    f.save(ident, Token("tok", 2e9, 1e9))
    f.save(key_identity("other"), Token("tok2", 2e9, 1e9))
    assert stat.S_IMODE(os.stat(f.path).st_mode) == 0o600
    assert "PSappkey" not in f.path.read_text()
    assert f.load(ident) == Token("tok", 2e9, 1e9)
    assert f.load("nobody") is None
    f.path.write_text("not json")
    assert f.load(ident) is None


async def test_status_never_shows_the_value_the_key_or_the_secret(
    autojump_clock: object, tmp_path: Path
) -> None:
    broker = Broker(delay_s=0.0)
    creds = registry(tmp_path)
    cred = creds.credential(kind_of(broker), APP_KEY, SECRET, URL)
    value = await cred.get()
    (st,) = creds.status()
    assert st["kind"] == "test-access" and st["app_key"] == key_identity(APP_KEY)
    assert st["endpoint"] == URL and st["state"] == "valid" and st["source"] == "broker"
    assert st["issued_at"] == pytest.approx(EPOCH) and st["shared"] is None
    shown = json.dumps(creds.status())
    for secret in (value, APP_KEY, SECRET):
        assert secret not in shown
    await creds.aclose()


class MemoryStore:
    """The shared store as Redis keeps it (SharedStore), in memory; `down`: unreachable."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.last: dict[str, float] = {}
        self.claims: dict[str, str] = {}
        self.down = False
        self.calls = 0

    def _op(self) -> None:
        self.calls += 1
        if self.down:
            raise SharedStoreDown("modelled outage")

    async def load(self, ident: str) -> tuple[Token | None, float]:
        self._op()
        return self.tokens.get(ident), self.last.get(ident, 0.0)

    async def claim(self, ident: str, owner: str, ttl_s: float) -> bool:
        self._op()
        return self.claims.setdefault(ident, owner) == owner

    async def release(self, ident: str, owner: str) -> None:
        self._op()
        if self.claims.get(ident) == owner:
            del self.claims[ident]

    async def publish(
        self, ident: str, token: Token, *, ttl_s: float, owner: str, min_interval_s: float
    ) -> None:
        self._op()
        self.tokens[ident] = token
        self.last[ident] = token.issued_at
        if self.claims.get(ident) == owner:
            del self.claims[ident]

    async def drop(self, ident: str, value: str) -> None:
        self._op()
        if ident in self.tokens and self.tokens[ident].value == value:
            del self.tokens[ident]


async def test_two_processes_sharing_a_store_issue_once(autojump_clock: object) -> None:
    broker, store = Broker(delay_s=2.0), MemoryStore()
    a, b = registry(shared=store), registry(shared=store)
    kind = kind_of(broker, min_interval_s=60.0)
    ca, cb = a.credential(kind, APP_KEY, SECRET, URL), b.credential(kind, APP_KEY, SECRET, URL)
    got: dict[str, str] = {}

    async def get(name: str, cred: Credential) -> None:
        got[name] = await cred.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get, "a", ca)
        nursery.start_soon(get, "b", cb)
    assert got == {"a": "token-1", "b": "token-1"} and broker.issued == ["token-1"]
    assert sorted([ca.source, cb.source]) == ["broker", "redis"]
    assert not store.claims  # given up once shared
    # b's request is refused: b gets a new one a minute after the first was answered (at
    # 2 s); a, told later, takes it
    cb.refused("token-1")
    assert await cb.get() == "token-2" and broker.asked[-1] == pytest.approx(62.0)
    assert await ca.get() == "token-1"  # not refused here (yet)
    ca.refused("token-1")
    assert await ca.get() == "token-2" and ca.source == "redis"
    assert broker.issued == ["token-1", "token-2"]
    await a.aclose()
    await b.aclose()


async def test_an_unreachable_store_means_issuing_here(autojump_clock: object) -> None:
    broker, store = Broker(delay_s=0.0), MemoryStore()
    store.down = True
    creds = registry(shared=store)
    cred = creds.credential(kind_of(broker), APP_KEY, SECRET, URL)
    assert await cred.get() == "token-1" and cred.source == "broker"
    assert cred.status()["shared"] is False
    await creds.aclose()
