"""The strategy host and the news keyword strategy, on trio's MockClock (autojump).

Doubles: `Recorder` is a healthy strategy that echoes each event; `Hangs` simulates a strategy
stuck on an await that never returns (a lost lock, a dead HTTP call); `Flaky` one that raises
on every Nth event (a bug on some inputs). Virtual time is exact: restarts happen at known
instants.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pytest
import trio
import trio.testing

from tradestream.events import KST, News, Tick
from tradestream.strategies import NewsKeywordStrategy, StrategyHost, restart_delay
from tradestream.strategies.news import match_keyword

T0 = datetime(2025, 1, 2, 9, 0, tzinfo=KST)


def tick(code: str = "005930", price: int = 71_000, n: int = 0) -> Tick:
    return Tick(
        source="test",
        venue="KRX",
        code=code,
        trade_time=T0,
        price=price,
        change=0,
        change_percent=0.0,
        open=price,
        high=price,
        low=price,
        ask=price,
        bid=price,
        trade_volume=1,
        volume=n,
        value=0,
        strength=100.0,
        received_ns=n,
    )


def news(realkey: str, title: str, tickers: tuple[str, ...] = ("005930",)) -> News:
    return News(
        source="test",
        realkey=realkey,
        title=title,
        tickers=tickers,
        ticker=tickers[0] if tickers else None,
        media_id="01",
        media="연합뉴스",
        published_at=T0,
        body_size=0,
        received_ns=0,
    )


class Emitted:
    """The host's sink: records (strategy_id, payload) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, strategy_id: str, payload: dict[str, Any]) -> None:
        self.items.append((strategy_id, payload))

    def of(self, strategy_id: str) -> list[dict[str, Any]]:
        return [p for sid, p in self.items if sid == strategy_id]


class Recorder:
    """Healthy: one payload per event, stamped with the virtual time it was handled."""

    def __init__(self, id: str = "rec", wants: tuple[type, ...] = (Tick,)) -> None:
        self.id = id
        self.wants = wants
        self.seen: list[tuple[float, Any]] = []

    async def handle(self, event: Any) -> Iterable[dict[str, Any]]:
        self.seen.append((trio.current_time(), event))
        return [
            {
                "signal": "watch",
                "symbol": getattr(event, "code", ""),
                "quantity": None,
                "reason": "seen",
                "n": len(self.seen),
            }
        ]


class Hangs(Recorder):
    """Hangs forever on every event for which `hang(event)` is true; records the rest."""

    def __init__(
        self, id: str = "hangs", wants: tuple[type, ...] = (Tick,), hang: Any = lambda e: True
    ) -> None:
        super().__init__(id, wants)
        self.hang = hang
        self.resets: list[float] = []

    async def handle(self, event: Any) -> Iterable[dict[str, Any]]:
        if self.hang(event):
            await trio.sleep_forever()
        return await super().handle(event)

    def reset(self) -> None:
        self.resets.append(trio.current_time())


class Flaky(Recorder):
    """Raises on every `every`-th event it is given (counting the ones it raised on)."""

    def __init__(self, id: str = "flaky", every: int = 7) -> None:
        super().__init__(id)
        self.every = every
        self.calls = 0
        self.resets = 0

    async def handle(self, event: Any) -> Iterable[dict[str, Any]]:
        self.calls += 1
        if self.calls % self.every == 0:
            raise RuntimeError(f"bug on call {self.calls}")
        return await super().handle(event)

    def reset(self) -> None:
        self.resets += 1


# -- basics ---------------------------------------------------------------------------------------


async def test_signals_reach_emit_with_strategy_id(nursery: trio.Nursery) -> None:
    out = Emitted()
    rec, other = Recorder("rec"), Recorder("news-only", wants=(News,))
    host = StrategyHost([rec, other], out)
    await nursery.start(host.run)
    for i in range(3):
        host.offer(tick(n=i))
    host.offer(object())  # nobody wants it: ignored, counted nowhere
    await trio.testing.wait_all_tasks_blocked()
    assert out.items == [
        (
            "rec",
            {"signal": "watch", "symbol": "005930", "quantity": None, "reason": "seen", "n": i + 1},
        )
        for i in range(3)
    ]
    st = host.status()
    assert {
        k: st["rec"][k]
        for k in (
            "state",
            "handled",
            "emitted",
            "dropped",
            "errors",
            "restarts",
            "last_error",
            "queue_depth",
        )
    } == {
        "state": "running",
        "handled": 3,
        "emitted": 3,
        "dropped": 0,
        "errors": 0,
        "restarts": 0,
        "last_error": None,
        "queue_depth": 0,
    }
    assert st["news-only"]["handled"] == 0 and st["news-only"]["wants"] == ["News"]


def test_restart_delay_doubles_to_the_cap() -> None:
    assert [restart_delay(0.5, 30.0, n) for n in range(1, 10)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
        30.0,
    ]
    assert restart_delay(0.5, 30.0, 10_000) == 30.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        StrategyHost([Recorder("a"), Recorder("a")], Emitted())
    with pytest.raises(ValueError, match="queue_size"):
        StrategyHost([], Emitted(), queue_size=0)


# -- isolation ------------------------------------------------------------------------------------


async def test_hung_and_crashing_strategies_do_not_touch_the_healthy_one(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue_size, burst, bursts = 100, 90, 30
    out = Emitted()
    healthy, flaky = Recorder("healthy"), Flaky("flaky", every=7)
    hung = Hangs("hung", wants=(Tick, News))
    host = StrategyHost(
        [hung, flaky, healthy],
        out,
        queue_size=queue_size,
        event_timeout_s=1.0,
        restart_backoff_s=(0.01, 0.08),
    )
    await nursery.start(host.run)
    sent = 0
    for _ in range(bursts):
        now = trio.current_time()
        for _ in range(burst):  # synchronous: offer has no checkpoint, so nothing runs between
            host.offer(tick(n=sent))
            sent += 1
        assert trio.current_time() == now
        await trio.sleep(1.0)  # the others drain; the hung one times out, backs off, hangs again

    st = host.status()
    # healthy: every event, in order, nothing lost
    assert [e.volume for _, e in healthy.seen] == list(range(sent))
    assert st["healthy"]["handled"] == st["healthy"]["emitted"] == sent
    assert st["healthy"]["dropped"] == st["healthy"]["errors"] == 0
    # flaky: every 7th event raised (and is lost: no retry of a poison event); the rest handled
    assert st["flaky"]["errors"] == sent // 7 == st["flaky"]["restarts"] == flaky.resets
    assert st["flaky"]["handled"] == sent - sent // 7 and st["flaky"]["dropped"] == 0
    assert st["flaky"]["last_error"] == f"RuntimeError: bug on call {7 * (sent // 7)}"
    assert st["flaky"]["state"] == "running"
    # hung: each event times out, is reported, and the strategy restarts; its queue overflows
    h = st["hung"]
    assert h["handled"] == h["emitted"] == 0
    assert h["errors"] == h["timeouts"] >= 10 and h["restarts"] >= h["errors"] - 1
    assert h["last_error"] == "timeout: handle took over 1s"
    assert h["queue_depth"] == queue_size and h["dropped"] > 0
    in_flight = 1 if h["state"] == "running" else 0
    assert h["dropped"] + h["errors"] + h["queue_depth"] + in_flight == sent
    assert len(hung.resets) == h["errors"]
    # errors are logged with their tracebacks
    logged = [
        r
        for r in caplog.records
        if r.name == "tradestream.strategies" and r.levelno == logging.ERROR and r.exc_info
    ]
    assert {r.exc_info[0] for r in logged if r.exc_info} == {RuntimeError, trio.TooSlowError}

    # Thousands of synchronous offers while the hung queue is full: only the hung one drops
    # (News is wanted by the hung strategy alone; Ticks still reach the healthy one).
    dropped_before, now = h["dropped"], trio.current_time()
    for i in range(5000):
        host.offer(news(f"k{i}", "헤드라인"))
    assert trio.current_time() == now
    st = host.status()
    assert st["hung"]["dropped"] == dropped_before + 5000
    assert st["healthy"]["dropped"] == st["flaky"]["dropped"] == 0
    host.offer(tick(n=sent))
    await trio.testing.wait_all_tasks_blocked()
    assert healthy.seen[-1][1].volume == sent


async def test_timeout_is_an_error_and_the_strategy_resumes_after_backoff(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    out = Emitted()
    s = Hangs("s", hang=lambda e: e.code == "HANG")
    host = StrategyHost([s], out, event_timeout_s=5.0, restart_backoff_s=(0.5, 30.0))
    await nursery.start(host.run)
    t0 = trio.current_time()
    host.offer(tick("HANG"))
    host.offer(tick("A"))  # queues behind the hang, handled after the restart
    await trio.sleep(5.2)
    st = host.status()["s"]
    assert (st["state"], st["errors"], st["timeouts"], st["restarts"], st["queue_depth"]) == (
        "backoff",
        1,
        1,
        0,
        1,
    )
    assert st["last_error"] == "timeout: handle took over 5s"
    assert s.resets == [t0 + 5.0]  # reset before the restart, right at the timeout
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1.0)
    assert s.seen == [(t0 + 5.5, tick("A"))]
    assert host.status()["s"]["state"] == "running" and host.status()["s"]["restarts"] == 1

    # Two hangs in a row: the backoff doubles (0.5, then 1.0); a good event resets it.
    t1 = trio.current_time()
    for code in ("HANG", "HANG", "B", "HANG", "C"):
        host.offer(tick(code))
    await trio.sleep(100)
    assert s.seen[1:] == [
        (t1 + 5 + 0.5 + 5 + 1.0, tick("B")),
        (t1 + 5 + 0.5 + 5 + 1.0 + 5 + 0.5, tick("C")),
    ]
    st = host.status()["s"]
    assert (st["errors"], st["timeouts"], st["restarts"], st["handled"], st["emitted"]) == (
        4,
        4,
        4,
        3,
        3,
    )
    assert [p["symbol"] for p in out.of("s")] == ["A", "B", "C"]


async def test_max_restarts_leaves_the_strategy_failed_and_the_rest_running(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    bad, good = Flaky("bad", every=1), Recorder("good")
    host = StrategyHost([bad, good], Emitted(), restart_backoff_s=(1.0, 1.0), max_restarts=2)
    await nursery.start(host.run)
    t0 = trio.current_time()
    for i in range(5):
        host.offer(tick(n=i))
    await trio.sleep(10)
    st = host.status()
    assert (st["bad"]["state"], st["bad"]["errors"], st["bad"]["restarts"]) == ("failed", 3, 2)
    assert trio.current_time() == t0 + 10
    host.offer(tick(n=5))  # a failed strategy's queue is closed: counted as dropped
    await trio.testing.wait_all_tasks_blocked()
    st = host.status()
    assert st["bad"]["dropped"] == 1 and st["good"]["handled"] == 6


async def test_a_failing_emit_is_counted_not_blamed_on_the_strategy(nursery: trio.Nursery) -> None:
    def emit(strategy_id: str, payload: dict[str, Any]) -> None:
        if payload["n"] == 2:
            raise ValueError("sink bug")

    host = StrategyHost([rec := Recorder()], emit)
    await nursery.start(host.run)
    for i in range(3):
        host.offer(tick(n=i))
    await trio.testing.wait_all_tasks_blocked()
    st = host.status()["rec"]
    assert (st["handled"], st["emitted"], st["emit_errors"], st["errors"]) == (3, 2, 1, 0)
    assert len(rec.seen) == 3


async def test_a_non_dict_payload_is_a_strategy_error(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Bad(Recorder):
        async def handle(self, event: Any) -> Iterable[dict[str, Any]]:
            return ["not a dict"]  # type: ignore[list-item]

    out = Emitted()
    host = StrategyHost([Bad("bad")], out)
    await nursery.start(host.run)
    host.offer(tick())
    await trio.sleep(1)
    st = host.status()["bad"]
    assert (st["errors"], st["restarts"], st["emitted"]) == (1, 1, 0)
    assert st["last_error"] == "TypeError: payload must be a dict, not str"
    assert out.items == []


# -- shutdown -------------------------------------------------------------------------------------


async def test_cancelling_the_host_is_clean(autojump_clock: trio.testing.MockClock) -> None:
    hung, flaky, idle = Hangs("hung"), Flaky("flaky", every=1), Recorder("idle", wants=(News,))
    host = StrategyHost([hung, flaky, idle], Emitted(), restart_backoff_s=(10.0, 10.0))
    with trio.move_on_after(3) as scope:  # hung mid-handle, flaky in backoff, idle receiving
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            host.offer(tick())
            host.offer(tick())
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(3.0)
    st = host.status()
    assert {sid: s["state"] for sid, s in st.items()} == {
        "hung": "stopped",
        "flaky": "stopped",
        "idle": "stopped",
    }
    assert st["hung"]["errors"] == 0 and st["flaky"]["errors"] == 1
    host.offer(tick())  # after run: no exception, a counted drop
    assert host.status()["hung"]["dropped"] == 1
    with pytest.raises(RuntimeError, match="runs once"):
        await host.run()


async def test_close_drains_the_queues_then_run_returns() -> None:
    rec = Recorder()
    host = StrategyHost([rec], Emitted())
    for i in range(5):  # before run: queued, not lost
        host.offer(tick(n=i))
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        host.offer(tick(n=5))
        host.close()
        host.offer(tick(n=6))  # after close: dropped
    assert [e.volume for _, e in rec.seen] == list(range(6))
    st = host.status()["rec"]
    assert (st["state"], st["handled"], st["dropped"]) == ("stopped", 6, 1)


# -- the news strategy ----------------------------------------------------------------------------


def test_keywords() -> None:
    assert match_keyword("삼성전자, 2조원 규모 공급계약 체결") is not None
    m = match_keyword("OO전자, 3분기 흑자전환 성공")
    assert m is not None and (m.signal, m.keyword) == ("watch_long", "흑자전환")
    m = match_keyword("XX바이오 유상증자 결정")
    assert m is not None and (m.signal, m.keyword) == ("watch_short", "유상증자")
    assert match_keyword("YY 무상증자 결정") is None  # not a rights issue
    assert match_keyword("ZZ 수주 불구 적자전환") is None  # both sides: ambiguous
    assert match_keyword("우수 주가 흐름") is None  # no match across a word break
    assert match_keyword("자사주 처분 결정") is None


async def test_news_strategy_signals_dedupes_and_prices() -> None:
    latest: dict[str, Tick] = {}  # the router's latest trade per code
    s = NewsKeywordStrategy(prices=latest)
    assert s.id == "news-keywords" and s.wants == (News,)
    latest["005930"] = tick("005930", 70_000)
    latest["005930"] = tick("005930", 71_500)  # read when the headline is handled
    n = news("R1", "삼성전자, 美 업체와 1조 공급계약 체결", ("005930", "000660"))
    assert await s.handle(n) == [
        {
            "signal": "watch_long",
            "symbol": "005930",
            "quantity": None,
            "reason": "공급계약 in headline",
            "headline": n.title,
            "price": 71_500,
            "news_id": "R1",
        }
    ]
    assert await s.handle(n) == []  # same realkey: deduplicated
    assert await s.handle(tick("005930", 1)) == []  # not wanted; ignored if handed one
    with pytest.raises(TypeError):
        s.rules.prices["005930"] = tick()  # type: ignore[index]  # a read-only view
    # a ticker with no trade yet: price None
    assert (await s.handle(news("R2", "SK하이닉스 최대 실적", ("000660",))))[0]["price"] is None
    assert (await s.handle(news("R3", "AA 대표 횡령 혐의 피소", ("123456",))))[0][
        "signal"
    ] == "watch_short"
    # no ticker, no keyword: nothing
    assert await s.handle(news("R4", "코스피 공급계약 관련 시황", ())) == []
    assert await s.handle(news("R5", "삼성전자 주가 보합", ("005930",))) == []


async def test_news_strategy_ignores_tickers_outside_its_universe() -> None:
    s = NewsKeywordStrategy(prices={}, universe=frozenset({"005930"}))
    assert await s.handle(news("R1", "BB 수주 공시", ("999999",))) == []
    assert len(await s.handle(news("R2", "삼성전자 수주 공시", ("005930",)))) == 1


async def test_news_strategy_under_the_host(nursery: trio.Nursery) -> None:
    out = Emitted()
    latest = {"005930": tick("005930", 72_000)}
    host = StrategyHost([NewsKeywordStrategy(prices=latest)], out)
    await nursery.start(host.run)
    host.offer(tick("005930", 72_000))  # not wanted: not queued
    host.offer(news("R1", "삼성전자 자사주 소각 결정"))
    host.offer(news("R1", "삼성전자 자사주 소각 결정"))  # re-sent on resubscribe
    await trio.testing.wait_all_tasks_blocked()
    assert [(sid, p["signal"], p["price"], p["reason"]) for sid, p in out.items] == [
        ("news-keywords", "watch_long", 72_000, "자사주 소각 in headline")
    ]
    assert host.status()["news-keywords"]["handled"] == 2


async def test_news_is_not_lost_in_a_tick_flood(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The router's order of work: each tick updates the latest prices, then is offered to
    the strategies. 1023 ticks (more than the queue holds) and then one headline, all in one
    synchronous burst: the news still arrives, with the price of the last tick."""
    out = Emitted()
    latest: dict[str, Tick] = {}
    strategy = NewsKeywordStrategy(prices=latest)
    every_tick = Recorder("every-tick")  # for contrast: a strategy that does want each tick
    queue_size = 1000
    host = StrategyHost([strategy, every_tick], out, queue_size=queue_size)
    await nursery.start(host.run)
    now = trio.current_time()
    for i in range(1023):
        t = tick("005930", 70_000 + i, n=i)
        latest[t.code] = t
        host.offer(t)
    host.offer(news("R1", "삼성전자, 3조 규모 공급계약 체결"))
    assert trio.current_time() == now  # one burst: nothing ran in between
    await trio.testing.wait_all_tasks_blocked()
    assert [(p["signal"], p["price"], p["news_id"]) for p in out.of("news-keywords")] == [
        ("watch_long", 71_022, "R1")
    ]
    st = host.status()
    assert (st["news-keywords"]["handled"], st["news-keywords"]["dropped"]) == (1, 0)
    # its queue did overflow (one more fits: a waiting receiver takes the first at once)
    assert st["every-tick"]["dropped"] in (1023 - queue_size, 1023 - queue_size - 1)
    assert st["every-tick"]["handled"] + st["every-tick"]["dropped"] == 1023
