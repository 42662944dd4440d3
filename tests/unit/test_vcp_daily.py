"""The daily VCP on constructed daily series: the pattern and its near misses."""

from __future__ import annotations

from collections.abc import Sequence

from tradestream.detect.scanners import Bar
from tradestream.detect.vcp_daily import pullbacks, scan_vcp_daily


def series(
    waypoints: Sequence[tuple[int, float]], volumes: Sequence[tuple[int, float]]
) -> list[Bar]:
    """Daily bars along straight lines between (day, price) waypoints, each bar +-0.5% around
    its price; volume per day from (from_day, volume) steps."""
    bars = []
    for (d0, p0), (d1, p1) in zip(waypoints, waypoints[1:], strict=False):
        for d in range(d0, d1):
            p = p0 + (p1 - p0) * (d - d0) / (d1 - d0)
            vol = [v for start, v in volumes if start <= d][-1]
            bars.append(Bar(float(d), p, p * 1.005, p * 0.995, p, vol))
    return bars


BASE = [(0, 100), (20, 100), (80, 150)]  # flat, then a 50% advance into the base high
VCP = [*BASE, (95, 120), (110, 146), (120, 131), (132, 145), (140, 138), (160, 144)]
DRYING = [(0, 1000), (80, 800), (110, 500), (132, 300)]


def test_the_pattern_is_found_with_its_contractions() -> None:
    bars = series(VCP, DRYING)
    assert len(bars) == 160
    (hit,) = scan_vcp_daily({"005930": bars})
    assert hit.code == "005930" and hit.kind == "vcp"
    assert len(hit.depths) == 3
    assert 0.19 < hit.depths[0] < 0.22 and 0.09 < hit.depths[1] < 0.12 and hit.depths[2] < 0.07
    assert hit.volume_ratio < 0.35 and 0 < hit.score <= 1
    assert abs(hit.pivot - 145 * 1.005) < 1.5 and hit.base_bars == 80
    assert "3 pullbacks" in hit.reason


def test_near_misses_are_not_found() -> None:
    cases = {
        "expanding": [*BASE, (90, 138), (105, 148), (118, 126), (130, 146), (145, 110),
                      (160, 140)],
        "no advance": [(0, 148), (80, 150), *VCP[3:]],
        "far below the pivot": [*VCP[:-1], (160, 130)],
        "one pullback": [*BASE, (100, 120), (160, 146)],
    }  # fmt: skip
    found = scan_vcp_daily({name: series(w, DRYING) for name, w in cases.items()})
    assert found == []
    assert scan_vcp_daily({"loud": series(VCP, [(0, 1000)])}) == []  # no volume dry-up
    assert scan_vcp_daily({"short": series(VCP, DRYING)[-100:]}) == []  # too few bars


def test_pullbacks_follow_the_swings() -> None:
    bars = series(VCP, DRYING)
    legs = pullbacks(bars, 80, 0.03)
    assert [(h, lo) for h, lo in legs] == [(80, 95), (110, 120), (132, 140)]
