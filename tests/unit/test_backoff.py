"""Capped exponential backoff with equal jitter: schedule, cap, reset, argument checks."""

from __future__ import annotations

import math
import random

import pytest

from tradestream.backoff import Backoff


def test_schedule_with_seeded_jitter() -> None:
    b = Backoff(initial_s=0.25, cap_s=2.0, factor=2.0, rng=random.Random(42))
    ref = random.Random(42)
    schedule = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    for d in schedule:
        assert b.peek() == d
        delay = b.next()
        assert delay == d / 2 + ref.random() * d / 2
        assert d / 2 <= delay <= d


def test_schedule_with_factor_three_caps_below_the_next_power() -> None:
    b = Backoff(initial_s=1.0, cap_s=10.0, factor=3.0, rng=random.Random(0))
    bounds = []
    for _ in range(5):
        bounds.append(b.peek())
        b.next()
    assert bounds == [1.0, 3.0, 9.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("initial_s", "cap_s", "factor"),
    [(0.25, 2.0, 2.0), (0.001, 1000.0, 10.0), (1.0, 1.0, 2.0), (0.5, 30.0, 1.0), (0.1, 60.0, 1.5)],
)
def test_cap_holds_after_many_attempts(initial_s: float, cap_s: float, factor: float) -> None:
    b = Backoff(initial_s=initial_s, cap_s=cap_s, factor=factor, rng=random.Random(1))
    delays = [b.next() for _ in range(10_000)]
    final = min(cap_s, initial_s * factor**b.attempt) if factor > 1 else initial_s
    assert b.peek() == final
    assert all(d <= cap_s for d in delays)
    assert all(final / 2 <= d <= final for d in delays[-100:])


def test_attempt_stops_counting_once_capped() -> None:
    b = Backoff(initial_s=0.25, cap_s=2.0, factor=2.0, rng=random.Random(1))
    for _ in range(10_000):
        b.next()
    assert b.attempt == 3  # 0.25 * 2**3 == 2.0 == cap
    assert b.peek() == 2.0


def test_reset_returns_to_initial_delay() -> None:
    b = Backoff(initial_s=0.25, cap_s=2.0, factor=2.0, rng=random.Random(5))
    for _ in range(6):
        b.next()
    assert b.peek() == 2.0
    b.reset()
    assert b.attempt == 0
    assert b.peek() == 0.25
    assert 0.125 <= b.next() <= 0.25
    assert b.peek() == 0.5


@pytest.mark.parametrize(
    ("initial_s", "cap_s", "factor"),
    [
        (0.0, 2.0, 2.0),
        (-0.25, 2.0, 2.0),
        (3.0, 2.0, 2.0),  # initial above cap
        (0.25, 2.0, 0.999),
        (0.25, 2.0, 0.0),
        (0.25, 2.0, -2.0),
        (math.nan, 2.0, 2.0),
        (0.25, math.nan, 2.0),
        # not finite: a NaN factor is not >= 1, and an infinite cap never stops the exponent
        # from growing, so factor**attempt overflows after ~1000 attempts.
        (0.25, 2.0, math.nan),
        (0.25, math.inf, 2.0),
    ],
)
def test_invalid_arguments_raise(initial_s: float, cap_s: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=initial_s, cap_s=cap_s, factor=factor)


def test_different_seeds_give_different_delays() -> None:
    a = Backoff(rng=random.Random(1))
    b = Backoff(rng=random.Random(2))
    da = [a.next() for _ in range(5)]
    db = [b.next() for _ in range(5)]
    assert all(x != y for x, y in zip(da, db, strict=True))
    assert a.attempt == b.attempt == 3


def test_default_rng_and_defaults() -> None:
    b = Backoff()
    assert (b.initial_s, b.cap_s, b.factor, b.attempt) == (0.25, 2.0, 2.0, 0)
    assert 0.125 <= b.next() <= 0.25
    assert 0.25 <= b.next() <= 0.5
