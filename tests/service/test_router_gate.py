"""The router and the market gate: an index update the gate refuses is logged and counted, and
the router goes on routing and storing (one bad frame must not stop the service).

The decoder refuses negative issue counts (tests/unit/test_kis_index.py); this is the second
line of defence, for whatever else could reach the gate: the router is run with its real
channels and hub, and the bad IndexTick is injected directly.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import msgspec
import pytest
import trio
import trio.testing

from tradestream.events import KST, Event, IndexTick, Tick
from tradestream.hub import Hub
from tradestream.pipeline.stages import MarketState, RouterStats, run_router

T0 = datetime(2025, 1, 2, 9, 30, tzinfo=KST)


def index(name: str, advancers: int, n: int, pct: float = 0.2) -> IndexTick:
    return IndexTick(
        source="test",
        index=name,
        code={"kospi": "0001", "kosdaq": "1001"}[name],
        time=T0,
        value=1000.0,
        change=2.0,
        change_percent=pct,
        volume=n,
        traded_value=0,
        advancers=advancers,
        decliners=400,
        unchanged=50,
        received_ns=n,
    )


def tick(n: int) -> Tick:
    return Tick(
        source="test",
        venue="KRX",
        code="005930",
        trade_time=T0,
        price=71_000,
        change=0,
        change_percent=0.0,
        open=71_000,
        high=71_000,
        low=71_000,
        ask=71_000,
        bid=71_000,
        trade_volume=1,
        volume=n,
        value=0,
        strength=100.0,
        received_ns=n,
    )


async def test_a_refused_gate_update_is_counted_and_the_router_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    events_out, events_in = trio.open_memory_channel[Event](100)
    store_out, store_in = trio.open_memory_channel[Event](100)
    state, stats = MarketState(), RouterStats()
    # KOSPI with no advancer yet, KOSDAQ with advancers=-1: the gate's sum is negative
    bad = [index("kosdaq", -1, i) for i in range(2, 7)]
    sent: list[Event] = [index("kospi", 0, 1), *bad, tick(7), index("kosdaq", 1100, 8)]
    caplog.set_level(logging.WARNING, logger="tradestream.pipeline.stages")
    async with trio.open_nursery() as nursery:
        await nursery.start(run_router, events_in, store_out, Hub(), state, stats)
        with events_out:
            for ev in sent:
                await events_out.send(ev)
        stored = [ev async for ev in store_in]  # the router closes it when it returns

    assert stored == sent  # every event still went to the store, in order
    assert stats.events == len(sent) and stats.ticks == 1
    assert state.gate.rejected == len(bad)
    # the good update after them set the gate: breadth (0+1100)/(1100+800)
    assert state.gate_state is not None and state.gate_state.level == "open"
    assert (state.gate_state.advancers, state.gate_state.decliners) == (1100, 800)
    assert "market-gate" in state.last
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    # logged at the 1st, 2nd and 4th refusal: a bad feed cannot flood the log
    assert [m.split(" refused")[0] for m in refused] == [
        "market gate: update 1",
        "market gate: update 2",
        "market gate: update 4",
    ]
    assert "negative breadth counts" in refused[0]


async def test_a_refused_update_does_not_poison_the_other_index(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events_out, events_in = trio.open_memory_channel[Event](100)
    store_out, store_in = trio.open_memory_channel[Event](100)
    state, stats = MarketState(), RouterStats()
    good_kosdaq = index("kosdaq", 900, 1)
    # a bad KOSDAQ, then three KOSPI updates: each is read with the last good KOSDAQ
    sent: list[Event] = [
        good_kosdaq,
        index("kospi", 1000, 2),
        index("kosdaq", -2000, 3),
        *(index("kospi", 1000, n) for n in (4, 5, 6)),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(run_router, events_in, store_out, Hub(), state, stats)
        with events_out:
            for ev in sent:
                await events_out.send(ev)
        assert len([ev async for ev in store_in]) == len(sent)
    assert state.gate.rejected == 1  # the bad update alone
    assert state.indexes["kosdaq"] is good_kosdaq
    assert state.gate_state is not None and state.gate_state.level == "open"


async def test_the_router_reports_its_intake_lag() -> None:
    """Intake lag: upstream receive to the router taking the event, sampled for the oldest
    event of each drained batch (the status endpoint's `router.intake_lag_ms`)."""
    events_out, events_in = trio.open_memory_channel[Event](100)
    store_out, store_in = trio.open_memory_channel[Event](100)
    stats = RouterStats()
    assert stats.intake_lag_ms() == {"samples": 0, "p50": None, "p99": None, "max": None}
    async with trio.open_nursery() as nursery:
        await nursery.start(run_router, events_in, store_out, Hub(), MarketState(), stats)
        with events_out:
            for lag_ms in (50, 200):  # one event per batch: each is its batch's oldest
                old = msgspec.structs.replace(
                    tick(1), received_ns=time.time_ns() - lag_ms * 1_000_000
                )
                await events_out.send(old)
                await trio.testing.wait_all_tasks_blocked()
        assert len([ev async for ev in store_in]) == 2
    lag = stats.intake_lag_ms()
    assert lag["samples"] == 2
    assert lag["p50"] is not None and 50 <= lag["p50"] < 200 + 5_000
    assert lag["max"] is not None and lag["max"] >= 200
    assert "intake_lag_ms" in stats.as_dict()
