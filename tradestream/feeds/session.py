"""A KIS real-time session: approval key, connect, register, read, reconnect.

The task owns one WebSocket at a time. A closed, failed or silent connection (no frame,
data or PINGPONG, within `stale_s`) is a lost connection: the task backs off (capped
exponential with jitter, reset on the first good frame) and connects again, registering the
whole watchlist anew. Nothing downstream notices but the status counters.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from tradestream.config import KisSettings
from tradestream.events import Tick
from tradestream.feeds.backoff import Backoff
from tradestream.feeds.kis import Ack, AckResult, KisDecoder, PingPong, subscribe_message
from tradestream.feeds.transport import open_upstream

log = logging.getLogger(__name__)

class FeedError(Exception):
    """The session cannot go on as it is; reconnect after a backoff."""


class ApprovalRejected(FeedError):
    """The approval key was refused (HTTP error or OPSP0011): get a new one."""


class KeyInUse(FeedError):
    """OPSP8996: another session holds the app key (kis.md §5.2)."""


FEED_LOST = (
    ConnectionClosed,
    HandshakeError,  # ConnectionRejected too
    OSError,
    trio.TooSlowError,
    httpx.HTTPError,
    FeedError,
)


@dataclass
class FeedStatus:
    """Live state of one feed session; written by its task, read by the status endpoint."""

    name: str
    state: str = "starting"  # authenticating, connecting, subscribing, streaming, backoff
    connects: int = 0
    reconnects: int = 0
    last_frame_ns: int = 0
    last_error: str = ""
    subscriptions: dict[str, str] = field(default_factory=dict)  # "tr_id:code" -> ack result
    decoder: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "last_frame_at": self.last_frame_ns / 1e9 if self.last_frame_ns else None,
            "last_error": self.last_error,
            "subscribed": sum(1 for r in self.subscriptions.values() if r == "subscribed"),
            "refused": {k: r for k, r in self.subscriptions.items() if r != "subscribed"},
            **self.decoder,
        }


async def request_approval_key(http: httpx.AsyncClient, cfg: KisSettings) -> str:
    """POST /oauth2/Approval (kis.md §2); the secret goes in `secretkey`."""
    resp = await http.post(
        "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": cfg.app_key, "secretkey": cfg.app_secret},
    )
    if resp.status_code != 200:
        raise ApprovalRejected(f"approval request: HTTP {resp.status_code} {resp.text[:200]}")
    key = resp.json().get("approval_key")
    if not isinstance(key, str) or not key:
        raise ApprovalRejected("approval response without approval_key")
    return key


async def run_kis_feed(
    cfg: KisSettings,
    ticks_out: trio.MemorySendChannel[Tick],
    status: FeedStatus,
    *,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stream `cfg.watchlist` from KIS into `ticks_out` until cancelled.

    Owns and closes `ticks_out`. started(): running (not necessarily connected; `status`
    says). Sends block when the pipeline is full (lossless edge). Broker errors are counted,
    logged and retried; this task never returns on its own. On cancel the upstream socket
    is closed with code 1000.
    """
    decoder = KisDecoder(status.name)
    backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s, rng=rng)
    approval = cfg.approval_key or None
    with ticks_out:
        task_status.started()
        async with httpx.AsyncClient(base_url=cfg.rest_url, timeout=cfg.connect_timeout_s) as http:
            while True:
                try:
                    if approval is None:
                        status.state = "authenticating"
                        approval = await request_approval_key(http, cfg)
                    status.state = "connecting"
                    async with open_upstream(cfg.ws_url, cfg.connect_timeout_s) as ws:
                        status.connects += 1
                        await _stream(ws, cfg, approval, decoder, ticks_out, status, backoff)
                except* ApprovalRejected as group:
                    exc = group.exceptions[0]
                    status.last_error = str(exc)
                    if cfg.approval_key:
                        log.error("%s: the configured approval key was refused: %s", status.name, exc)
                    else:
                        log.warning("%s: %s; requesting a new approval key", status.name, exc)
                        approval = None
                except* FEED_LOST as group:
                    status.last_error = "; ".join(repr(e) for e in group.exceptions)
                    log.warning("%s: connection lost (%s)", status.name, status.last_error)
                status.state = "backoff"
                status.reconnects += 1
                delay = backoff.next()
                log.info("%s: reconnecting in %.2fs", status.name, delay)
                await trio.sleep(delay)


async def _stream(
    ws: WebSocketConnection,
    cfg: KisSettings,
    approval: str,
    decoder: KisDecoder,
    ticks_out: trio.MemorySendChannel[Tick],
    status: FeedStatus,
    backoff: Backoff,
) -> None:
    status.state = "subscribing"
    status.subscriptions.clear()
    for code in cfg.watchlist:
        await ws.send_message(subscribe_message(approval, cfg.tr_id, code, custtype=cfg.custtype))
    status.decoder = decoder.stats.as_dict()
    while True:
        with trio.fail_after(cfg.stale_s):
            message = await ws.get_message()
        now = time.time_ns()
        status.last_frame_ns = now
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        out = decoder.decode(text, now)
        if isinstance(out, list):
            if out:
                if backoff.attempt:
                    backoff.reset()
                status.state = "streaming"
                for tick in out:
                    await ticks_out.send(tick)
            elif decoder.last_error is not None:
                _log_bad_frame(status.name, decoder, text)
            status.decoder = decoder.stats.as_dict()
        elif isinstance(out, PingPong):
            await ws.send_message(out.raw)  # echo unchanged (kis.md §5.3)
        else:
            _on_ack(out, status, backoff)


def _on_ack(ack: Ack, status: FeedStatus, backoff: Backoff) -> None:
    key = f"{ack.tr_id}:{ack.tr_key}"
    if ack.live:
        status.subscriptions[key] = "subscribed"
        backoff.reset()
        return
    status.subscriptions[key] = ack.result.value
    if ack.result is AckResult.INVALID_APPROVAL_KEY:
        raise ApprovalRejected(f"{ack.msg_cd} {ack.msg1}")
    if ack.result is AckResult.KEY_IN_USE:
        raise KeyInUse(f"{ack.msg_cd} {ack.msg1}")
    if ack.result is not AckResult.UNSUBSCRIBED:
        log.warning("%s: %s refused: %s %s", status.name, key, ack.msg_cd, ack.msg1)


def _log_bad_frame(name: str, decoder: KisDecoder, text: str) -> None:
    exc = decoder.last_error
    decoder.last_error = None
    assert exc is not None
    n = decoder.stats.errors.get(exc.reason, 0)
    if n <= 10 or n % 1000 == 0:  # count every bad frame, log the first few of each kind
        log.warning("%s: dropped bad frame #%d (%s): %.200r", name, n, exc, text)
