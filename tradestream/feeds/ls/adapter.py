"""The LS side of a feed session: access token, registrations, acknowledgements."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import msgspec
from trio_websocket import WebSocketConnection

from tradestream.config import LsSettings
from tradestream.errors import CredentialRejected, TokenError
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


def ls_timing(cfg: LsSettings) -> FeedTiming:
    return FeedTiming(cfg.stale_s, cfg.connect_timeout_s, cfg.backoff_initial_s, cfg.backoff_cap_s)


class LsAdapter(DecoderAdapter):
    """Drives one LS session for run_feed."""

    decoder: LsDecoder

    def __init__(self, cfg: LsSettings, name: str) -> None:
        self.cfg = cfg
        self.ws_url = cfg.ws_url
        self.broker = "ls"
        # no table of the operator's: ids are stored as "unknown:<id>", never given invented
        # names (on the simulator, use_simulator points media_file at its own table)
        media = load_media_map(Path(cfg.media_file)) if cfg.media_file else {}
        self.decoder = LsDecoder(name, media, cfg.min_title_chars)
        self._token: str | None = None
        self._expires_at = 0.0

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        if self._token is not None and time.time() < self._expires_at - TOKEN_REFRESH_MARGIN_S:
            return
        resp = await http.post(
            "/oauth2/token", data=token_request_form(self.cfg.app_key, self.cfg.app_secret)
        )
        if resp.status_code != 200:
            raise CredentialRejected(f"token request: HTTP {resp.status_code} {resp.text[:200]}")
        try:
            self._token, lifetime = parse_token_response(resp.json())
        except (TokenError, ValueError) as exc:
            raise CredentialRejected(f"token response: {exc}") from None
        self._expires_at = time.time() + lifetime

    def forget_credential(self) -> None:
        self._token = None

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
