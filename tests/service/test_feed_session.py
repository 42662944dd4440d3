"""run_feed on trio's MockClock: stall detection, capped backoff with jitter, feed gaps.

The upstream is an in-memory double of a WebSocket connection (get_message/send_message), so
virtual time is exact: with a seeded rng the reconnect times are known to the nanosecond.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed

from tradestream.backoff import Backoff
from tradestream.config import KisSettings
from tradestream.events import KST, Event, FeedGap, Tick
from tradestream.feeds.kis.adapter import KisAdapter
from tradestream.feeds.session import FeedStatus, FeedTiming, run_feed
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame

TIMING = FeedTiming(stale_s=10.0, connect_timeout_s=5.0, backoff_initial_s=1.0, backoff_cap_s=4.0)
ACK = (
    '{"header":{"tr_id":"H0STCNT0","tr_key":"005930","encrypt":"N"},"body":{"rt_cd":"0",'
    '"msg_cd":"OPSP0000","msg1":"SUBSCRIBE SUCCESS","output":{"iv":"0123456789abcdef",'
    '"key":"abcdefghijklmnopqrstuvwxyz012345"}}}'
)


class FakeUpstream:
    """A connected socket whose server sends `script` and then says nothing."""

    def __init__(self, script: list[str]) -> None:
        self._script = list(script)
        self.sent: list[str] = []

    async def get_message(self) -> str:
        if self._script:
            return self._script.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send_message(self, message: str) -> None:
        self.sent.append(message)


class Broker:
    """Hands out connections; `down` makes connecting fail like a refused TCP connect."""

    def __init__(self) -> None:
        market = SimMarket(DEFAULT_TICKERS[:1], seed=3)
        self.frame = data_frame("H0STCNT0", [market.trade(datetime(2025, 1, 2, 9, tzinfo=KST))])
        self.attempts: list[float] = []
        self.down = 0  # refuse this many connects first
        self.conns: list[FakeUpstream] = []

    @asynccontextmanager
    async def connect(self, url: str, timeout_s: float) -> AsyncIterator[FakeUpstream]:
        self.attempts.append(trio.current_time())
        if self.down:
            self.down -= 1
            raise OSError("connection refused")
        conn = FakeUpstream([ACK, self.frame])
        self.conns.append(conn)
        yield conn


async def run(broker: Broker, seed: int, until: float) -> tuple[list[Event], FeedStatus]:
    cfg = KisSettings(
        ws_url="ws://broker.invalid/tryitout", approval_key="k", watchlist=("005930",)
    )
    events_out, events_in = trio.open_memory_channel[Event](100)
    status = FeedStatus("kis-1")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_feed(
                KisAdapter(cfg, "kis-1"),
                events_out,
                status,
                TIMING,
                rng=random.Random(seed),
                connect=broker.connect,
                task_status=task_status,
            )
        )
        await trio.sleep(until)
        nursery.cancel_scope.cancel()
    return [e async for e in events_in], status


@pytest.mark.parametrize("seed", [1, 2])
async def test_silence_is_a_dead_session(autojump_clock: trio.abc.Clock, seed: int) -> None:
    broker = Broker()
    t0 = trio.current_time()
    events, status = await run(broker, seed, until=35)
    # Each connection streams at once, so the backoff is reset every time: every delay is
    # drawn from the first step, [0.5, 1.0] s, in the order of the seeded rng.
    expected = Backoff(TIMING.backoff_initial_s, TIMING.backoff_cap_s, rng=random.Random(seed))
    t, want = t0, [t0]
    while True:
        expected.reset()
        t += TIMING.stale_s + expected.next()
        if t > t0 + 35:
            break
        want.append(t)
    assert broker.attempts == pytest.approx(want, abs=1e-9)
    assert status.reconnects == len(want) - 1
    assert "TooSlowError" in status.last_error
    ticks = [e for e in events if isinstance(e, Tick)]
    gaps = [e for e in events if isinstance(e, FeedGap)]
    assert len(ticks) == len(want)
    assert len(gaps) == len(want) - 1  # one per recovery, none for the first connection
    assert all(conn.sent[0].startswith('{"header":{"approval_key":"k"') for conn in broker.conns)


async def test_backoff_grows_capped_while_the_broker_is_down(
    autojump_clock: trio.abc.Clock,
) -> None:
    broker = Broker()
    broker.down = 5
    t0 = trio.current_time()
    events, status = await run(broker, seed=9, until=30)
    expected = Backoff(TIMING.backoff_initial_s, TIMING.backoff_cap_s, rng=random.Random(9))
    want, t = [t0], t0
    for _ in range(5):  # 1, 2, 4, 4, 4 s upper bounds, jittered to [d/2, d]
        t += expected.next()
        want.append(t)
    assert broker.attempts[:6] == pytest.approx(want, abs=1e-9)
    assert status.connects == len(broker.conns) >= 1
    # The broker came back and data flowed. Refused connects before the first data are not a
    # gap (nothing had streamed yet); each later recovery is one.
    assert isinstance(events[0], Tick)
    assert sum(isinstance(e, Tick) for e in events) == len(broker.conns)
    assert sum(isinstance(e, FeedGap) for e in events) == len(broker.conns) - 1


async def test_closed_connection_reconnects_without_waiting_for_staleness(
    autojump_clock: trio.abc.Clock,
) -> None:
    broker = Broker()

    class Closing(FakeUpstream):
        async def get_message(self) -> str:
            if self._script:
                return self._script.pop(0)
            raise ConnectionClosed(CloseReason(1011, "bye"))

    @asynccontextmanager
    async def connect(url: str, timeout_s: float) -> AsyncIterator[FakeUpstream]:
        broker.attempts.append(trio.current_time())
        yield Closing([ACK, broker.frame])

    broker.connect = connect  # type: ignore[method-assign]
    t0 = trio.current_time()
    await run(broker, seed=4, until=2.5)
    assert broker.attempts[0] == t0
    assert broker.attempts[1] - t0 <= 1.0  # the first backoff step, not the 10 s stale timeout
