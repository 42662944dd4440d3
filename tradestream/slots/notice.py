"""Where the execution-notice registration rides, and where it should go (pure).

The notice (one registration per HTS id) rides on a KIS session and takes one of its
registrations. `NoticeCarrier` owns its home (the first session), the session carrying it now,
and since when that carrier has not been up; `survivor` and `NoticeCarrier.follow` choose where
it goes. The driver does the moving: the manager's capacities and the register/unregister ops.

KIS does not resend a notice missed while no socket carried it, so the notice does not wait for
its carrier to be lost: home takes it back as soon as home is up, and a carrier not up for
`move_after_s` hands it to a session that is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tradestream.slots.demand import Key

# the notice's carrier not up this long while another session is: the notice moves there
# (KIS does not resend missed notices, so it cannot wait for lost_after_s)
NOTICE_MOVE_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Seat:
    """A session as the choice of carrier sees it."""

    name: str
    up: bool
    lost: bool
    capacity: int  # its market-data registrations without the notice
    free: int  # registrations the manager leaves unused on it (0 when lost)


@dataclass(frozen=True, slots=True)
class Move:
    """Hand the notice to session `to`; `why` is for the log."""

    to: str
    why: str


def survivor(seats: Sequence[Seat]) -> str | None:
    """A carrier for the notice when its carrier is lost: up first, then the most free
    registrations, then the first session; None when no session that is not lost has room."""
    best = [s for s in seats if not s.lost and s.capacity]
    best.sort(key=lambda s: (not s.up, -s.free))
    return best[0].name if best else None


class NoticeCarrier:
    """The notice's registration key, its home, and the session carrying it now (`at`)."""

    def __init__(self, key: Key, home: str, *, move_after_s: float = NOTICE_MOVE_AFTER_S) -> None:
        self.key = key  # (H0STCNI0 or H0STCNI9, HTS id)
        self.home = home
        self.move_after_s = move_after_s
        self.at: str | None = None  # nobody until the driver places it
        self._down_since: float | None = None  # its carrier not up since then

    def carried_by(self, name: str) -> None:
        """The notice is registered on `name` now."""
        self.at = name
        self._down_since = None

    def given_up_by(self, name: str) -> bool:
        """`name` no longer carries the notice (it is lost, or hands the notice home): if it
        did, nobody does now (True)."""
        if self.at != name:
            return False
        self.at = None
        return True

    def follow(self, now: float, seats: Sequence[Seat]) -> Move | None:
        """Where the notice should move at this look (`seats`: every session, in order), or
        None to leave it: home as soon as home is up; else, once its carrier (or nobody) has
        not been up for `move_after_s`, the up session with the most free registrations."""
        by_name = {s.name: s for s in seats}
        at, home = self.at, by_name[self.home]
        if at != home.name and not home.lost and home.up:
            return Move(home.name, f"{home.name} up again")
        if at is not None and by_name[at].up:
            self._down_since = None
            return None
        if self._down_since is None:
            self._down_since = now
        down_for = now - self._down_since
        if down_for < self.move_after_s:
            return None
        up = [s for s in seats if s.up and not s.lost and s.name != at and s.capacity >= 1]
        if not up:
            return None
        target = max(up, key=lambda s: s.free)
        return Move(target.name, f"{at or 'nobody'} not up for {down_for:.0f}s")
