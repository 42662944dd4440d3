"""Broker credentials (access tokens, approval keys): one manager per kind, app key and broker
endpoint, shared by every feed session and REST client of the process (issue 18 item 4).

- **Issued within the broker's limits**: at most one issue per `CredentialKind.min_interval_s`
  for an app key, counted from the last issue known from any source (held, file, Redis); an
  answer "too soon" (`IssuedTooSoon`, e.g. KIS EGW00133, kis-rest.md §2.1) is waited out and
  asked again, at most `issue_attempts` times. Callers that need one at the same time share
  one issuance.
- **Renewed before expiry**: a credential within `renew_before_s` of its end is replaced by the
  next `get()`; `max_life_s` caps a lifetime the broker does not state (the KIS approval key).
- **Kept across restarts** in a `TokenFile` (JSON, mode 0600), under an identity made of the
  kind and hashes of the app key and endpoint: never the key or the secret.
- **Shared across processes** (cluster mode) through a `SharedStore`, `RedisCredentialStore`:
  ``<prefix>:<identity>`` (the ingest's prefix: ``tradestream:credential:<stream>``) holds
  ``{token, expires_at, issued_at}`` until the credential expires, ``<key>:issued`` the last
  issue time for the kind's interval. A process about to issue first takes ``<key>:issuing``
  (``SET NX PX``); one that cannot waits for the holder's credential to appear instead of
  issuing its own.
  Redis unreachable: the process goes on with its file and issues for itself (a warning, not
  a failure: the feeds never stop because Redis is down).
- **Refusals**: `refused(value)` drops the current credential if it is the one refused, and
  that value is not taken from any store again: the next `get()` gets a new one.

`status()` shows the state without the value or the secret. Time: `wall` (epoch seconds) for
expiry and the issuance interval; waits are Trio sleeps, so tests run on a MockClock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import trio

from tradestream.errors import CredentialRejected, FeedError

if TYPE_CHECKING:
    import coredis

log = logging.getLogger(__name__)

RENEW_BEFORE_S = 600.0  # a credential this close to its end is replaced
ISSUE_ATTEMPTS = 3  # "too soon" answers waited out before giving up
TOO_SOON_WAIT_S = 1.0  # the wait after "too soon" for a kind without a stated interval
REFUSED_KEPT = 8  # refused values remembered (never taken from a store again)
SHARED_POLL_S = (0.1, 2.0)  # waiting for another process's issue: first and longest poll
SHARED_RETRY_S = 30.0  # after Redis failed, it is left alone this long
CLOSE_S = 2.0  # aclose: at most this long for each HTTP client


class IssuedTooSoon(FeedError):
    """The broker refused to issue because the last issue was too recent (KIS EGW00133):
    raised by an issue function; the manager waits out the interval and asks again."""


class SharedStoreDown(FeedError):
    """The shared store (Redis) cannot be reached: the manager goes on without it."""


@dataclass
class Token:
    value: str
    expires_at: float  # epoch seconds
    issued_at: float  # epoch seconds


def key_identity(app_key: str) -> str:
    """The app key's name in the token file and the status: a hash, never the key."""
    return hashlib.sha256(app_key.encode()).hexdigest()[:16]


def endpoint_of(base_url: str) -> str:
    """The endpoint as the identity names it: httpx adds a "/" to a base URL, we drop it."""
    return base_url.rstrip("/")


def credential_identity(kind: str, app_key: str, base_url: str) -> str:
    """One credential's name in the stores: kind, app key hash, endpoint hash. A credential
    another server issued is never offered to this one: the endpoint is part of the name."""
    endpoint = hashlib.sha256(endpoint_of(base_url).encode()).hexdigest()[:8]
    return f"{kind}:{key_identity(app_key)}:{endpoint}"


#: (client on the endpoint, app key, secret) -> the new credential. Its issued_at and
#: expires_at give only the lifetime: the manager stamps it with its own wall clock.
#: Raises CredentialRejected (refused), IssuedTooSoon, or another FeedError (transport).
IssueFn = Callable[[httpx.AsyncClient, str, str], Awaitable[Token]]


@dataclass(frozen=True)
class CredentialKind:
    """How one kind of credential is issued and how long it is kept."""

    name: str  # "kis-access", "kis-approval", "ls-access", "kiwoom-access"
    issue: IssueFn
    min_interval_s: float = 0.0  # between two issues for one app key (KIS access: 60)
    renew_before_s: float = RENEW_BEFORE_S
    max_life_s: float | None = None  # a cap when the broker does not say
    issue_attempts: int = ISSUE_ATTEMPTS  # IssuedTooSoon answers waited out, at most


class TokenFile:
    """Credentials by identity in one JSON file, written aside and renamed, mode 0600.
    Synchronous and small: read when a credential is needed, written when one is issued.
    Saves are serialised (the credentials of one registry share the file and issue at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saving = threading.Lock()

    def load(self, ident: str) -> Token | None:
        try:
            doc = json.loads(self.path.read_text())
            t = doc[ident]
            return Token(str(t["token"]), float(t["expires_at"]), float(t["issued_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, ident: str, token: Token) -> None:
        with self._saving:
            self._save(ident, token)

    def _save(self, ident: str, token: Token) -> None:
        try:
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict):
                doc = {}
        except (OSError, ValueError):
            doc = {}
        doc[ident] = {
            "token": token.value,
            "expires_at": token.expires_at,
            "issued_at": token.issued_at,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}-{os.getpid()}-{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.chmod(tmp, 0o600)
        tmp.rename(self.path)


class SharedStore(Protocol):
    """Credentials shared by the processes of a cluster. Every method raises SharedStoreDown
    when the store cannot be reached; `down` says whether the last operation did."""

    down: bool

    async def load(self, ident: str) -> tuple[Token | None, float]:
        """The credential held (None: none), and the last issue time known (0: none)."""

    async def claim(self, ident: str, owner: str, ttl_s: float) -> bool:
        """Become the one process that issues (until `publish`, `release` or `ttl_s`)."""

    async def release(self, ident: str, owner: str) -> None:
        """Give the claim up (only if `owner` still holds it)."""

    async def publish(
        self, ident: str, token: Token, *, ttl_s: float, owner: str, min_interval_s: float
    ) -> None:
        """Share `token` for `ttl_s` (until it expires), remember its issue for
        `min_interval_s`, and give up `owner`'s claim."""

    async def drop(self, ident: str, value: str) -> None:
        """Forget the credential if it is still `value` (the broker refused it)."""


_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
return 1
"""
_DROP = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisCredentialStore:
    """The cluster's credentials in Redis (see the module's doc for the keys). `connect()`
    returns a new coredis client (roles pass redis_bridge.redis_client with the URL); each
    operation opens and closes one, as credentials are needed a few times a day and the
    process keeps no Redis task for them. After a failure, Redis is left alone for
    `retry_after_s` (every operation raises SharedStoreDown at once meanwhile)."""

    def __init__(
        self,
        connect: Callable[[], coredis.Redis[bytes]],
        *,
        prefix: str = "tradestream:credential",
        timeout_s: float = 5.0,
        retry_after_s: float = SHARED_RETRY_S,
    ) -> None:
        self._connect = connect
        self.prefix = prefix
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._down_until = float("-inf")  # trio time
        self.down = False  # the last operation failed
        self.last_error = ""

    def key(self, ident: str) -> str:
        return f"{self.prefix}:{ident}"

    async def _run(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        """`op(client)` on a new connection; a lost or unreachable Redis -> SharedStoreDown."""
        import anyio
        from coredis.exceptions import RedisError

        if trio.current_time() < self._down_until:
            raise SharedStoreDown(f"Redis unreachable ({self.last_error})")
        lost: BaseException | None = None
        try:
            with trio.fail_after(self._timeout_s):
                async with self._connect() as r:
                    reply = await op(r)
        except* (
            RedisError,
            OSError,
            TimeoutError,
            trio.TooSlowError,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
        ) as group:
            lost = group
            while isinstance(lost, BaseExceptionGroup) and lost.exceptions:
                lost = lost.exceptions[0]  # coredis nests its errors in task-group groups
        if lost is not None:
            await trio.lowlevel.checkpoint()  # a cancel that looks like an outage wins here
            self._down_until = trio.current_time() + self._retry_after_s
            self.last_error = repr(lost)[:200]
            if not self.down:
                log.warning("credentials: Redis unreachable (%s)", self.last_error)
            self.down = True
            raise SharedStoreDown(f"Redis unreachable ({self.last_error})")
        if self.down:
            log.info("credentials: Redis reachable again")
        self.down = False
        return reply

    async def load(self, ident: str) -> tuple[Token | None, float]:
        key = self.key(ident)
        held, last = await self._run(lambda r: r.mget([key, key + ":issued"]))
        token = None
        if held is not None:
            try:
                doc = json.loads(held)
                token = Token(str(doc["token"]), float(doc["expires_at"]), float(doc["issued_at"]))
            except (ValueError, KeyError, TypeError):
                log.warning("credentials: %s in Redis is unreadable; ignored", key)
        try:
            issued = float(last) if last is not None else 0.0
        except ValueError:
            issued = 0.0
        return token, issued

    async def claim(self, ident: str, owner: str, ttl_s: float) -> bool:
        from coredis.tokens import PureToken

        key = self.key(ident) + ":issuing"
        ms = max(1, int(ttl_s * 1000))
        return bool(await self._run(lambda r: r.set(key, owner, condition=PureToken.NX, px=ms)))

    async def release(self, ident: str, owner: str) -> None:
        key = self.key(ident) + ":issuing"
        await self._run(lambda r: r.eval(_RELEASE, keys=[key], args=[owner]))

    async def publish(
        self, ident: str, token: Token, *, ttl_s: float, owner: str, min_interval_s: float
    ) -> None:
        key = self.key(ident)
        life_ms = int(ttl_s * 1000)
        if life_ms <= 0:
            return await self.release(ident, owner)
        doc = json.dumps(
            {"token": token.value, "expires_at": token.expires_at, "issued_at": token.issued_at}
        )
        args = [doc, life_ms, repr(token.issued_at), int(min_interval_s * 1000), owner]
        keys = [key, key + ":issued", key + ":issuing"]
        await self._run(lambda r: r.eval(_PUBLISH, keys=keys, args=args))

    async def drop(self, ident: str, value: str) -> None:
        key = self.key(ident)
        await self._run(lambda r: r.eval(_DROP, keys=[key], args=[value]))


class Credential:
    """One credential: a kind, an app key and the endpoint that issues it (`base_url`).

    `get()` returns it; `refused(value)` says the broker refused it. Issuance goes through
    `http` when given (the caller's client, not closed here), else through a client of this
    credential's own, which `aclose()` closes. Made by `Credentials.credential` (shared by
    every user of the key in the process), or directly for one user.
    """

    def __init__(
        self,
        kind: CredentialKind,
        app_key: str,
        secret: str,
        base_url: str,
        *,
        token_file: TokenFile | None = None,
        shared: SharedStore | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        wall: Callable[[], float] = time.time,
        owner: str = "",
    ) -> None:
        self.kind = kind
        self._app_key = app_key
        self._secret = secret
        self.base_url = endpoint_of(base_url)
        self.ident = credential_identity(kind.name, app_key, base_url)
        self._file = token_file
        self._shared = shared
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        self._timeout_s = timeout_s
        self._wall = wall
        self._owner = owner or _process_id()
        self._lock: trio.Lock | None = None  # made on first use: needs a running Trio
        self._token: Token | None = None
        self._last_issue_at = 0.0  # the last issue (or "too soon" answer) known
        self._rejected: deque[str] = deque(maxlen=REFUSED_KEPT)
        self._unshare: str | None = None  # refused: to be dropped from the shared store
        self._refused_last = False  # the broker's last word was a refusal
        self.issued = 0  # asked of the broker
        self.reused = 0  # taken from the file or the shared store
        self.refusals = 0
        self.source = ""  # where the last get() found it: memory, file, redis, broker
        self.last_error = ""

    # -- use -----------------------------------------------------------------------------
    def _fresh(self, t: Token | None) -> bool:
        return t is not None and t.expires_at - self._wall() > self.kind.renew_before_s

    def _usable(self, t: Token | None) -> bool:
        return t is not None and t.value not in self._rejected and self._fresh(t)

    async def get(self) -> str:
        """The credential: the one held while fresh; else the shared store's or the file's if
        fresh (counted as reused); else a new one from the broker (counted as issued), at most
        one per `min_interval_s`. Concurrent callers wait for one issuance. Raises what the
        issue function raises (CredentialRejected, IssuedTooSoon after the last attempt, a
        FeedError for transport trouble)."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            if self._usable(self._token):
                self.source = "memory"
                return self._token.value  # type: ignore[union-attr]
            try:
                token = await self._renew()
            except Exception as exc:
                self.last_error = self._scrub(f"{type(exc).__name__}: {exc}")
                self._refused_last = self._refused_last or isinstance(exc, CredentialRejected)
                raise
            self.last_error = ""
            self._refused_last = False
            return token.value

    def refused(self, value: str) -> None:
        """The broker refused `value`. If it is the current credential it is dropped, and
        neither the file's nor the shared store's copy of it is used again: the next `get()`
        gets a new one. A refusal of an earlier value (already replaced) changes nothing."""
        if self._token is None or self._token.value != value:
            return
        self._token = None
        self._rejected.append(value)
        self._unshare = value
        self._refused_last = True
        self.refusals += 1
        log.info("%s credential of app key %s refused by the broker",
                 self.kind.name, key_identity(self._app_key))  # fmt: skip

    def status(self) -> dict[str, Any]:
        """The state for the status endpoint: never the value, the app key or the secret."""
        t = self._token
        if t is None:
            state = "refused" if self._refused_last else "none"
        else:  # "expiring" also once past its end: the next get() renews it
            state = "valid" if self._fresh(t) else "expiring"
        return {
            "kind": self.kind.name,
            "app_key": key_identity(self._app_key),
            "endpoint": self.base_url,
            "state": state,
            "expires_at": round(t.expires_at, 3) if t is not None else None,  # epoch seconds
            "issued_at": round(t.issued_at, 3) if t is not None else None,
            "issued": self.issued,
            "reused": self.reused,
            "refusals": self.refusals,
            "source": self.source,
            # None: no shared store; else whether it answered last time
            "shared": None if self._shared is None else not self._shared.down,
            "last_error": self.last_error,
        }

    async def aclose(self) -> None:
        """Close the credential's own HTTP client (a client given to it is the giver's)."""
        if self._own_http is not None:
            with trio.move_on_after(CLOSE_S, shield=True):
                await self._own_http.aclose()
            self._own_http = None

    # -- the slow path (under the lock) --------------------------------------------------
    async def _renew(self) -> Token:
        """From the stores, or issued (under the shared store's claim when there is one)."""
        shared = self._shared
        if shared is not None and self._unshare is not None:
            value, self._unshare = self._unshare, None
            if not await self._try(shared.drop(self.ident, value)):
                shared = None
        filed = await self._load_file()
        if shared is not None:
            found = await self._load_shared(shared)
            if found is False:
                shared = None
            elif found is not None:
                return await self._adopt(found, "redis", filed)
        if filed is not None and self._usable(filed):
            self._take(filed, "file")
            if shared is not None:  # kept across a restart: the cluster may have it too
                await self._publish(shared, filed, "")
            return filed
        claimed = False
        if shared is not None:
            outcome = await self._claim_or_wait(shared)
            if isinstance(outcome, Token):
                return await self._adopt(outcome, "redis", filed)
            claimed = outcome
            if not claimed:
                shared = None
        if self._shared is not None and shared is None:
            log.warning("%s credential of app key %s: issued without the shared store",
                        self.kind.name, key_identity(self._app_key))  # fmt: skip
        try:
            token = await self._issue()
        except Exception:
            if shared is not None and claimed:
                await self._try(shared.release(self.ident, self._owner))
            raise
        await self._save_file(token)
        if shared is not None:
            await self._publish(shared, token, self._owner)
        return token

    async def _publish(self, shared: SharedStore, token: Token, owner: str) -> None:
        ttl_s = token.expires_at - self._wall()
        await self._try(
            shared.publish(
                self.ident, token, ttl_s=ttl_s, owner=owner, min_interval_s=self.kind.min_interval_s
            )
        )

    async def _load_file(self) -> Token | None:
        if self._file is None:
            return None
        filed = await trio.to_thread.run_sync(self._file.load, self.ident)
        if filed is not None:
            self._last_issue_at = max(self._last_issue_at, filed.issued_at)
        return filed

    async def _save_file(self, token: Token) -> None:
        if self._file is None:
            return
        try:
            await trio.to_thread.run_sync(self._file.save, self.ident, token)
        except OSError as exc:  # kept in memory all the same
            log.warning("%s credential not saved to %s (%s)", self.kind.name, self._file.path, exc)

    async def _load_shared(self, shared: SharedStore) -> Token | None | Literal[False]:
        """The shared store's credential if usable; None if not; False if it is down."""
        try:
            held, last = await shared.load(self.ident)
        except SharedStoreDown:
            return False
        self._last_issue_at = max(self._last_issue_at, last)
        if held is not None:
            self._last_issue_at = max(self._last_issue_at, held.issued_at)
        return held if self._usable(held) else None

    async def _claim_or_wait(self, shared: SharedStore) -> Token | bool:
        """Claim the issuance, or wait for the process that holds the claim to share its
        credential. True: ours to issue; a Token: another's; False: the store is down, or the
        other process took too long (then we issue without the store)."""
        kind = self.kind
        hold_s = (kind.issue_attempts + 1) * (kind.min_interval_s + self._timeout_s)
        deadline = trio.current_time() + hold_s + SHARED_POLL_S[1]
        delay = SHARED_POLL_S[0]
        while True:
            try:
                if await shared.claim(self.ident, self._owner, hold_s):
                    found = await self._load_shared(shared)  # shared between load and claim?
                    if isinstance(found, Token):
                        await self._try(shared.release(self.ident, self._owner))
                        return found
                    return found is not False
            except SharedStoreDown:
                return False
            if trio.current_time() >= deadline:
                log.warning("%s credential: another process claimed its issue %.0f s ago and "
                            "shared nothing; issuing here", kind.name, hold_s)  # fmt: skip
                return False
            await trio.sleep(delay)
            delay = min(delay * 2, SHARED_POLL_S[1])
            found = await self._load_shared(shared)
            if found is False:
                return False
            if found is not None:
                return found

    async def _adopt(self, token: Token, source: str, filed: Token | None) -> Token:
        """Hold a credential another process issued (and keep it in the file too)."""
        self._take(token, source)
        if filed is None or filed.value != token.value:
            await self._save_file(token)
        return token

    def _take(self, token: Token, source: str) -> None:
        self._token = token
        self.reused += 1
        self.source = source

    async def _issue(self) -> Token:
        """Ask the broker: after `min_interval_s` since the last issue known, and again after
        each "too soon", at most `issue_attempts` times."""
        kind = self.kind
        wait = self._last_issue_at + kind.min_interval_s - self._wall()
        for _ in range(kind.issue_attempts):
            if wait > 0:
                log.info("%s credential: the last was issued %.0f s ago; waiting %.0f s",
                         kind.name, kind.min_interval_s - wait, wait)  # fmt: skip
                await trio.sleep(wait)
            try:
                fresh = await kind.issue(self._client(), self._app_key, self._secret)
            except IssuedTooSoon:
                # issued elsewhere within the interval (another process, a lost file)
                self._last_issue_at = self._wall()
                wait = max(kind.min_interval_s, TOO_SOON_WAIT_S)
                continue
            now = self._wall()
            life = fresh.expires_at - fresh.issued_at
            if kind.max_life_s is not None:
                life = min(life, kind.max_life_s)
            token = Token(fresh.value, now + life, now)
            self._token = token
            self._last_issue_at = now
            self.issued += 1
            self.source = "broker"
            if token.value in self._rejected:  # the broker gave the same again: it stands
                self._rejected.remove(token.value)
            log.info("%s credential issued for app key %s (valid until %s)",
                     kind.name, key_identity(self._app_key), _stamp(token.expires_at))  # fmt: skip
            return token
        raise IssuedTooSoon(f"{kind.name}: refused as too soon {kind.issue_attempts} times")

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout_s)
        return self._own_http

    async def _try(self, op: Awaitable[None]) -> bool:
        """Run a shared-store operation; False if the store is down (never raised)."""
        try:
            await op
        except SharedStoreDown:
            return False
        return True

    def _scrub(self, text: str) -> str:
        """An error's text as the status may show it: without the key, secret or value."""
        for secret in (self._secret, self._app_key, *self._rejected,
                       self._token.value if self._token else ""):  # fmt: skip
            if secret:
                text = text.replace(secret, "***")
        return text[:300]


class SessionCredential:
    """A feed session's credential: the process's (`given`, from `Credentials`), else one of
    the session's own, issued through run_feed's client by the endpoint it talks to (made
    anew if the client changes). `held` is the value in use, for `forget` to refuse."""

    __slots__ = ("kind", "_key", "_secret", "_given", "_own", "_token_file", "held")

    def __init__(
        self,
        kind: CredentialKind,
        app_key: str,
        secret: str,
        given: Credential | None = None,
        *,
        token_file: TokenFile | None = None,
    ) -> None:
        self.kind = kind
        self._key, self._secret = app_key, secret
        self._given = given
        self._own: tuple[httpx.AsyncClient, Credential] | None = None
        self._token_file = token_file
        self.held: str | None = None

    @property
    def current(self) -> Credential | None:
        return self._given or (self._own[1] if self._own is not None else None)

    async def get(self, http: httpx.AsyncClient) -> str:
        """The value (`held` from now on); raises like `Credential.get`."""
        cred = self._given
        if cred is None:
            if self._own is None or self._own[0] is not http:
                own = Credential(self.kind, self._key, self._secret, str(http.base_url),
                                 token_file=self._token_file, http=http)  # fmt: skip
                self._own = (http, own)
            cred = self._own[1]
        self.held = None  # a failure leaves none to forget
        self.held = await cred.get()
        return self.held

    def forget(self) -> None:
        """The broker refused the held value: not used again anywhere; a new one next."""
        cred = self.current
        if cred is not None and self.held is not None:
            cred.refused(self.held)
        self.held = None


class Credentials:
    """The process's credentials: one `Credential` per (kind, app key, endpoint), whoever asks
    for it, so every feed session and REST client of an app key shares it. `token_file`: the
    restart store (0600); `shared`: the cluster's store (Redis), or None."""

    def __init__(
        self,
        *,
        token_file: Path | None = None,
        shared: SharedStore | None = None,
        timeout_s: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._file = TokenFile(token_file) if token_file is not None else None
        self._shared = shared
        self._timeout_s = timeout_s
        self._wall = wall
        self._owner = _process_id()
        self._all: dict[tuple[str, str, str], Credential] = {}

    def credential(
        self, kind: CredentialKind, app_key: str, secret: str, base_url: str
    ) -> Credential:
        """The credential of `kind` for `app_key` issued by `base_url`: the same object for
        every caller that names the same three."""
        key = (kind.name, app_key, endpoint_of(base_url))
        found = self._all.get(key)
        if found is None:
            found = self._all[key] = Credential(
                kind,
                app_key,
                secret,
                base_url,
                token_file=self._file,
                shared=self._shared,
                timeout_s=self._timeout_s,
                wall=self._wall,
                owner=self._owner,
            )
        return found

    def status(self) -> list[dict[str, Any]]:
        return [c.status() for c in self._all.values()]

    async def aclose(self) -> None:
        for c in self._all.values():
            await c.aclose()


def _process_id() -> str:
    """Who claims an issuance in the shared store: host, process, and a registry's own part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
