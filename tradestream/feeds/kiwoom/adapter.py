"""The Kiwoom side of a feed session (kiwoom.md §3-§8): the access token, LOGIN, the
registrations the slot driver holds for the session, PING echoes and SYSTEM notices.

The slot driver speaks in KIS registrations, (tr_id, code): a Kiwoom session carries the trade
and order-book ones (`CARRIES`), sent as REG/REMOVE of (type, item) (`to_kiwoom`). Nothing is
registered before the LOGIN reply says yes (§3); the registrations then go as one REG per
type, and the driver's later ops one request each, in order, with each reply matched to its
request (replies come in order and do not name their items, §4).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import httpx
from trio_websocket import WebSocketConnection

from tradestream.config import KiwoomSettings
from tradestream.errors import CredentialRejected, FeedError, KeyInUse
from tradestream.feeds.credentials import (
    Credential,
    CredentialKind,
    IssuedTooSoon,
    SessionCredential,
    Token,
)
from tradestream.feeds.kiwoom.codec import (
    TOKEN_PATH,
    KiwoomDecoder,
    KiwoomTokenError,
    Login,
    Ping,
    RegReply,
    System,
    item_for,
    login_code,
    login_message,
    parse_token_response,
    refusal_kind,
    reg_message,
    remove_message,
    token_request,
)
from tradestream.feeds.session import (
    CONNECTED,
    DecoderAdapter,
    FeedStatus,
    FeedTiming,
    OpQueue,
)
from tradestream.upstream import (
    KIWOOM_BOOK,
    KIWOOM_TRADE,
    ORDER_BOOK_TRS,
    TRADE_TRS,
    Op,
)

log = logging.getLogger(__name__)

TOKEN_REFRESH_MARGIN_S = 600.0  # the official helper renews 10 minutes early (§10)
GROUP = "1"  # every registration in one group (§4): REMOVE takes them out one by one

#: the KIS registrations a Kiwoom session can carry -> (Kiwoom type, venue)
_BY_TR: dict[str, tuple[str, str]] = {
    **{tr: (KIWOOM_TRADE, venue) for tr, venue in TRADE_TRS.items()},
    **{tr: (KIWOOM_BOOK, venue) for tr, venue in ORDER_BOOK_TRS.items()},
}
CARRIES = frozenset(_BY_TR)

Key = tuple[str, str]  # (tr_id, code), the slot driver's registration


def to_kiwoom(tr_id: str, code: str) -> tuple[str, str]:
    """(type, item) of a KIS registration: ("H0NXCNT0", "005930") -> ("0B", "005930_NX")."""
    kind, venue = _BY_TR[tr_id]
    return kind, item_for(venue, code)


def _by_type(keys: Iterable[Key]) -> list[list[Key]]:
    """Registrations grouped by Kiwoom type (a request's items all take its types, §4):
    trades (0B) first, each group sorted."""
    groups: dict[str, list[Key]] = {}
    for key in sorted(keys):
        groups.setdefault(_BY_TR[key[0]][0], []).append(key)
    return [groups[kind] for kind in sorted(groups)]


async def issue_access_token(http: httpx.AsyncClient, app_key: str, secret: str) -> Token:
    """au10001 (§2): the token and its expiry (`expires_dt`). Kiwoom answers HTTP 200 with a
    `return_code`: a refused key is CredentialRejected, the rate limit (1700) IssuedTooSoon;
    anything but HTTP 200 is the transport's trouble (FeedError), not the credential's."""
    try:
        resp = await http.post(TOKEN_PATH, json=token_request(app_key, secret))
        body = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise FeedError(f"token request: {exc!r}"[:300]) from None
    if body is None:
        raise FeedError(f"token request: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        value, expires_at = parse_token_response(body, time.time())
    except KiwoomTokenError as exc:
        if refusal_kind(exc.code) == "rate_limit":
            raise IssuedTooSoon(f"token request: {exc}") from None
        raise CredentialRejected(f"token request: {exc}") from None
    return Token(value, expires_at, time.time())


#: the access token of a Kiwoom app key: LOGIN's (§3)
KIWOOM_ACCESS = CredentialKind(
    "kiwoom-access", issue_access_token, renew_before_s=TOKEN_REFRESH_MARGIN_S
)


def kiwoom_timing(cfg: KiwoomSettings) -> FeedTiming:
    return FeedTiming(cfg.stale_s, cfg.connect_timeout_s, cfg.backoff_initial_s, cfg.backoff_cap_s)


class KiwoomAdapter(DecoderAdapter):
    """Drives one Kiwoom session for run_feed; an `OpSink` for the slot driver."""

    decoder: KiwoomDecoder

    def __init__(
        self,
        cfg: KiwoomSettings,
        name: str,
        *,
        desired: Callable[[], list[Key]] | None = None,
        credential: Credential | None = None,
    ) -> None:
        """`credential`: the process's access token for the app key (feeds/credentials.py),
        else the adapter's own, issued through run_feed's client."""
        self.cfg = cfg
        self.name = name
        self.ws_url = cfg.ws_url
        self.broker = "kiwoom"
        self.decoder = KiwoomDecoder(name)
        self._desired = desired
        self._cred = SessionCredential(KIWOOM_ACCESS, cfg.app_key, cfg.app_secret, credential)
        self.logins = 0
        self.refusals: dict[str, int] = {}  # REG/REMOVE/LOGIN refusals by kind
        self._ops = OpQueue()
        self._inflight: deque[tuple[str, list[Key]]] = deque()  # requests awaiting replies
        self._logged_in = False
        self._status: FeedStatus | None = None
        self._registered: set[Key] = set()  # asked for on this connection

    def follow(self, desired: Callable[[], list[Key]]) -> None:
        """Register what `desired()` returns at each login (the slot driver's choice)."""
        self._desired = desired

    def stats(self) -> dict[str, object]:
        """The decoder's counters, logins and refusals (the token's are the credential's, in
        the status endpoint's `credentials`)."""
        return {
            **super().stats(),
            "logins": self.logins,
            "refusals": dict(self.refusals),
        }

    # -- credential --------------------------------------------------------------------------
    @property
    def _token(self) -> str | None:
        return self._cred.held

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        """The access token (au10001, §2): the credential's, held until TOKEN_REFRESH_MARGIN_S
        before it ends (the official helper renews 10 minutes early)."""
        await self._cred.get(http)

    def forget_credential(self) -> None:
        """LOGIN refused the token (8005, ...): it is not used again; a new one is issued."""
        self._cred.forget()

    # -- connection --------------------------------------------------------------------------
    def registrations(self) -> list[str]:
        """LOGIN only: the registrations follow its reply (§3)."""
        assert self._token is not None
        return [login_message(self._token)]

    def unregistrations(self) -> list[str]:
        if not self._logged_in:
            return []
        return [self._request("REMOVE", keys) for keys in _by_type(self._registered)]

    def on_connect(self, status: FeedStatus) -> None:
        status.subscriptions.clear()
        self._ops.clear()
        self._inflight.clear()
        self._registered = set()
        self._logged_in = False
        self._status = status

    @property
    def live(self) -> bool:
        return self._logged_in and self._status is not None and self._status.state in CONNECTED

    # -- the slot driver's sink --------------------------------------------------------------
    def send_op(self, op: Op) -> bool:
        """Queue a REG or REMOVE of one registration on the live, logged-in connection; False
        (nothing queued) otherwise: the next login registers the whole state."""
        if not self.live:
            return False
        key = (op.tr_id, op.code)
        if op.action == "subscribe":
            self._registered.add(key)
            self._ops.put(self._request("REG", [key]))
        else:
            self._registered.discard(key)
            self._ops.put(self._request("REMOVE", [key]))
        return True

    def registered(self) -> frozenset[Key] | None:
        return frozenset(self._registered) if self.live else None

    async def pump(self, ws: WebSocketConnection) -> None:
        """Send queued requests while this connection lives (run by run_feed)."""
        try:
            await self._ops.pump(ws)
        finally:
            self._logged_in = False

    def _request(self, trnm: str, keys: list[Key]) -> str:
        """One REG or REMOVE for `keys` (one type each: a request's items all take its
        types, §4), remembered to match its reply."""
        pairs = [to_kiwoom(*k) for k in keys]
        kinds = sorted({kind for kind, _ in pairs})
        assert len(kinds) == 1, "one type per request"
        items = [item for _, item in pairs]
        self._inflight.append((trnm, keys))
        if trnm == "REG":
            return reg_message(GROUP, items, kinds)
        return remove_message(GROUP, items, kinds)

    # -- control messages --------------------------------------------------------------------
    async def on_control(self, ws: WebSocketConnection, msg: object, status: FeedStatus) -> bool:
        if isinstance(msg, Ping):
            await ws.send_message(msg.raw)  # echoed unchanged (§7)
            return False
        if isinstance(msg, Login):
            return await self._on_login(ws, msg, status)
        if isinstance(msg, RegReply):
            return self._on_reply(msg, status)
        if isinstance(msg, System):
            self._on_system(msg, status)
            return False
        log.warning("%s: unexpected control message %r", self.name, msg)
        return False

    async def _on_login(self, ws: WebSocketConnection, msg: Login, status: FeedStatus) -> bool:
        if not msg.ok:
            code = login_code(msg.code, msg.message)
            kind = refusal_kind(code)
            self.refusals[f"login:{kind}"] = self.refusals.get(f"login:{kind}", 0) + 1
            text = f"LOGIN refused ({kind}): {code} {msg.message}"[:300]
            if kind == "token":
                raise CredentialRejected(text)  # a fresh token, then log in again (§10)
            raise FeedError(text)  # credentials, device, ...: back off (the log says why)
        self.logins += 1
        self._logged_in = True
        want = list(self._desired()) if self._desired is not None else []
        for key in want:
            if key[0] not in _BY_TR:
                log.error("%s: cannot register %s:%s on Kiwoom", self.name, *key)
        for keys in _by_type(k for k in want if k[0] in _BY_TR):
            self._registered.update(keys)
            await ws.send_message(self._request("REG", keys))
        return True

    def _on_reply(self, msg: RegReply, status: FeedStatus) -> bool:
        trnm, keys = self._inflight.popleft() if self._inflight else (msg.trnm, [])
        if msg.ok:
            for tr_id, code in keys:
                if trnm == "REG":
                    status.subscriptions[f"{tr_id}:{code}"] = "subscribed"
                else:
                    status.subscriptions.pop(f"{tr_id}:{code}", None)
            return True
        self.refusals[trnm] = self.refusals.get(trnm, 0) + 1
        result = f"{msg.code} {msg.message}"
        for tr_id, code in keys:
            status.subscriptions[f"{tr_id}:{code}"] = result
        log.warning("%s: %s of %d refused: %s", self.name, trnm, len(keys), result)
        return False

    def _on_system(self, msg: System, status: FeedStatus) -> None:
        """§8: R10001 another login took the app key, R10002 heartbeats missed, R10004 no
        login: the session is over (reconnect after the backoff; the slot driver moves its
        codes if it stays down)."""
        text = f"SYSTEM {msg.code}: {msg.message}"[:300]
        if msg.code == "R10001":
            raise KeyInUse(text)
        if msg.code in ("R10002", "R10004"):
            raise FeedError(text)
        log.warning("%s: %s", self.name, text)
