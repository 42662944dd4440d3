"""Kiwoom's record for the broker registry: its sessions, the simulator's URLs, and what the
slot manager may give its sessions (trades and order books, `registration_limit` each)."""

from __future__ import annotations

from dataclasses import replace

from tradestream.config import Settings
from tradestream.feeds.broker import Broker, FeedSession
from tradestream.feeds.credentials import Credentials
from tradestream.feeds.kiwoom.adapter import CARRIES, KIWOOM_ACCESS, KiwoomAdapter, kiwoom_timing
from tradestream.feeds.kiwoom.codec import KiwoomDecoder
from tradestream.feeds.session import FeedStatus
from tradestream.upstream import KIWOOM_BOOK, KIWOOM_TRADE

TAG = "kiwoom"
SIM_WS_PATH = "/api/dostk/websocket"  # kiwoom.md §1: the real path, on the simulator too


def sessions(s: Settings, *, credentials: Credentials | None = None) -> list[FeedSession]:
    """One session (kiwoom-1) when enabled: one login per app key (kiwoom.md §8, R10001).
    With `credentials` (the process's), its token is the registry's for the app key."""
    k = s.kiwoom
    if not k.enabled:
        return []
    name = f"{TAG}-1"
    cred = None
    if credentials is not None:
        cred = credentials.credential(KIWOOM_ACCESS, k.app_key, k.app_secret, k.rest_url)
    return [
        FeedSession(
            KiwoomAdapter(k, name, credential=cred),
            kiwoom_timing(k),
            k.rest_url,
            FeedStatus(name=name),
        )
    ]


def use_simulator(s: Settings, rest_url: str, ws_url: str) -> Settings:
    k = s.kiwoom
    if not k.enabled or k.ws_url:
        return s
    return replace(s, kiwoom=replace(k, rest_url=rest_url, ws_url=ws_url))


BROKER = Broker(
    tag=TAG,
    new_decoder=lambda session, **_: KiwoomDecoder(session),
    sessions=sessions,
    registrations=lambda s: [],  # the slot manager's
    trade_trs=frozenset({KIWOOM_TRADE}),
    book_trs=frozenset({KIWOOM_BOOK}),
    sim_ws_path=SIM_WS_PATH,
    use_simulator=use_simulator,
    slotted=True,
    slot_capacity=lambda s: s.kiwoom.registration_limit,
    carries=CARRIES,
)
