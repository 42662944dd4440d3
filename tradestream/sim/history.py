"""The simulator's daily bars before today (the broker's period-price TR, kis-rest.md §6.3):
a deterministic history per code ending at its prior close, a random walk for most and, for
a few, an advance followed by a volatility contraction pattern, so the daily VCP scan
(detect/vcp_daily.py) has something to find."""

from __future__ import annotations

import random
from datetime import date, timedelta

DAYS = 200  # trading days of history
VCP_SHAPE = [(0, 100), (40, 100), (120, 150), (135, 120), (150, 146), (160, 131), (172, 145),
             (180, 138), (200, 144)]  # fmt: skip
VCP_VOLUMES = [(0, 1.0), (120, 0.8), (150, 0.5), (172, 0.3)]

DayBar = tuple[date, int, int, int, int, int]  # day, open, high, low, close, volume


def trading_days(before: date, n: int) -> list[date]:
    """The `n` weekdays before `before`, oldest first (holidays are not modelled here)."""
    out: list[date] = []
    d = before
    while len(out) < n:
        d -= timedelta(days=1)
        if d.weekday() < 5:
            out.append(d)
    return out[::-1]


def history(code: str, prev_close: int, seed: int, today: date, vcp: bool) -> list[DayBar]:
    rng = random.Random(f"{seed}:{code}")
    days = trading_days(today, DAYS)
    base_volume = rng.randrange(200_000, 5_000_000)
    if vcp:
        prices: list[float] = []
        vols: list[float] = []
        for (d0, p0), (d1, p1) in zip(VCP_SHAPE, VCP_SHAPE[1:], strict=False):
            for i in range(d0, d1):
                prices.append(p0 + (p1 - p0) * (i - d0) / (d1 - d0))
                vols.append([v for start, v in VCP_VOLUMES if start <= i][-1])
        scale = prev_close / prices[-1]
        path = [p * scale for p in prices]
        volumes = [int(base_volume * v * rng.uniform(0.9, 1.1)) for v in vols]
    else:
        path, p = [], float(prev_close)
        for _ in days:
            path.append(p)
            p /= 1 + rng.gauss(0.0005, 0.02)  # walking back in time from the prior close
        path.reverse()
        volumes = [int(base_volume * rng.uniform(0.5, 1.5)) for _ in days]
    out: list[DayBar] = []
    for d, p, v in zip(days, path, volumes, strict=True):
        wiggle = 0.005 if vcp else rng.uniform(0.005, 0.03)
        close = max(1, round(p))
        out.append((d, close, round(p * (1 + wiggle)), max(1, round(p * (1 - wiggle))), close, v))
    return out


def vcp_codes(codes: list[str], seed: int, n: int = 3) -> set[str]:
    """The codes whose history forms the pattern (deterministic per seed)."""
    return set(random.Random(seed ^ 0xBA5E).sample(sorted(codes), min(n, len(codes))))
