"""Market gate: one traffic light for "is this a market to take new positions in".

Seed 004's dashboard shows a Market Gate (`market-gate` topic: status, level, kospi, ...). Here
the level comes from the two index change percents and from breadth: advancers versus
decliners as the KIS index feed counts them (H0UPCNT0's ASCN_ISSU_CNT and DOWN_ISSU_CNT of
KOSPI and KOSDAQ, i.e. every listed issue of both markets, not just the codes we stream), and
hysteresis keeps it from flapping when an input sits on a threshold. Pure: the caller passes
the numbers and the time in; `update` returns a new `GateState` only when the level changes,
which is exactly what the topic should publish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Level = Literal["open", "caution", "closed"]

COLOR: dict[Level, str] = {"open": "green", "caution": "yellow", "closed": "red"}
SEVERITY: dict[Level, int] = {"open": 0, "caution": 1, "closed": 2}
LEVELS: tuple[Level, ...] = ("open", "caution", "closed")  # by severity

RED_INDEX_PCT = -2.0
YELLOW_INDEX_PCT = -1.0
RED_BREADTH = 0.30
YELLOW_BREADTH = 0.45
CONFIRM_UPDATES = 3


@dataclass(frozen=True, slots=True)
class GateState:
    """The gate's level after a change, with the inputs of the update that made it.

    `breadth` is advancers / (advancers + decliners), None when both are 0. `reasons` lists
    every threshold that update crossed (empty for "open"); `ts` is the caller's time."""

    level: Level
    color: str
    kospi_pct: float
    kosdaq_pct: float
    advancers: int
    decliners: int
    breadth: float | None
    reasons: tuple[str, ...]
    ts: float


class MarketGate:
    """A three-level gate over index change percents and breadth, with N-update hysteresis.

    Raw level of one update (percents as in KIS, e.g. -1.5 for -1.5%):

    - "closed" (red) if min(kospi_pct, kosdaq_pct) <= `red_index_pct` (-2.0) or breadth <
      `red_breadth` (0.30);
    - else "caution" (yellow) if min(...) <= `yellow_index_pct` (-1.0) or breadth <
      `yellow_breadth` (0.45);
    - else "open" (green).

    Index thresholds are inclusive (exactly -2.0% is red), breadth thresholds strict (exactly
    0.30 is yellow). With no advancers and no decliners breadth is unknown and only the indices
    count (before the open, nothing has traded).

    Hysteresis: the first update sets the level at once. After that the level moves only when
    `confirm_updates` consecutive updates all have a raw level on the same side of it (all
    worse, or all better); it then moves to the level nearest the current one that every one
    of them reached, i.e. the level whose condition held throughout. A raw level equal to the
    current one, or on the other side, restarts the count. So red/yellow flicker from green
    ends at yellow, and one noisy update never moves the gate. `confirm_updates=1` turns
    hysteresis off.
    """

    def __init__(
        self,
        *,
        red_index_pct: float = RED_INDEX_PCT,
        yellow_index_pct: float = YELLOW_INDEX_PCT,
        red_breadth: float = RED_BREADTH,
        yellow_breadth: float = YELLOW_BREADTH,
        confirm_updates: int = CONFIRM_UPDATES,
    ) -> None:
        if not (
            red_index_pct <= yellow_index_pct
            and 0 <= red_breadth <= yellow_breadth <= 1
            and confirm_updates >= 1
        ):
            raise ValueError(
                "need red_index_pct <= yellow_index_pct, "
                "0 <= red_breadth <= yellow_breadth <= 1, confirm_updates >= 1"
            )
        self.red_index_pct = red_index_pct
        self.yellow_index_pct = yellow_index_pct
        self.red_breadth = red_breadth
        self.yellow_breadth = yellow_breadth
        self.confirm_updates = confirm_updates
        self.state: GateState | None = None  # the current level, as last returned
        self.rejected = 0  # updates refused with ValueError (bad inputs); state untouched
        self._streak = 0  # consecutive updates on one side of the current level
        self._side = 0  # +1 worse, -1 better, 0 none
        self._nearest = 0  # severity nearest the current level reached by the whole streak

    def classify(
        self, kospi_pct: float, kosdaq_pct: float, advancers: int, decliners: int
    ) -> tuple[Level, float | None, tuple[str, ...]]:
        """The raw level of one update (no hysteresis), its breadth and the reasons."""
        if not (math.isfinite(kospi_pct) and math.isfinite(kosdaq_pct)):
            raise ValueError(f"index change must be finite: {kospi_pct}, {kosdaq_pct}")
        if advancers < 0 or decliners < 0:
            raise ValueError(f"negative breadth counts: {advancers}, {decliners}")
        total = advancers + decliners
        breadth = advancers / total if total else None
        red: list[str] = []
        yellow: list[str] = []
        for name, pct in (("KOSPI", kospi_pct), ("KOSDAQ", kosdaq_pct)):
            if pct <= self.red_index_pct:
                red.append(f"{name} {pct:+.2f}% <= {self.red_index_pct:+.2f}%")
            elif pct <= self.yellow_index_pct:
                yellow.append(f"{name} {pct:+.2f}% <= {self.yellow_index_pct:+.2f}%")
        if breadth is not None:
            if breadth < self.red_breadth:
                red.append(f"breadth {breadth:.2f} < {self.red_breadth:.2f}")
            elif breadth < self.yellow_breadth:
                yellow.append(f"breadth {breadth:.2f} < {self.yellow_breadth:.2f}")
        level: Level = "closed" if red else "caution" if yellow else "open"
        return level, breadth, tuple(red + yellow)

    def update(
        self, kospi_pct: float, kosdaq_pct: float, advancers: int, decliners: int, ts: float
    ) -> GateState | None:
        """Feed one observation; return the new state if the level changed, else None.

        Rules in the class doc. Raises ValueError on a non-finite percent or a negative
        count, without changing state (but counting it in `rejected`): the caller decides
        whether a bad input is fatal; the router logs it and goes on."""
        try:
            raw, breadth, reasons = self.classify(kospi_pct, kosdaq_pct, advancers, decliners)
        except ValueError:
            self.rejected += 1
            raise
        if self.state is None:
            target: Level | None = raw
        else:
            target = self._confirm(SEVERITY[raw], SEVERITY[self.state.level])
        if target is None:
            return None
        self.state = GateState(
            target, COLOR[target], kospi_pct, kosdaq_pct, advancers, decliners, breadth, reasons, ts
        )
        self._streak = self._side = 0
        return self.state

    def _confirm(self, raw: int, current: int) -> Level | None:
        side = (raw > current) - (raw < current)
        if side == 0:
            self._streak = self._side = 0
            return None
        if side != self._side:
            self._side, self._streak, self._nearest = side, 0, raw
        self._streak += 1
        # Worse: the least severe of the streak held throughout; better: the most severe.
        self._nearest = min(self._nearest, raw) if side > 0 else max(self._nearest, raw)
        if self._streak < self.confirm_updates:
            return None
        return LEVELS[self._nearest]
