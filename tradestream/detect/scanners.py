"""Bar scans: the VCP (main dashboard) and day-trading (단타) signal lists of seed 004.

Both scans take recent OHLCV bars per code, oldest first, and return `SignalItem`s sorted by
score descending, then code. They are pure and deterministic: the caller builds the bars (from
the store or from ticks) and publishes the result on `signal:vcp` / `signal:daytrading`.
Each rule is deliberately small and spelled out, so a signal can always be explained by its
`reason` text; they are screens, not advice.

Time scale, plainly: the service (gateway/signals_api.py) runs both scans on 1-minute bars
built from the trades it has stored. So the VCP here is an *intraday* VCP: three 20-minute
pullbacks over the last hour, not the classic pattern of weeks of daily bars. The rules are
the same shape at any bar size; what a 10% base means in an hour is not what it means in three
months, and nothing here pretends otherwise. A daily VCP would need daily bars for months,
which this service does not store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

VCP_LOOKBACK_BARS = 60  # bars, whatever their size; the service's are 1-minute: the last hour
VCP_SEGMENTS = 3
VCP_CONTRACTION = 0.8  # each segment's depth <= 0.8 x the previous one's
VCP_MIN_BASE_DEPTH = 0.10  # the first segment must be a real pullback: >= 10%
VCP_MAX_VOLUME_RATIO = 1.0  # last segment's mean volume < 1.0 x the first's (volume dry-up)
VCP_NEAR_HIGH = 0.05  # last close within 5% of the lookback high

DT_MIN_BARS = 5
DT_MIN_CHANGE = 0.03  # +3% from the session's first open
DT_VOLUME_MULTIPLE = 2.0  # last bar volume >= 2x the mean of the earlier bars
DT_NEAR_HIGH = 0.02  # last close within 2% of the day's high
DT_RATIO_CAP = 10.0
MIN_MEAN_VOLUME = 1.0  # shares: floor under a mean volume, so a silent session is no 1/0


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar. `start` is the bar's opening time (datetime or epoch seconds); scans only
    rely on the order of bars, never on `start` itself."""

    start: datetime | float
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalItem:
    """A scan hit: `kind` names the scan, `price` is the last close, `reason` says in words
    which rule passed with which numbers."""

    code: str
    kind: str
    score: float
    reason: str
    price: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VcpSignal(SignalItem):
    """`depths` are the segments' (high - low) / high, oldest first; `pivot` is the lookback
    high (the breakout level); `volume_ratio` is last-segment over first-segment mean volume."""

    depths: tuple[float, ...]
    pivot: float
    volume_ratio: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DaytradingSignal(SignalItem):
    """`change` is last close over the session's first open, minus 1; `volume_ratio` is the
    last bar's volume over the earlier bars' mean; `day_high` is the session high."""

    change: float
    volume_ratio: float
    day_high: float


def scan_vcp(
    bars_by_code: Mapping[str, Sequence[Bar]],
    *,
    lookback: int = VCP_LOOKBACK_BARS,
    segments: int = VCP_SEGMENTS,
    contraction: float = VCP_CONTRACTION,
    min_base_depth: float = VCP_MIN_BASE_DEPTH,
    max_volume_ratio: float = VCP_MAX_VOLUME_RATIO,
    near_high: float = VCP_NEAR_HIGH,
) -> list[VcpSignal]:
    """Volatility contraction pattern: successively tighter pullbacks on drying volume, with
    the price back near the top of the base.

    Take each code's last `lookback` bars (a code with fewer is skipped) and split them into
    `segments` consecutive runs, `bars[i*L//k:(i+1)*L//k]`. For each run, depth =
    (max high - min low) / max high. A code passes when all hold:

    1. base: the first depth >= `min_base_depth` (a flat stock has nothing to contract);
    2. contraction: every depth <= `contraction` x the previous depth;
    3. volume dry-up: mean volume of the last run < `max_volume_ratio` x that of the first;
    4. near the pivot: (pivot - last close) / pivot <= `near_high`, the pivot being the
       lookback's highest high.

    Score, in [0, 1]: the mean of (1 - last depth / first depth), (1 - volume ratio, floored
    at 0) and (1 - distance below the pivot / `near_high`): tighter, quieter and closer rank
    higher. Codes whose bars have a non-positive high are skipped.
    """
    if not (
        lookback >= 2 * segments
        and segments >= 2
        and 0 < contraction <= 1
        and 0 <= min_base_depth < 1
        and max_volume_ratio > 0
        and 0 <= near_high < 1
    ):
        raise ValueError(
            "bad VCP parameters: need lookback >= 2*segments, segments >= 2, "
            "0 < contraction <= 1, 0 <= min_base_depth < 1, "
            "max_volume_ratio > 0, 0 <= near_high < 1"
        )
    out: list[VcpSignal] = []
    for code, all_bars in bars_by_code.items():
        if len(all_bars) < lookback:
            continue
        bars = all_bars[len(all_bars) - lookback :]
        if any(b.high <= 0 for b in bars):
            continue
        runs = [
            bars[i * lookback // segments : (i + 1) * lookback // segments] for i in range(segments)
        ]
        depths = tuple(_depth(run) for run in runs)
        if depths[0] < min_base_depth:
            continue
        if any(cur > contraction * prev for prev, cur in zip(depths, depths[1:], strict=False)):
            continue
        first_vol = _mean_volume(runs[0])
        volume_ratio = _mean_volume(runs[-1]) / max(first_vol, MIN_MEAN_VOLUME)
        if not volume_ratio < max_volume_ratio:
            continue
        pivot = max(b.high for b in bars)
        close = bars[-1].close
        below = (pivot - close) / pivot
        if below > near_high:
            continue
        closeness = 1.0 - below / near_high if near_high > 0 else 1.0
        tightness = 1.0 - depths[-1] / depths[0] if depths[0] > 0 else 0.0
        score = (tightness + max(0.0, 1.0 - volume_ratio) + max(0.0, closeness)) / 3
        depth_text = " > ".join(f"{d:.1%}" for d in depths)
        reason = (
            f"VCP: depths {depth_text}; volume {volume_ratio:.2f}x the first run's; "
            f"close {close:g} is {below:.1%} below the {pivot:g} pivot"
        )
        out.append(
            VcpSignal(
                code=code,
                kind="vcp",
                score=score,
                reason=reason,
                price=close,
                depths=depths,
                pivot=pivot,
                volume_ratio=volume_ratio,
            )
        )
    out.sort(key=lambda s: (-s.score, s.code))
    return out


def scan_daytrading(
    bars_by_code: Mapping[str, Sequence[Bar]],
    *,
    min_bars: int = DT_MIN_BARS,
    min_change: float = DT_MIN_CHANGE,
    volume_multiple: float = DT_VOLUME_MULTIPLE,
    near_high: float = DT_NEAR_HIGH,
    ratio_cap: float = DT_RATIO_CAP,
) -> list[DaytradingSignal]:
    """Intraday momentum: up on the day, a volume burst now, and trading at the high.

    Each code's bars are taken to be today's session so far (e.g. 1-minute bars), oldest
    first; the caller slices the session. A code with fewer than `min_bars` bars is skipped.
    A code passes when all hold:

    1. change: (last close - first bar's open) / first bar's open >= `min_change`;
    2. volume burst: last bar volume >= `volume_multiple` x the mean volume of the bars before
       it (the last bar is left out so it does not dilute its own average; the mean is floored
       at one share), i.e. volume_ratio >= `volume_multiple`;
    3. strength: (session high - last close) / session high <= `near_high`.

    Fractions are computed as (a - b) / b, so integer prices meet a threshold exactly at the
    boundary (+3.0% is >= 0.03), not one float rounding short of it.

    Score: change x min(volume_ratio, `ratio_cap`), as in the mover scanner: a move counts more
    on more volume, but one block print cannot dominate. Codes whose first open or session high
    is non-positive are skipped.
    """
    if not (min_bars >= 2 and volume_multiple > 0 and 0 <= near_high < 1 and ratio_cap > 0):
        raise ValueError(
            "bad day-trading parameters: need min_bars >= 2, "
            "volume_multiple > 0, 0 <= near_high < 1, ratio_cap > 0"
        )
    out: list[DaytradingSignal] = []
    for code, bars in bars_by_code.items():
        if len(bars) < min_bars:
            continue
        first_open = bars[0].open
        day_high = max(b.high for b in bars)
        if first_open <= 0 or day_high <= 0:
            continue
        last = bars[-1]
        change = (last.close - first_open) / first_open
        if change < min_change:
            continue
        volume_ratio = last.volume / max(_mean_volume(bars[:-1]), MIN_MEAN_VOLUME)
        if volume_ratio < volume_multiple:
            continue
        below = (day_high - last.close) / day_high
        if below > near_high:
            continue
        score = change * min(volume_ratio, ratio_cap)
        reason = (
            f"day-trading: {change:+.1%} from the {first_open:g} open; last bar volume "
            f"{volume_ratio:.1f}x the session mean; close {below:.1%} below the "
            f"{day_high:g} high"
        )
        out.append(
            DaytradingSignal(
                code=code,
                kind="daytrading",
                score=score,
                reason=reason,
                price=last.close,
                change=change,
                volume_ratio=volume_ratio,
                day_high=day_high,
            )
        )
    out.sort(key=lambda s: (-s.score, s.code))
    return out


def _depth(bars: Sequence[Bar]) -> float:
    high = max(b.high for b in bars)
    return (high - min(b.low for b in bars)) / high


def _mean_volume(bars: Sequence[Bar]) -> float:
    return sum(b.volume for b in bars) / len(bars)
