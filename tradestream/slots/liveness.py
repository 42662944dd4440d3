"""Session liveness: which KIS sessions count as up, and when one is lost for good or back.

`Liveness` owns, per session, the connection it last saw coming up (since when, at which
connect number), since when it has not been up, and the set of sessions lost. Pure: it reads
each session's `FeedStatus` and the time it is given; the driver acts on its verdicts (a lost
session's slots move to the others, a session back gets its capacity again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tradestream.feeds.session import CONNECTED, FeedStatus

UP_AFTER_S = 3.0  # connected this long without streaming: up (see `Liveness._is_up`)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A session's change at one look: lost (not up for `down_for` seconds) or back."""

    kind: Literal["lost", "back"]
    down_for: float = 0.0


class Liveness:
    """Up, down and lost per session, from the sessions' states at each look."""

    def __init__(self, names: Iterable[str], *, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self.up: dict[str, bool] = {name: False for name in names}  # as of the last look
        self.lost: set[str] = set()
        self._down_since: dict[str, float] = {}
        self._connected: dict[str, tuple[float, int] | None] = {}  # since, at connect number

    def look(self, statuses: Mapping[str, FeedStatus], now: float) -> dict[str, bool]:
        """Which sessions are up now (kept in `up`)."""
        self.up = {name: self._is_up(name, st, now) for name, st in statuses.items()}
        return self.up

    def check(self, name: str, status: FeedStatus, now: float) -> Verdict | None:
        """After `look`: whether `name` is lost now (not up for `lost_after_s`) or back (up
        after being lost), recorded in `lost` either way; None when neither.

        A connection coming up gets UP_AFTER_S past the deadline to prove itself: it has
        registered its slots already, and losing it now would only move them away and back."""
        if self.up[name]:
            self._down_since.pop(name, None)
            if name not in self.lost:
                return None
            self.lost.discard(name)
            return Verdict("back")
        down_for = now - self._down_since.setdefault(name, now)
        coming_up = status.state in CONNECTED
        if (
            name not in self.lost
            and down_for >= self.lost_after_s
            and (not coming_up or down_for >= self.lost_after_s + UP_AFTER_S)
        ):
            self.lost.add(name)
            return Verdict("lost", down_for)
        return None

    def _is_up(self, name: str, st: FeedStatus, now: float) -> bool:
        """Streaming; or connected without a break for UP_AFTER_S (a lost session comes back
        with nothing registered, so it cannot stream before it gets its slots again). A
        session that reconnects over and over (its key in use elsewhere, say) is not up."""
        if st.state == "streaming":
            return True
        connected = st.state == "subscribing"
        seen = self._connected.get(name)
        if not connected or seen is None or seen[1] != st.connects:
            self._connected[name] = (now, st.connects) if connected else None
            return False
        return now - seen[0] >= UP_AFTER_S
