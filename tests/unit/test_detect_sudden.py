"""Sudden-move detector: threshold and window edges, debounce, independence, bad prices, and a
property test against a brute-force reference that rescans the window on every tick."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradestream.detect.sudden import SuddenMove, SuddenMoveDetector

T0 = 1_000.0


def test_exact_threshold_up_fires() -> None:
    d = SuddenMoveDetector()
    assert d.update("005930", T0, 10_000) is None
    move = d.update("005930", T0 + 30, 10_500)
    assert move == SuddenMove("005930", "up", 10_000, 10_500, 0.05, T0, T0 + 30, 60.0)


def test_exact_threshold_down_fires() -> None:
    d = SuddenMoveDetector()
    d.update("005930", T0, 10_000)
    move = d.update("005930", T0 + 30, 9_500)
    assert move == SuddenMove("005930", "down", 10_000, 9_500, -0.05, T0, T0 + 30, 60.0)


def test_just_below_threshold_is_silent() -> None:
    d = SuddenMoveDetector()
    d.update("A", T0, 10_000)
    d.update("B", T0, 10_000)
    assert d.update("A", T0 + 1, 10_499) is None
    assert d.update("B", T0 + 1, 9_501) is None


def test_reference_is_the_window_extreme_not_the_first_print() -> None:
    d = SuddenMoveDetector()
    d.update("A", T0, 10_000)
    d.update("A", T0 + 10, 9_800)
    d.update("A", T0 + 20, 10_100)
    move = d.update("A", T0 + 30, 10_290)  # +2.9% vs first print, +5% vs the 9,800 low
    assert move is not None
    assert (move.direction, move.reference_price, move.reference_ts) == ("up", 9_800, T0 + 10)


def test_window_boundary_is_inclusive() -> None:
    d = SuddenMoveDetector(window_s=60.0)
    d.update("A", T0, 10_000)
    move = d.update("A", T0 + 60.0, 10_500)  # exactly window_s old: still in the window
    assert move is not None and move.reference_ts == T0


def test_entry_just_past_the_window_has_expired() -> None:
    d = SuddenMoveDetector(window_s=60.0)
    d.update("A", T0, 10_000)
    d.update("B", T0, 10_000)
    assert d.update("A", T0 + 60.5, 10_500) is None  # the 10,000 low has gone
    assert d.update("B", T0 + 60.5, 9_500) is None  # and so has the 10,000 high


def test_debounce_suppresses_same_direction_until_it_lapses() -> None:
    d = SuddenMoveDetector(debounce_s=60.0)
    d.update("A", T0, 10_000)
    assert d.update("A", T0 + 1, 10_500) is not None
    assert d.update("A", T0 + 2, 10_600) is None  # still >= 5% above the low, debounced
    assert d.update("A", T0 + 59, 10_700) is None
    d.update("A", T0 + 60, 10_000)  # a new low inside the window
    move = d.update("A", T0 + 61, 10_500)  # 60 s after the alert: armed again
    assert move is not None and move.direction == "up" and move.reference_ts == T0 + 60


def test_debounce_boundary_is_inclusive() -> None:
    d = SuddenMoveDetector(window_s=120.0, debounce_s=30.0)
    d.update("A", T0, 10_000)
    assert d.update("A", T0 + 10, 10_500) is not None
    assert d.update("A", T0 + 39.9, 10_500) is None
    assert d.update("A", T0 + 40.0, 10_500) is not None


def test_directions_are_debounced_independently() -> None:
    d = SuddenMoveDetector()
    d.update("A", T0, 10_000)
    up = d.update("A", T0 + 1, 10_500)
    down = d.update("A", T0 + 2, 9_975)  # 5% below the 10,500 high
    assert up is not None and up.direction == "up"
    assert down is not None and down.direction == "down" and down.reference_price == 10_500
    assert d.update("A", T0 + 3, 9_900) is None  # both debounced now
    assert d.update("A", T0 + 4, 10_500) is None


def test_codes_are_independent() -> None:
    d = SuddenMoveDetector()
    d.update("A", T0, 10_000)
    d.update("B", T0, 20_000)
    d.update("A", T0 + 1, 50_000)  # A's prints are no part of B's window...
    b = d.update("B", T0 + 2, 21_000)
    assert b is not None and b.code == "B" and b.reference_price == 20_000
    a = d.update("A", T0 + 3, 10_400)  # ...and B's up alert does not debounce A's down
    assert a is not None and (a.code, a.direction, a.reference_price) == ("A", "down", 50_000)
    assert d.update("A", T0 + 4, 10_500) is None  # A's own up alert at T0+1 is debounced


def test_out_of_order_ts_is_clamped_to_the_last() -> None:
    d = SuddenMoveDetector()
    d.update("A", T0 + 100, 10_000)
    down = d.update("A", T0 + 50, 9_000)
    assert down is not None and down.ts == T0 + 100 and down.reference_ts == T0 + 100
    # The late 9,000 print is stored at T0+100, so it is still the low at T0+159 (it would
    # have expired at T0+110 had it kept its own ts); "down" is debounced until T0+160.
    up = d.update("A", T0 + 159, 9_450)
    assert up is not None and (up.direction, up.reference_price) == ("up", 9_000)
    assert up.reference_ts == T0 + 100


@pytest.mark.parametrize("bad", [0, -1, -10_000])
def test_non_positive_prices_are_ignored(bad: int) -> None:
    d = SuddenMoveDetector()
    d.update("A", T0, 10_000)
    assert d.update("A", T0 + 1, bad) is None
    assert d.update("A", T0 + 2, 10_499) is None  # the bad print left no low behind
    assert d.update("B", T0, bad) is None
    assert len(d) == 1  # and created no state


def test_forget_and_sweep() -> None:
    d = SuddenMoveDetector(window_s=60.0, debounce_s=90.0)
    d.update("A", T0, 10_000)
    d.update("B", T0 + 50, 10_000)
    assert d.sweep(T0 + 90) == 0  # A is exactly 90 s old: kept
    assert d.sweep(T0 + 91) == 1 and len(d) == 1
    d.forget("B")
    d.forget("B")  # idempotent
    assert len(d) == 0
    assert d.update("B", T0 + 51, 10_500) is None  # B starts fresh


@pytest.mark.parametrize(
    ("window_s", "threshold", "debounce_s"),
    [(0.0, 0.05, 1.0), (60.0, 0.0, 1.0), (60.0, 0.05, -1.0)],
)
def test_rejects_bad_parameters(window_s: float, threshold: float, debounce_s: float) -> None:
    with pytest.raises(ValueError):
        SuddenMoveDetector(window_s, threshold, debounce_s)


def test_simultaneous_directions_report_the_most_recent_extreme() -> None:
    d = SuddenMoveDetector(threshold=0.05)
    d.update("A", T0, 10_000)
    d.update("A", T0 + 1, 20_000)  # up alert (debounced from here on)
    move = d.update("A", T0 + 2, 15_000)  # up again vs 10,000 (debounced), down vs 20,000
    assert move is not None and move.direction == "down"
    d2 = SuddenMoveDetector(debounce_s=0.0)
    d2.update("A", T0, 20_000)
    d2.update("A", T0 + 1, 10_000)
    move2 = d2.update("A", T0 + 2, 15_000)  # both qualify; the 10,000 low is more recent
    assert move2 is not None and move2.direction == "up" and move2.reference_price == 10_000
    d3 = SuddenMoveDetector(debounce_s=0.0)
    d3.update("A", T0, 80)
    d3.update("A", T0, 120)  # low and high at the same ts
    move3 = d3.update("A", T0 + 1, 96)  # +20% and -20%: a full tie goes to "up"
    assert move3 is not None and move3.direction == "up" and move3.change == 0.2


# --- property test against a brute-force reference --------------------------------------------


class ReferenceDetector:
    """The rules of SuddenMoveDetector, written the slow obvious way: keep every print, rescan
    the window on each tick."""

    def __init__(self, window_s: float, threshold: float, debounce_s: float) -> None:
        self.window_s, self.threshold, self.debounce_s = window_s, threshold, debounce_s
        self.prints: dict[str, list[tuple[float, int]]] = {}
        self.alerts: dict[tuple[str, str], float] = {}

    def update(self, code: str, ts: float, price: int) -> SuddenMove | None:
        if price <= 0:
            return None
        prints = self.prints.setdefault(code, [])
        if prints:
            ts = max(ts, prints[-1][0])
        prints.append((ts, price))
        window = [(t, p) for t, p in prints if t >= ts - self.window_s]
        low = min(p for _, p in window)
        high = max(p for _, p in window)
        low_ts = max(t for t, p in window if p == low)  # latest occurrence
        high_ts = max(t for t, p in window if p == high)
        found = []
        for direction, ref, ref_ts, change, size in (
            ("up", low, low_ts, (price - low) / low, (price - low) / low),
            ("down", high, high_ts, (price - high) / high, (high - price) / high),
        ):
            last = self.alerts.get((code, direction))
            if size >= self.threshold and (last is None or ts >= last + self.debounce_s):
                found.append(
                    SuddenMove(
                        code,
                        direction,
                        ref,
                        price,
                        change,
                        ref_ts,
                        ts,  # type: ignore[arg-type]
                        self.window_s,
                    )
                )
        if not found:
            return None
        if len(found) == 2:
            up, down = found
            if up.reference_ts != down.reference_ts:
                best = up if up.reference_ts > down.reference_ts else down
            elif abs(up.change) != abs(down.change):
                best = up if abs(up.change) > abs(down.change) else down
            else:
                best = up
        else:
            best = found[0]
        self.alerts[(code, best.direction)] = ts
        return best


ticks = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        # ts step in seconds: often 0 (same-ts prints), sometimes negative (out of order)
        st.one_of(st.sampled_from([0, 0, 1, 2, 5, -3]), st.integers(min_value=-2, max_value=70)),
        # Few distinct prices, so equal extremes and two-sided windows are common; <= 0 is a
        # bad print.
        st.one_of(
            st.sampled_from([-1, 0, 80, 90, 95, 100, 105, 110, 125]),
            st.integers(min_value=1, max_value=200),
        ),
    ),
    min_size=5,
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(
    ticks=ticks,
    window_s=st.sampled_from([5.0, 30.0, 60.0, 60.0]),
    threshold=st.sampled_from([0.01, 0.05, 0.2]),
    debounce_s=st.sampled_from([0.0, 0.0, 5.0, 10.0, 60.0]),
)
def test_matches_brute_force_reference(
    ticks: list[tuple[str, int, int]], window_s: float, threshold: float, debounce_s: float
) -> None:
    fast = SuddenMoveDetector(window_s, threshold, debounce_s)
    slow = ReferenceDetector(window_s, threshold, debounce_s)
    ts = T0
    for code, step, price in ticks:
        ts += step
        assert fast.update(code, ts, price) == slow.update(code, ts, price)


class CountedPrice(int):
    """An int that counts its order comparisons: the detector's work, whatever its layout."""

    compares = 0

    def _count(self) -> None:
        CountedPrice.compares += 1

    def __lt__(self, other: object) -> bool:
        self._count()
        return int(self) < int(other)  # type: ignore[call-overload]

    def __le__(self, other: object) -> bool:
        self._count()
        return int(self) <= int(other)  # type: ignore[call-overload]

    def __gt__(self, other: object) -> bool:
        self._count()
        return int(self) > int(other)  # type: ignore[call-overload]

    def __ge__(self, other: object) -> bool:
        self._count()
        return int(self) >= int(other)  # type: ignore[call-overload]


def test_memory_and_work_per_tick_are_bounded_by_the_window() -> None:
    """10^5 strictly monotone ticks (the deques' worst case: a rising run keeps every print in
    `lows`, a falling run every print in `highs`), 100 per second. Each deque stays within the
    ticks inside the window, and the price comparisons stay O(1) per tick: a detector that
    never expires entries, or one that rescans its window, fails by a factor of ~100."""
    window_s, step_s, n = 60.0, 0.01, 100_000
    in_window = int(window_s / step_s) + 1  # the boundary is inclusive
    d = SuddenMoveDetector(window_s=window_s, threshold=0.05, debounce_s=60.0)
    CountedPrice.compares = 0
    longest = 0
    for i in range(n):
        # up for the first half, then down: both deques get their long run
        price = 100_000 + i if i < n // 2 else 100_000 + n - i
        d.update("A", T0 + i * step_s, CountedPrice(price))
        st_ = d._codes["A"]  # noqa: SLF001 - the point is the private deques' size
        held = max(len(st_.lows), len(st_.highs))
        assert held <= min(i + 1, in_window), (i, len(st_.lows), len(st_.highs))
        longest = max(longest, held)
    assert longest >= in_window - 1  # the bound is reached, so the check above is tight
    # per tick: one `price <= 0`, and per deque one comparison that stops its pop loop plus
    # one per entry it pops (each entry is popped at most once)
    assert CountedPrice.compares <= 5 * n, CountedPrice.compares / n
