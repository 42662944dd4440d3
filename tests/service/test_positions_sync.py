"""run_positions_sync on the mock clock with a scripted positions source: the first answer
before started(), the period, the settle wait and the codes filled meanwhile, failures."""

from __future__ import annotations

from datetime import datetime
from functools import partial

import trio
import trio.testing

from tradestream.accounts import (
    AccountBook,
    BrokerPosition,
    HttpPositions,
    RouterProgress,
    SyncStats,
    run_positions_sync,
    safe_source,
)
from tradestream.errors import PositionsError
from tradestream.events import KST, Execution

ACCT = "5012345601"


class Source:
    """Answers from a script, one entry per fetch (the last repeats); an exception entry is
    raised. Records the virtual time of every fetch."""

    name = "scripted"

    def __init__(self, *answers: dict[str, int] | Exception) -> None:
        self.answers = list(answers)
        self.fetched_at: list[float] = []
        self.closed = False

    async def fetch(self) -> dict[str, dict[str, BrokerPosition]]:
        self.fetched_at.append(trio.current_time())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return {ACCT: {c: BrokerPosition(c, q, 1000.0) for c, q in answer.items()}}

    async def aclose(self) -> None:
        self.closed = True


def vnow_ns() -> int:
    """The mock clock as a wall clock (received_ns and the sync's now_ns agree)."""
    return round(trio.current_time() * 1e9)


def fill(code: str, qty: int, order_no: str, side: str = "buy") -> Execution:
    """A fill notice received now (virtual time)."""
    return Execution(
        "kis-1",
        "demo",
        ACCT,
        order_no,
        "0",
        side,
        "fill",
        "new",
        False,
        code,
        qty,
        1000,
        qty,
        1000,
        datetime.now(KST),
        code,
        vnow_ns(),
    )


async def test_first_answer_before_started_then_periodic_with_settle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    book = AccountBook()
    book.apply(fill("005930", 1, "1"))  # replayed from today's notices
    seen: list[dict[str, int]] = []
    before = {"005930": 1, "035720": 7}
    source = Source(before, before, before, {**before, "000660": 4})
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_positions_sync,
                source,
                book,
                lambda: seen.append(book.positions_by_code()),
                60.0,
                stats,
                now_ns=vnow_ns,
            )
        )
        # started(): the holdings from before today are in, and the slot manager was told
        assert seen == [{"005930": 1, "035720": 7}]
        assert stats.syncs == 1 and stats.corrected == 1 and stats.source == "scripted"
        await trio.sleep(61.0)  # the second answer (at 60) changes nothing: no call
        assert source.fetched_at == [0.0, 60.0] and len(seen) == 1
        await trio.sleep(1.5)
        assert stats.syncs == 2 and stats.last_at == 62.0  # after the settle wait (2 s)
        # the third question goes out at 122; its answer predates a fill that arrives at 123
        await trio.sleep(123.0 - trio.current_time())
        book.apply(fill("000660", 2, "2"))
        await trio.sleep(2.0)
        assert source.fetched_at[2] == 122.0 and stats.syncs == 3
        assert book.positions_by_code() == {**before, "000660": 2}  # not undone
        # the fourth answer (at 184) already counts a fill whose notice arrives at 185: the
        # settle wait lets it in before reconciling, so it is not counted twice
        await trio.sleep(185.0 - trio.current_time())
        book.apply(fill("000660", 2, "3"))
        await trio.sleep(2.0)
        assert source.fetched_at[3] == 184.0 and stats.syncs == 4
        assert book.positions_by_code() == {**before, "000660": 4}
        assert stats.corrected == 1 and len(seen) == 1
        nursery.cancel_scope.cancel()


async def test_failures_are_counted_and_retried(autojump_clock: trio.testing.MockClock) -> None:
    book = AccountBook()
    seen: list[dict[str, int]] = []
    source = Source(PositionsError("HTTP 503"), {"005930": 4})
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_positions_sync,
            source,
            book,
            lambda: seen.append(book.positions_by_code()),
            10.0,
            stats,
        )
        assert seen == [] and stats.failures == 1 and stats.last_error == "HTTP 503"
        await trio.sleep(10.0 + 2.0 + 0.1)
        assert seen == [{"005930": 4}] and stats.syncs == 1
        nursery.cancel_scope.cancel()


class SlowSource(Source):
    """A source that answers only after `delay_s` (a trickled body, a stuck bridge)."""

    def __init__(self, delay_s: float, *answers: dict[str, int] | Exception) -> None:
        super().__init__(*answers)
        self.delay_s = delay_s

    async def fetch(self) -> dict[str, dict[str, BrokerPosition]]:
        await trio.sleep(self.delay_s)
        return await super().fetch()


async def test_a_slow_fetch_is_bounded_and_does_not_hold_up_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    book = AccountBook()
    source = SlowSource(30.0, {"005930": 4})
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_positions_sync, source, book, lambda: None, 60.0, stats, fetch_timeout_s=3.0
            )
        )
        assert trio.current_time() == 3.0  # started() at the deadline, not after 30 s
        assert stats.failures == 1 and stats.syncs == 0
        assert stats.last_error == "no answer within 3s" and book.positions_by_code() == {}
        source.delay_s = 1.0  # the source recovers: the next answer clears the error
        await trio.sleep(63.0 + 1.0 + 2.0 + 0.1 - trio.current_time())
        assert stats.syncs == 1 and stats.last_error == "" and stats.failures == 1
        assert book.positions_by_code() == {"005930": 4}
        nursery.cancel_scope.cancel()
    assert source.closed


async def test_last_error_is_cleared_by_an_answer(autojump_clock: trio.testing.MockClock) -> None:
    stats = SyncStats()
    source = Source(PositionsError("HTTP 503"), {"005930": 4})
    async with trio.open_nursery() as nursery:
        await nursery.start(run_positions_sync, source, AccountBook(), lambda: None, 10.0, stats)
        assert stats.last_error == "HTTP 503"
        await trio.sleep(10.0 + 2.0 + 0.1)
        assert stats.syncs == 1 and stats.last_error == ""
        nursery.cancel_scope.cancel()
    assert source.closed


async def test_an_invalid_url_is_a_counted_failure(autojump_clock: trio.testing.MockClock) -> None:
    # httpx.InvalidURL is not an httpx.HTTPError: it once escaped and stopped the service
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_positions_sync,
            HttpPositions("http://[::1/x", 1.0),
            AccountBook(),
            lambda: None,
            10.0,
            stats,
        )
        assert stats.failures == 1 and "InvalidURL" in stats.last_error
        nursery.cancel_scope.cancel()


def test_the_source_shows_no_credentials() -> None:
    url = "https://user:secret@bridge.example:8443/positions?token=abc#frag"
    assert safe_source(url) == "https://bridge.example:8443/positions"
    assert HttpPositions(url, 1.0).name == "https://bridge.example:8443/positions"
    stats = SyncStats(source=url)
    assert stats.as_dict()["source"] == "https://bridge.example:8443/positions"
    assert SyncStats(source="scripted").as_dict()["source"] == "scripted"
    assert safe_source("http://[::1/x") == "?"


async def slow_router(
    events_in: trio.MemoryReceiveChannel[Execution],
    book: AccountBook,
    progress: RouterProgress,
    per_event_s: float,
) -> None:
    """Stands in for run_router far behind: applies each notice `per_event_s` after taking
    it, then tells `progress`, as service.py's observe() does."""
    with events_in:
        async for ev in events_in:
            await trio.sleep(per_event_s)
            book.apply(ev)
            progress.observe(ev)


async def test_an_answer_waits_for_the_notices_received_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # held 10; a sell of 4 is received at 59 and reaches the book only at 69 (the router is
    # behind); the broker's answer to the question at 60 already has it: 6, not 6 - 4
    book = AccountBook()
    book.apply(fill("005930", 10, "1"))
    events_out, events_in = trio.open_memory_channel[Execution](10)
    progress = RouterProgress(events_out)
    source = Source({"005930": 10}, {"005930": 6})
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_router, events_in, book, progress, 10.0)
        await nursery.start(
            partial(
                run_positions_sync,
                source,
                book,
                lambda: None,
                60.0,
                stats,
                routed=progress.routed,
                now_ns=vnow_ns,
            )
        )
        await trio.sleep(59.0)
        await events_out.send(fill("005930", 4, "2", side="sell"))
        await trio.sleep(62.5 - trio.current_time())
        assert stats.syncs == 1  # after the settle wait, but the router has not applied it
        await trio.sleep(70.0 - trio.current_time())
        assert stats.syncs == 2 and 69.0 <= (stats.last_at or 0) < 69.1
        assert book.positions_by_code() == {"005930": 6} and stats.corrected == 0
        nursery.cancel_scope.cancel()


async def test_an_answer_is_dropped_if_the_router_does_not_catch_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    book = AccountBook()
    book.apply(fill("005930", 10, "1"))
    events_out, events_in = trio.open_memory_channel[Execution](10)
    progress = RouterProgress(events_out)
    source = Source({"005930": 10}, {"005930": 6})
    stats = SyncStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_router, events_in, book, progress, 30.0)
        await nursery.start(
            partial(
                run_positions_sync,
                source,
                book,
                lambda: None,
                60.0,
                stats,
                routed=progress.routed,
                routed_wait_s=10.0,
                now_ns=vnow_ns,
            )
        )
        await trio.sleep(59.0)
        await events_out.send(fill("005930", 4, "2", side="sell"))
        await trio.sleep(72.5 - trio.current_time())  # settle 2 s, then 10 s for the router
        assert stats.syncs == 1 and stats.failures == 1 and "router" in stats.last_error
        assert book.positions_by_code() == {"005930": 10}  # the answer was not applied
        await trio.sleep(89.5 - trio.current_time())  # the notice applied at 89: 6
        assert book.positions_by_code() == {"005930": 6}
        await trio.sleep(134.1 - trio.current_time())  # asked at 132: nothing left to fix
        assert stats.syncs == 2 and stats.corrected == 0 and stats.last_error == ""
        nursery.cancel_scope.cancel()


def test_router_progress() -> None:
    events_out, events_in = trio.open_memory_channel[Execution](10)
    progress = RouterProgress(events_out)
    assert not progress.routed(5)  # nobody waiting on the edge: a router may hold one
    progress.observe(
        Execution(
            "kis-1",
            "demo",
            ACCT,
            "1",
            "0",
            "buy",
            "fill",
            "new",
            False,
            "005930",
            1,
            1000,
            1,
            1000,
            datetime.now(KST),
            "x",
            7,
        )
    )
    assert progress.routed(7) and not progress.routed(8)
    events_out.close()
    events_in.close()
