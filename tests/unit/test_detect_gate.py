"""Market gate: raw levels at their boundaries, transitions, and hysteresis against flapping."""

from __future__ import annotations

import math

import pytest

from tradestream.detect.gate import GateState, MarketGate

GREEN = (0.5, 0.3, 60, 40)  # kospi %, kosdaq %, advancers, decliners
YELLOW = (-1.2, 0.1, 60, 40)
RED = (-2.5, -0.5, 60, 40)


@pytest.mark.parametrize(
    ("kospi", "kosdaq", "adv", "dec", "level"),
    [
        (-2.0, 0.0, 50, 50, "closed"),  # index thresholds are inclusive
        (0.0, -2.0, 50, 50, "closed"),
        (-1.99, 0.0, 50, 50, "caution"),
        (-1.0, 0.0, 50, 50, "caution"),
        (0.0, -1.0, 50, 50, "caution"),
        (-0.99, -0.99, 50, 50, "open"),
        (0.0, 0.0, 30, 70, "caution"),  # breadth thresholds are strict: 0.30 is not red
        (0.0, 0.0, 2999, 7001, "closed"),
        (0.0, 0.0, 45, 55, "open"),  # 0.45 is not yellow
        (0.0, 0.0, 4499, 5501, "caution"),
        (0.0, 0.0, 0, 0, "open"),  # no breadth yet: indices only
        (-2.1, 0.0, 0, 0, "closed"),
        (0.0, 0.0, 0, 10, "closed"),  # all decliners: breadth 0
        (3.0, 3.0, 10, 0, "open"),
    ],
)
def test_raw_levels_at_the_boundaries(
    kospi: float, kosdaq: float, adv: int, dec: int, level: str
) -> None:
    assert MarketGate().classify(kospi, kosdaq, adv, dec)[0] == level


def test_first_update_sets_the_level_at_once() -> None:
    state = MarketGate().update(*RED, ts=1.0)
    assert state == GateState(
        "closed", "red", -2.5, -0.5, 60, 40, 0.6, ("KOSPI -2.50% <= -2.00%",), 1.0
    )


def test_reasons_list_every_crossed_threshold() -> None:
    state = MarketGate().update(-1.5, -2.0, 20, 80, ts=0.0)
    assert state is not None and state.level == "closed"
    assert state.reasons == (
        "KOSDAQ -2.00% <= -2.00%",
        "breadth 0.20 < 0.30",
        "KOSPI -1.50% <= -1.00%",
    )
    ok = MarketGate().update(*GREEN, ts=0.0)
    assert ok is not None and (ok.color, ok.reasons) == ("green", ())


def test_a_change_needs_n_consecutive_updates() -> None:
    g = MarketGate(confirm_updates=3)
    assert g.update(*GREEN, ts=0) is not None
    assert g.update(*RED, ts=1) is None
    assert g.update(*RED, ts=2) is None
    state = g.update(*RED, ts=3)
    assert state is not None and state.level == "closed" and state.ts == 3
    assert g.update(*RED, ts=4) is None  # no change, nothing to publish
    assert g.state is state


def test_one_noisy_update_never_moves_the_gate() -> None:
    g = MarketGate(confirm_updates=3)
    g.update(*GREEN, ts=0)
    for i, obs in enumerate([RED, RED, GREEN, RED, RED, GREEN, YELLOW, GREEN], start=1):
        assert g.update(*obs, ts=i) is None
    assert g.state is not None and g.state.level == "open"


def test_flicker_between_worse_levels_settles_on_the_one_that_held() -> None:
    g = MarketGate(confirm_updates=3)
    g.update(*GREEN, ts=0)
    assert g.update(*RED, ts=1) is None
    assert g.update(*YELLOW, ts=2) is None
    state = g.update(*RED, ts=3)
    assert state is not None and state.level == "caution" and state.color == "yellow"
    # Then three reds in a row close it.
    assert [g.update(*RED, ts=t) for t in (4, 5)] == [None, None]
    closed = g.update(*RED, ts=6)
    assert closed is not None and closed.level == "closed"


def test_recovery_moves_only_as_far_as_the_whole_streak_allows() -> None:
    g = MarketGate(confirm_updates=3)
    g.update(*RED, ts=0)
    assert g.update(*GREEN, ts=1) is None
    assert g.update(*YELLOW, ts=2) is None
    state = g.update(*GREEN, ts=3)
    assert state is not None and state.level == "caution"
    assert [g.update(*GREEN, ts=t) for t in (4, 5)] == [None, None]
    opened = g.update(*GREEN, ts=6)
    assert opened is not None and opened.level == "open"


def test_a_reversal_restarts_the_count() -> None:
    g = MarketGate(confirm_updates=2)
    g.update(*YELLOW, ts=0)
    assert g.update(*RED, ts=1) is None
    assert g.update(*GREEN, ts=2) is None  # other side: count restarts at 1
    assert g.update(*RED, ts=3) is None
    state = g.update(*RED, ts=4)
    assert state is not None and state.level == "closed"


def test_confirm_one_disables_hysteresis() -> None:
    g = MarketGate(confirm_updates=1)
    levels = [g.update(*obs, ts=i) for i, obs in enumerate([GREEN, RED, YELLOW, YELLOW, GREEN])]
    assert [s.level if s else None for s in levels] == ["open", "closed", "caution", None, "open"]


def test_bad_input_raises_and_changes_nothing() -> None:
    g = MarketGate(confirm_updates=2)
    g.update(*GREEN, ts=0)
    g.update(*RED, ts=1)
    with pytest.raises(ValueError):
        g.update(math.nan, 0.0, 1, 1, ts=2)
    with pytest.raises(ValueError):
        g.update(0.0, 0.0, -1, 1, ts=2)
    assert g.rejected == 2 and g.state is not None and g.state.level == "open"
    state = g.update(*RED, ts=3)  # the streak survived the bad updates
    assert state is not None and state.level == "closed"
    assert g.rejected == 2  # good updates are not counted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"red_index_pct": -0.5},
        {"red_breadth": 0.5},
        {"yellow_breadth": 1.5},
        {"confirm_updates": 0},
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MarketGate(**kwargs)  # type: ignore[arg-type]
