"""The simulator's market beyond what it streams: 200 more listed codes, so the broker's
rankings (kis-rest.md §4 fluctuation, §5 volume) can name codes the service does not watch yet.

Each extra code's day is a pure function of the seed and the seconds since the simulator
started: a prior close, a drift towards its day's change (most within a few percent; a few
"sharp movers" climb 10-29 % within minutes, some fall) and a volume that grows with time and
with the size of the move. The streamed codes take their figures from the live market. When a
client registers an extra code on the WebSocket, `ticker_for` gives the market a ticker that
starts at the ranking's price, so its trades agree with the ranking.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tradestream.sim.market import tick_size
from tradestream.universe import SimTicker

EXTRA_CODES = 200
SHARP_UP = 8  # extra codes that climb 10-29 % (the scanner's finds)
SHARP_DOWN = 4
RAMP_S = (60.0, 600.0)  # how long a code takes to reach its day's change


@dataclass(frozen=True)
class _Extra:
    code: str
    name: str
    prev_close: int
    change: float  # the day's change it drifts to (0.12: +12 %)
    ramp_s: float
    base_volume: int  # shares a minute with no move
    market: str


@dataclass(frozen=True)
class Row:
    code: str
    name: str
    price: int
    prev_close: int
    volume: int
    market: str

    @property
    def change(self) -> int:
        return self.price - self.prev_close

    @property
    def change_pct(self) -> float:
        return round(self.change / self.prev_close * 100, 2)


def _on_grid(price: float) -> int:
    p = max(1, int(price))
    return p - p % tick_size(p)


class Rankings:
    """The universe's rows at a moment (`rows(t)`, t: seconds since the simulator started)."""

    def __init__(self, seed: int, streamed: Iterable[str]) -> None:
        rng = random.Random(seed ^ 0x5EED)
        taken = set(streamed)
        extras: list[_Extra] = []
        i = 0
        while len(extras) < EXTRA_CODES:
            i += 1
            code = f"{(i * 7919) % 800_000 + 100_000:06d}"[:5] + "0"  # listed codes end in 0
            if code in taken:
                continue
            taken.add(code)
            n = len(extras)
            if n < SHARP_UP:
                change = rng.uniform(0.10, 0.29)
            elif n < SHARP_UP + SHARP_DOWN:
                change = -rng.uniform(0.08, 0.20)
            else:
                change = rng.gauss(0.0, 0.015)
            extras.append(
                _Extra(
                    code=code,
                    name=f"모의종목{n + 1:03d}",
                    prev_close=_on_grid(
                        rng.choice((2_000, 5_000, 12_000, 30_000, 80_000)) * rng.uniform(0.6, 1.6)
                    ),  # fmt: skip
                    change=change,
                    ramp_s=rng.uniform(*RAMP_S),
                    base_volume=rng.randrange(2_000, 60_000),
                    market="KOSDAQ" if n % 3 else "KOSPI",
                )
            )
        # shuffle so the sharp movers are not the first codes
        rng.shuffle(extras)
        self._extras = {e.code: e for e in extras}

    @property
    def codes(self) -> list[str]:
        return list(self._extras)

    def names(self) -> dict[str, str]:
        return {e.code: e.name for e in self._extras.values()}

    def markets(self) -> dict[str, str]:
        return {e.code: e.market for e in self._extras.values()}

    def row(self, code: str, t: float) -> Row:
        e = self._extras[code]
        reach = min(1.0, 0.4 + max(0.0, t) / e.ramp_s)  # the day began before the simulator
        price = _on_grid(e.prev_close * (1 + e.change * reach))
        minutes = max(0.0, t) / 60
        volume = int(e.base_volume * minutes * (1 + 40 * abs(e.change) * reach)) + 100
        return Row(e.code, e.name, price, e.prev_close, volume, e.market)

    def ticker_for(self, code: str, t: float) -> tuple[SimTicker, int] | None:
        """A market ticker for an extra code and its price now, or None if it is not one."""
        e = self._extras.get(code)
        if e is None:
            return None
        return SimTicker(e.code, e.name, e.prev_close, e.market), self.row(code, t).price

    def rows(self, t: float, live: Callable[[], Iterable[Row]]) -> list[Row]:
        """Every row now: the extra codes' and the streamed (live) ones'."""
        return [*(self.row(c, t) for c in self._extras), *live()]


def fluctuation(rows: list[Row], sort: str, limit: int = 30) -> list[dict[str, str]]:
    """kis-rest.md §4 ``output``: sort "0" rise, "1" fall; at most 30 rows."""
    ranked = sorted(rows, key=lambda r: (r.change_pct, r.volume), reverse=sort != "1")
    out = []
    for rank, r in enumerate(ranked[:limit], 1):
        out.append(
            {
                "stck_shrn_iscd": r.code,
                "data_rank": str(rank),
                "hts_kor_isnm": r.name,
                "stck_prpr": str(r.price),
                "prdy_vrss": str(r.change),
                "prdy_vrss_sign": _sign(r.change),
                "prdy_ctrt": f"{r.change_pct:.2f}",
                "acml_vol": str(r.volume),
            }
        )
    return out


def volume_rank(rows: list[Row], limit: int = 30) -> list[dict[str, str]]:
    """kis-rest.md §5 ``output`` (the code in ``mksc_shrn_iscd``); at most 30 rows."""
    ranked = sorted(rows, key=lambda r: r.volume, reverse=True)
    out = []
    for rank, r in enumerate(ranked[:limit], 1):
        out.append(
            {
                "hts_kor_isnm": r.name,
                "mksc_shrn_iscd": r.code,
                "data_rank": str(rank),
                "stck_prpr": str(r.price),
                "prdy_vrss_sign": _sign(r.change),
                "prdy_vrss": str(r.change),
                "prdy_ctrt": f"{r.change_pct:.2f}",
                "acml_vol": str(r.volume),
                "acml_tr_pbmn": str(r.volume * r.price),
            }
        )
    return out


def _sign(change: int) -> str:
    return "2" if change > 0 else "5" if change < 0 else "3"
