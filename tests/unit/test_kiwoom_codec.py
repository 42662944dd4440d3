"""The Kiwoom codec (kiwoom.md §2-§8), pure: the requests, the token answer, refusal kinds,
every control message, the documented 0B example, signs, order books with empty levels, venues
by item suffix, bad frames and entries counted with the rest kept; and the simulator's 0B/0D
values, whose trades carry the same natural key as KIS's report of them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
import pytest

from tradestream.events import KST, OrderBook, Tick
from tradestream.feeds.kis.codec import KisDecoder
from tradestream.feeds.kiwoom.codec import (
    CREDENTIAL_CODES,
    DEVICE_CODES,
    INPUT_CODES,
    MISMATCH_CODES,
    NOT_FOUND_CODES,
    RATE_LIMIT_CODES,
    TOKEN_CODES,
    KiwoomDecoder,
    KiwoomFrameError,
    KiwoomTokenError,
    Login,
    Ping,
    RegReply,
    System,
    item_for,
    login_code,
    login_message,
    parse_token_response,
    real_message,
    refusal_kind,
    reg_message,
    remove_message,
    split_item,
    token_request,
)
from tradestream.sim.kiwoom import BOOK_FIDS, TRADE_FIDS, book_values, trade_values
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame
from tradestream.upstream import KIS_BOOK, KIWOOM_BOOK, KIWOOM_TRADE, TRADE_TRS

DAY = date(2025, 1, 3)
RECEIVED = int(datetime(2025, 1, 3, 0, 30, 16, tzinfo=UTC).timestamp() * 1e9)  # 09:30:16 KST

# §6.1's made-up example: every documented key
TRADE = {
    "20": "093015", "10": "+71000", "11": "+500", "12": "+0.71", "27": "+71000", "28": "+70900",
    "15": "+12", "13": "1233600", "14": "87654", "16": "+70600", "17": "+71200", "18": "-70400",
    "25": "2", "26": "-781400", "29": "-1520000000", "30": "-61.22", "31": "0.02", "32": "44",
    "228": "112.34", "311": "4238000", "290": "2", "691": "0", "567": "000000", "568": "000000",
    "851": "", "1890": "", "1891": "", "1892": "", "1030": "", "1031": "", "1032": "", "1071": "",
    "1072": "", "1313": "", "1315": "", "1316": "", "1314": "", "1497": "", "1498": "", "620": "",
    "732": "", "852": "", "9081": "1",
}  # fmt: skip
DOC_EXAMPLE = (
    '{"trnm":"REAL","data":[{"type":"0B","name":"주식체결","item":"005930","values":'
    + msgspec.json.encode(TRADE).decode()
    + "}]}"
)


def book(**changes: str) -> dict[str, str]:
    """0D values (§6.2): asks above 71000 ("+", above the prior close), bids below ("-")."""
    v = {"21": "093016", "121": "5500", "125": "11000", "23": "0", "24": "0", "13": "1233600"}
    for level in range(1, 11):
        v[str(40 + level)] = f"+{71000 + 100 * level}"
        v[str(50 + level)] = f"-{70000 - 100 * level}"
        v[str(60 + level)] = str(100 * level)
        v[str(70 + level)] = str(200 * level)
    return {**v, **changes}


def decode_one(text: str, decoder: KiwoomDecoder | None = None) -> Tick | OrderBook:
    out = (decoder or KiwoomDecoder("kiwoom-1")).decode(text, RECEIVED)
    assert isinstance(out, list) and len(out) == 1, out
    event = out[0]
    assert isinstance(event, Tick | OrderBook)
    return event


# --- requests (§3, §4) -----------------------------------------------------------------------


def test_requests_are_compact_json_of_the_documented_shapes() -> None:
    assert login_message("WQJCwy") == '{"trnm":"LOGIN","token":"WQJCwy"}'
    assert msgspec.json.decode(reg_message("1", ["005930", "000660"], ["0B", "0D"])) == {
        "trnm": "REG", "grp_no": "1", "refresh": "1",
        "data": [{"item": ["005930", "000660"], "type": ["0B", "0D"]}],
    }  # fmt: skip
    assert '"refresh":"0"' in reg_message("12", ["005930_NX"], ["0B"], refresh="0")
    # §4's REMOVE example, byte for byte (no refresh)
    assert remove_message("1", ["005930"], ["0B"]) == (
        '{"trnm":"REMOVE","grp_no":"1","data":[{"item":["005930"],"type":["0B"]}]}'
    )
    assert " " not in reg_message("1", ("005930",), ("0B",))


def test_items_name_their_venue() -> None:
    assert [item_for(v, "039490") for v in ("KRX", "NXT", "UN")] == [
        "039490", "039490_NX", "039490_AL"
    ]  # fmt: skip
    assert [split_item(i) for i in ("039490", "039490_NX", "039490_AL")] == [
        ("KRX", "039490"), ("NXT", "039490"), ("UN", "039490")
    ]  # fmt: skip
    for bad in ("005930_ZZ", "005930_", "_NX", ""):
        with pytest.raises(KiwoomFrameError) as err:
            split_item(bad)
        assert err.value.reason == "bad_item"
    with pytest.raises(KiwoomFrameError):
        item_for("LSE", "005930")


# --- token (§2) --------------------------------------------------------------------------------


def test_the_token_request_and_answer() -> None:
    assert token_request("key", "secret") == {
        "grant_type": "client_credentials", "appkey": "key", "secretkey": "secret"
    }  # fmt: skip
    now = datetime(2025, 1, 2, 9, 0, tzinfo=KST).timestamp()
    body = {"expires_dt": "20250103083713", "token_type": "bearer", "token": "WQJCwy",
            "return_code": 0, "return_msg": "정상적으로 처리되었습니다"}  # fmt: skip
    token, expires_at = parse_token_response(body, now)
    assert token == "WQJCwy"
    assert expires_at == datetime(2025, 1, 3, 8, 37, 13, tzinfo=KST).timestamp()
    assert parse_token_response({**body, "return_code": "0"}, now)[0] == "WQJCwy"


def test_a_refused_or_unusable_token_answer() -> None:
    now = datetime(2025, 1, 2, 9, 0, tzinfo=KST).timestamp()
    with pytest.raises(KiwoomTokenError) as refused:
        parse_token_response({"return_code": 8001, "return_msg": "App Key 검증 실패"}, now)
    assert (refused.value.code, refused.value.message) == (8001, "App Key 검증 실패")
    good = {"expires_dt": "20250103083713", "token": "t", "return_code": 0, "return_msg": ""}
    for bad in (
        [],
        "token",
        {k: v for k, v in good.items() if k != "return_code"},  # success must be said
        {**good, "token": ""},
        {**good, "token": 5},
        {**good, "expires_dt": "soon"},
        {**good, "expires_dt": "20251301000000"},  # month 13
        {**good, "expires_dt": 20250103083713},
        {**good, "expires_dt": "20250101000000"},  # already over
    ):
        with pytest.raises(KiwoomTokenError):
            parse_token_response(bad, now)


# --- refusals (§2, §3) ------------------------------------------------------------------------


def test_refusal_kinds_follow_the_official_families() -> None:
    assert {8003, 8005, 8006, 8009, 8015, 8016, 8031, 8103} == TOKEN_CODES
    kinds = {
        "credentials": CREDENTIAL_CODES, "mismatch": MISMATCH_CODES, "device": DEVICE_CODES,
        "rate_limit": RATE_LIMIT_CODES, "input": INPUT_CODES, "not_found": NOT_FOUND_CODES,
    }  # fmt: skip
    for kind, codes in kinds.items():
        for code in codes - TOKEN_CODES:
            assert refusal_kind(code) == kind, code
    # the official client logs in again with a fresh token on these three (§2)
    assert [refusal_kind(c) for c in (8005, 8031, 8103)] == ["token"] * 3
    assert [refusal_kind(c) for c in (8030, 8040, 1511, 1517, 1700, 0, 1, 42)] == [
        "mismatch", "device", "input", "input", "rate_limit", "other", "other", "other"
    ]  # fmt: skip


def test_the_code_of_a_refused_login() -> None:
    message = "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]"
    assert login_code(1, message) == 8005  # return_code 1 says "failed", the message says why
    assert login_code(-1, "[CODE = 8103]") == 8103
    assert login_code(8001, "whatever [CODE=8005]") == 8001  # a code of §2 wins
    assert login_code(1, "no code here") == 1


# --- control messages (§3, §4, §7, §8) -------------------------------------------------------


def test_control_messages() -> None:
    d = KiwoomDecoder("k")
    assert d.decode('{"trnm":"LOGIN","return_code":0,"return_msg":"","sor_yn":"Y"}', 0) == Login(
        True, 0, ""
    )
    refused = '{"trnm":"LOGIN","return_code":1,"return_msg":"토큰 인증에 실패했습니다 [CODE=8005]"}'
    assert d.decode(refused, 0) == Login(False, 1, "토큰 인증에 실패했습니다 [CODE=8005]")
    assert d.decode('{"trnm":"LOGIN"}', 0) == Login(False, -1, "")  # no code: not a success
    assert d.decode('{"trnm":"REG","return_code":1,"return_msg":"등록 종목수 초과"}', 0) == (
        RegReply("REG", False, 1, "등록 종목수 초과")
    )
    assert d.decode('{"trnm":"REMOVE","return_code":"0"}', 0) == RegReply("REMOVE", True, 0, "")
    assert d.decode('{"trnm":"SYSTEM","code":"R10002","message":"bye"}', 0) == System(
        "R10002", "bye"
    )
    assert d.decode('{"trnm":"SYSTEM","return_code":"R10001","return_msg":"x"}', 0) == System(
        "R10001", "x"
    )
    assert d.stats.controls == 7 and d.stats.errors == {} and d.last_error is None


def test_a_ping_is_kept_exactly_as_received() -> None:
    d = KiwoomDecoder("k")
    for raw in ('{"trnm":"PING"}', '{ "trnm" : "PING", "seq": 12 }', "PING"):
        assert d.decode(raw, 0) == Ping(raw)
    assert d.stats.controls == 3


# --- REAL (§5, §6) ------------------------------------------------------------------------------


def test_the_documented_trade() -> None:
    assert decode_one(DOC_EXAMPLE) == Tick(
        source="kiwoom-1", venue="KRX", code="005930",
        trade_time=datetime(2025, 1, 3, 9, 30, 15, tzinfo=KST), price=71000, change=500,
        change_percent=0.71, open=70600, high=71200, low=70400, ask=71000, bid=70900,
        trade_volume=12, volume=1233600, value=87654 * 1_000_000, strength=112.34,
        received_ns=RECEIVED,
    )  # fmt: skip


def test_signs_are_direction_not_negative_prices() -> None:
    down = {**TRADE, "10": "-69000", "11": "-1500", "12": "-2.13", "15": "-30", "16": "-69500",
            "27": "-69100", "28": "-69000"}  # fmt: skip
    t = decode_one(real_message([(KIWOOM_TRADE, "005930_NX", down)]))
    assert isinstance(t, Tick)
    assert (t.venue, t.code) == ("NXT", "005930")
    assert (t.price, t.change, t.change_percent, t.trade_volume) == (69000, -1500, -2.13, 30)
    assert (t.open, t.ask, t.bid, t.low) == (69500, 69100, 69000, 70400)
    flat = {**TRADE, "10": "70500", "11": "0", "12": "0.00", "15": "+1"}
    t = decode_one(real_message([(KIWOOM_TRADE, "005930_AL", flat)]))
    assert isinstance(t, Tick) and (t.venue, t.price, t.change) == ("UN", 70500, 0)


def test_empty_trade_fields_read_as_zero_but_price_time_and_volume_are_required() -> None:
    sparse = dict.fromkeys(TRADE, "") | {"20": "093015", "10": "+71000", "13": "1233600"}
    t = decode_one(real_message([(KIWOOM_TRADE, "005930", sparse)]))
    assert isinstance(t, Tick)
    assert (t.change, t.change_percent, t.trade_volume, t.value, t.strength) == (0, 0.0, 0, 0, 0)
    for fid in ("10", "13"):
        d = KiwoomDecoder("k")
        assert d.decode(real_message([(KIWOOM_TRADE, "005930", {**TRADE, fid: ""})]), 0) == []
        assert d.stats.errors == {"missing_field": 1}
    d = KiwoomDecoder("k")
    assert d.decode(real_message([(KIWOOM_TRADE, "005930", {**TRADE, "20": ""})]), 0) == []
    assert d.stats.errors == {"bad_time": 1}


def test_an_order_book_with_empty_levels() -> None:
    # NXT after-market: three levels, the rest empty as "", "0" or "-0" (§5)
    v = book()
    for level in range(4, 11):
        empty = ("", "0", "-0")[level % 3]
        for base in (40, 50, 60, 70):
            v[str(base + level)] = empty
    b = decode_one(real_message([(KIWOOM_BOOK, "000660_NX", v)]))
    assert b == OrderBook(
        source="kiwoom-1", venue="NXT", code="000660",
        quote_time=datetime(2025, 1, 3, 9, 30, 16, tzinfo=KST),
        ask_prices=(71100, 71200, 71300, 0, 0, 0, 0, 0, 0, 0),
        bid_prices=(69900, 69800, 69700, 0, 0, 0, 0, 0, 0, 0),
        ask_sizes=(100, 200, 300, 0, 0, 0, 0, 0, 0, 0),
        bid_sizes=(200, 400, 600, 0, 0, 0, 0, 0, 0, 0),
        total_ask_size=5500, total_bid_size=11000, expected_price=0, expected_volume=0,
        volume=1233600, received_ns=RECEIVED,
    )  # fmt: skip


def test_a_book_s_expected_match_and_its_volume_when_absent() -> None:
    v = {k: x for k, x in book(**{"23": "+70900", "24": "1500"}).items() if k != "13"}
    b = decode_one(real_message([(KIWOOM_BOOK, "005930", v)]))
    assert isinstance(b, OrderBook)
    assert (b.expected_price, b.expected_volume, b.volume) == (70900, 1500, 0)


def test_one_message_carries_several_entries() -> None:
    d = KiwoomDecoder("kiwoom-1")
    out = d.decode(
        real_message([
            (KIWOOM_TRADE, "005930", TRADE),
            ("0C", "005930", {"27": "+71000", "28": "+70900"}),  # best quote: not decoded
            (KIWOOM_BOOK, "005930", book()),
            (KIWOOM_TRADE, "000660_NX", {**TRADE, "13": "1233700"}),
        ]),
        RECEIVED,
    )  # fmt: skip
    assert isinstance(out, list)
    assert [(type(e).__name__, e.venue, e.code) for e in out] == [
        ("Tick", "KRX", "005930"), ("OrderBook", "KRX", "005930"), ("Tick", "NXT", "000660")
    ]  # fmt: skip
    assert d.stats.as_dict() == {
        "frames": 1, "records": 3, "controls": 0, "skipped": {"0C": 1}, "errors": {}
    }  # fmt: skip


def test_values_sent_as_numbers_are_read() -> None:
    text = real_message([(KIWOOM_TRADE, "005930", TRADE)]).replace('"13":"1233600"', '"13":1233600')
    assert '"13":1233600' in text
    t = decode_one(text)
    assert isinstance(t, Tick) and t.volume == 1233600


def test_the_trade_date_is_the_receive_date_in_kst_unless_given() -> None:
    late = int(datetime(2025, 1, 3, 23, 30, tzinfo=KST).timestamp() * 1e9)  # 14:30 UTC
    early = int(datetime(2025, 1, 4, 0, 10, tzinfo=KST).timestamp() * 1e9)  # the day before UTC
    for received, day in ((late, 3), (early, 4)):
        (t,) = KiwoomDecoder("k").decode(DOC_EXAMPLE, received)  # type: ignore[misc]
        assert t.trade_time == datetime(2025, 1, day, 9, 30, 15, tzinfo=KST)
    asked: list[int] = []

    def session_date(ns: int) -> date:
        asked.append(ns)
        return date(2024, 12, 30)

    d = KiwoomDecoder("k", clock_date=session_date)
    out = d.decode(real_message([(KIWOOM_TRADE, "005930", TRADE)] * 2), late)
    assert isinstance(out, list) and len(out) == 2
    assert {e.trade_time for e in out} == {datetime(2024, 12, 30, 9, 30, 15, tzinfo=KST)}  # type: ignore[union-attr]
    assert asked == [late]  # once per message


# --- bad input: counted, the rest kept ------------------------------------------------------


def test_bad_frames_are_counted_and_kept_as_last_error() -> None:
    d = KiwoomDecoder("k")
    for text in ("{not json", '["REAL"]', '{"trnm":5}', '{"trnm":"WHAT"}', '{"trnm":"REAL"}',
                 '{"trnm":"REAL","data":[]}', '{"trnm":"REAL","data":[{"values":{"10":[1]}}]}',
                 "\ud800"):  # fmt: skip
        assert d.decode(text, RECEIVED) == [], text
        assert isinstance(d.last_error, KiwoomFrameError)
    assert d.stats.errors == {
        "bad_json": 2, "bad_message": 3, "unknown_trnm": 1, "empty_real": 2,
    }  # fmt: skip
    assert d.stats.frames == 8 and d.stats.records == 0


def test_a_bad_entry_is_dropped_alone() -> None:
    d = KiwoomDecoder("k")
    out = d.decode(
        real_message([
            (KIWOOM_TRADE, "005930", {**TRADE, "10": "abc"}),  # not a number
            (KIWOOM_TRADE, "000660", {**TRADE, "20": "9301"}),  # a short time
            (KIWOOM_TRADE, "000660", {**TRADE, "20": "250000"}),  # no such time
            (KIWOOM_TRADE, "005930_XX", TRADE),  # an unknown venue
            ("ZZ", "005930", {}),  # an unknown type
            ("0w", "005930", {}),  # program trading: known, not decoded
            (KIWOOM_BOOK, "005930", book(**{"21": ""})),  # no quote time
            (KIWOOM_TRADE, "035420", TRADE),  # fine
        ]),
        RECEIVED,
    )  # fmt: skip
    assert isinstance(out, list) and [(e.code, type(e)) for e in out] == [("035420", Tick)]
    assert d.stats.errors == {
        "bad_value": 1, "bad_time": 3, "bad_item": 1, "unknown_type": 1,
    }  # fmt: skip
    assert d.stats.skipped == {"0w": 1} and d.stats.records == 1


@pytest.mark.parametrize("raw", [" 71000", "71 000", "7_1000", "１２", "1e3", "++5", "+", "-",
                                 "0x10", "9" * 19])  # fmt: skip
def test_numbers_are_strict(raw: str) -> None:
    d = KiwoomDecoder("k")
    assert d.decode(real_message([(KIWOOM_TRADE, "005930", {**TRADE, "10": raw})]), 0) == []
    assert d.stats.errors == {"bad_value": 1}


@pytest.mark.parametrize("raw", ["1.2.3", ".5", "5.", "+-1", "nan", "inf"])
def test_rates_are_strict(raw: str) -> None:
    d = KiwoomDecoder("k")
    assert d.decode(real_message([(KIWOOM_TRADE, "005930", {**TRADE, "12": raw})]), 0) == []
    assert d.stats.errors == {"bad_value": 1}


# --- the simulator's values (sim/kiwoom.py) and KIS's report of the same trade --------------

NOW = datetime(2025, 1, 3, 9, 30, 15, tzinfo=KST)
NOW_NS = int(NOW.timestamp() * 1e9)


def test_the_simulated_trade_has_every_documented_key_and_its_signs() -> None:
    market = SimMarket(DEFAULT_TICKERS[:3], 7)
    sides = set()
    for _ in range(200):
        record = market.trade(NOW)
        v = trade_values(record)
        assert list(v) == list(TRADE_FIDS) and all(isinstance(x, str) for x in v.values())
        buy = record[21] == "1"  # CCLD_DVSN
        sides.add(buy)
        assert v["15"] == ("+" if buy else "-") + record[12]
        assert v["25"] == record[3]  # PRDY_VRSS_SIGN: the same 1-5 codes
        change = int(record[4])
        assert v["10"][0] == ("+" if change > 0 else "-" if change < 0 else record[2][0])
    assert sides == {True, False}


def test_a_kiwoom_tick_and_a_kis_tick_of_the_same_simulated_trade_have_one_key() -> None:
    market = SimMarket(DEFAULT_TICKERS[:3], 7)
    kis_tr = {venue: tr for tr, venue in TRADE_TRS.items()}
    for n in range(100):
        record = market.trade(NOW)
        venue = ("KRX", "NXT", "UN")[n % 3]
        kis = KisDecoder("kis-1").decode(data_frame(kis_tr[venue], [record]), NOW_NS)
        kiwoom = KiwoomDecoder("kiwoom-1").decode(
            real_message([(KIWOOM_TRADE, item_for(venue, record[0]), trade_values(record))]),
            NOW_NS,
        )
        assert isinstance(kis, list) and isinstance(kiwoom, list)
        (a,), (b,) = kis, kiwoom
        assert isinstance(a, Tick) and isinstance(b, Tick)
        assert a.key == b.key
        assert a.value // 1_000_000 * 1_000_000 == b.value  # Kiwoom says million KRW
        same = {"source": "", "received_ns": 0, "value": 0}
        assert msgspec.structs.replace(a, **same) == msgspec.structs.replace(b, **same)


def test_a_kiwoom_book_and_a_kis_book_of_the_same_simulated_book_are_one() -> None:
    market = SimMarket(DEFAULT_TICKERS[:3], 7)
    code = DEFAULT_TICKERS[0].code
    for _ in range(20):
        market.trade(NOW)
        record = market.order_book(code, NOW)
        values = book_values(record, market.prev_close(code))
        assert list(values) == list(BOOK_FIDS) and all(isinstance(x, str) for x in values.values())
        (a,) = KisDecoder("kis-1").decode(data_frame(KIS_BOOK, [record]), NOW_NS)  # type: ignore[misc]
        b = decode_one(real_message([(KIWOOM_BOOK, code, values)]))
        assert a.key == b.key
        assert msgspec.structs.replace(a, source="", received_ns=0) == msgspec.structs.replace(
            b, source="", received_ns=0
        )
