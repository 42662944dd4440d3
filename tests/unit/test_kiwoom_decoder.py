"""The Kiwoom decoder (kiwoom.md §5-§8), pure: control messages, the documented 0B example,
signs, empty levels, venues by item suffix, bad frames and entries counted with the rest kept,
the token answer, refusal kinds."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
import pytest

from tradestream.events import KST, OrderBook, Tick
from tradestream.feeds.kiwoom.codec import (
    KiwoomDecoder,
    KiwoomFrameError,
    KiwoomTokenError,
    Login,
    Ping,
    RegReply,
    System,
    item_for,
    login_code,
    parse_token_response,
    refusal_kind,
    split_item,
)

DAY = date(2025, 1, 3)
RECEIVED = int(datetime(2025, 1, 3, 0, 30, 16, tzinfo=UTC).timestamp() * 1e9)  # 09:30:16 KST

# §6.1's example, every documented key
TRADE = {
    "20": "093015", "10": "+71000", "11": "+500", "12": "+0.71", "27": "+71000", "28": "+70900",
    "15": "+12", "13": "1233600", "14": "87654", "16": "+70600", "17": "+71200", "18": "-70400",
    "25": "2", "26": "-781400", "29": "-1520000000", "30": "-61.22", "31": "0.02", "32": "44",
    "228": "112.34", "311": "4238000", "290": "2", "691": "0", "567": "000000", "568": "000000",
    "851": "", "1890": "", "1891": "", "1892": "", "1030": "", "1031": "", "1032": "", "1071": "",
    "1072": "", "1313": "", "1315": "", "1316": "", "1314": "", "1497": "", "1498": "", "620": "",
    "732": "", "852": "", "9081": "1",
}  # fmt: skip


def real(*entries: tuple[str, str, dict[str, str]]) -> str:
    return msgspec.json.encode(
        {
            "trnm": "REAL",
            "data": [{"type": t, "name": "x", "item": i, "values": v} for t, i, v in entries],
        }
    ).decode()


def book_values() -> dict[str, str]:
    v = {"21": "093016", "121": "5000", "125": "7000", "23": "0", "24": "0", "13": "1233600"}
    for level in range(1, 11):
        v[str(40 + level)] = f"+{71000 + 100 * level}"
        v[str(50 + level)] = f"-{71000 - 100 * level}"
        v[str(60 + level)] = str(10 * level)
        v[str(70 + level)] = str(20 * level)
    return v


def test_the_documented_trade() -> None:
    d = KiwoomDecoder("kiwoom-1")
    (t,) = d.decode(real(("0B", "005930", TRADE)), RECEIVED)  # type: ignore[misc]
    assert t == Tick(
        source="kiwoom-1", venue="KRX", code="005930",
        trade_time=datetime(2025, 1, 3, 9, 30, 15, tzinfo=KST), price=71000, change=500,
        change_percent=0.71, open=70600, high=71200, low=70400, ask=71000, bid=70900,
        trade_volume=12, volume=1233600, value=87654 * 1_000_000, strength=112.34,
        received_ns=RECEIVED,
    )  # fmt: skip
    assert d.stats.records == 1 and d.stats.errors == {}


def test_signs_are_direction_not_negative_prices() -> None:
    down = {**TRADE, "10": "-69000", "11": "-1500", "12": "-2.13", "15": "-30", "16": "-69500"}
    (t,) = KiwoomDecoder("k").decode(real(("0B", "005930_NX", down)), RECEIVED)  # type: ignore[misc]
    assert isinstance(t, Tick)
    assert (t.price, t.change, t.change_percent, t.trade_volume, t.open) == (
        69000, -1500, -2.13, 30, 69500
    )  # fmt: skip
    assert t.venue == "NXT" and t.code == "005930"


def test_an_order_book_with_empty_levels() -> None:
    v = book_values()
    v["50"], v["60"], v["70"] = "-0", "", "0"  # NXT after-market: fewer levels (§5)
    (b,) = KiwoomDecoder("k").decode(real(("0D", "000660_AL", v)), RECEIVED)  # type: ignore[misc]
    assert isinstance(b, OrderBook)
    assert (b.venue, b.code) == ("UN", "000660")
    assert b.ask_prices[:2] == (71100, 71200) and b.ask_prices[9] == 0
    assert b.bid_prices[0] == 70900 and b.bid_prices[9] == 0
    assert b.ask_sizes[9] == 0 and b.bid_sizes[9] == 200 and b.ask_sizes[0] == 10
    assert (b.total_ask_size, b.total_bid_size, b.volume) == (5000, 7000, 1233600)
    assert b.quote_time == datetime(2025, 1, 3, 9, 30, 16, tzinfo=KST)


def test_control_messages() -> None:
    d = KiwoomDecoder("k")
    assert d.decode('{"trnm":"LOGIN","return_code":0,"return_msg":"","sor_yn":"Y"}', 0) == Login(
        True, 0, ""
    )
    assert d.decode('{"trnm":"REG","return_code":1,"return_msg":"too many"}', 0) == RegReply(
        "REG", False, 1, "too many"
    )
    assert d.decode('{"trnm":"REMOVE","return_code":0}', 0) == RegReply("REMOVE", True, 0, "")
    assert d.decode('{"trnm":"PING"}', 0) == Ping('{"trnm":"PING"}')
    assert d.decode("PING", 0) == Ping("PING")
    assert d.decode('{"trnm":"SYSTEM","code":"R10002","message":"bye"}', 0) == System(
        "R10002", "bye"
    )
    assert d.decode('{"trnm":"SYSTEM","return_code":"R10001","return_msg":"x"}', 0) == System(
        "R10001", "x"
    )
    assert d.stats.controls == 7 and d.stats.errors == {}


def test_bad_frames_and_entries_are_counted_and_the_rest_kept() -> None:
    d = KiwoomDecoder("k")
    assert d.decode("{not json", RECEIVED) == []
    assert isinstance(d.last_error, KiwoomFrameError) and d.last_error.reason == "bad_json"
    assert d.decode('{"trnm":"WHAT"}', RECEIVED) == []
    out = d.decode(
        real(
            ("0B", "005930", {**TRADE, "10": "abc"}),  # a bad value
            ("0B", "000660", {**TRADE, "20": "9301"}),  # a bad time
            ("0B", "005930_XX", TRADE),  # an unknown venue
            ("0w", "005930", {}),  # a type not decoded: skipped
            ("ZZ", "005930", {}),  # unknown
            ("0B", "035420", TRADE),  # fine
        ),
        RECEIVED,
    )
    assert isinstance(out, list) and [t.code for t in out] == ["035420"]  # type: ignore[union-attr]
    assert d.stats.errors == {
        "bad_json": 1, "unknown_trnm": 1, "bad_value": 1, "bad_time": 1, "bad_item": 1,
        "unknown_type": 1,
    }  # fmt: skip
    assert d.stats.skipped == {"0w": 1}
    missing = {k: v for k, v in TRADE.items() if k != "13"}
    assert d.decode(real(("0B", "005930", missing)), RECEIVED) == []
    assert d.stats.errors["missing_field"] == 1


def test_items_and_venues() -> None:
    assert [item_for(v, "005930") for v in ("KRX", "NXT", "UN")] == [
        "005930", "005930_NX", "005930_AL"
    ]  # fmt: skip
    assert split_item("005930_NX") == ("NXT", "005930")
    with pytest.raises(KiwoomFrameError):
        split_item("005930_ZZ")
    with pytest.raises(KiwoomFrameError):
        item_for("LSE", "005930")


def test_the_token_answer() -> None:
    now = datetime(2025, 1, 2, 9, 0, tzinfo=KST).timestamp()
    body = {"expires_dt": "20250103083713", "token_type": "bearer", "token": "WQJ",
            "return_code": 0, "return_msg": "정상적으로 처리되었습니다"}  # fmt: skip
    token, expires_at = parse_token_response(body, now)
    assert token == "WQJ"
    assert expires_at == datetime(2025, 1, 3, 8, 37, 13, tzinfo=KST).timestamp()
    with pytest.raises(KiwoomTokenError) as refused:
        parse_token_response({"return_code": 8001, "return_msg": "bad key"}, now)
    assert refused.value.code == 8001
    for bad in ({**body, "token": ""}, {**body, "expires_dt": "soon"}, [], {**body, "expires_dt":
                "20250101000000"}):  # fmt: skip
        with pytest.raises(KiwoomTokenError):
            parse_token_response(bad, now)


def test_refusal_kinds() -> None:
    assert (
        login_code(1, "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]")
        == 8005
    )
    assert login_code(8001, "whatever [CODE=8005]") == 8001
    assert [refusal_kind(c) for c in (8005, 8031, 8103, 8003, 8001, 8030, 8040, 1700, 1511,
                                      1901, 42)] == [
        "token", "token", "token", "token", "credentials", "mismatch", "device", "rate_limit",
        "input", "not_found", "other",
    ]  # fmt: skip


def test_a_kiwoom_tick_and_a_kis_tick_of_the_same_simulated_trade_have_one_key() -> None:
    from tradestream.feeds.kis.codec import KisDecoder
    from tradestream.sim.kiwoom import trade_values
    from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame

    market = SimMarket(DEFAULT_TICKERS[:3], 7)
    now = datetime.now(KST)
    received = int(now.timestamp() * 1e9)
    for _ in range(20):
        record = market.trade(now)
        (kis,) = KisDecoder("kis-1").decode(data_frame("H0STCNT0", [record]), received)  # type: ignore[misc]
        (kiwoom,) = KiwoomDecoder("kiwoom-1").decode(
            real(("0B", record[0], trade_values(record))), received
        )  # type: ignore[misc]
        assert isinstance(kis, Tick) and isinstance(kiwoom, Tick)
        assert kis.key == kiwoom.key
        assert (kis.price, kis.change, kis.trade_volume, kis.open, kis.high, kis.low) == (
            kiwoom.price, kiwoom.change, kiwoom.trade_volume, kiwoom.open, kiwoom.high, kiwoom.low
        )  # fmt: skip
