"""What the service needs to know of one broker, in one record (`Broker`); each broker's package
(feeds/kis, feeds/ls) defines its own, and feeds/registry.py lists them.

Adding a broker means a package with its decoder and session adapter and a `BROKER` record,
and one line in the registry: the service, the recorder and replay find it there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tradestream.config import Settings
from tradestream.feeds.credentials import Credentials
from tradestream.feeds.session import FeedAdapter, FeedStatus, FeedTiming


@dataclass
class FeedSession:
    """One upstream session to run (run_feed's arguments)."""

    adapter: FeedAdapter
    timing: FeedTiming
    rest_url: str
    status: FeedStatus


@dataclass(frozen=True)
class Broker:
    #: recording tag (Frame.b) and session name prefix, e.g. "kis" -> kis-1, kis-2
    tag: str
    #: a fresh decoder for a session's frames (replay: keys and state per session); called
    #: with the session's name, and `media=` when the recording kept a media table
    new_decoder: Callable[..., Any]
    #: the sessions the settings ask for (none when the broker is disabled), as
    #: ``sessions(s, credentials=...)``: with the process's registry (feeds/credentials.py),
    #: they share their app keys' credentials with every other user in the process
    sessions: Callable[..., list[FeedSession]]
    #: the registrations fixed by the settings, as (tr_id, key)
    registrations: Callable[[Settings], Sequence[tuple[str, str]]]
    #: TR ids whose data are trades, and order books (which codes a broker streams)
    trade_trs: frozenset[str]
    book_trs: frozenset[str]
    #: the simulator's WebSocket path for this broker (sim/server.py serves every broker)
    sim_ws_path: str
    #: point the settings at the simulator (rest_url, ws_url) unless a broker URL is set
    use_simulator: Callable[[Settings, str, str], Settings]
    #: the slot manager decides this broker's registrations (KIS: 41 per session)
    slotted: bool = False
    #: a slotted broker's registrations per session for market data
    slot_capacity: Callable[[Settings], int] = lambda s: 0
    #: the (KIS) tr_ids a slotted broker's session can register; None: every one
    carries: frozenset[str] | None = None

    def make_sessions(
        self, s: Settings, credentials: Credentials | None = None
    ) -> list[FeedSession]:
        """The broker's sessions, given the process's `credentials` (None: each session
        gets its own)."""
        return self.sessions(s, credentials=credentials)
