"""Every server message an encoder in wire.py writes decodes into its `ServerMessage` type,
stamped with history offsets or not: the types consumers get (tradestream.client) are the
server's own."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.store.test_writer import events
from tradestream import wire
from tradestream.accounts import AccountBook
from tradestream.events import Alert, Execution, FeedGap, IndexTick, News, OrderBook, Tick
from tradestream.history import History
from tradestream.hub import Msg
from tradestream.pipeline.stages import alert_data

DECODER = msgspec.json.Decoder(wire.ServerMessage)


def one(kind: type) -> Any:
    return next(e for e in events() if type(e) is kind)


def encoded() -> list[tuple[str, type]]:
    tick, book, ex = one(Tick), one(OrderBook), one(Execution)
    news, gap, index, alert = one(News), one(FeedGap), one(IndexTick), one(Alert)
    book_of = AccountBook()
    book_of.apply(ex)
    return [
        (wire.price_update(tick), wire.PriceUpdate),
        (wire.price(tick, "memory", "삼성전자"), wire.Price),
        (wire.orderbook_update(book), wire.OrderBookUpdate),
        (wire.order_update(ex, {"order_id": ex.order_no, "filled": 10}), wire.OrderUpdate),
        (wire.news(news), wire.NewsMessage),
        (wire.account(book_of.snapshot(book_of.accounts())), wire.Account),
        (wire.strategy_signal("news-keywords", {"symbol": "005930"}), wire.StrategySignal),
        (wire.signal_update("vcp", [{"symbol": "005930"}], wire.now_iso()), wire.SignalUpdate),
        (wire.market_gate_update({"level": "green"}), wire.MarketGateUpdate),
        (wire.index_update(index.index, {"value": index.value}), wire.IndexUpdate),
        (wire.market_session({"krx": "regular", "nxt": "main"}), wire.MarketSession),
        (wire.alert(alert.code, alert_data(alert)), wire.AlertMessage),
        (wire.connected(7, "u"), wire.Connected),
        (wire.subscribed("price:005930"), wire.Subscribed),
        (wire.subscribed("alert", recovered=True, epoch="e", offset=3), wire.Subscribed),
        (wire.unsubscribed("price:005930"), wire.Unsubscribed),
        (wire.ping(), wire.ServerPing),
        (wire.pong(None), wire.ServerPong),
        (wire.error("no_data", "no price known for 000000"), wire.Error),
        (wire.error("slot_lost", "gone", "price:005930"), wire.Error),
        (wire.authenticated("u", 1.5), wire.Authenticated),
        (wire.feed_gap(gap), wire.FeedGapMessage),
    ]


@pytest.mark.parametrize(("raw", "kind"), encoded(), ids=lambda x: getattr(x, "__name__", ""))
def test_each_server_message_has_its_type(raw: str, kind: type) -> None:
    msg = DECODER.decode(raw)
    assert type(msg) is kind
    typed = msgspec.json.decode(msgspec.json.encode(msg))  # tuples as JSON has them: lists
    written = msgspec.json.decode(raw)
    assert {k: typed.get(k) for k in written} == written  # nothing written is lost in the type


def test_lossless_messages_keep_their_offset_and_epoch() -> None:
    history = History(epoch="ep")
    m = Msg(wire.signal_update("vcp", [{"n": 1}], wire.now_iso()), "signal_update")
    history.record("signal:vcp", m)
    msg = DECODER.decode(m.payload)
    assert isinstance(msg, wire.SignalUpdate) and (msg.offset, msg.epoch) == (1, "ep")


def test_a_price_from_the_store_has_its_type() -> None:
    raw = wire.encode(
        {
            "type": "price",
            "symbol": "005930",
            "source": "store",
            "name": "",
            "data": {"price": 1, "change": 0, "change_percent": 0.0, "volume": 2,
                     "timestamp": "2026-12-04T09:00:00+09:00", "trade_volume": 1},
        }
    )  # fmt: skip
    msg = DECODER.decode(raw)
    assert isinstance(msg, wire.Price) and msg.data.open == 0 and msg.source == "store"
