"""Mover scanner: surge ranking, stale codes, ties, floors, bounded memory, and a property test
against a reference that keeps every trade."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradestream.detect.movers import Mover, MoverScanner

T0 = 36_000.0  # a multiple of every bucket size used below


def steady(
    s: MoverScanner,
    code: str,
    start: float,
    end: float,
    price: int,
    volume: int,
    every_s: float = 10.0,
) -> None:
    """One trade of `volume` at `price` every `every_s` seconds in [start, end)."""
    ts = start
    while ts < end:
        s.observe(code, ts, price, volume)
        ts += every_s


def test_the_surging_mover_ranks_first() -> None:
    s = MoverScanner(window_s=300.0, min_trades=5)
    for code in ("AAA", "BBB", "CCC", "DDD"):
        steady(s, code, T0, T0 + 3600, 10_000, 100)  # an hour of baseline
    w0 = T0 + 3600
    steady(s, "AAA", w0, w0 + 300, 10_300, 100)  # +3% on usual volume
    steady(s, "BBB", w0, w0 + 300, 10_300, 500)  # +3% on 5x volume: the surge
    steady(s, "CCC", w0, w0 + 300, 10_100, 500)  # +1% on 5x volume
    steady(s, "DDD", w0, w0 + 300, 10_000, 100)  # flat
    top = s.top(10, w0 + 299)
    assert [m.code for m in top] == ["BBB", "CCC", "AAA", "DDD"]
    bbb = top[0]
    assert bbb.change == pytest.approx(0.03) and bbb.trades == 30 and bbb.price == 10_300
    # baseline: 390 trades * 100 + 30 * 400 more = 51,000 shares over 3,899 s
    assert bbb.volume_ratio == pytest.approx(15_000 / (51_000 / 3899 * 300))
    assert top[-1].score == 0.0
    assert s.top(2, w0 + 299) == top[:2]
    assert s.top(0, w0 + 299) == []


def test_falls_are_movers_too_and_keep_their_sign() -> None:
    s = MoverScanner(window_s=300.0, min_trades=1)
    steady(s, "UP", T0, T0 + 300, 10_000, 100)
    steady(s, "DN", T0, T0 + 300, 10_000, 100)
    s.observe("UP", T0 + 300, 10_500, 100)
    s.observe("DN", T0 + 300, 9_500, 100)
    up, dn = s.score("UP", T0 + 300), s.score("DN", T0 + 300)
    assert up is not None and dn is not None
    assert up.change == pytest.approx(0.05) and dn.change == pytest.approx(-0.05)
    assert up.score == pytest.approx(dn.score)


def test_stale_codes_drop_out() -> None:
    s = MoverScanner(window_s=300.0, min_trades=5, buckets=30)
    steady(s, "OLD", T0, T0 + 100, 10_000, 100)  # last trade at T0+90, bucket 9
    steady(s, "NEW", T0, T0 + 400, 10_000, 100)
    assert {m.code for m in s.top(5, T0 + 300)} == {"OLD", "NEW"}  # buckets 1..30 live
    # At T0+390 the live buckets are 10..39: OLD's trades are all out of the window.
    assert [m.code for m in s.top(5, T0 + 390)] == ["NEW"]
    assert s.score("OLD", T0 + 390) is None
    assert s.score("NOPE", T0) is None


def test_min_trades_gates_ranking() -> None:
    s = MoverScanner(window_s=300.0, min_trades=5)
    steady(s, "A", T0, T0 + 40, 10_000, 100)  # 4 trades
    assert s.top(5, T0 + 40) == []
    s.observe("A", T0 + 41, 11_000, 100)
    [m] = s.top(5, T0 + 41)
    assert m.trades == 5 and m.change == 0.1


def test_ties_are_ordered_by_code_whatever_the_insertion_order() -> None:
    s = MoverScanner(window_s=300.0, min_trades=1)
    for code in ("ZZZ", "MMM", "AAA"):
        steady(s, code, T0, T0 + 100, 10_000, 100)
        s.observe(code, T0 + 100, 10_200, 100)
    ranked = s.top(3, T0 + 100)
    assert [m.code for m in ranked] == ["AAA", "MMM", "ZZZ"]
    assert len({m.score for m in ranked}) == 1


def test_a_new_code_gets_no_artificial_surge() -> None:
    s = MoverScanner(window_s=300.0, min_trades=1)
    steady(s, "A", T0, T0 + 60, 10_000, 10_000)  # first seen a minute ago, heavy volume
    m = s.score("A", T0 + 60)
    assert m is not None and m.volume_ratio == pytest.approx(1.0)


def test_zero_volume_history_hits_the_floor_not_a_division_by_zero() -> None:
    s = MoverScanner(window_s=300.0, min_trades=1, min_expected_volume=1.0)
    steady(s, "A", T0, T0 + 50, 10_000, 0)
    s.observe("A", T0 + 50, 10_500, 0)
    m = s.score("A", T0 + 50)
    assert m is not None and m.volume_ratio == 0.0 and m.score == 0.0
    s.observe("A", T0 + 51, 10_500, 7)
    m = s.score("A", T0 + 51)
    assert m is not None and m.volume_ratio == pytest.approx(1.0)  # 7 / max(7, 1)


def test_ratio_is_capped_in_the_score() -> None:
    s = MoverScanner(window_s=300.0, min_trades=1, ratio_cap=10.0)
    steady(s, "A", T0, T0 + 36_000, 10_000, 1, every_s=60.0)  # ten thin hours
    s.observe("A", T0 + 36_000, 10_100, 1_000_000)  # one block trade
    m = s.score("A", T0 + 36_000)
    assert m is not None and m.volume_ratio > 10.0
    assert m.score == pytest.approx(abs(m.change) * 10.0)


def test_bad_input_rules() -> None:
    s = MoverScanner(min_trades=1)
    s.observe("A", T0, 0, 100)
    s.observe("A", T0, -5, 100)
    assert len(s) == 0  # non-positive prices are ignored, creating nothing
    with pytest.raises(ValueError):
        s.observe("A", T0, 10_000, -1)
    s.observe("A", T0 + 10, 10_000, 100)
    s.observe("A", T0 + 5, 11_000, 100)  # out of order: counted at T0+10
    m = s.score("A", T0 + 10)
    assert m is not None and m.trades == 2 and m.price == 11_000
    s.forget("A")
    s.forget("A")
    assert len(s) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0.0},
        {"min_trades": 0},
        {"buckets": 0},
        {"ratio_cap": 0.0},
        {"min_expected_volume": 0.0},
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MoverScanner(**kwargs)  # type: ignore[arg-type]


def test_memory_per_code_is_bounded_by_buckets() -> None:
    s = MoverScanner(window_s=60.0, buckets=6)
    steady(s, "A", T0, T0 + 3600, 10_000, 1, every_s=0.5)
    assert len(s._codes["A"].buckets) <= 6


# --- property test against a reference that keeps every trade ---------------------------------


def reference(
    trades: list[tuple[str, float, int, int]],
    now: float,
    window_s: float,
    buckets: int,
    min_trades: int,
) -> list[Mover]:
    bucket_s = window_s / buckets
    by_code: dict[str, list[tuple[float, int, int]]] = {}
    for code, ts, price, vol in trades:
        if price <= 0:
            continue
        rows = by_code.setdefault(code, [])
        rows.append((max(ts, rows[-1][0]) if rows else ts, price, vol))
    out = []
    for code, rows in by_code.items():
        t_now = max(now, rows[-1][0])
        oldest = math.floor(t_now / bucket_s) - buckets + 1
        live = [r for r in rows if math.floor(r[0] / bucket_s) >= oldest]
        if len(live) < min_trades:
            continue
        before = rows[: len(rows) - len(live)]  # rows are in ts order, so live is a suffix
        base = before[-1][1] if before else live[0][1]
        change = (rows[-1][1] - base) / base
        rate = sum(r[2] for r in rows) / max(t_now - rows[0][0], window_s)
        ratio = sum(r[2] for r in live) / max(rate * window_s, 1.0)
        out.append(
            Mover(code, abs(change) * min(ratio, 10.0), change, ratio, rows[-1][1], len(live))
        )
    out.sort(key=lambda m: (-m.score, m.code))
    return out


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C", "D"]),
            st.integers(min_value=-5, max_value=60),
            st.integers(min_value=-1, max_value=50),
            st.integers(min_value=0, max_value=1000),
        ),
        max_size=80,
    ),
    query_gap=st.integers(min_value=0, max_value=400),
    min_trades=st.integers(min_value=1, max_value=4),
)
def test_matches_reference(
    steps: list[tuple[str, int, int, int]], query_gap: int, min_trades: int
) -> None:
    s = MoverScanner(window_s=120.0, min_trades=min_trades, buckets=12)
    trades = []
    ts = T0
    for code, step, price, vol in steps:
        ts += step
        s.observe(code, ts, price, vol)
        trades.append((code, ts, price, vol))
    now = ts + query_gap
    got = s.top(10, now)
    want = reference(trades, now, 120.0, 12, min_trades)
    assert [m.code for m in got] == [m.code for m in want]
    for g, w in zip(got, want, strict=True):
        assert (g.trades, g.price) == (w.trades, w.price)
        assert g.change == pytest.approx(w.change)
        assert g.volume_ratio == pytest.approx(w.volume_ratio)
        assert g.score == pytest.approx(w.score)
