"""The KIS side of a feed session: approval key, registrations, PINGPONG, acknowledgements."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
from trio_websocket import WebSocketConnection

from tradestream.config import KisSettings
from tradestream.events import Event
from tradestream.feeds.kis import Ack, AckResult, KisDecoder, PingPong, subscribe_message
from tradestream.feeds.session import (
    CredentialRejected,
    DecoderAdapter,
    FeedStatus,
    FeedTiming,
    KeyInUse,
)

log = logging.getLogger(__name__)


async def request_approval_key(http: httpx.AsyncClient, cfg: KisSettings) -> str:
    """POST /oauth2/Approval (kis.md §2); the secret goes in `secretkey`."""
    resp = await http.post(
        "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": cfg.app_key, "secretkey": cfg.app_secret},
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


def kis_timing(cfg: KisSettings) -> FeedTiming:
    return FeedTiming(cfg.stale_s, cfg.connect_timeout_s, cfg.backoff_initial_s, cfg.backoff_cap_s)


class KisAdapter(DecoderAdapter):
    """Drives one KIS session for run_feed. `on_ack` receives every acknowledgement (the slot
    manager acts on refusals such as OPSP0008)."""

    def __init__(self, cfg: KisSettings, name: str,
                 on_ack: Callable[[Ack], None] | None = None) -> None:
        self.cfg = cfg
        self.ws_url = cfg.ws_url
        self.broker = "kis"
        self.decoder = KisDecoder(name)
        self._approval = cfg.approval_key or None
        self._on_ack = on_ack

    async def authenticate(self, http: httpx.AsyncClient) -> None:
        if self._approval is None:
            self._approval = await request_approval_key(http, self.cfg)

    def forget_credential(self) -> None:
        if self.cfg.approval_key:
            log.error("%s: the configured approval key was refused; retrying with it",
                      self.decoder.source)
        else:
            self._approval = None

    def registrations(self) -> list[str]:
        assert self._approval is not None
        return [subscribe_message(self._approval, tr_id, tr_key, custtype=self.cfg.custtype)
                for tr_id, tr_key in self.cfg.registrations()]

    def on_connect(self, status: FeedStatus) -> None:
        self.decoder.forget_keys()  # new acks bring new AES keys (kis.md §6.1)
        status.subscriptions.clear()

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
        status.subscriptions[key] = msg.result.value
        if msg.result is AckResult.INVALID_APPROVAL_KEY:
            raise CredentialRejected(f"{msg.msg_cd} {msg.msg1}")
        if msg.result is AckResult.KEY_IN_USE:
            raise KeyInUse(f"{msg.msg_cd} {msg.msg1}")
        if msg.result is not AckResult.UNSUBSCRIBED:
            log.warning("%s: %s refused: %s %s", status.name, key, msg.msg_cd, msg.msg1)
        return False
