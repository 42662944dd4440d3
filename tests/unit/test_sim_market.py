"""The simulated market: determinism per seed, the KRX tick grid and limits, KIS round trip."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta

import pytest

from tradestream.events import KST, Tick
from tradestream.feeds.kis.codec import KisDecoder
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, SimTicker, data_frame, tick_size

NOW = datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST)
BASE = {t.code: t.base_price for t in DEFAULT_TICKERS}
# H0STCNT0 indices (kis.md §7.1)
CODE, HOUR, PRICE, SIGN, CHANGE, PCT, OPEN, HIGH, LOW, CNTG_VOL, ACML_VOL, DATE = (
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    12,
    13,
    33,
)
TIME_FIELDS = (1, 24, 27, 30)  # STCK_CNTG_HOUR, OPRC_HOUR, HGPR_HOUR, LWPR_HOUR


def trades(seed: int, n: int, tickers: tuple[SimTicker, ...] = DEFAULT_TICKERS) -> list[list[str]]:
    market = SimMarket(tickers, seed)
    return [market.trade(NOW) for _ in range(n)]


def upper_limit(base: int) -> int:
    """Highest price on the tick grid not above base * 1.3 (integer arithmetic)."""
    p = base * 13 // 10
    while p % tick_size(p):
        p -= 1
    return p


def lower_limit(base: int) -> int:
    """Lowest price on the tick grid not below base * 0.7 (integer arithmetic)."""
    p = -(-base * 7 // 10)
    while p % tick_size(p):
        p += 1
    return p


def test_limit_helpers() -> None:
    assert (lower_limit(71000), upper_limit(71000)) == (49700, 92300)
    assert (lower_limit(21000), upper_limit(21000)) == (14700, 27300)
    assert (lower_limit(100), upper_limit(100)) == (70, 130)
    assert (lower_limit(1001), upper_limit(1001)) == (701, 1301)
    assert (lower_limit(7149), upper_limit(3849)) == (5010, 5000)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_trades() -> None:
    a, b = trades(7, 500), trades(7, 500)
    assert a == b
    assert len({r[CODE] for r in a}) > 1  # not a degenerate sequence


def test_different_seed_different_trades() -> None:
    a, b = trades(7, 500), trades(8, 500)
    assert a != b
    assert [r[CODE] for r in a] != [r[CODE] for r in b]


def test_only_the_time_fields_come_from_the_clock() -> None:
    m1, m2 = SimMarket(DEFAULT_TICKERS, 3), SimMarket(DEFAULT_TICKERS, 3)
    later = NOW + timedelta(days=1, hours=1, minutes=2, seconds=3)
    for _ in range(300):
        r1, r2 = m1.trade(NOW), m2.trade(later)
        assert (r1[HOUR], r1[DATE]) == ("093015", "20250102")
        assert (r2[HOUR], r2[DATE]) == ("103218", "20250103")
        masked = {*TIME_FIELDS, DATE}
        assert [v for i, v in enumerate(r1) if i not in masked] == [
            v for i, v in enumerate(r2) if i not in masked
        ]


def test_market_needs_a_ticker() -> None:
    with pytest.raises(ValueError):
        SimMarket((), 1)


def test_codes_in_ticker_order() -> None:
    assert SimMarket(DEFAULT_TICKERS, 1).codes == [t.code for t in DEFAULT_TICKERS]


# --- a long run, checked record by record through the real decoder ----------------------------

SEEDS = (1, 2, 3)
N_TRADES = 5000


@functools.cache
def run(seed: int) -> tuple[list[list[str]], list[Tick]]:
    """N_TRADES trades of one seed, sent through data_frame + KisDecoder in frames of 1-4."""
    recs = trades(seed, N_TRADES)
    dec = KisDecoder("sim")
    ticks: list[Tick] = []
    i = 0
    while i < len(recs):
        batch = recs[i : i + 1 + i % 4]
        out = dec.decode(data_frame("H0STCNT0", batch), i)
        assert isinstance(out, list) and len(out) == len(batch), dec.last_error
        ticks.extend(out)
        i += len(batch)
    assert dec.stats.errors == {} and dec.stats.drift == 0
    assert dec.stats.records == N_TRADES
    return recs, ticks


@pytest.mark.parametrize("seed", SEEDS)
def test_every_record_has_46_fields(seed: int) -> None:
    recs, _ = run(seed)
    assert {len(r) for r in recs} == {46}


@pytest.mark.parametrize("seed", SEEDS)
def test_round_trip_ticks_match_fields(seed: int) -> None:
    recs, ticks = run(seed)
    for r, t in zip(recs, ticks, strict=True):
        base = BASE[r[CODE]]
        assert (t.source, t.venue, t.code) == ("sim", "KRX", r[CODE])
        assert t.trade_time == datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST)
        assert t.price == int(r[PRICE])
        assert t.change == t.price - base
        assert abs(t.change_percent - t.change / base * 100) <= 0.005 + 1e-9
        assert (t.open, t.high, t.low) == (int(r[OPEN]), int(r[HIGH]), int(r[LOW]))
        assert t.trade_volume == int(r[CNTG_VOL]) >= 1
        assert t.volume == int(r[ACML_VOL])


@pytest.mark.parametrize("seed", SEEDS)
def test_prices_on_krx_tick_grid(seed: int) -> None:
    _, ticks = run(seed)
    off_grid = [(t.code, t.price) for t in ticks if t.price % tick_size(t.price)]
    assert off_grid == []


@pytest.mark.parametrize("seed", SEEDS)
def test_prices_within_30_percent_of_base(seed: int) -> None:
    _, ticks = run(seed)
    for t in ticks:
        base = BASE[t.code]
        assert base * 7 <= t.price * 10 <= base * 13, (t.code, t.price)


@pytest.mark.parametrize("seed", SEEDS)
def test_sign_code_consistent_with_change(seed: int) -> None:
    recs, _ = run(seed)
    for r in recs:
        base, price, sign = BASE[r[CODE]], int(r[PRICE]), r[SIGN]
        change = int(r[CHANGE])
        assert change == price - base
        if price == upper_limit(base):
            assert sign == "1", r
        elif price == lower_limit(base):
            assert sign == "4", r
        elif change > 0:
            assert sign == "2", r
        elif change < 0:
            assert sign == "5", r
        else:
            assert sign == "3", r


@pytest.mark.parametrize("seed", SEEDS)
def test_accumulated_volume_strictly_increases_per_code(seed: int) -> None:
    _, ticks = run(seed)
    last: dict[str, int] = {}
    for t in ticks:
        assert t.volume == last.get(t.code, 0) + t.trade_volume
        assert t.volume > last.get(t.code, 0)
        last[t.code] = t.volume


@pytest.mark.parametrize("seed", SEEDS)
def test_high_price_low(seed: int) -> None:
    _, ticks = run(seed)
    first_price: dict[str, int] = {}
    for t in ticks:
        assert t.high >= t.price >= t.low, t
        assert t.open == first_price.setdefault(t.code, t.price)


def test_prices_stay_on_grid_across_band_boundaries() -> None:
    # Kakao Games starts exactly on the 20000 boundary (unit 10 below, 50 above); seed 4 walks
    # down and back up across it.
    recs = trades(4, 3000, (SimTicker("293490", "Kakao Games", 20000),))
    prices = [int(r[PRICE]) for r in recs]
    assert min(prices) < 20000 < max(prices)  # the walk really crosses the boundary
    assert [p for p in prices if p % tick_size(p)] == []


@functools.cache
def penny_signs(seed: int) -> dict[int, set[str]]:
    """Price -> sign codes seen, for 20000 trades of one ticker with base 100 (unit 1).

    KRX limits for base 100 are exactly 70 and 130 (base -+30%, on the grid).
    """
    signs: dict[int, set[str]] = {}
    for r in trades(seed, 20_000, (SimTicker("000100", "Penny", 100),)):
        signs.setdefault(int(r[PRICE]), set()).add(r[SIGN])
    return signs


@pytest.mark.parametrize("seed", [0, 1])
def test_walk_reaches_the_exact_upper_limit(seed: int) -> None:
    signs = penny_signs(seed)
    assert (max(signs), signs[max(signs)]) == (130, {"1"})
    assert [p for p, s in signs.items() if "1" in s] == [130]


@pytest.mark.parametrize("seed", [0, 1])
def test_walk_reaches_the_exact_lower_limit(seed: int) -> None:
    signs = penny_signs(seed)
    assert (min(signs), signs[min(signs)]) == (70, {"4"})
    assert [p for p, s in signs.items() if "4" in s] == [70]


@pytest.mark.parametrize("seed", [0, 1])
def test_signs_between_the_limits(seed: int) -> None:
    signs = penny_signs(seed)
    inside = {p: s for p, s in signs.items() if 71 < p < 130}
    assert len(inside) == 58  # every price strictly between 71 and 130 was traded
    for p, s in inside.items():
        assert s == {"2" if p > 100 else "5" if p < 100 else "3"}, p


# --- tick sizes, frames, tickers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "unit"),
    [
        (1, 1), (1999, 1), (2000, 5), (4999, 5), (5000, 10), (19999, 10), (20000, 50),
        (49999, 50), (50000, 100), (199999, 100), (200000, 500), (499999, 500),
        (500000, 1000), (2_000_000, 1000),
    ],
)  # fmt: skip
def test_tick_size_boundaries(price: int, unit: int) -> None:
    assert tick_size(price) == unit


@pytest.mark.parametrize(("n", "count"), [(1, "001"), (2, "002"), (12, "012"), (123, "123")])
def test_data_frame_count_has_three_digits(n: int, count: str) -> None:
    records = [[f"c{k}", f"p{k}"] for k in range(n)]
    text = data_frame("H0STCNT0", records)
    enc, tr_id, count_s, payload = text.split("|", 3)
    assert (enc, tr_id, count_s) == ("0", "H0STCNT0", count)
    assert payload.split("^") == [v for r in records for v in r]


def test_data_frame_exact_text() -> None:
    assert data_frame("H0NXCNT0", [["a", "", "b"], ["c", "d", ""]]) == "0|H0NXCNT0|002|a^^b^c^d^"


def test_default_tickers() -> None:
    codes = [t.code for t in DEFAULT_TICKERS]
    assert len(codes) == 50
    assert len(set(codes)) == 50
    assert all(re.fullmatch(r"[0-9]{6}", c) for c in codes), codes
    assert {"005930", "000660", "035420"} <= set(codes)
    assert all(t.base_price % tick_size(t.base_price) == 0 for t in DEFAULT_TICKERS)


def test_default_tickers_markets() -> None:
    """KOSPI first, the six KOSDAQ codes last (they move the simulated KOSDAQ index)."""
    markets = [t.market for t in DEFAULT_TICKERS]
    assert markets == ["KOSPI"] * 44 + ["KOSDAQ"] * 6
    assert SimTicker("000100", "Penny", 100).market == "KOSPI"
