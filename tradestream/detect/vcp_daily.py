"""The daily VCP (volatility contraction pattern) scan: Minervini's base of successively
shallower pullbacks on drying volume after an advance, the price back near the top of the
last contraction (the pivot). Pure: daily bars in, signals out.

The definition, step by step, on each code's last `lookback` daily bars (oldest first; a code
with fewer is skipped):

1. **Base high.** The highest high of the window, at least `min_after` bars before its end
   (the base's left side); everything after it is the base.
2. **Prior advance.** That high is at least `advance` (30%) above the lowest low of the
   `trend_bars` (60) bars before it: a VCP forms after a run-up, not in a downtrend.
3. **Contractions.** From the base high, a zigzag with a `swing` (3%) reversal threshold
   splits the base into pullbacks: each from a swing high to the lowest low before the price
   turns up by `swing`. A pullback still open at the end counts if it is at least `swing`
   deep. Depth = (swing high - swing low) / swing high.
4. **Contracting.** At least `min_contractions` (2) pullbacks; the first between
   `first_depth` (8% and 50%); each at most `tighten` (0.8) x the one before; the last at most
   `last_depth` (12%).
5. **Volume dry-up.** The mean volume of the last `dry_bars` (10) bars is below `dry_up`
   (0.7) x the mean volume of the `trend_bars` bars before the base high.
6. **Near the pivot.** The pivot is the high the last pullback started from; the last close is
   at most `near_pivot` (5%) below it (a close above it is a breakout and passes too).

Score in [0, 1]: the mean of tightness (1 - last depth / first depth), dryness (1 - the volume
ratio / `dry_up`) and closeness (1 - distance below the pivot / `near_pivot`, 1 above it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tradestream.detect.scanners import Bar, SignalItem

LOOKBACK = 160
MIN_AFTER = 15
TREND_BARS = 60
ADVANCE = 0.30
SWING = 0.03
MIN_CONTRACTIONS = 2
FIRST_DEPTH = (0.08, 0.50)
TIGHTEN = 0.8
LAST_DEPTH = 0.12
DRY_BARS = 10
DRY_UP = 0.7
NEAR_PIVOT = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyVcpSignal(SignalItem):
    """`depths`: the pullbacks' depths, oldest first; `pivot`: where the last one started;
    `volume_ratio`: the last `dry_bars`' mean volume over the advance's."""

    depths: tuple[float, ...]
    pivot: float
    volume_ratio: float
    base_bars: int


def pullbacks(bars: Sequence[Bar], start: int, swing: float) -> list[tuple[int, int]]:
    """(swing-high index, swing-low index) of each pullback from `bars[start]` on."""
    legs: list[tuple[int, int]] = []
    hi_i, lo_i = start, start
    falling = True
    for i in range(start + 1, len(bars)):
        b = bars[i]
        if falling:
            if b.high > bars[hi_i].high and lo_i == hi_i:
                hi_i = lo_i = i  # still rising: no pullback yet
                continue
            if b.low < bars[lo_i].low or lo_i == hi_i:
                lo_i = i
            deep = (bars[hi_i].high - bars[lo_i].low) / bars[hi_i].high >= swing
            if deep and b.high >= bars[lo_i].low * (1 + swing) and i > lo_i:
                legs.append((hi_i, lo_i))
                falling, hi_i = False, i
        else:
            if b.high >= bars[hi_i].high:
                hi_i = i
            if b.low <= bars[hi_i].high * (1 - swing):
                falling, lo_i = True, i
    if falling and lo_i != hi_i and (bars[hi_i].high - bars[lo_i].low) / bars[hi_i].high >= swing:
        legs.append((hi_i, lo_i))  # the pullback still open
    return legs


def scan_vcp_daily(
    bars_by_code: Mapping[str, Sequence[Bar]],
    *,
    lookback: int = LOOKBACK,
    min_after: int = MIN_AFTER,
    trend_bars: int = TREND_BARS,
    advance: float = ADVANCE,
    swing: float = SWING,
    min_contractions: int = MIN_CONTRACTIONS,
    first_depth: tuple[float, float] = FIRST_DEPTH,
    tighten: float = TIGHTEN,
    last_depth: float = LAST_DEPTH,
    dry_bars: int = DRY_BARS,
    dry_up: float = DRY_UP,
    near_pivot: float = NEAR_PIVOT,
) -> list[DailyVcpSignal]:
    """The module doc's definition over each code's daily bars, oldest first; best first."""
    out: list[DailyVcpSignal] = []
    for code, all_bars in bars_by_code.items():
        if len(all_bars) < lookback:
            continue
        bars = all_bars[len(all_bars) - lookback :]
        if any(b.high <= 0 or b.low <= 0 for b in bars):
            continue
        top = max(range(len(bars) - min_after), key=lambda i: (bars[i].high, -i))
        if top < trend_bars:
            continue  # no room before the base for the advance into it
        before = bars[top - trend_bars : top]
        if bars[top].high < (1 + advance) * min(b.low for b in before):
            continue
        legs = pullbacks(bars, top, swing)
        depths = tuple((bars[h].high - bars[lo].low) / bars[h].high for h, lo in legs)
        if len(depths) < min_contractions:
            continue
        if not first_depth[0] <= depths[0] <= first_depth[1] or depths[-1] > last_depth:
            continue
        if any(cur > tighten * prev for prev, cur in zip(depths, depths[1:], strict=False)):
            continue
        ref = sum(b.volume for b in before) / len(before)
        recent = bars[-dry_bars:]
        volume_ratio = sum(b.volume for b in recent) / len(recent) / max(ref, 1.0)
        if not volume_ratio < dry_up:
            continue
        pivot = bars[legs[-1][0]].high
        close = bars[-1].close
        below = (pivot - close) / pivot
        if below > near_pivot:
            continue
        closeness = 1.0 if below <= 0 else 1.0 - below / near_pivot
        score = ((1 - depths[-1] / depths[0]) + (1 - volume_ratio / dry_up) + closeness) / 3
        text = " > ".join(f"{d:.1%}" for d in depths)
        out.append(
            DailyVcpSignal(
                code=code,
                kind="vcp",
                score=score,
                reason=(
                    f"daily VCP: {len(depths)} pullbacks {text} over {len(bars) - top} days; "
                    f"volume {volume_ratio:.2f}x the advance's; close {close:g} is "
                    f"{below:+.1%} from the {pivot:g} pivot"
                ),
                price=close,
                depths=depths,
                pivot=pivot,
                volume_ratio=volume_ratio,
                base_bars=len(bars) - top,
            )
        )
    out.sort(key=lambda s: (-s.score, s.code))
    return out
