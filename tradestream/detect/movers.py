"""Mover scanner: rank codes by recent price change weighted by volume surge.

It feeds the slot manager's "scanner finds" priority: codes that are moving now, on more volume
than usual for them, are worth a realtime slot. Pure: observations and queries carry their own
time (`ts`, `now`: seconds, float); nothing here reads a clock.

Each code keeps a fixed ring of time buckets rather than every trade, so memory per code is
bounded by `buckets` whatever the trade rate, and `observe` is amortised O(1). The price of that
bound is granularity: the "window" is the last `buckets` buckets, i.e. between
`window_s - bucket_s` and `window_s` of history.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 300.0
BUCKETS = 30  # 10 s buckets for the default 5 min window
MIN_TRADES = 5
RATIO_CAP = 10.0
MIN_EXPECTED_VOLUME = 1.0  # shares: the floor under the baseline, so a silent past is no 1/0


@dataclass(frozen=True, slots=True)
class Mover:
    """One ranked code. `change` is a signed fraction over the window; `volume_ratio` is the
    window's volume over the volume the code's baseline rate predicts for a window."""

    code: str
    score: float
    change: float
    volume_ratio: float
    price: int
    trades: int  # trades within the window


class _Bucket:
    __slots__ = ("first_price", "index", "last_price", "trades", "volume")

    def __init__(self, index: int, first_price: int) -> None:
        self.index = index
        self.first_price = first_price
        self.last_price = first_price
        self.volume = 0
        self.trades = 0


class _CodeState:
    __slots__ = (
        "base_price",
        "buckets",
        "first_ts",
        "last_price",
        "last_ts",
        "total_volume",
        "win_trades",
        "win_volume",
    )

    def __init__(self, ts: float, price: int) -> None:
        self.first_ts = ts
        self.last_ts = ts
        self.last_price = price
        self.total_volume = 0
        self.base_price = 0  # last price of the newest expired bucket; 0: none expired yet
        self.buckets: deque[_Bucket] = deque()
        self.win_volume = 0  # running sums over `buckets`
        self.win_trades = 0


class MoverScanner:
    """Ranks codes by `score = |change| * min(volume_ratio, ratio_cap)`.

    For a code at time `now` (bucket index `floor(now / bucket_s)`, `bucket_s = window_s /
    buckets`), the window is its trades in the last `buckets` buckets, the current one included:

    - `change = (last_price - base_price) / base_price`: the latest trade against the price
      the window opened at, i.e. the last trade before the window's oldest bucket (so a jump in the
      window's first seconds still counts), or the code's first trade if it was first seen
      within the window.
    - `baseline_rate = total_volume / max(now - first_seen_ts, window_s)`: the code's average
      volume per second since it was first observed (the window included). The `window_s`
      floor on the elapsed time means a code seen for less than a window has ratio <= 1 rather
      than an artificial surge.
    - `volume_ratio = window_volume / max(baseline_rate * window_s, min_expected_volume)`.
    - A code ranks only with at least `min_trades` trades in the window; a code with none (it
      has gone quiet for a window) drops out.

    Direction does not matter for the score (falls are movers too); `change` keeps the sign.
    The ratio cap keeps a thin code that prints one block trade from outranking real movers.
    Ties in score are ordered by code, so the ranking is deterministic.

    Time per code is non-decreasing: an earlier `ts` is treated as the last one seen. Prices
    <= 0 are ignored (not trade prices); negative volumes are refused (ValueError). Memory:
    per code at most `buckets` buckets plus a few numbers; codes stay until `forget(code)`
    (the universe is bounded: a few thousand listed codes).
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        min_trades: int = MIN_TRADES,
        *,
        buckets: int = BUCKETS,
        ratio_cap: float = RATIO_CAP,
        min_expected_volume: float = MIN_EXPECTED_VOLUME,
    ) -> None:
        if not (
            window_s > 0
            and buckets >= 1
            and min_trades >= 1
            and ratio_cap > 0
            and min_expected_volume > 0
        ):
            raise ValueError(
                "need window_s > 0, buckets >= 1, min_trades >= 1, ratio_cap > 0 "
                "and min_expected_volume > 0"
            )
        self.window_s = window_s
        self.min_trades = min_trades
        self.buckets = buckets
        self.bucket_s = window_s / buckets
        self.ratio_cap = ratio_cap
        self.min_expected_volume = min_expected_volume
        self._codes: dict[str, _CodeState] = {}

    def __len__(self) -> int:
        """The number of codes holding state."""
        return len(self._codes)

    def observe(self, code: str, ts: float, price: int, trade_volume: int) -> None:
        """Record one trade of `code` (rules in the class doc). Amortised O(1)."""
        if trade_volume < 0:
            raise ValueError(f"negative trade volume {trade_volume} for {code}")
        if price <= 0:
            return
        st = self._codes.get(code)
        if st is None:
            st = self._codes[code] = _CodeState(ts, price)
        ts = max(ts, st.last_ts)
        st.last_ts = ts
        st.last_price = price
        st.total_volume += trade_volume
        index = math.floor(ts / self.bucket_s)
        if not st.buckets or st.buckets[-1].index != index:
            st.buckets.append(_Bucket(index, price))
        bucket = st.buckets[-1]
        bucket.volume += trade_volume
        bucket.last_price = price
        bucket.trades += 1
        st.win_volume += trade_volume
        st.win_trades += 1
        oldest_live = index - self.buckets + 1
        while st.buckets[0].index < oldest_live:
            old = st.buckets.popleft()
            st.base_price = old.last_price
            st.win_volume -= old.volume
            st.win_trades -= old.trades

    def score(self, code: str, now: float) -> Mover | None:
        """The code's standing at `now`, or None if it is unknown or has fewer than
        `min_trades` trades in the window. Read-only; O(buckets) at worst."""
        st = self._codes.get(code)
        if st is None:
            return None
        now = max(now, st.last_ts)
        oldest_live = math.floor(now / self.bucket_s) - self.buckets + 1
        volume, trades, base = st.win_volume, st.win_trades, st.base_price
        first: _Bucket | None = None
        for b in st.buckets:  # oldest first: skip (without removing) buckets `now` expired
            if b.index >= oldest_live:
                first = b
                break
            volume -= b.volume
            trades -= b.trades
            base = b.last_price
        if first is None or trades < self.min_trades:
            return None
        base = base or first.first_price
        change = (st.last_price - base) / base
        baseline_rate = st.total_volume / max(now - st.first_ts, self.window_s)
        ratio = volume / max(baseline_rate * self.window_s, self.min_expected_volume)
        score = abs(change) * min(ratio, self.ratio_cap)
        return Mover(code, score, change, ratio, st.last_price, trades)

    def top(self, n: int, now: float) -> list[Mover]:
        """The `n` highest-scoring codes at `now`, by score descending then code ascending.
        O(codes * buckets) at worst: call it on a timer, not per tick."""
        ranked = [m for code in self._codes if (m := self.score(code, now)) is not None]
        ranked.sort(key=lambda m: (-m.score, m.code))
        return ranked[: max(n, 0)]

    def forget(self, code: str) -> None:
        """Drop everything known about a code; a later trade starts its baseline afresh."""
        self._codes.pop(code, None)
