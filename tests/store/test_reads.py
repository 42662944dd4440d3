"""The REST reads' queries on every backend, and the bar arithmetic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from sqlalchemy.engine import Engine

from tests.store.test_writer import events
from tradestream.events import KST, News, Tick
from tradestream.store import migrate, reads, schema
from tradestream.store.writer import EventWriter, make_engine

T0 = datetime(2025, 1, 2, 9, 0, 0, tzinfo=KST)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def trade(i: int, seconds: float, price: int, qty: int) -> Tick:
    base = events()[0]
    assert isinstance(base, Tick)
    return msgspec.structs.replace(
        base,
        trade_time=T0 + timedelta(seconds=seconds),
        price=price,
        trade_volume=qty,
        volume=1000 + i,
    )


TRADES = [
    trade(0, 5, 100, 1),
    trade(1, 30, 120, 2),
    trade(2, 59, 90, 3),  # 09:00 bar
    trade(3, 61, 95, 4),
    trade(4, 119, 97, 5),  # 09:01 bar
    trade(5, 185, 110, 6),
]  # 09:03 bar


def test_parse_interval() -> None:
    assert [reads.parse_interval(x) for x in ("30s", "1m", "5m", "1h", "1d")] == [
        30,
        60,
        300,
        3600,
        86400,
    ]
    for bad in ("", "0m", "1w", "m", "1.5m"):
        with pytest.raises(ValueError):
            reads.parse_interval(bad)


def test_ohlcv_is_pure_arithmetic() -> None:
    bars = reads.ohlcv(((t.trade_time, t.price, t.trade_volume) for t in TRADES), 60)
    assert bars == [
        {
            "time": "2025-01-02T09:00:00+09:00",
            "open": 100,
            "high": 120,
            "low": 90,
            "close": 90,
            "volume": 6,
            "trades": 3,
        },
        {
            "time": "2025-01-02T09:01:00+09:00",
            "open": 95,
            "high": 97,
            "low": 95,
            "close": 97,
            "volume": 9,
            "trades": 2,
        },
        {
            "time": "2025-01-02T09:03:00+09:00",
            "open": 110,
            "high": 110,
            "low": 110,
            "close": 110,
            "volume": 6,
            "trades": 1,
        },
    ]
    day = reads.bucket_start(datetime(2025, 1, 2, 0, 30, tzinfo=UTC), 86400)  # 09:30 KST
    assert day.isoformat() == "2025-01-02T00:00:00+09:00"


def test_reads_on_every_backend(engine: Engine) -> None:
    writer = EventWriter(engine)
    writer.write(TRADES)
    news = events()[4]
    assert isinstance(news, News)
    writer.write(
        [
            news,
            msgspec.structs.replace(
                news,
                realkey="k2",
                ticker="035420",
                tickers=("035420",),
                published_at=news.published_at + timedelta(1),
            ),
        ]
    )
    with engine.begin() as conn:
        conn.execute(
            schema.alerts.insert(),
            [
                {
                    "stock_code": "005930",
                    "kind": "sudden_move",
                    "direction": "up",
                    "change_percent": 5.2,
                    "price": 105,
                    "reference_price": 100,
                    "window_s": 60.0,
                    "triggered_at": T0.astimezone(UTC),
                    "message": "005930 +5.2% in 60s",
                    "source": "detector",
                    "received_at": T0.astimezone(UTC),
                }
            ],
        )

    latest = reads.recent_ticks(engine, "005930", None, 2)
    assert [(r["price"], r["time"]) for r in latest] == [
        (97, "2025-01-02T09:01:59+09:00"),
        (110, "2025-01-02T09:03:05+09:00"),
    ]
    since = reads.recent_ticks(engine, "005930", T0 + timedelta(seconds=30), 3)
    assert [r["price"] for r in since] == [120, 90, 95]
    assert reads.recent_ticks(engine, "000660", None, 10) == []

    bars = reads.bars(engine, "005930", 60, T0, T0 + timedelta(minutes=10), 100)
    assert [(b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in bars] == [
        (100, 120, 90, 90, 6),
        (95, 97, 95, 97, 9),
        (110, 110, 110, 110, 6),
    ]
    # without `since`: the `limit` intervals before `until` (09:02-09:04 holds one bar)
    (last,) = reads.bars(engine, "005930", 60, None, T0 + timedelta(minutes=4), 2)
    assert (last["time"], last["close"]) == ("2025-01-02T09:03:00+09:00", 110)

    assert [n["ticker"] for n in reads.recent_news(engine, None, 10)] == ["035420", "005930"]
    assert [n["realkey"] for n in reads.recent_news(engine, "000660", 10)] == [news.realkey]
    (alert,) = reads.recent_alerts(engine, "005930", 10)
    assert alert["triggered_at"] == "2025-01-02T09:00:00+09:00" and alert["price"] == 105
    assert reads.recent_alerts(engine, "000660", 10) == []


def test_database_bars_equal_the_pure_arithmetic(engine: Engine) -> None:
    """The backend's aggregation (bars()) against ohlcv() over the same trades: sub-second
    times at bar edges, several days, intervals that do and do not divide a day."""
    import random

    rng = random.Random(7)
    start = datetime(2025, 1, 2, 8, 58, 0, tzinfo=KST)
    trades: list[Tick] = []
    when = start
    for i in range(3000):
        when += timedelta(seconds=rng.choice((0.0, 0.4, 0.6, 1.0, 7.3, 59.6, 600.0)))
        trades.append(
            trade(100 + i, (when - T0).total_seconds(), rng.randint(90, 130), rng.randint(1, 50))
        )
    trades.append(
        trade(9999, (start + timedelta(minutes=1, seconds=59.999999) - T0).total_seconds(), 77, 1)
    )  # one microsecond before a bar edge
    EventWriter(engine).write(trades)
    stored = sorted(trades, key=lambda t: (t.trade_time, t.volume))
    until = when + timedelta(seconds=1)
    for interval in (30, 60, 420, 3600, 86400, 2 * 86400):
        want = reads.ohlcv(((t.trade_time, t.price, t.trade_volume) for t in stored), interval)
        got = reads.bars(engine, "005930", interval, start, until, 1000)
        assert got == want[-1000:], interval
    # the newest bars when more are asked for than `limit`
    newest = reads.bars(engine, "005930", 30, start, until, 5)
    assert newest == reads.ohlcv(((t.trade_time, t.price, t.trade_volume) for t in stored), 30)[-5:]


def test_bars_take_a_gaps_backfilled_minutes(engine: Engine) -> None:
    """Trades at 09:00, 09:01 and 09:03; the feed was down over 09:01-09:02, whose bars came
    from the broker: 1-minute bars show all four minutes, the broker's bars replacing the
    trades streamed in their minutes; a 5-minute bar merges them in time order; a backfill
    stored twice counts once."""
    from tradestream.events import MinuteBar

    EventWriter(engine).write(TRADES)
    bars = [
        MinuteBar("kis-rest", "005930", (T0 + timedelta(minutes=m)).astimezone(UTC),
                  o, h, low, c, v, 1)
        for m, o, h, low, c, v in ((1, 96, 140, 80, 101, 17), (2, 101, 105, 99, 104, 8))
    ]  # fmt: skip
    EventWriter(engine).write(bars)
    EventWriter(engine).write(bars)  # a retried backfill: stored once
    until = T0 + timedelta(minutes=10)
    one = reads.bars(engine, "005930", 60, T0, until, 100)
    assert [(b["time"][11:16], b.get("backfilled", False)) for b in one] == [
        ("09:00", False),
        ("09:01", True),  # the broker's bar, not the two trades streamed in it
        ("09:02", True),
        ("09:03", False),
    ]
    assert one[1] == {"time": one[1]["time"], "open": 96, "high": 140, "low": 80,
                      "close": 101, "volume": 17, "trades": 0, "backfilled": True}  # fmt: skip
    (five,) = reads.bars(engine, "005930", 300, T0, until, 100)
    assert five["open"] == 100 and five["close"] == 110  # the first and the last trade
    assert five["high"] == 140 and five["low"] == 80  # from the backfilled minute
    streamed = [t for t in TRADES if not 60 <= (t.trade_time - T0).total_seconds() < 180]
    assert five["volume"] == sum(t.trade_volume for t in streamed) + 17 + 8
    assert five["trades"] == len(streamed) and five["backfilled"] is True
    assert reads.bars(engine, "005930", 60, T0, until, 2)[0]["time"][11:16] == "09:02"
