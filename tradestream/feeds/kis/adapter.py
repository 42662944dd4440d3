"""The KIS side of a feed session: approval key, registrations, PINGPONG, acknowledgements.

The approval key (kis.md §2) is a "kis-approval" credential (`KIS_APPROVAL`,
feeds/credentials.py): the process's, shared through its registry, or the adapter's own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from trio_websocket import WebSocketConnection

from tradestream.config import KisSettings
from tradestream.errors import CredentialRejected, FeedError, KeyInUse
from tradestream.feeds.credentials import (
    Credential,
    CredentialKind,
    SessionCredential,
    Token,
    TokenFile,
    credential_identity,
)
from tradestream.feeds.kis.codec import Ack, AckResult, KisDecoder, PingPong, subscribe_message
from tradestream.feeds.session import (
    CONNECTED,
    DecoderAdapter,
    FeedStatus,
    FeedTiming,
    OpQueue,
)
from tradestream.upstream import Op

log = logging.getLogger(__name__)


APPROVAL_TTL_S = 20 * 3600.0  # reused for less than the day a key lasts (kis.md §2: ≤ 24 h)
APPROVAL_LIFE_S = 86_400.0  # what the official helper assumes (kis.md §2); capped above


def approval_identity(app_key: str, base_url: str) -> str:
    """The approval key's name in the token file and Redis (beside the app key's access
    token): per app key and the broker endpoint that issued it (a key another server issued is
    no good here)."""
    return credential_identity(KIS_APPROVAL.name, app_key, base_url)


async def request_approval_key(http: httpx.AsyncClient, app_key: str, app_secret: str) -> str:
    """POST /oauth2/Approval (kis.md §2); the secret goes in `secretkey`."""
    resp = await http.post(
        "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret},
    )
    if resp.status_code != 200:
        raise CredentialRejected(f"approval request: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        body = resp.json()
    except ValueError:
        raise CredentialRejected(f"approval response is not JSON: {resp.text[:200]!r}") from None
    key = body.get("approval_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        raise CredentialRejected("approval response without approval_key")
    return key


async def issue_approval_key(http: httpx.AsyncClient, app_key: str, app_secret: str) -> Token:
    """An approval key as a credential: the broker states no lifetime (a day, kis.md §2)."""
    try:
        key = await request_approval_key(http, app_key, app_secret)
    except httpx.HTTPError as exc:
        raise FeedError(f"approval request: {exc!r}"[:300]) from None
    now = time.time()
    return Token(key, now + APPROVAL_LIFE_S, now)


#: the WebSocket approval key of an app key, kept APPROVAL_TTL_S at most
KIS_APPROVAL = CredentialKind("kis-approval", issue_approval_key, max_life_s=APPROVAL_TTL_S)


def kis_timing(cfg: KisSettings) -> FeedTiming:
    return FeedTiming(cfg.stale_s, cfg.connect_timeout_s, cfg.backoff_initial_s, cfg.backoff_cap_s)


class KisAdapter(DecoderAdapter):
    """Drives one KIS session for run_feed. `on_ack` receives every acknowledgement.

    The approval key: `cfg.approval_key` when configured (and no app key given), else
    `credential` (the process's, shared), else one of the adapter's own kept in
    `cfg.token_file`, issued through run_feed's client.

    Registrations are the settings' fixed list, or, with `desired`, whatever the slot driver
    holds for this session at each (re)connect (the execution notice included when this
    session carries it). While connected, `send_op` queues a register/unregister that `pump`
    sends on the live socket, in order after the connect's registrations; ops while down are
    dropped (the next connect registers the whole state). `registered()` is what the live
    connection has asked for: the connect's list, then every queued op.
    """

    decoder: KisDecoder

    def __init__(
        self,
        cfg: KisSettings,
        name: str,
        on_ack: Callable[[Ack], None] | None = None,
        *,
        app_key: str = "",
        app_secret: str = "",
        desired: Callable[[], list[tuple[str, str]]] | None = None,
        credential: Credential | None = None,
    ) -> None:
        self.cfg = cfg
        self.ws_url = cfg.ws_url
        self.broker = "kis"
        self.decoder = KisDecoder(name)
        self.app_key = app_key or cfg.app_key
        self.app_secret = app_secret or cfg.app_secret
        self._configured = (cfg.approval_key or None) if not app_key else None
        self._cred = SessionCredential(
            KIS_APPROVAL,
            self.app_key,
            self.app_secret,
            credential,
            token_file=TokenFile(Path(cfg.token_file)) if cfg.token_file else None,
        )
        self.name = name
        self._on_ack = on_ack
        self._desired = desired
        self._ops = OpQueue()
        self._live = False
        self._status: FeedStatus | None = None
        self._registered: set[tuple[str, str]] = set()  # asked for on this connection

    @property
    def approvals_issued(self) -> int:
        """Approval keys asked of the broker by this session's credential."""
        cred = self._current_credential()
        return cred.issued if cred is not None else 0

    @property
    def approvals_reused(self) -> int:
        """Approval keys taken from the token file (an earlier run's, still live) or Redis."""
        cred = self._current_credential()
        return cred.reused if cred is not None else 0

    def _current_credential(self) -> Credential | None:
        return self._cred.current

    @property
    def _approval(self) -> str | None:
        """The key in use: the configured one, or the credential's."""
        return self._configured if self._configured is not None else self._cred.held

    def stats(self) -> dict[str, object]:
        """The decoder's counters and the approval keys' (never a key itself)."""
        return {
            **super().stats(),
            "approvals_issued": self.approvals_issued,
            "approvals_reused": self.approvals_reused,
        }

    def follow(self, desired: Callable[[], list[tuple[str, str]]]) -> None:
        """Register what `desired()` returns at each connect (the slot driver's choice for
        this session) instead of the settings' fixed list."""
        self._desired = desired

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        """The approval key: configured, or the credential's (held, kept from an earlier run
        in the token file or by another process in Redis, or asked for; kis.md §2: a key
        lasts a day)."""
        if self._configured is None:
            await self._cred.get(http)

    def forget_credential(self) -> None:
        if self._configured is not None:
            log.error(
                "%s: the configured approval key was refused; retrying with it", self.decoder.source
            )
            return
        self._cred.forget()  # not used again: a new one is asked for

    def registrations(self) -> list[str]:
        assert self._approval is not None
        regs = self.cfg.registrations() if self._desired is None else list(self._desired())
        self._registered = set(regs)
        return [
            subscribe_message(self._approval, tr_id, tr_key, custtype=self.cfg.custtype)
            for tr_id, tr_key in regs
        ]

    def unregistrations(self) -> list[str]:
        if self._approval is None:
            return []
        return [
            subscribe_message(
                self._approval, tr_id, tr_key, subscribe=False, custtype=self.cfg.custtype
            )
            for tr_id, tr_key in sorted(self._registered)
        ]

    def on_connect(self, status: FeedStatus) -> None:
        self.decoder.forget_keys()  # new acks bring new AES keys (kis.md §6.1)
        status.subscriptions.clear()
        self._ops.clear()  # superseded by registrations()
        self._registered = set()
        self._status = status
        self._live = True

    @property
    def live(self) -> bool:
        """A connection is up: run_feed marks any other state ("backoff", ...) before the next
        connect, even when the connection failed before `pump` started."""
        return self._live and self._status is not None and self._status.state in CONNECTED

    def send_op(self, op: Op) -> bool:
        """Queue a register or unregister of one (tr_id, code) on the live socket (slot
        driver); False, and nothing queued, when there is no live connection."""
        if not self.live or self._approval is None:
            return False
        key = (op.tr_id, op.code)
        if op.action == "subscribe":
            self._registered.add(key)
        else:
            self._registered.discard(key)
        self._ops.put(
            subscribe_message(
                self._approval,
                op.tr_id,
                op.code,
                subscribe=op.action == "subscribe",
                custtype=self.cfg.custtype,
            )
        )
        return True

    def registered(self) -> frozenset[tuple[str, str]] | None:
        """What the live connection has asked for: the connect's registrations and every op
        queued since; None when there is no live connection."""
        return frozenset(self._registered) if self.live else None

    async def pump(self, ws: WebSocketConnection) -> None:
        """Send queued ops while this connection lives (run by run_feed beside the reader)."""
        try:
            await self._ops.pump(ws)
        finally:
            self._live = False

    async def on_control(self, ws: WebSocketConnection, msg: object, status: FeedStatus) -> bool:
        if isinstance(msg, PingPong):
            await ws.send_message(msg.raw)  # echo unchanged (kis.md §5.3)
            return False
        assert isinstance(msg, Ack)
        if self._on_ack is not None:
            self._on_ack(msg)
        key = f"{msg.tr_id}:{msg.tr_key}"
        if msg.live:
            status.subscriptions[key] = "subscribed"
            return True
        if msg.result is AckResult.UNSUBSCRIBED:
            status.subscriptions.pop(key, None)
            return False
        status.subscriptions[key] = msg.result.value
        if msg.result is AckResult.INVALID_APPROVAL_KEY:
            raise CredentialRejected(f"{msg.msg_cd} {msg.msg1}")
        if msg.result is AckResult.KEY_IN_USE:
            raise KeyInUse(f"{msg.msg_cd} {msg.msg1}")
        log.warning("%s: %s refused: %s %s", status.name, key, msg.msg_cd, msg.msg1)
        return False
