"""LS Securities: the sans-I/O codec (codec.py), the session adapter (adapter.py) and the
broker's record for the registry."""

from __future__ import annotations

from dataclasses import replace

from tradestream.config import Settings
from tradestream.feeds.broker import Broker, FeedSession
from tradestream.feeds.credentials import Credentials
from tradestream.feeds.ls.adapter import LS_ACCESS, LsAdapter, ls_timing
from tradestream.feeds.ls.codec import LsDecoder, sim_media_path
from tradestream.feeds.session import FeedStatus
from tradestream.upstream import LS_BOOK_TRS, LS_TRADE_TRS

TAG = "ls"


def sessions(s: Settings, *, credentials: Credentials | None = None) -> list[FeedSession]:
    """One session (ls-1) when enabled: news, and trades for codes KIS does not carry. With
    `credentials` (the process's), its token is the registry's for the app key."""
    if not s.ls.enabled:
        return []
    name = f"{TAG}-1"
    cred = None
    if credentials is not None:
        cred = credentials.credential(LS_ACCESS, s.ls.app_key, s.ls.app_secret, s.ls.rest_url)
    adapter = LsAdapter(s.ls, name, credential=cred)
    return [FeedSession(adapter, ls_timing(s.ls), s.ls.rest_url, FeedStatus(name=name))]


def new_decoder(session: str, media: dict[str, str] | None = None) -> LsDecoder:
    """A decoder for a replay: `media` is the table the recording says the session used
    (none: ids stay "unknown:<id>")."""
    return LsDecoder(session, media or {})


def use_simulator(s: Settings, rest_url: str, ws_url: str) -> Settings:
    if not s.ls.enabled or s.ls.ws_url:
        return s
    media_file = s.ls.media_file or str(sim_media_path())  # the simulator's own ids
    return replace(s, ls=replace(s.ls, rest_url=rest_url, ws_url=ws_url, media_file=media_file))


BROKER = Broker(
    tag=TAG,
    new_decoder=new_decoder,
    sessions=sessions,
    registrations=lambda s: list(s.ls.subscriptions) if s.ls.enabled else [],
    trade_trs=LS_TRADE_TRS,
    book_trs=LS_BOOK_TRS,
    sim_ws_path="/websocket",
    use_simulator=use_simulator,
)
