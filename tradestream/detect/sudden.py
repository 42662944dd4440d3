"""Sudden-move detection: a price that moved `threshold` away from its extreme within a window.

Seed 001 asks for "5% within one minute" (급변 감지: 1분 내 5% 등락). The seed re-queried the
database for the price one minute ago on every tick; here each code keeps two monotonic deques
over its last `window_s` seconds of trade prices, so a tick costs amortised O(1) and the
reference is the window's extreme, not one arbitrary earlier print: a 100 -> 95 -> 100 minute is
a 5% drop and a 5.3% rise, whatever the first print was.

Pure: no clock reads, no I/O. Time comes in as `ts` (seconds, any epoch, float).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Direction = Literal["up", "down"]

WINDOW_S = 60.0
THRESHOLD = 0.05
DEBOUNCE_S = 60.0


@dataclass(frozen=True, slots=True)
class SuddenMove:
    """An alert: `price` is at least the threshold away from `reference_price`, the window's
    extreme (its minimum for "up", its maximum for "down") seen at `reference_ts`.

    `change` is signed: (price - reference_price) / reference_price, so > 0 for "up" and < 0
    for "down". `ts` is the effective (clamped, non-decreasing) time of the triggering tick.
    """

    code: str
    direction: Direction
    reference_price: int
    price: int
    change: float
    reference_ts: float
    ts: float
    window_s: float


class _CodeState:
    """One code's window: min and max monotonic deques of (ts, price), plus debounce marks.

    `lows` has strictly increasing prices front to back, `highs` strictly decreasing; both have
    non-decreasing ts. Their fronts are the window minimum and maximum, and among equal prices
    the latest one survives (a newer equal price evicts the older), so the reference is the
    most recent occurrence of the extreme.
    """

    __slots__ = ("highs", "last_ts", "last_alert", "lows")

    def __init__(self, ts: float) -> None:
        self.lows: deque[tuple[float, int]] = deque()
        self.highs: deque[tuple[float, int]] = deque()
        self.last_ts = ts
        self.last_alert: dict[Direction, float] = {}


class SuddenMoveDetector:
    """Per code, alert when a trade price is `threshold` away from its window's extreme.

    Rules, for each `update(code, ts, price)`:

    - Time: per code, ts must not go backwards; an earlier ts is treated as equal to the last
      one seen for that code (feeds reorder within a frame; a late print is still a print).
    - Window: the trades of this code with `entry_ts >= ts - window_s`, including the current
      one. The boundary is inclusive: a print exactly `window_s` old still counts (as in seed
      001's `timestamp >= one_min_ago`); one older by any amount has expired.
    - Up: `(price - window_min) / window_min >= threshold`.
      Down: `(window_max - price) / window_max >= threshold`. Both comparisons are inclusive.
    - Debounce: after an alert in a direction for a code at time t, that direction is silent
      for that code while `ts < t + debounce_s`; at `ts >= t + debounce_s` it may fire again.
      The other direction is independent. Only an alert that is returned arms the debounce.
    - Both directions at once (a window spanning more than twice the threshold with the price
      in the middle): of the directions that qualify and are not debounced, report the one
      whose extreme is more recent (the move happening now); equal reference times go to the
      larger |change|, then to "up". Only one alert is returned per tick.
    - Prices <= 0 are not trade prices (venues send 0 on some halt/auction records): such a
      tick is ignored entirely, returns None and changes no state.

    Cost: each tick is pushed and popped at most once per deque, so amortised O(1). Memory per
    code is bounded by its ticks within `window_s` (worst case a monotone run), usually far
    less; both bounds are tested. A code that stops trading keeps what its window held at its
    last tick (still within that bound) until its next tick expires it, until
    `forget(code)`, or until `sweep(now)` drops it. The service calls neither: its codes are
    those its feeds stream (scanner picks rotate, but they are listed issues, a few thousand
    at most), so the total stays bounded by codes x ticks per window without a sweep.
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        threshold: float = THRESHOLD,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        if not (window_s > 0 and threshold > 0 and debounce_s >= 0):
            raise ValueError("need window_s > 0, threshold > 0 and debounce_s >= 0")
        self.window_s = window_s
        self.threshold = threshold
        self.debounce_s = debounce_s
        self._codes: dict[str, _CodeState] = {}

    def __len__(self) -> int:
        """The number of codes holding state."""
        return len(self._codes)

    def update(self, code: str, ts: float, price: int) -> SuddenMove | None:
        """Add one trade and return the alert it triggers, if any (rules in the class doc)."""
        if price <= 0:
            return None
        st = self._codes.get(code)
        if st is None:
            st = self._codes[code] = _CodeState(ts)
        ts = max(ts, st.last_ts)
        st.last_ts = ts

        lows, highs = st.lows, st.highs
        while lows and lows[-1][1] >= price:
            lows.pop()
        lows.append((ts, price))
        while highs and highs[-1][1] <= price:
            highs.pop()
        highs.append((ts, price))
        horizon = ts - self.window_s
        # The current entry never expires (window_s > 0), so neither deque empties here.
        while lows[0][0] < horizon:
            lows.popleft()
        while highs[0][0] < horizon:
            highs.popleft()

        low_ts, low = lows[0]
        high_ts, high = highs[0]
        candidates: list[SuddenMove] = []
        if (price - low) / low >= self.threshold and self._armed(st, "up", ts):
            candidates.append(
                SuddenMove(code, "up", low, price, (price - low) / low, low_ts, ts, self.window_s)
            )
        if (high - price) / high >= self.threshold and self._armed(st, "down", ts):
            candidates.append(
                SuddenMove(
                    code, "down", high, price, (price - high) / high, high_ts, ts, self.window_s
                )
            )
        if not candidates:
            return None
        move = _choose(candidates)
        st.last_alert[move.direction] = ts
        return move

    def _armed(self, st: _CodeState, direction: Direction, ts: float) -> bool:
        last = st.last_alert.get(direction)
        return last is None or ts >= last + self.debounce_s

    def forget(self, code: str) -> None:
        """Drop a code's window and debounce marks; its next tick starts fresh."""
        self._codes.pop(code, None)

    def sweep(self, now: float) -> int:
        """Drop codes whose last tick is older than `now - max(window_s, debounce_s)`.

        By then their window has expired and their debounce has lapsed, so for any later tick
        at ts >= now the outcome is the same as if they were kept. Returns how many were
        dropped. O(codes): call it rarely (e.g. once a minute), if at all; it is for a host
        whose set of codes churns without bound (the service's does not, and never calls it)."""
        horizon = now - max(self.window_s, self.debounce_s)
        stale = [c for c, st in self._codes.items() if st.last_ts < horizon]
        for c in stale:
            del self._codes[c]
        return len(stale)


def _choose(candidates: list[SuddenMove]) -> SuddenMove:
    """Of simultaneous alerts, the one with the most recent reference, then the larger
    |change|, then "up" (the order candidates are built in); see SuddenMoveDetector."""
    return max(candidates, key=lambda m: (m.reference_ts, abs(m.change), m.direction == "up"))
