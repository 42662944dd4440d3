"""The KIS REST client against the simulator's REST TRs over loopback, on trio's mock clock
(autojump after 50 ms of real idleness, so socket I/O finishes before time jumps): paging,
a token kept in its file and reused, an expired token replaced, rate-limit answers retried.
The simulator's app is served without its market (whose steps would be the clock's every
next deadline), so waits of seconds and minutes take none."""

from __future__ import annotations

import os
import stat
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.conftest import make_settings
from tradestream.events import KST
from tradestream.feeds.kis.rest import KisRest, TokenFile
from tradestream.serving import serve_app
from tradestream.session_calendar import Calendar, Phase
from tradestream.sim.kis_rest import KisRestSim
from tradestream.sim.server import SimControl, Simulator, create_sim_app


@pytest.fixture
def net_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


class Wall:
    """The epoch clock the client judges expiry and the issuance minute by: now, moved on
    by hand (the simulator stamps expiry from the real wall clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Sim:
    def __init__(self, url: str, control: SimControl, rest: KisRestSim) -> None:
        self.rest_url, self.control, self.rest = url, control, rest


async def start_sim(nursery: trio.Nursery, tmp_path: Path) -> Sim:
    control = SimControl()
    sim = Simulator(make_settings(tmp_path).sim, control)
    binds = await nursery.start(serve_app, create_sim_app(sim), "127.0.0.1", 0)
    return Sim(binds[0], control, sim.rest)


def client(sim: Sim, tokens: Path, wall: Wall, rate: float = 50.0) -> KisRest:
    return KisRest(
        sim.rest_url, "sim-appkey", "sim-appsecret",
        token_file=TokenFile(tokens), rate_per_s=rate, wall=wall,
    )  # fmt: skip


async def test_balance_pages_token_file_expiry_and_rate_limit(
    tmp_path: Path, net_clock: trio.testing.MockClock
) -> None:
    tokens, wall = tmp_path / "state" / "kis-tokens.json", Wall()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery, tmp_path)
            for i in range(1, 46):  # three pages of 20
                sim.control.set_position(f"{100000 + i:06d}", i, 1000.0 + i)
            rest = client(sim, tokens, wall)
            held = await rest.balance("50123456-01")
            assert [h.code for h in held] == [f"{100000 + i:06d}" for i in range(1, 46)]
            assert held[4].quantity == 5 and held[4].avg_price == 1005.0
            assert rest.stats.calls == 3 and sim.rest.stats.tokens_issued == 1
            assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
            await rest.aclose()

            # a restart: the token comes from the file, none is issued
            again = client(sim, tokens, wall)
            await again.balance("5012345601")
            assert again.stats.token_reused_from_file and sim.rest.stats.tokens_issued == 1

            # the broker expires it: EGW00123, then one new token (after the minute) and a retry
            sim.rest.expire_tokens()
            wall.now += 120
            await again.balance("5012345601")
            assert again.stats.token_refreshes == 1 and sim.rest.stats.tokens_issued == 2
            assert sim.rest.stats.expired == 1

            # the broker allows 2 calls a second: the client's extra calls get EGW00201 and
            # are retried with backoff until each is answered
            sim.rest.rate_per_s = 2
            answers: list[int] = []

            async def one() -> None:
                answers.append(len(await again.balance("5012345601")))

            async with trio.open_nursery() as calls:
                for _ in range(6):
                    calls.start_soon(one)
            assert answers == [45] * 6 and again.stats.rate_limited > 0
            assert sim.rest.stats.rate_limited == again.stats.rate_limited
            await again.aclose()
            nursery.cancel_scope.cancel()


async def test_token_issued_at_most_once_a_minute(
    tmp_path: Path, net_clock: trio.testing.MockClock
) -> None:
    """A token kept in the file is invalid (another simulator issued it) and was issued 10 s
    ago: the client waits out the rest of the minute before asking for a new one."""
    tokens, wall = tmp_path / "kis-tokens.json", Wall()
    async with trio.open_nursery() as nursery:
        sim = await start_sim(nursery, tmp_path)
        from tradestream.feeds.credentials import credential_identity
        from tradestream.feeds.kis.rest import KIS_ACCESS, Token

        TokenFile(tokens).save(
            credential_identity(KIS_ACCESS.name, "sim-appkey", sim.rest_url),
            Token("stale", wall.now + 3600, wall.now - 10),
        )
        rest = client(sim, tokens, wall)
        t0 = trio.current_time()
        await rest.balance("5012345601")
        assert trio.current_time() - t0 >= 50  # the minute since the stale token's issue
        assert rest.stats.token_refreshes == 1 and sim.rest.stats.tokens_issued == 1
        await rest.aclose()
        nursery.cancel_scope.cancel()


async def test_backfill_retries_with_backoff_and_records_a_failure(
    tmp_path: Path, net_clock: trio.testing.MockClock
) -> None:
    """A code the broker does not know fails every attempt: retried with backoff (on the mock
    clock), then the gap's record says "failed"; a known code's bars come through."""
    from datetime import UTC, datetime, timedelta

    from tradestream.events import KST, Backfill, Event, FeedGap, MinuteBar
    from tradestream.pipeline.backfill import ATTEMPTS, Backfiller

    async with trio.open_nursery() as nursery:
        sim = await start_sim(nursery, tmp_path)
        now = datetime.now(KST).replace(second=0, microsecond=0)
        market = sim.rest.minute_bars  # the simulator's bars: give 005930 two minutes
        bars = {"005930": {(now - timedelta(minutes=m)).strftime("%Y%m%d%H%M"): [1, 2, 1, 2, 5]
                           for m in (5, 4)}}  # fmt: skip
        sim.rest.minute_bars = lambda code: bars.get(code, market(code))
        rest = client(sim, tmp_path / "t.json", Wall())
        codes = {"kis-1": ["005930", "999990"]}
        backfill = Backfiller(rest, codes.__getitem__, always_open=True, retry_initial_s=1.0)
        out, got = trio.open_memory_channel[Event](100)
        await nursery.start(backfill.run, out)
        gap = FeedGap("kis-1", (now - timedelta(minutes=6)).astimezone(UTC),
                      (now - timedelta(minutes=3)).astimezone(UTC), "test")  # fmt: skip
        t0 = trio.current_time()
        backfill.request(gap)
        events = []
        while not events or not isinstance(events[-1], Backfill):
            events.append(await got.receive())
        assert trio.current_time() - t0 >= 1.0  # backed off between attempts
        await rest.aclose()
        nursery.cancel_scope.cancel()
    fetched = [e for e in events if isinstance(e, MinuteBar)]
    assert [(b.code, b.volume) for b in fetched] == [("005930", 5), ("005930", 5)]
    record = events[-1]
    assert isinstance(record, Backfill) and record.status == "failed" and record.bars == 2
    assert record.detail.startswith("1 of 2 codes not fetched")
    st = backfill.stats
    assert (st.failed, st.done, st.bars, st.retries) == (1, 0, 2, ATTEMPTS - 1)


async def test_market_days_from_the_brokers_holiday_endpoint(
    tmp_path: Path, net_clock: trio.testing.MockClock
) -> None:
    """chk-holiday (§9) over the simulator's real endpoint: two weeks of days with `opnd_yn`,
    which make the session calendar."""
    christmas = date(2026, 12, 25)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery, tmp_path)
            sim.rest.holidays = frozenset({christmas})
            rest = client(sim, tmp_path / "tokens.json", Wall())
            days = await rest.market_days(date(2026, 12, 21))
            await rest.aclose()
            nursery.cancel_scope.cancel()
    assert len(days) == 14 and min(days) == date(2026, 12, 21)
    assert days[christmas] is False and days[date(2026, 12, 24)] is True
    assert days[date(2026, 12, 26)] is False  # a Saturday
    cal = Calendar.from_broker(days)
    assert cal.holidays == frozenset({christmas})
    assert cal.krx_phase(datetime(2026, 12, 25, 10, 0, tzinfo=KST)) is Phase.CLOSED
    assert cal.krx_phase(datetime(2026, 12, 24, 10, 0, tzinfo=KST)) is Phase.REGULAR


async def test_an_approval_key_is_kept_for_the_next_run(
    tmp_path: Path, net_clock: trio.testing.MockClock
) -> None:
    """The WebSocket approval key (kis.md §2) goes in the token file (0600) beside the access
    token; the next run of the same app key takes it from there instead of asking the broker;
    a refused one is asked for again, and a stale one is not used."""
    import json

    import httpx

    from tradestream.config import KisSettings
    from tradestream.feeds.kis.adapter import KisAdapter, approval_identity

    tokens = tmp_path / "state" / "kis-tokens.json"
    cfg = KisSettings(token_file=str(tokens))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery, tmp_path)
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                first = KisAdapter(cfg, "kis-1")
                await first.authenticate(http)
                second = KisAdapter(cfg, "kis-1")  # the next run
                await second.authenticate(http)
                asked_once = sim.control.stats.approvals
                second.forget_credential()  # the broker refused it (OPSP0011)
                await second.authenticate(http)
                doc = json.loads(tokens.read_text())
                doc[approval_identity(cfg.app_key, sim.rest_url)]["expires_at"] = 0  # a day later
                tokens.write_text(json.dumps(doc))
                third = KisAdapter(cfg, "kis-1")
                await third.authenticate(http)
            nursery.cancel_scope.cancel()
    assert (first.approvals_issued, second.approvals_reused, asked_once) == (1, 1, 1)
    assert second._approval != first._approval and second.approvals_issued == 1
    assert third.approvals_issued == 1 and sim.control.stats.approvals == 3
    shown = second.stats()  # what the status endpoint shows of the session
    assert (shown["approvals_issued"], shown["approvals_reused"]) == (1, 1)
    assert second._approval not in json.dumps(shown)
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
    assert cfg.app_key not in tokens.read_text()  # the key's hash names it, never the key
