"""The KRX session calendar (pure): which phase of the trading day a moment is in, on KRX and
on NXT (Nextrade), with holidays and special days. Times are KST; no daylight saving time.

KRX, on a normal trading day:

    08:30-08:40  pre_hours_close    off-hours trading at the previous close
    08:30-09:00  opening_auction    orders collected; one price prints at 09:00
                                    (overlaps the pre-hours window: `krx_phase` says
                                    opening_auction from 08:40, pre_hours_close before)
    09:00-15:20  regular            continuous trading
    15:20-15:30  closing_auction    orders collected; one price prints at 15:30
    15:40-16:00  after_hours_close  off-hours trading at the close
    16:00-18:00  after_hours_single single-price auctions every 10 minutes
    otherwise    closed             (also weekends, holidays)

NXT: pre_market 08:00-08:50, main 09:00:30-15:20, after_market 15:30-20:00; closed otherwise
and on KRX holidays.

Special days move KRX's sessions: a late open delays the opening (the first trading day of a
year opens at 10:00); the college entrance exam day delays the whole day by an hour (10:00
open, 16:30 close). `SpecialDay(open_delay_min, close_delay_min)` says by how much; sessions
before the open move with the open, sessions after the close with the close.

Holidays come from the broker (kis-rest.md §9, chk-holiday: `opnd_yn` per date), cached, with
a configured override; `Calendar.from_broker` merges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from tradestream.events import KST


class Phase(StrEnum):
    CLOSED = "closed"
    PRE_HOURS_CLOSE = "pre_hours_close"
    OPENING_AUCTION = "opening_auction"
    REGULAR = "regular"
    CLOSING_AUCTION = "closing_auction"
    AFTER_HOURS_CLOSE = "after_hours_close"
    AFTER_HOURS_SINGLE = "after_hours_single"
    # NXT
    PRE_MARKET = "pre_market"
    MAIN = "main"
    AFTER_MARKET = "after_market"


#: phases in which a trade prints from continuous matching (an auction's single print is not a
#: move: the sudden-move detector and the scanners should not read it as one)
CONTINUOUS = frozenset({Phase.REGULAR, Phase.MAIN, Phase.PRE_MARKET, Phase.AFTER_MARKET})
AUCTIONS = frozenset({Phase.OPENING_AUCTION, Phase.CLOSING_AUCTION})


def _t(hhmm: str) -> int:
    """Minutes (or seconds with :ss) since midnight, as seconds."""
    parts = [int(p) for p in hhmm.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


# (start, end, phase) in seconds since midnight; `before_open` sessions move with the open
_KRX_BEFORE_OPEN = (
    (_t("08:30"), _t("08:40"), Phase.PRE_HOURS_CLOSE),
    (_t("08:40"), _t("09:00"), Phase.OPENING_AUCTION),
)
_KRX_REGULAR = (_t("09:00"), _t("15:20"), Phase.REGULAR)
_KRX_AFTER_CLOSE = (
    (_t("15:20"), _t("15:30"), Phase.CLOSING_AUCTION),
    (_t("15:40"), _t("16:00"), Phase.AFTER_HOURS_CLOSE),
    (_t("16:00"), _t("18:00"), Phase.AFTER_HOURS_SINGLE),
)
_NXT = (
    (_t("08:00"), _t("08:50"), Phase.PRE_MARKET),
    (_t("09:00:30"), _t("15:20"), Phase.MAIN),
    (_t("15:30"), _t("20:00"), Phase.AFTER_MARKET),
)


@dataclass(frozen=True)
class SpecialDay:
    """KRX's sessions moved: the open (and what comes before it) by `open_delay_min`, the
    close (and what comes after it) by `close_delay_min`."""

    open_delay_min: int = 0
    close_delay_min: int = 0
    note: str = ""


FIRST_DAY_OF_YEAR = SpecialDay(60, 0, "first trading day of the year: opens at 10:00")
EXAM_DAY = SpecialDay(60, 60, "college entrance exam: 10:00-16:30")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    phase: Phase


@dataclass
class Calendar:
    """`holidays`: KRX closed all day (weekends always are). `open_days`: weekdays known to be
    open (from the broker). `special`: moved sessions. `first_day_late`: the first trading day
    of each year opens at 10:00 unless `special` says otherwise."""

    holidays: frozenset[date] = frozenset()
    special: Mapping[date, SpecialDay] = field(default_factory=dict)
    first_day_late: bool = True

    @classmethod
    def from_broker(
        cls,
        opened: Mapping[date, bool],
        *,
        extra_holidays: Iterable[date] = (),
        special: Mapping[date, SpecialDay] | None = None,
    ) -> Calendar:
        """The broker's `opnd_yn` per date (chk-holiday), then the configured override."""
        closed = {d for d, is_open in opened.items() if not is_open and d.weekday() < 5}
        return cls(frozenset(closed | set(extra_holidays)), dict(special or {}))

    def is_trading_day(self, d: date) -> bool:
        return d.weekday() < 5 and d not in self.holidays

    def special_day(self, d: date) -> SpecialDay | None:
        if d in self.special:
            return self.special[d]
        if self.first_day_late and self.is_trading_day(d) and self._first_of_year(d):
            return FIRST_DAY_OF_YEAR
        return None

    def _first_of_year(self, d: date) -> bool:
        day = date(d.year, 1, 1)
        while day < d:
            if self.is_trading_day(day):
                return False
            day += timedelta(days=1)
        return True

    def krx_windows(self, d: date) -> list[Window]:
        """KRX's sessions on `d`, in order (none on a holiday)."""
        if not self.is_trading_day(d):
            return []
        sd = self.special_day(d) or SpecialDay()
        shift_open, shift_close = sd.open_delay_min * 60, sd.close_delay_min * 60
        rows = [(s + shift_open, e + shift_open, p) for s, e, p in _KRX_BEFORE_OPEN]
        s, e, p = _KRX_REGULAR
        rows.append((s + shift_open, e + shift_close, p))
        rows += [(s + shift_close, e + shift_close, p) for s, e, p in _KRX_AFTER_CLOSE]
        return [Window(_at(d, s), _at(d, e), p) for s, e, p in rows]

    def nxt_windows(self, d: date) -> list[Window]:
        """NXT's sessions on `d` (NXT follows KRX's holidays; special days move only KRX)."""
        if not self.is_trading_day(d):
            return []
        return [Window(_at(d, s), _at(d, e), p) for s, e, p in _NXT]

    def krx_phase(self, when: datetime) -> Phase:
        return _phase(self.krx_windows(when.astimezone(KST).date()), when)

    def nxt_phase(self, when: datetime) -> Phase:
        return _phase(self.nxt_windows(when.astimezone(KST).date()), when)

    def venue_open(self, venue: str, when: datetime, *, book: bool = False) -> bool:
        """Whether a venue's real-time data flows at `when` (a silent stream then is stale):
        KRX trades in the regular session, its order books also through the closing auction
        (they carry the expected price); NXT in its three sessions; "UN" (KRX+NXT unified)
        when either does."""
        krx = self.krx_phase(when)
        krx_open = krx is Phase.REGULAR or (book and krx is Phase.CLOSING_AUCTION)
        if venue == "KRX":
            return krx_open
        nxt_open = self.nxt_phase(when) in (Phase.PRE_MARKET, Phase.MAIN, Phase.AFTER_MARKET)
        return nxt_open if venue == "NXT" else nxt_open or krx_open

    def auction_print(self, when: datetime, grace_s: float = 2.0) -> bool:
        """A trade at `when` is an auction's single print: KRX was in its opening or closing
        auction `grace_s` before and is not now (the print carries the auction's end time,
        to the second). A move it completes is not a sudden move."""
        before = self.krx_phase(when - timedelta(seconds=grace_s))
        return before in AUCTIONS and self.krx_phase(when) not in AUCTIONS

    def next_change(self, when: datetime) -> datetime:
        """The next moment either venue's phase changes (for a timer)."""
        d = when.astimezone(KST).date()
        for _ in range(15):  # a long holiday run is under two weeks
            edges = sorted(
                {w.start for w in self.krx_windows(d) + self.nxt_windows(d)}
                | {w.end for w in self.krx_windows(d) + self.nxt_windows(d)}
            )
            for edge in edges:
                if edge > when:
                    return edge
            d += timedelta(days=1)
        return when + timedelta(days=1)


def session_data(cal: Calendar, when: datetime) -> dict[str, object]:
    """What `market:session` says at `when`."""
    d = when.astimezone(KST).date()
    sd = cal.special_day(d)
    return {
        "krx": cal.krx_phase(when).value,
        "nxt": cal.nxt_phase(when).value,
        "trading_day": cal.is_trading_day(d),
        "special": sd.note if sd is not None else "",
        "at": when.astimezone(KST).isoformat(timespec="seconds"),
        "next_change": cal.next_change(when).isoformat(timespec="seconds"),
    }


def _at(d: date, seconds: int) -> datetime:
    return datetime.combine(d, time(0), KST) + timedelta(seconds=seconds)


def _phase(windows: list[Window], when: datetime) -> Phase:
    for w in windows:
        if w.start <= when < w.end:
            return w.phase
    return Phase.CLOSED


def parse_holidays(rows: Iterable[Mapping[str, str]]) -> dict[date, bool]:
    """chk-holiday's `output` rows (kis-rest.md §9): date -> the stock market is open
    (`opnd_yn`). A row that cannot be read is left out (the caller keeps what it knew)."""
    out: dict[date, bool] = {}
    for row in rows:
        try:
            d = datetime.strptime(str(row["bass_dt"]), "%Y%m%d").date()
            flag = str(row["opnd_yn"]).upper()
        except (KeyError, ValueError):
            continue
        if flag in ("Y", "N"):
            out[d] = flag == "Y"
    return out
