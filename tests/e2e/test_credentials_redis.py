"""Broker credentials shared across processes through the real Redis
(`TRADESTREAM_TEST_REDIS_URL`), each "process" a `Credentials` registry of its own: two of them
issue one token between them even when they ask at once; a Redis that cannot be reached means
issuing locally; and against the simulator, a KIS feed session and the REST clients of one app
key share its approval key and access token, in the process and across processes, through a
refusal and a restart; the status endpoint shows them without a secret."""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import trio

from tests.conftest import make_settings
from tests.e2e.test_service import TIMEOUT_S, service, wait_for
from tradestream.events import Event
from tradestream.feeds import kis
from tradestream.feeds.credentials import (
    Credential,
    CredentialKind,
    Credentials,
    RedisCredentialStore,
    Token,
)
from tradestream.feeds.kis.adapter import KIS_APPROVAL
from tradestream.feeds.kis.rest import KIS_ACCESS, KisRest
from tradestream.feeds.session import run_feed
from tradestream.redis_bridge import redis_client
from tradestream.sim.server import run_simulator

APP_KEY, SECRET, URL = "PSappkey-e2e", "e2e-secret-value", "https://broker.example:9443"


class Broker:
    """The issuing endpoint: one token per issue, after a round trip of `delay_s` (real
    time), so that concurrent askers overlap."""

    def __init__(self, delay_s: float = 0.3) -> None:
        self.delay_s = delay_s
        self.issued: list[str] = []

    async def issue(self, http: httpx.AsyncClient, app_key: str, secret: str) -> Token:
        await trio.sleep(self.delay_s)
        value = f"token-{len(self.issued) + 1}"
        self.issued.append(value)
        now = time.time()
        return Token(value, now + 86_400.0, now)


def shared(redis_url: str, prefix: str) -> RedisCredentialStore:
    return RedisCredentialStore(partial(redis_client, redis_url), prefix=f"{prefix}credential")


async def drop_keys(redis_url: str, prefix: str) -> None:
    """Every key a test made: all named with its own prefix (the stream's keys after
    ``tradestream:credential:``)."""
    async with coredis.Redis.from_url(redis_url) as r:
        keys = [k async for k in r.scan_iter(match=f"*{prefix}*")]
        if keys:
            await r.delete(keys)


async def test_two_processes_issue_one_token_between_them(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    broker = Broker()
    kind = CredentialKind("test-access", broker.issue, min_interval_s=2.0)
    # two processes on two hosts: a file each, Redis between them
    a = Credentials(token_file=tmp_path / "a.json", shared=shared(redis_url, prefix))
    b = Credentials(token_file=tmp_path / "b.json", shared=shared(redis_url, prefix))
    ca, cb = a.credential(kind, APP_KEY, SECRET, URL), b.credential(kind, APP_KEY, SECRET, URL)
    got: list[str] = []

    async def get(cred: Credential) -> None:
        got.append(await cred.get())

    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for cred in (ca, cb, ca, cb, cb):  # at once
                    nursery.start_soon(get, cred)
            assert got == ["token-1"] * 5 and broker.issued == ["token-1"]
            assert ca.issued + cb.issued == 1 and ca.reused + cb.reused == 1
            key = f"{prefix}credential:{ca.ident}"
            async with coredis.Redis.from_url(redis_url, decode_responses=True) as r:
                doc = json.loads(await r.get(key) or "{}")
                life_ms, claim, last = (
                    await r.pttl(key),
                    await r.get(key + ":issuing"),
                    await r.pttl(key + ":issued"),
                )
            assert doc["token"] == "token-1" and doc["expires_at"] > time.time() + 86_000
            assert 86_000_000 < life_ms <= 86_400_000  # until it expires
            assert claim is None and 0 < last <= 2000  # the claim given up; the issue known

            # a third process, no file of its own: Redis has it
            c = Credentials(shared=shared(redis_url, prefix))
            cc = c.credential(kind, APP_KEY, SECRET, URL)
            assert await cc.get() == "token-1" and cc.source == "redis"

            # the broker refuses it to b: b drops it from Redis and issues the next (after
            # the interval); a, refused later too, takes b's from Redis
            cb.refused("token-1")
            assert await cb.get() == "token-2" and cb.source == "broker"
            assert await ca.get() == "token-1"  # a was not refused (yet): it keeps its own
            ca.refused("token-1")
            assert await ca.get() == "token-2" and ca.source == "redis"
            assert broker.issued == ["token-1", "token-2"]
            assert ca.status()["shared"] is True
            assert json.loads((tmp_path / "a.json").read_text())[ca.ident]["token"] == "token-2"
    finally:
        for creds in (a, b):
            await creds.aclose()
        await drop_keys(redis_url, prefix)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_redis_outage_falls_back_to_local_issuance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis on a closed port: the credential is issued here and kept in the file, quickly
    and without failing; the next run (Redis still down) takes it from the file."""
    caplog.set_level(logging.WARNING, "tradestream.feeds.credentials")
    url = f"redis://127.0.0.1:{closed_port()}/0"
    broker = Broker(delay_s=0.0)
    kind = CredentialKind("test-access", broker.issue, min_interval_s=60.0)
    tokens = tmp_path / "tokens.json"
    down = Credentials(token_file=tokens, shared=RedisCredentialStore(partial(redis_client, url)))
    cred = down.credential(kind, APP_KEY, SECRET, URL)
    with trio.fail_after(10):
        t0 = trio.current_time()
        assert await cred.get() == "token-1"
        assert trio.current_time() - t0 < 5.0
        assert cred.source == "broker" and cred.status()["shared"] is False
        await down.aclose()
        again = Credentials(
            token_file=tokens, shared=RedisCredentialStore(partial(redis_client, url))
        )
        restarted = again.credential(kind, APP_KEY, SECRET, URL)
        assert await restarted.get() == "token-1" and restarted.source == "file"
        await again.aclose()
    assert broker.issued == ["token-1"]
    assert "Redis unreachable" in caplog.text and "issued without the shared store" in caplog.text


async def test_a_feed_session_and_rest_clients_of_one_app_key_share_its_credentials(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    """Process a: the KIS feed session of the app key and two REST clients; process b: a REST
    client of the same key. One access token and one approval key between them; a refused
    approval key is replaced once and the access token stands; a restart of a takes both from
    its file."""
    s = make_settings(tmp_path)
    tokens = tmp_path / "state" / "kis-tokens.json"
    a = Credentials(token_file=tokens, shared=shared(redis_url, prefix))
    b = Credentials(token_file=tmp_path / "b.json", shared=shared(redis_url, prefix))
    restarted = Credentials(token_file=tokens)  # a's next run (Redis or not)
    clients: list[KisRest] = []
    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                sim = await nursery.start(run_simulator, s.sim)
                k = kis.use_simulator(s, sim.rest_url, sim.ws_url).kis
                account = k.account
                live = replace(s, kis=k)
                (session,) = kis.sessions(live, credentials=a)
                out, events_in = trio.open_memory_channel[Event](1000)
                nursery.start_soon(drain, events_in)
                await nursery.start(
                    partial(
                        run_feed,
                        session.adapter,
                        out,
                        session.status,
                        session.timing,
                        rest_url=session.rest_url,
                    )
                )

                def rest(creds: Credentials) -> KisRest:
                    cred = creds.credential(KIS_ACCESS, k.app_key, k.app_secret, k.rest_url)
                    return KisRest(k.rest_url, k.app_key, k.app_secret, credential=cred)

                clients += [rest(a), rest(a), rest(b)]
                async with trio.open_nursery() as calls:
                    for client in clients:
                        calls.start_soon(client.balance, account)
                await wait_for(lambda: session.status.state == "streaming", "streaming")
                assert sim.rest is not None and sim.rest.stats.tokens_issued == 1
                assert sim.control.stats.approvals == 1
                assert clients[0].credential is clients[1].credential  # one per process
                # one process issued it, the other took it from Redis
                mine, theirs = clients[0].credential, clients[2].credential
                assert (mine.issued + theirs.issued, mine.reused + theirs.reused) == (1, 1), (
                    mine.status(),
                    theirs.status(),
                )

                # the broker forgets the approval key: one new key; the access token stands
                sim.control.revoke_credentials()
                sim.control.drop_all()
                await wait_for(
                    lambda: (
                        sim.control.stats.approvals == 2 and session.status.state == "streaming"
                    ),
                    "a new approval key",
                )
                (approval,) = sim.control.approvals  # the live one
                for client in clients:
                    await client.balance(account)
                assert sim.rest.stats.tokens_issued == 1

                # b's view of the approval key: the new one, from Redis
                b_approval = b.credential(KIS_APPROVAL, k.app_key, k.app_secret, k.rest_url)
                assert await b_approval.get() == approval and b_approval.source == "redis"

                # a restarts, Redis or not: both from its file, nothing issued
                access = restarted.credential(KIS_ACCESS, k.app_key, k.app_secret, k.rest_url)
                key = restarted.credential(KIS_APPROVAL, k.app_key, k.app_secret, k.rest_url)
                assert await key.get() == approval and key.source == "file"
                assert await access.get() == await clients[0].token()
                assert access.source == "file"
                assert (sim.control.stats.approvals, sim.rest.stats.tokens_issued) == (2, 1)
                statuses = {st["kind"]: st for st in a.status()}
                assert statuses["kis-approval"]["refusals"] == 1
                assert statuses["kis-approval"]["issued"] == 2
                nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
        for creds in (a, b, restarted):
            await creds.aclose()
        await drop_keys(redis_url, prefix)


async def drain(events_in: trio.MemoryReceiveChannel[Event]) -> None:
    async for _ in events_in:
        pass


async def test_the_status_endpoint_shows_the_credentials_without_secrets(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    """The whole tree in cluster mode (Redis set): the feeds' and the REST client's
    credentials in the ingest's status, issued once each, and no value or secret anywhere."""
    base = make_settings(tmp_path, ls=True)
    stream = f"{prefix}stream"
    s = replace(base, detect=replace(base.detect, redis_url=redis_url), redis_stream=stream)
    try:
        with trio.fail_after(TIMEOUT_S):
            async with service(s) as running:
                assert running.sim is not None and running.sim.rest is not None
                await wait_for(lambda: all(f.state == "streaming" for f in running.feeds), "up")
                admin = running.auth.issue("ops", role="admin")
                async with httpx.AsyncClient(base_url=running.url) as http:
                    status = await wait_for_credentials(http, admin)
                secrets = [
                    *running.sim.control.approvals,
                    *running.sim.control.tokens,
                    *running.sim.rest.tokens,
                    s.kis.app_key,
                    s.kis.app_secret,
                    s.ls.app_key,
                    s.ls.app_secret,
                ]
        shown = {st["kind"]: st for st in status["credentials"]}
        assert set(shown) == {"kis-access", "kis-approval", "ls-access"}
        for st in shown.values():
            assert st["state"] == "valid" and st["issued"] == 1 and st["shared"] is True
            assert st["endpoint"] == running.sim.rest_url
        text = json.dumps(status)
        for secret in filter(None, secrets):
            assert secret not in text
    finally:
        await drop_keys(redis_url, prefix)


async def wait_for_credentials(http: httpx.AsyncClient, admin: str) -> dict[str, Any]:
    """The status once the REST client's token is there too (its first balance inquiry)."""
    while True:
        status: dict[str, Any] = (await http.get("/api/ws/status", params={"token": admin})).json()
        if {c["kind"] for c in status["credentials"] if c["state"] == "valid"} >= {
            "kis-access",
            "kis-approval",
            "ls-access",
        }:
            return status
        await trio.sleep(0.1)
