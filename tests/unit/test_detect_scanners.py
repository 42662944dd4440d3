"""VCP and day-trading scans: a constructed pattern passes, and each condition alone can fail
it (with the parameter relaxed, the same bars pass again, so the failure is that condition's)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from tradestream.detect.scanners import (
    Bar,
    DaytradingSignal,
    VcpSignal,
    scan_daytrading,
    scan_vcp,
)
from tradestream.events import KST

DAY0 = datetime(2026, 2, 2, tzinfo=KST)


def run(high: float, low: float, volume: float, n: int = 20) -> list[Bar]:
    """`n` bars that each span [low, high] and close mid-range."""
    mid = (high + low) / 2
    return [Bar(0.0, mid, high, low, mid, volume) for _ in range(n)]


def vcp_bars(
    depths: tuple[float, float, float] = (0.20, 0.12, 0.06),
    volumes: tuple[float, float, float] = (1_000, 800, 500),
    last_close: float = 9_800,
    pivot: float = 10_000,
) -> list[Bar]:
    """Three 20-bar runs under a common `pivot` high, with the given depths and volumes; the
    last bar closes at `last_close`. Dated days apart, oldest first."""
    bars: list[Bar] = []
    for depth, vol in zip(depths, volumes, strict=True):
        bars += run(pivot, pivot * (1 - depth), vol)
    last = bars[-1]
    bars[-1] = Bar(last.start, last.open, last.high, last.low, last_close, last.volume)
    return [
        Bar(DAY0 + timedelta(days=i), b.open, b.high, b.low, b.close, b.volume)
        for i, b in enumerate(bars)
    ]


# --- VCP -------------------------------------------------------------------------------------


def test_vcp_constructed_pattern_passes() -> None:
    [sig] = scan_vcp({"005930": vcp_bars()})
    assert isinstance(sig, VcpSignal)
    assert (sig.code, sig.kind, sig.price, sig.pivot) == ("005930", "vcp", 9_800, 10_000)
    assert sig.depths == pytest.approx((0.20, 0.12, 0.06))
    assert sig.volume_ratio == pytest.approx(0.5)
    # tightness 1 - 0.06/0.20 = 0.7; dry-up 0.5; closeness 1 - 0.02/0.05 = 0.6
    assert sig.score == pytest.approx((0.7 + 0.5 + 0.6) / 3)
    assert "20.0% > 12.0% > 6.0%" in sig.reason and "pivot" in sig.reason


def test_vcp_only_the_last_lookback_bars_count() -> None:
    noisy_past = run(50_000, 1_000, 9_999_999, n=30)  # would break every rule
    assert len(scan_vcp({"A": noisy_past + vcp_bars()})) == 1


def test_vcp_fails_without_a_base_deep_enough() -> None:
    bars = vcp_bars(depths=(0.09, 0.06, 0.03))  # contracts fine, but from a 9% base
    assert scan_vcp({"A": bars}) == []
    assert len(scan_vcp({"A": bars}, min_base_depth=0.085)) == 1


def test_vcp_fails_when_a_run_does_not_contract() -> None:
    bars = vcp_bars(depths=(0.20, 0.12, 0.10))  # 10% > 0.8 x 12%
    assert scan_vcp({"A": bars}) == []
    assert len(scan_vcp({"A": bars}, contraction=0.85)) == 1
    assert scan_vcp({"A": vcp_bars(depths=(0.20, 0.17, 0.06))}) == []  # 17% > 0.8 x 20%


def test_vcp_fails_without_volume_dry_up() -> None:
    assert scan_vcp({"A": vcp_bars(volumes=(1_000, 800, 1_000))}) == []  # ratio 1.0: not < 1
    assert len(scan_vcp({"A": vcp_bars(volumes=(1_000, 800, 999))})) == 1


def test_vcp_fails_when_the_close_is_far_below_the_pivot() -> None:
    assert scan_vcp({"A": vcp_bars(last_close=9_499)}) == []
    [sig] = scan_vcp({"A": vcp_bars(last_close=9_500)})  # exactly 5% below: passes
    assert sig.score == pytest.approx((0.7 + 0.5 + 0.0) / 3)


def test_vcp_short_and_empty_input() -> None:
    assert scan_vcp({}) == []
    assert scan_vcp({"A": vcp_bars()[1:], "B": []}) == []  # 59 bars < lookback 60
    assert len(scan_vcp({"A": vcp_bars()[1:]}, lookback=59)) == 1


def test_vcp_skips_non_positive_highs() -> None:
    bars = vcp_bars()
    bars[0] = Bar(bars[0].start, 0, 0, 0, 0, 0)
    assert scan_vcp({"A": bars}) == []


def test_vcp_sorted_by_score_then_code() -> None:
    good = vcp_bars(volumes=(1_000, 800, 200))
    ok = vcp_bars()
    found = scan_vcp({"ZZZ": good, "BBB": ok, "AAA": ok, "CCC": vcp_bars(last_close=1)})
    assert [s.code for s in found] == ["ZZZ", "AAA", "BBB"]
    assert scan_vcp({"ZZZ": good, "BBB": ok, "AAA": ok}) == found  # deterministic


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lookback": 5},
        {"segments": 1},
        {"contraction": 0.0},
        {"contraction": 1.5},
        {"min_base_depth": 1.0},
        {"max_volume_ratio": 0.0},
        {"near_high": 1.0},
    ],
)
def test_vcp_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        scan_vcp({}, **kwargs)  # type: ignore[arg-type]


# --- day trading -----------------------------------------------------------------------------


def session(
    closes: Sequence[float],
    volumes: Sequence[float],
    first_open: float = 10_000,
    highs: Sequence[float] | None = None,
) -> list[Bar]:
    """Minute bars from 09:00: each opens at the previous close; high defaults to the close."""
    highs = highs or [max(c, o) for c, o in zip(closes, [first_open, *closes], strict=False)]
    start = DAY0.replace(hour=9)
    opens = [first_open, *closes[:-1]]
    return [
        Bar((start + timedelta(minutes=i)).timestamp(), o, h, min(o, c) - 10, c, v)
        for i, (o, h, c, v) in enumerate(zip(opens, highs, closes, volumes, strict=True))
    ]


CLOSES = [10_050, 10_100, 10_150, 10_200, 10_250, 10_300, 10_350, 10_380, 10_400]
VOLUMES = [1_000] * 8 + [3_000]


def test_daytrading_constructed_pattern_passes() -> None:
    [sig] = scan_daytrading({"035420": session(CLOSES, VOLUMES)})
    assert isinstance(sig, DaytradingSignal)
    assert (sig.code, sig.kind, sig.price, sig.day_high) == ("035420", "daytrading", 10_400, 10_400)
    assert sig.change == pytest.approx(0.04) and sig.volume_ratio == pytest.approx(3.0)
    assert sig.score == pytest.approx(0.12)
    assert "+4.0%" in sig.reason


def test_daytrading_fails_on_too_small_a_change() -> None:
    closes = [*CLOSES[:-1], 10_290]  # +2.9%
    assert scan_daytrading({"A": session(closes, VOLUMES)}) == []
    assert len(scan_daytrading({"A": session(closes, VOLUMES)}, min_change=0.029)) == 1
    exact = [*CLOSES[:-1], 10_300]  # exactly +3%: passes the default
    assert len(scan_daytrading({"A": session(exact, VOLUMES)})) == 1


def test_daytrading_fails_without_a_volume_burst() -> None:
    assert scan_daytrading({"A": session(CLOSES, [1_000] * 8 + [1_999])}) == []
    assert len(scan_daytrading({"A": session(CLOSES, [1_000] * 8 + [2_000])})) == 1  # exactly 2x


def test_daytrading_fails_when_the_close_is_off_the_high() -> None:
    highs = [*CLOSES[:-2], 10_700, 10_400]  # spiked to 10,700, now 2.8% below
    assert scan_daytrading({"A": session(CLOSES, VOLUMES, highs=highs)}) == []
    assert len(scan_daytrading({"A": session(CLOSES, VOLUMES, highs=highs)}, near_high=0.03)) == 1
    at_edge = [*CLOSES[:-2], 10_612, 10_400]  # (10,612 - 10,400) / 10,612 = 1.9977%
    assert len(scan_daytrading({"A": session(CLOSES, VOLUMES, highs=at_edge)})) == 1
    exact = [*CLOSES[:-2], 10_500, 10_290]  # exactly 2% below, +2.9%
    assert (
        len(
            scan_daytrading(
                {"A": session([*CLOSES[:-1], 10_290], VOLUMES, highs=exact)}, min_change=0.029
            )
        )
        == 1
    )


def test_daytrading_short_and_empty_input() -> None:
    assert scan_daytrading({}) == []
    short = session(CLOSES[-4:], VOLUMES[-4:], first_open=10_000)
    assert scan_daytrading({"A": short, "B": []}) == []
    assert len(scan_daytrading({"A": short}, min_bars=4)) == 1


def test_daytrading_silent_session_hits_the_volume_floor() -> None:
    [sig] = scan_daytrading({"A": session(CLOSES, [0] * 8 + [50])})
    assert sig.volume_ratio == 50.0  # 50 / max(0, 1)
    assert sig.score == pytest.approx(0.04 * 10.0)  # ratio capped in the score


def test_daytrading_skips_non_positive_open() -> None:
    assert scan_daytrading({"A": session(CLOSES, VOLUMES, first_open=0)}) == []


def test_daytrading_sorted_by_score_then_code() -> None:
    strong = session(CLOSES, [1_000] * 8 + [5_000])
    ok = session(CLOSES, VOLUMES)
    found = scan_daytrading({"BBB": ok, "AAA": ok, "ZZZ": strong})
    assert [s.code for s in found] == ["ZZZ", "AAA", "BBB"]


@pytest.mark.parametrize(
    "kwargs", [{"min_bars": 1}, {"volume_multiple": 0.0}, {"near_high": 1.0}, {"ratio_cap": 0.0}]
)
def test_daytrading_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        scan_daytrading({}, **kwargs)  # type: ignore[arg-type]
