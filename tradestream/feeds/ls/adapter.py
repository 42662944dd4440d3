"""The LS side of a feed session: access token, registrations, acknowledgements.

The access token (ls.md §2) is an "ls-access" credential (`LS_ACCESS`, feeds/credentials.py):
the process's, shared through its registry, or the adapter's own (in memory)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import msgspec
from trio_websocket import WebSocketConnection

from tradestream.config import LsSettings
from tradestream.errors import CredentialRejected, FeedError, TokenError
from tradestream.feeds.credentials import Credential, CredentialKind, SessionCredential, Token
from tradestream.feeds.ls.codec import (
    LsAck,
    LsDecoder,
    load_media_map,
    parse_token_response,
    subscribe_message,
    token_request_form,
)
from tradestream.feeds.session import DecoderAdapter, FeedStatus, FeedTiming

log = logging.getLogger(__name__)

TOKEN_REFRESH_MARGIN_S = 600.0  # get a new token this long before the old one expires


async def issue_access_token(http: httpx.AsyncClient, app_key: str, app_secret: str) -> Token:
    """``POST /oauth2/token`` (form, ls.md §2): the token and its lifetime."""
    try:
        resp = await http.post("/oauth2/token", data=token_request_form(app_key, app_secret))
    except httpx.HTTPError as exc:
        raise FeedError(f"token request: {exc!r}"[:300]) from None
    if resp.status_code != 200:
        raise CredentialRejected(f"token request: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        value, lifetime = parse_token_response(resp.json())
    except (TokenError, ValueError) as exc:
        raise CredentialRejected(f"token response: {exc}") from None
    now = time.time()
    return Token(value, now + lifetime, now)


#: the access token of an LS app key, for the WebSocket's requests (ls.md §2)
LS_ACCESS = CredentialKind("ls-access", issue_access_token, renew_before_s=TOKEN_REFRESH_MARGIN_S)


def ls_timing(cfg: LsSettings) -> FeedTiming:
    return FeedTiming(cfg.stale_s, cfg.connect_timeout_s, cfg.backoff_initial_s, cfg.backoff_cap_s)


class LsAdapter(DecoderAdapter):
    """Drives one LS session for run_feed. The token comes from `credential` (the process's),
    else from one of the adapter's own, issued through run_feed's client."""

    decoder: LsDecoder

    def __init__(self, cfg: LsSettings, name: str, *, credential: Credential | None = None) -> None:
        self.cfg = cfg
        self.ws_url = cfg.ws_url
        self.broker = "ls"
        # no table of the operator's: ids are stored as "unknown:<id>", never given invented
        # names (on the simulator, use_simulator points media_file at its own table)
        media = load_media_map(Path(cfg.media_file)) if cfg.media_file else {}
        self.decoder = LsDecoder(name, media, cfg.min_title_chars)
        self._cred = SessionCredential(LS_ACCESS, cfg.app_key, cfg.app_secret, credential)

    @property
    def _token(self) -> str | None:
        return self._cred.held

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        """The token: the credential's (held while fresh, or a new one)."""
        await self._cred.get(http)

    def forget_credential(self) -> None:
        self._cred.forget()  # not used again: a new one is asked for

    def registrations(self) -> list[str]:
        assert self._token is not None
        return [
            subscribe_message(self._token, tr_cd, tr_key)
            for tr_cd, tr_key in self.cfg.subscriptions
        ]

    def recording_header(self) -> list[tuple[str, str]]:
        """What a recording of this session keeps besides frames: its media table."""
        return [("media", msgspec.json.encode(self.decoder.media).decode())]

    def unregistrations(self) -> list[str]:
        if self._token is None:
            return []
        return [
            subscribe_message(self._token, tr_cd, tr_key, subscribe=False)
            for tr_cd, tr_key in self.cfg.subscriptions
        ]

    def on_connect(self, status: FeedStatus) -> None:
        status.subscriptions.clear()

    async def on_control(self, ws: WebSocketConnection, msg: object, status: FeedStatus) -> bool:
        assert isinstance(msg, LsAck)
        key = f"{msg.tr_cd}:{msg.tr_key}"
        if msg.ok:
            status.subscriptions[key] = "subscribed"
            return True
        status.subscriptions[key] = f"{msg.rsp_cd} {msg.rsp_msg}"
        log.warning("%s: %s refused: %s %s", status.name, key, msg.rsp_cd, msg.rsp_msg)
        return False
