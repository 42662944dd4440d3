"""KIS (Korea Investment & Securities): the sans-I/O codec (codec.py), the session adapter
(adapter.py) and the broker's record for the registry."""

from __future__ import annotations

from dataclasses import replace

from tradestream.config import Settings
from tradestream.feeds.broker import Broker, FeedSession
from tradestream.feeds.credentials import Credentials
from tradestream.feeds.kis.adapter import KIS_APPROVAL, KisAdapter, kis_timing
from tradestream.feeds.kis.codec import KisDecoder
from tradestream.feeds.session import FeedStatus
from tradestream.upstream import ORDER_BOOK_TRS, TRADE_TRS

TAG = "kis"


def sessions(s: Settings, *, credentials: Credentials | None = None) -> list[FeedSession]:
    """One session per app key (kis-1, kis-2, ...): each has its own 41 registrations. With
    `credentials` (the process's), each session's approval key is the registry's for its app
    key; without, each adapter keeps its own."""
    out = []
    for i, (key, secret) in enumerate(s.kis.session_keys()):
        name = f"{TAG}-{i + 1}"
        cred = None
        if credentials is not None and key:
            cred = credentials.credential(KIS_APPROVAL, key, secret, s.kis.rest_url)
        out.append(
            FeedSession(
                KisAdapter(s.kis, name, app_key=key, app_secret=secret, credential=cred),
                kis_timing(s.kis),
                s.kis.rest_url,
                FeedStatus(name=name),
            )
        )
    return out


def use_simulator(s: Settings, rest_url: str, ws_url: str) -> Settings:
    k = s.kis
    if k.ws_url:
        return s
    return replace(
        s,
        kis=replace(
            k,
            rest_url=rest_url,
            ws_url=ws_url,
            account=k.account or s.sim.demo_account,  # holdings by its balance inquiry
            token_file="",  # a simulator's tokens die with it: nothing to keep
            master_url=rest_url + "/common/master" if k.master_url else "",
        ),
    )


BROKER = Broker(
    tag=TAG,
    new_decoder=KisDecoder,
    sessions=sessions,
    registrations=lambda s: s.kis.registrations(),
    trade_trs=frozenset(TRADE_TRS),
    book_trs=frozenset(ORDER_BOOK_TRS),
    sim_ws_path="/tryitout",
    use_simulator=use_simulator,
    slotted=True,
    # kis.md §3: 41 over all TR ids, less the spare (the notice's one is taken by the driver)
    slot_capacity=lambda s: s.kis.registration_limit - s.kis.slot_margin,
)
