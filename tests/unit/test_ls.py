"""LS wire formats (ls.md §2-§8) and the LS simulator records.

Messages are built from ls.md's tables and its literal examples; the seed-000 news validation
(empty or too-short titles dropped) and normalisation (title, tickers, primary ticker, media).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from tradestream.errors import FrameError, TokenError
from tradestream.events import KST, News, OrderBook, Tick
from tradestream.feeds.kis.codec import H0STCNT0_FIELDS, KisDecoder
from tradestream.feeds.ls.codec import (
    LsAck,
    LsDecoder,
    load_media_map,
    parse_token_response,
    split_tickers,
    subscribe_message,
    token_request_form,
)
from tradestream.sim.ls_records import NewsGenerator, ack_message, data_message, s3_body
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket

SOURCE = "ls-test"
# 2025-01-02 09:30:15.123456789 KST (00:30:15 UTC)
RECEIVED_NS = 1_735_777_815_123_456_789
MEDIA = {"01": "연합뉴스", "27": "테스트통신"}

BUNDLED_MEDIA = {
    "01": "연합뉴스", "02": "한국경제", "03": "매일경제", "04": "이데일리",
    "05": "머니투데이", "06": "서울경제", "07": "파이낸셜뉴스", "08": "뉴스핌",
}  # fmt: skip


def decoder(min_title_chars: int = 5) -> LsDecoder:
    return LsDecoder(SOURCE, MEDIA, min_title_chars)


def msg(tr_cd: str, tr_key: str, body: dict[str, str] | None) -> str:
    return json.dumps({"header": {"tr_cd": tr_cd, "tr_key": tr_key}, "body": body},
                      ensure_ascii=False)  # fmt: skip


def decode_events(text: str, dec: LsDecoder | None = None) -> list[object]:
    d = dec or decoder()
    before = (dict(d.stats.errors), dict(d.stats.dropped))
    out = d.decode(text, RECEIVED_NS)
    assert isinstance(out, list)
    assert d.last_error is None, d.last_error
    assert (d.stats.errors, d.stats.dropped) == before  # neither an error nor a drop
    return list(out)


def assert_error(text: str, reason: str, dec: LsDecoder | None = None) -> None:
    d = dec or decoder()
    assert d.decode(text, RECEIVED_NS) == []
    assert d.stats.errors == {reason: 1}, d.stats.errors
    assert isinstance(d.last_error, FrameError) and d.last_error.reason == reason
    assert (d.stats.frames, d.stats.records, d.stats.dropped) == (1, 0, {})


# --- token (§2) ---------------------------------------------------------------------------------


def test_token_request_form() -> None:
    assert token_request_form("my-key", "my-secret") == {
        "grant_type": "client_credentials",
        "appkey": "my-key",
        "appsecretkey": "my-secret",
        "scope": "oob",
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"access_token": "eyJ0", "token_type": "Bearer", "scope": "oob", "expires_in": 86400},
         ("eyJ0", 86400.0)),
        ({"access_token": "eyJ0", "expire_in": 86400}, ("eyJ0", 86400.0)),  # table spelling
        ({"access_token": "eyJ0", "expires_in": "86400"}, ("eyJ0", 86400.0)),
        ({"access_token": "eyJ0", "expires_in": 3599.5}, ("eyJ0", 3599.5)),
        ({"access_token": " eyJ0 ", "expires_in": 60, "expire_in": 99}, ("eyJ0", 60.0)),
    ],
)  # fmt: skip
def test_parse_token_response(obj: dict[str, object], expected: tuple[str, float]) -> None:
    assert parse_token_response(obj) == expected


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"expires_in": 86400}, "no access_token"),
        ({"access_token": "", "expires_in": 86400}, "no access_token"),
        ({"access_token": None, "expires_in": 86400}, "no access_token"),
        ({"rsp_cd": "IGW00121", "rsp_msg": "invalid appkey"}, "IGW00121"),
        ({"access_token": "t"}, "neither expires_in nor expire_in"),
        ({"access_token": "t", "expires_in": "soon"}, "bad token lifetime"),
        ({"access_token": "t", "expires_in": 0}, "bad token lifetime"),
        ({"access_token": "t", "expires_in": -5}, "bad token lifetime"),
        ({"access_token": "t", "expires_in": True}, "bad token lifetime"),
        ({"access_token": "t", "expires_in": None}, "bad token lifetime"),
    ],
)
def test_parse_token_response_errors(obj: dict[str, object], match: str) -> None:
    with pytest.raises(TokenError, match=match):
        parse_token_response(obj)
    assert issubclass(TokenError, ValueError)


# --- requests (§3) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscribe", "account", "tr_type"),
    [(True, False, "3"), (False, False, "4"), (True, True, "1"), (False, True, "2")],
)
def test_subscribe_message_tr_type(subscribe: bool, account: bool, tr_type: str) -> None:
    text = subscribe_message("tok", "S3_", "005930", subscribe=subscribe, account=account)
    assert json.loads(text) == {
        "header": {"token": "tok", "tr_type": tr_type},
        "body": {"tr_cd": "S3_", "tr_key": "005930"},
    }


def test_subscribe_message_matches_ls_md_3_example() -> None:
    doc = """{
  "header": {"token": "<access_token>", "tr_type": "3"},
  "body":   {"tr_cd": "S3_", "tr_key": "005930"}
}"""
    assert json.loads(subscribe_message("<access_token>", "S3_", "005930")) == json.loads(doc)
    assert subscribe_message("t", "NWS", "NWS001") == (
        '{"header":{"token":"t","tr_type":"3"},"body":{"tr_cd":"NWS","tr_key":"NWS001"}}'
    )
    assert json.loads(subscribe_message("t", "SC1", "", account=True)) == {
        "header": {"token": "t", "tr_type": "1"}, "body": {"tr_cd": "SC1", "tr_key": ""},
    }  # fmt: skip


# --- acknowledgements (§4) ----------------------------------------------------------------------

# ls.md §4, copied literally.
DOC_ACK = (
    '{"header":{"tr_cd":"S3_","tr_key":"005930","tr_type":"3","rsp_cd":"00000",'
    '"rsp_msg":"정상처리되었습니다"},"body":null}'
)


def test_ls_md_4_ack() -> None:
    dec = decoder()
    out = dec.decode(DOC_ACK, RECEIVED_NS)
    assert out == LsAck(tr_cd="S3_", tr_key="005930", ok=True, rsp_cd="00000",
                        rsp_msg="정상처리되었습니다", tr_type="3")  # fmt: skip
    assert dec.stats.as_dict() == {
        "frames": 1, "records": 0, "controls": 1, "errors": {}, "dropped": {},
    }  # fmt: skip
    assert dec.last_error is None


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        # error variant: any rsp_cd but 00000 is a refusal
        ({"tr_cd": "S3_", "tr_key": "005930", "tr_type": "3", "rsp_cd": "IGW00121",
          "rsp_msg": "유효하지 않은 토큰입니다"}, None,
         LsAck("S3_", "005930", False, "IGW00121", "유효하지 않은 토큰입니다", "3")),
        # header tr_key right-padded with blanks (programgarden: "+ padding")
        ({"tr_cd": "NWS", "tr_key": "NWS001      ", "rsp_cd": "00000", "rsp_msg": "ok"}, None,
         LsAck("NWS", "NWS001", True, "00000", "ok", "")),
        # body absent, or present but empty
        ({"tr_cd": "H1_", "tr_key": "000660", "tr_type": "4", "rsp_cd": "00000",
          "rsp_msg": ""}, "absent", LsAck("H1_", "000660", True, "00000", "", "4")),
        ({"tr_cd": "K3_", "tr_key": "035720", "rsp_cd": "00000", "rsp_msg": "ok"}, {},
         LsAck("K3_", "035720", True, "00000", "ok", "")),
        # an empty rsp_cd is still an ack (and not ok)
        ({"tr_cd": "S3_", "tr_key": "005930", "rsp_cd": ""}, None,
         LsAck("S3_", "005930", False, "", "", "")),
    ],
)  # fmt: skip
def test_ack_variants(header: dict[str, str], body: object, expected: LsAck) -> None:
    obj: dict[str, object] = {"header": header}
    if body != "absent":
        obj["body"] = body
    dec = decoder()
    assert dec.decode(json.dumps(obj, ensure_ascii=False), RECEIVED_NS) == expected
    assert (dec.stats.controls, dec.stats.errors) == (1, {})


def test_ack_message_matches_ls_md_4_literally() -> None:
    assert ack_message("S3_", "005930", "3") == DOC_ACK
    refused = ack_message("S3_", "005930", "3", rsp_cd="IGW00121", rsp_msg="bad token")
    assert json.loads(refused) == {
        "header": {"tr_cd": "S3_", "tr_key": "005930", "tr_type": "3",
                   "rsp_cd": "IGW00121", "rsp_msg": "bad token"},
        "body": None,
    }  # fmt: skip
    assert decoder().decode(refused, 0) == LsAck("S3_", "005930", False, "IGW00121",
                                                "bad token", "3")  # fmt: skip


# --- NWS (§8.1) ---------------------------------------------------------------------------------

# ls.md §8.1 example, copied literally.
DOC_NWS = """{"header":{"tr_cd":"NWS","tr_key":"NWS001"},
 "body":{"date":"20250102","time":"093015","id":"27","realkey":"202501020930151234000101",
         "title":"Sample headline about company A","code":"000000005930000000000660","bodysize":"2048"}}"""  # noqa: E501

DOC_NEWS = News(
    source=SOURCE,
    realkey="202501020930151234000101",
    title="Sample headline about company A",
    tickers=("005930", "000660"),
    ticker="005930",
    media_id="27",
    media="테스트통신",
    published_at=datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST),
    body_size=2048,
    received_ns=RECEIVED_NS,
)

NWS_BODY: dict[str, str] = {
    "date": "20250102", "time": "093015", "id": "01", "realkey": "202501020930151234000101",
    "title": "삼성전자, 4분기 영업이익 12% 증가", "code": "000000005930", "bodysize": "2048",
}  # fmt: skip


def nws(**overrides: str) -> str:
    return msg("NWS", "NWS001", {**NWS_BODY, **overrides})


def nws_without(*names: str) -> str:
    return msg("NWS", "NWS001", {k: v for k, v in NWS_BODY.items() if k not in names})


def news_of(text: str, dec: LsDecoder | None = None) -> News:
    (n,) = decode_events(text, dec)
    assert isinstance(n, News)
    return n


def test_ls_md_8_1_example() -> None:
    dec = decoder()
    n = news_of(DOC_NWS, dec)
    assert n == DOC_NEWS
    assert n.key == "202501020930151234000101"
    assert n.published_at.utcoffset() == timedelta(hours=9)
    assert dec.stats.as_dict() == {
        "frames": 1, "records": 1, "controls": 0, "errors": {}, "dropped": {},
    }  # fmt: skip


def test_unmapped_media_id() -> None:
    n = news_of(DOC_NWS, LsDecoder(SOURCE, {}))
    assert (n.media_id, n.media) == ("27", "unknown:27")
    n = news_of(nws(id="99"))
    assert (n.media_id, n.media) == ("99", "unknown:99")
    n = news_of(nws_without("id"))
    assert (n.media_id, n.media) == ("", "unknown:")


def test_title_is_stripped_and_mapped_media() -> None:
    n = news_of(nws(title="  [속보] 코스피 2% 급등 \t"))
    assert n.title == "[속보] 코스피 2% 급등"
    assert (n.media_id, n.media, n.tickers, n.ticker) == ("01", "연합뉴스", ("005930",), "005930")


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("", "empty_title"),
        ("   ", "empty_title"),
        ("\t \u3000", "empty_title"),  # ideographic space is whitespace too
        ("속보", "short_title"),
        ("[단독]", "short_title"),  # 4 characters
        ("  특징주  ", "short_title"),  # 3 after stripping
        ("abcd", "short_title"),
    ],
)
def test_validation_drops(title: str, reason: str) -> None:
    dec = decoder()
    assert dec.decode(nws(title=title), RECEIVED_NS) == []
    assert dec.stats.dropped == {reason: 1}
    assert dec.stats.errors == {} and dec.last_error is None  # a drop is not a broker error
    assert (dec.stats.frames, dec.stats.records) == (1, 0)


def test_min_title_chars_boundary_and_setting() -> None:
    assert news_of(nws(title="[속보]!")).title == "[속보]!"  # exactly 5: kept
    dec = decoder(min_title_chars=10)
    assert dec.decode(nws(title="123456789"), RECEIVED_NS) == []
    assert news_of(nws(title="1234567890"), dec).title == "1234567890"
    assert dec.stats.dropped == {"short_title": 1}
    one = decoder(min_title_chars=1)
    assert news_of(nws(title="가"), one).title == "가"
    assert one.decode(nws(title=" "), RECEIVED_NS) == []
    assert one.stats.dropped == {"empty_title": 1}


def test_drops_accumulate_beside_errors() -> None:
    dec = decoder()
    for text in (nws(title=""), nws(title="짧다"), nws(title=""), nws(date="2025"),
                 DOC_NWS):  # fmt: skip
        dec.decode(text, RECEIVED_NS)
    assert dec.stats.as_dict() == {
        "frames": 5, "records": 1, "controls": 0,
        "errors": {"bad_value": 1}, "dropped": {"empty_title": 2, "short_title": 1},
    }  # fmt: skip


def test_malformed_record_is_an_error_not_a_drop() -> None:
    # structure is checked before content: an empty title with a bad date is an error
    assert_error(nws(title="", date="20251301"), "bad_value")
    assert_error(nws(title="", realkey=""), "missing_field")


@pytest.mark.parametrize(
    ("code", "tickers"),
    [
        ("000000005930000000000660", ("005930", "000660")),  # ls.md §8.1 example
        ("000000011810", ("011810",)),  # the portal example's single code
        ("", ()),
        ("000000000000", ()),  # all-zero chunk: padding
        (" " * 12, ()),
        ("000000005930" + " " * 228, ("005930",)),  # a 240-char field padded with blanks
        ("000000005930" + "0" * 228, ("005930",)),  # ... or with zeros
        ("000000005930000000000000000000000660", ("005930", "000660")),  # zero chunk inside
        ("      005930000000000660", ("005930", "000660")),  # blank-padded chunk
        ("0000000072R0", ("0072R0",)),  # new-style alphanumeric KRX short code
        ("000000005930000000005930", ("005930",)),  # duplicates collapse, order kept
        ("".join(f"{c:012d}" for c in range(1, 21)),
         tuple(f"{c:06d}" for c in range(1, 21))),  # 20 chunks: the full 240 characters
        # not a multiple of 12: a separated list of codes
        ("005930", ("005930",)),
        ("005930,000660", ("005930", "000660")),
        ("005930, 000660 ,035420", ("005930", "000660", "035420")),
        ("005930 000660", ("005930", "000660")),
        # 48 characters but not 12-char chunks: seven codes separated by single blanks
        (" ".join(["005930", "000660", "035420", "005380", "000270", "051910", "006400"]),
         ("005930", "000660", "035420", "005380", "000270", "051910", "006400")),
        # tokens that are not codes are skipped
        ("005930,abc,1234567,000000", ("005930",)),
        ("0000000059３0", ()),  # a full-width digit
        ("12345678901", ()),  # 11 characters: one token of 11 significant digits
        ("00000000593", ("000593",)),  # 11 characters: one zero-padded token
        ("5930", ("005930",)),  # a short token is left-padded
    ],
)  # fmt: skip
def test_ticker_splitting(code: str, tickers: tuple[str, ...]) -> None:
    assert split_tickers(code) == tickers
    n = news_of(nws(code=code))
    assert n.tickers == tickers
    assert n.ticker == (tickers[0] if tickers else None)


def test_missing_code_means_no_tickers() -> None:
    n = news_of(nws_without("code"))
    assert (n.tickers, n.ticker) == ((), None)


@pytest.mark.parametrize(
    ("bodysize", "expected"),
    [("2048", 2048), ("00002048", 2048), ("0", 0), ("", 0), ("abc", 0), ("-5", 0),
     ("20 48", 0), (None, 0)],
)  # fmt: skip
def test_body_size_is_informational(bodysize: str | None, expected: int) -> None:
    text = nws_without("bodysize") if bodysize is None else nws(bodysize=bodysize)
    assert news_of(text).body_size == expected


@pytest.mark.parametrize(
    ("overrides", "missing", "reason"),
    [
        ({"date": "20251301"}, (), "bad_value"),
        ({"date": "20250230"}, (), "bad_value"),
        ({"date": "2025012"}, (), "bad_value"),
        ({"date": "2025-01-02"}, (), "bad_value"),
        ({"date": ""}, (), "bad_value"),
        ({"time": "246000"}, (), "bad_value"),
        ({"time": "093060"}, (), "bad_value"),
        ({"time": "09301"}, (), "bad_value"),
        ({"time": "09:30:15"}, (), "bad_value"),
        ({"time": "０９３０１５"}, (), "bad_value"),  # full-width digits
        ({"realkey": ""}, (), "missing_field"),
        ({"realkey": "   "}, (), "missing_field"),
        ({}, ("realkey",), "missing_field"),
        ({}, ("date",), "missing_field"),
        ({}, ("time",), "missing_field"),
        ({}, ("title",), "missing_field"),
    ],
)
def test_nws_errors(overrides: dict[str, str], missing: tuple[str, ...], reason: str) -> None:
    body = {k: v for k, v in {**NWS_BODY, **overrides}.items() if k not in missing}
    assert_error(msg("NWS", "NWS001", body), reason)


def test_realkey_is_stripped() -> None:
    assert news_of(nws(realkey=" 202501020930151234000101 ")).realkey == (
        "202501020930151234000101"
    )


# --- S3_ / K3_ (§8.2) ---------------------------------------------------------------------------

# ls.md §8.2 example, copied literally.
DOC_S3 = """{"header":{"tr_cd":"S3_","tr_key":"005930"},
 "body":{"chetime":"093015","sign":"2","change":"500","drate":"0.71","price":"71000",
         "opentime":"090000","open":"70600","hightime":"091512","high":"71200","lowtime":"090207","low":"70400",
         "cgubun":"+","cvolume":"12","volume":"1233600","value":"87654","mdvolume":"580000","mdchecnt":"4210",
         "msvolume":"651600","mschecnt":"5105","cpower":"112.34","w_avrg":"70812","offerho":"71000","bidho":"70900",
         "status":"00","jnilvolume":"2015000","shcode":"005930","exchname":"KRX"}}"""  # noqa: E501

DOC_TICK = Tick(
    source=SOURCE,
    venue="KRX",
    code="005930",
    trade_time=datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST),  # receive date (KST) + chetime
    price=71000,
    change=500,
    change_percent=0.71,
    open=70600,
    high=71200,
    low=70400,
    ask=71000,
    bid=70900,
    trade_volume=12,
    volume=1233600,
    value=87_654_000_000,  # 87654 million KRW
    strength=112.34,
    received_ns=RECEIVED_NS,
)

S3_BODY: dict[str, str] = json.loads(DOC_S3)["body"]


def s3(tr_cd: str = "S3_", tr_key: str = "005930", **overrides: str) -> str:
    return msg(tr_cd, tr_key, {**S3_BODY, **overrides})


def s3_without(*names: str, tr_key: str = "005930") -> str:
    return msg("S3_", tr_key, {k: v for k, v in S3_BODY.items() if k not in names})


def tick_of(text: str, received_ns: int = RECEIVED_NS) -> Tick:
    dec = decoder()
    out = dec.decode(text, received_ns)
    assert dec.last_error is None, dec.last_error
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], Tick)
    return out[0]


def _replace(t: Tick, **changes: object) -> Tick:
    return msgspec.structs.replace(t, **changes)


def test_ls_md_8_2_example() -> None:
    assert len(S3_BODY) == 27  # the §8.2 table
    dec = decoder()
    assert decode_events(DOC_S3, dec) == [DOC_TICK]
    assert (dec.stats.frames, dec.stats.records) == (1, 1)


def test_k3_has_the_same_body() -> None:
    text = DOC_S3.replace('"tr_cd":"S3_"', '"tr_cd":"K3_"')
    assert decode_events(text) == [DOC_TICK]


@pytest.mark.parametrize(
    ("sign", "change", "drate", "expected_change", "expected_pct"),
    [
        ("2", "500", "0.71", 500, 0.71),
        ("1", "21300", "30.00", 21300, 30.0),  # upper limit
        ("3", "0", "0.00", 0, 0.0),
        ("5", "500", "0.71", -500, -0.71),  # magnitudes, signed by `sign`
        ("5", "500", "-0.71", -500, -0.71),  # drate already signed: same answer
        ("5", "-500", "-0.71", -500, -0.71),
        ("4", "21300", "30.00", -21300, -30.0),  # lower limit
        ("2", "-500", "-0.71", 500, 0.71),  # the sign wins over a stray '-'
    ],
)
def test_signed_change(
    sign: str, change: str, drate: str, expected_change: int, expected_pct: float
) -> None:
    t = tick_of(s3(sign=sign, change=change, drate=drate))
    assert (t.change, t.change_percent) == (expected_change, expected_pct)


def test_trade_date_is_the_kst_receive_date() -> None:
    # 2025-01-02 15:30:00 UTC is 2025-01-03 00:30:00 KST: the KST date counts
    ns = int(datetime(2025, 1, 2, 15, 30, tzinfo=UTC).timestamp()) * 1_000_000_000
    t = tick_of(s3(chetime="003000"), ns)
    assert t.trade_time == datetime(2025, 1, 3, 0, 30, tzinfo=KST)
    assert t.trade_time.tzinfo is KST


def test_venue_and_code_fallbacks() -> None:
    assert tick_of(s3(exchname="NXT")).venue == "NXT"
    assert tick_of(s3(exchname=" KRX ")).venue == "KRX"
    assert tick_of(s3(exchname="")).venue == "KRX"
    assert tick_of(s3_without("exchname")).venue == "KRX"
    assert tick_of(s3_without("shcode", tr_key="000660  ")).code == "000660"
    assert tick_of(s3(shcode="", tr_key="000660")).code == "000660"
    assert tick_of(s3(shcode="035720", tr_key="000660")).code == "035720"  # body wins
    assert_error(s3_without("shcode", tr_key=""), "missing_field")


def test_unused_fields_may_be_missing() -> None:
    unused = ("opentime", "hightime", "lowtime", "cgubun", "mdvolume", "mdchecnt", "msvolume",
              "mschecnt", "w_avrg", "status", "jnilvolume")  # fmt: skip
    assert tick_of(s3_without(*unused)) == DOC_TICK


@pytest.mark.parametrize(
    "name",
    ["chetime", "sign", "change", "drate", "price", "open", "high", "low", "cvolume", "volume",
     "value", "cpower", "offerho", "bidho"],
)  # fmt: skip
def test_required_trade_fields(name: str) -> None:
    assert_error(s3_without(name), "missing_field")


BAD_NUMBERS = [
    ("price", "71,000"), ("price", " 71000"), ("price", "71000 "), ("price", "+71000"),
    ("price", "71000.0"), ("price", ""), ("price", "7e4"), ("price", "７１０００"),
    ("price", "0x1F"), ("price", "-"), ("price", "9" * 19), ("price", "9" * 5000),
    ("volume", "1_233_600"), ("value", "87654.5"), ("cvolume", "١٢"),  # Arabic-Indic digits
    ("drate", "0.71%"), ("drate", ".71"), ("drate", "1."), ("drate", "+0.71"),
    ("drate", "nan"), ("drate", "inf"), ("cpower", "strong"), ("cpower", "1e2"),
    ("change", "5 00"), ("offerho", "None"), ("bidho", "-0.5"),
    ("sign", "6"), ("sign", ""), ("sign", "+"), ("sign", " 2"),
    ("chetime", "93015"), ("chetime", "240000"), ("chetime", "09:30"), ("chetime", ""),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), BAD_NUMBERS)
def test_strict_numbers(name: str, value: str) -> None:
    assert_error(s3(**{name: value}), "bad_value")


def test_negative_and_zero_padded_numbers_are_decimal() -> None:
    t = tick_of(s3(price="0071000", cvolume="-3", cpower="-1.50", drate="00.71"))
    assert (t.price, t.trade_volume, t.strength, t.change_percent) == (71000, -3, -1.5, 0.71)


# --- H1_ / HA_ (§8.3) ---------------------------------------------------------------------------


def full_book_body() -> dict[str, str]:
    """All 52 fields of §8.3, per-level fields interleaved as in the portal table."""
    body = {"hotime": "093015"}
    for i in range(1, 11):
        body[f"offerho{i}"] = str(71000 + 100 * (i - 1))
        body[f"bidho{i}"] = str(70900 - 100 * (i - 1))
        body[f"offerrem{i}"] = str(1000 * i)
        body[f"bidrem{i}"] = str(2000 * i + 1)
    body.update({
        "totofferrem": "55000", "totbidrem": "110010", "donsigubun": "1", "shcode": "005930",
        "alloc_gubun": "", "volume": "1233600", "midprice": "70950", "offermidsumrem": "0",
        "bidmidsumrem": "0", "midsumrem": "0", "midsumremgubun": " ",
    })  # fmt: skip
    assert len(body) == 52
    return body


FULL_BOOK = OrderBook(
    source=SOURCE,
    venue="KRX",
    code="005930",
    quote_time=datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST),
    ask_prices=(71000, 71100, 71200, 71300, 71400, 71500, 71600, 71700, 71800, 71900),
    bid_prices=(70900, 70800, 70700, 70600, 70500, 70400, 70300, 70200, 70100, 70000),
    ask_sizes=(1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000),
    bid_sizes=(2001, 4001, 6001, 8001, 10001, 12001, 14001, 16001, 18001, 20001),
    total_ask_size=55000,
    total_bid_size=110010,
    expected_price=0,
    expected_volume=0,
    volume=1233600,
    received_ns=RECEIVED_NS,
)


@pytest.mark.parametrize("tr_cd", ["H1_", "HA_"])
def test_full_order_book(tr_cd: str) -> None:
    dec = decoder()
    assert decode_events(msg(tr_cd, "005930", full_book_body()), dec) == [FULL_BOOK]
    assert (dec.stats.frames, dec.stats.records) == (1, 1)


def test_order_book_tolerates_missing_keys_and_zero_levels() -> None:
    # Like the portal example: no mid-price fields, no volume, "0" for empty levels, "" flags,
    # and here also whole levels and totals absent.
    body = {"hotime": "153000", "offerho1": "71000", "bidho1": "70900", "offerrem1": "15",
            "bidrem1": "40", "offerho2": "0", "bidho2": "0", "offerrem2": "0", "bidrem2": "0",
            "offerho3": "", "bidrem3": "", "donsigubun": "", "shcode": "005930",
            "alloc_gubun": ""}  # fmt: skip
    (b,) = decode_events(msg("H1_", "005930", body))
    z8 = (0,) * 8
    assert b == OrderBook(
        source=SOURCE, venue="KRX", code="005930",
        quote_time=datetime(2025, 1, 2, 15, 30, tzinfo=KST),
        ask_prices=(71000, 0, *z8), bid_prices=(70900, 0, *z8),
        ask_sizes=(15, 0, *z8), bid_sizes=(40, 0, *z8),
        total_ask_size=0, total_bid_size=0, expected_price=0, expected_volume=0, volume=0,
        received_ns=RECEIVED_NS,
    )  # fmt: skip
    # only hotime and a code: an all-zero book
    (empty,) = decode_events(msg("HA_", "035720", {"hotime": "090000"}))
    assert isinstance(empty, OrderBook)
    assert empty.code == "035720" and empty.ask_prices == (0,) * 10 and empty.volume == 0


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [("hotime", "", "bad_value"), ("hotime", "25", "bad_value"), ("hotime", None, "missing_field"),
     ("offerho1", "71,000", "bad_value"), ("bidrem10", "1.5", "bad_value"),
     ("totbidrem", " 1", "bad_value"), ("volume", "x", "bad_value")],
)  # fmt: skip
def test_order_book_errors(name: str, value: str | None, reason: str) -> None:
    body = full_book_body()
    if value is None:
        del body[name]
    else:
        body[name] = value
    assert_error(msg("H1_", "005930", body), reason)


def test_order_book_without_code_uses_tr_key_or_fails() -> None:
    body = full_book_body()
    del body["shcode"]
    (b,) = decode_events(msg("H1_", "005930 ", body))
    assert b == FULL_BOOK
    assert_error(msg("H1_", "", body), "missing_field")


# --- message-level errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "bad_json"),
        ("not json", "bad_json"),
        ('{"header":{"tr_cd":"S3_"', "bad_json"),
        ('{"header":{"tr_cd":"S3_","tr_key":"\ud800"},"body":{}}', "bad_json"),  # lone surrogate
        ("[]", "bad_message"),
        ("null", "bad_message"),
        ('"PINGPONG"', "bad_message"),
        ("{}", "bad_message"),  # no header
        ('{"header":null,"body":{}}', "bad_message"),
        ('{"header":{"tr_cd":3},"body":{}}', "bad_message"),
        ('{"header":{"tr_cd":"S3_","tr_key":"005930"},"body":{"price":71000}}', "bad_message"),
        ('{"header":{"tr_cd":"S3_","tr_key":"005930"},"body":[]}', "bad_message"),
        ('{"header":{"tr_cd":"S3_","tr_key":"005930","rsp_cd":0},"body":null}', "bad_message"),
        ('{"header":{"tr_cd":"S3_","tr_key":"005930"},"body":null}', "no_body"),
        ('{"header":{"tr_cd":"NWS","tr_key":"NWS001"}}', "no_body"),
        # unknown TRs: ls.md lists them, this decoder does not read them
        (msg("JIF", "0", {"jangubun": "1", "jstatus": "21"}), "unknown_tr"),
        (msg("SC1", "", {"lineseq": "1"}), "unknown_tr"),
        (msg("US3", "U005930   ", S3_BODY), "unknown_tr"),
        (msg("s3_", "005930", S3_BODY), "unknown_tr"),
        (msg("", "005930", S3_BODY), "unknown_tr"),
        ('{"header":{"tr_id":"PING"}}', "unknown_tr"),  # §6: a guessed app-level ping
        ('{"header":{"tr_cd":"JIF"},"body":null}', "unknown_tr"),
    ],
)
def test_message_errors(text: str, reason: str) -> None:
    assert_error(text, reason)


def test_errors_accumulate_and_last_error_is_kept() -> None:
    dec = decoder()
    for text in ("x", "[]", msg("JIF", "0", {}), "y"):
        assert dec.decode(text, 0) == []
    assert dec.stats.errors == {"bad_json": 2, "bad_message": 1, "unknown_tr": 1}
    assert dec.last_error is not None and dec.last_error.reason == "bad_json"
    assert dec.decode(DOC_S3, RECEIVED_NS) == [DOC_TICK]
    assert dec.stats.as_dict() == {
        "frames": 5, "records": 1, "controls": 0,
        "errors": {"bad_json": 2, "bad_message": 1, "unknown_tr": 1}, "dropped": {},
    }  # fmt: skip


# --- never raises ---------------------------------------------------------------------------------

_SEEDS = (DOC_ACK, DOC_NWS, DOC_S3, msg("H1_", "005930", full_book_body()),
          msg("HA_", "035720", {"hotime": "090000"}), nws(), nws(title=""))  # fmt: skip
_ALPHABET = '{}[]":,\\ 0123456789-.eE+nultrfaSNWH_K3A삼\x00\ud800\u3000\n'


def _mutate(rng: random.Random, text: str) -> str:
    op = rng.randrange(8)
    i = rng.randrange(len(text) + 1)
    if op == 0:  # truncate
        return text[:i]
    if op == 1:  # delete a span
        return text[:i] + text[i + rng.randint(1, 8) :]
    if op == 2:  # insert characters
        return (
            text[:i] + "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 4))) + text[i:]
        )
    if op == 3:  # replace one character
        return text[:i] + rng.choice(_ALPHABET) + text[i + 1 :]
    # structured: keep valid JSON, disturb the header or the body
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:i] + text[i + 1 :]
    if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        return json.dumps([obj])
    body = obj.get("body") if isinstance(obj.get("body"), dict) else {}
    if op == 4 and body:  # one value replaced by junk of any JSON type
        key = rng.choice(sorted(body))
        body[key] = rng.choice(["", " ", "-", "1e9", "９", "9" * 30, None, 7, 1.5, [], {},
                                "\ud800", str(body[key]) * 3])  # fmt: skip
    elif op == 5 and body:  # one key removed
        del body[rng.choice(sorted(body))]
    elif op == 6:  # header field changed
        obj["header"][rng.choice(["tr_cd", "tr_key", "rsp_cd", "tr_type"])] = rng.choice(
            ["S3_", "K3_", "H1_", "HA_", "NWS", "JIF", "", None, 5, "00000"]
        )
    else:  # shape changed
        obj = rng.choice(
            [
                obj.get("body"),
                [obj],
                {"body": body},
                {"header": obj["header"]},
                {**obj, "body": "text"},
                {**obj, "extra": {"x": 1}},
            ]
        )
    try:
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    except (TypeError, ValueError):
        return text


def test_decode_never_raises_on_mutated_messages() -> None:
    rng = random.Random(20250102)
    dec = decoder()
    n = 5000
    kinds = {"list": 0, "ack": 0}
    for _ in range(n):
        text = rng.choice(_SEEDS)
        for _ in range(rng.randint(1, 3)):
            text = _mutate(rng, text)
        out = dec.decode(text, RECEIVED_NS)
        if isinstance(out, LsAck):
            kinds["ack"] += 1
        else:
            assert isinstance(out, list) and len(out) <= 1
            kinds["list"] += 1
    s = dec.stats
    # every message is exactly one of: an event, an ack, an error, a drop
    assert s.frames == n
    assert s.records + s.controls + sum(s.errors.values()) + sum(s.dropped.values()) == n
    assert kinds["ack"] == s.controls
    assert s.records > 100 and s.controls > 100  # the fuzz also reaches the good paths
    assert {"bad_json", "bad_message", "bad_value", "unknown_tr", "missing_field"} <= set(s.errors)


def test_decode_never_raises_on_random_text() -> None:
    rng = random.Random(7)
    dec = decoder()
    for _ in range(2000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40)))
        out = dec.decode(text, RECEIVED_NS)
        assert isinstance(out, list | LsAck)
    s = dec.stats
    assert s.frames == 2000
    assert s.records + s.controls + sum(s.errors.values()) + sum(s.dropped.values()) == 2000


# --- media table --------------------------------------------------------------------------------


def test_bundled_media_map() -> None:
    table = load_media_map()
    assert table == BUNDLED_MEDIA
    assert not any(k.startswith("_") for k in table)  # the note is not an id
    raw = json.loads((Path(__file__).parents[2] / "tradestream/feeds/ls/ls_media.json").read_text())
    assert "not the real ls table" in raw["_note"].lower()  # says what it is, and is not


def test_user_media_map(tmp_path: Path) -> None:
    path = tmp_path / "media.json"
    path.write_text(json.dumps({"_note": "mine", "comment": "x", "media": {"27": "자체매핑 "}},
                               ensure_ascii=False), encoding="utf-8")  # fmt: skip
    table = load_media_map(path)
    assert table == {"27": "자체매핑"}
    assert news_of(DOC_NWS, LsDecoder(SOURCE, table)).media == "자체매핑"


@pytest.mark.parametrize(
    "content", ['{"01": "연합뉴스"}', '{"media": {"01": 1}}', '{"media": []}', "not json"]
)
def test_bad_user_media_map(tmp_path: Path, content: str) -> None:
    path = tmp_path / "media.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError):
        load_media_map(path)


def test_missing_user_media_map(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_media_map(tmp_path / "nope.json")


# --- news generator ------------------------------------------------------------------------------

NAMES = [(t.code, t.name) for t in DEFAULT_TICKERS]
NOW = datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST)


def bodies(seed: int, n: int, **kw: object) -> list[dict[str, str]]:
    gen = NewsGenerator(NAMES, seed, **kw)  # type: ignore[arg-type]
    return [gen.next(NOW + timedelta(seconds=i // 3)) for i in range(n)]


def test_generator_is_deterministic_per_seed() -> None:
    a, b = bodies(42, 300), bodies(42, 300)
    assert a == b
    assert a != bodies(43, 300)
    assert len({x["title"] for x in a}) > 50  # not a degenerate sequence


def test_generator_body_shape() -> None:
    seen_counts = set()
    keys = []
    for i, body in enumerate(bodies(5, 600)):
        assert list(body) == ["date", "time", "id", "realkey", "title", "code", "bodysize"]
        assert all(isinstance(v, str) for v in body.values())
        stamp = (NOW + timedelta(seconds=i // 3)).strftime("%Y%m%d%H%M%S")
        assert (body["date"], body["time"]) == (stamp[:8], stamp[8:])
        assert len(body["realkey"]) == 24 and body["realkey"].isdigit()
        assert body["realkey"].startswith(stamp)
        keys.append(body["realkey"])
        assert len(body["code"]) % 12 == 0 and len(body["code"]) <= 36
        seen_counts.add(len(body["code"]) // 12)
        assert body["id"] in BUNDLED_MEDIA
        assert body["bodysize"].isdigit()
        assert len(body["title"].strip()) >= 5
    assert len(set(keys)) == len(keys)  # unique
    assert seen_counts == {0, 1, 2, 3}


def test_generated_news_decodes_with_matching_tickers_and_media() -> None:
    names = dict(NAMES)
    dec = LsDecoder(SOURCE, load_media_map())
    generated = bodies(9, 500)
    for body in generated:
        n = news_of(data_message("NWS", "NWS001", body), dec)
        codes = tuple(body["code"][i + 6 : i + 12] for i in range(0, len(body["code"]), 12))
        assert n.tickers == codes
        assert n.ticker == (codes[0] if codes else None)
        for code in codes:
            assert names[code] in n.title  # the headline names its companies
        assert (n.media_id, n.media) == (body["id"], BUNDLED_MEDIA[body["id"]])
        assert n.realkey == body["realkey"] and n.title == body["title"]
        assert n.body_size == int(body["bodysize"])
        assert n.published_at == datetime.strptime(
            body["date"] + body["time"], "%Y%m%d%H%M%S").replace(tzinfo=KST)  # fmt: skip
    assert dec.stats.records == 500 and dec.stats.dropped == {} and dec.stats.errors == {}


def test_generator_bad_titles_are_dropped_and_do_not_shift_the_rest() -> None:
    good, mixed = bodies(11, 400), bodies(11, 400, bad_title_rate=0.25)
    for g, m in zip(good, mixed, strict=True):
        assert {k: v for k, v in g.items() if k != "title"} == \
            {k: v for k, v in m.items() if k != "title"}  # fmt: skip
    dec = LsDecoder(SOURCE, load_media_map())
    for body in mixed:
        dec.decode(data_message("NWS", "NWS001", body), RECEIVED_NS)
    bad = sum(g["title"] != m["title"] for g, m in zip(good, mixed, strict=True))
    assert 60 < bad < 140
    assert dec.stats.records == 400 - bad
    assert sum(dec.stats.dropped.values()) == bad
    assert set(dec.stats.dropped) == {"empty_title", "short_title"}
    assert dec.stats.errors == {}
    all_bad = bodies(11, 50, bad_title_rate=1.0)
    assert all(len(b["title"].strip()) < 5 for b in all_bad)


def test_generator_options_and_time_zones() -> None:
    gen = NewsGenerator([("005930", "삼성전자")], 1, media_ids=["27"])
    utc = datetime(2025, 1, 2, 15, 30, 0, tzinfo=UTC)  # 00:30 KST on the 3rd
    body = gen.next(utc)
    assert (body["date"], body["time"], body["id"]) == ("20250103", "003000", "27")
    assert body["realkey"] == "20250103003000" + "0000000001"
    assert body["code"] in ("", "000000005930")
    naive = gen.next(datetime(2025, 1, 2, 9, 0, 0))  # naive: taken as KST wall time
    assert (naive["date"], naive["time"]) == ("20250102", "090000")
    assert naive["realkey"].endswith("0000000002")
    with pytest.raises(ValueError):
        NewsGenerator(NAMES, 1, bad_title_rate=1.5)
    with pytest.raises(ValueError):
        NewsGenerator(NAMES, 1, media_ids=[])
    no_tickers = NewsGenerator([], 3)
    assert all(no_tickers.next(NOW)["code"] == "" for _ in range(50))


# --- S3_ body from the KIS simulator ------------------------------------------------------------

# The SK hynix trade of test_kis_parser, field by field.
KIS_RECORD: dict[str, str] = {
    "MKSC_SHRN_ISCD": "000660", "STCK_CNTG_HOUR": "101502", "STCK_PRPR": "178500",
    "PRDY_VRSS_SIGN": "5", "PRDY_VRSS": "-1500", "PRDY_CTRT": "-0.83",
    "WGHN_AVRG_STCK_PRC": "178912.55", "STCK_OPRC": "180000", "STCK_HGPR": "181200",
    "STCK_LWPR": "177900", "ASKP1": "178600", "BIDP1": "178500", "CNTG_VOL": "37",
    "ACML_VOL": "845210", "ACML_TR_PBMN": "151219876500", "SELN_CNTG_CSNU": "3120",
    "SHNU_CNTG_CSNU": "2875", "NTBY_CNTG_CSNU": "-245", "CTTR": "93.41",
    "SELN_CNTG_SMTN": "437002", "SHNU_CNTG_SMTN": "408208", "CCLD_DVSN": "5",
    "SHNU_RATE": "48.30", "PRDY_VOL_VRSS_ACML_VOL_RATE": "42.26", "OPRC_HOUR": "090000",
    "OPRC_VRSS_PRPR_SIGN": "5", "OPRC_VRSS_PRPR": "-1500", "HGPR_HOUR": "091107",
    "HGPR_VRSS_PRPR_SIGN": "5", "HGPR_VRSS_PRPR": "-2700", "LWPR_HOUR": "094433",
    "LWPR_VRSS_PRPR_SIGN": "2", "LWPR_VRSS_PRPR": "600", "BSOP_DATE": "20250103",
    "NEW_MKOP_CLS_CODE": "20", "TRHT_YN": "N", "ASKP_RSQN1": "2210", "BIDP_RSQN1": "5310",
    "TOTAL_ASKP_RSQN": "120450", "TOTAL_BIDP_RSQN": "98770", "VOL_TNRT": "0.12",
    "PRDY_SMNS_HOUR_ACML_VOL": "1002345", "PRDY_SMNS_HOUR_ACML_VOL_RATE": "84.32",
    "HOUR_CLS_CODE": "0", "MRKT_TRTM_CLS_CODE": "", "VI_STND_PRC": "180000",
}  # fmt: skip


def test_s3_body_field_by_field() -> None:
    fields = [KIS_RECORD[name] for name in H0STCNT0_FIELDS]
    assert s3_body(fields) == {
        "chetime": "101502", "sign": "5", "change": "1500", "drate": "-0.83",
        "price": "178500", "opentime": "090000", "open": "180000", "hightime": "091107",
        "high": "181200", "lowtime": "094433", "low": "177900", "cgubun": "-",
        "cvolume": "37", "volume": "845210", "value": "151219", "mdvolume": "437002",
        "mdchecnt": "3120", "msvolume": "408208", "mschecnt": "2875", "cpower": "93.41",
        "w_avrg": "178913", "offerho": "178600", "bidho": "178500", "status": "00",
        "jnilvolume": "1002345", "shcode": "000660", "exchname": "KRX",
    }  # fmt: skip
    assert set(s3_body(fields)) == set(S3_BODY)  # exactly the §8.2 fields
    buy = dict(KIS_RECORD, CCLD_DVSN="1")
    assert s3_body([buy[n] for n in H0STCNT0_FIELDS])["cgubun"] == "+"
    with pytest.raises(ValueError):
        s3_body(fields[:45])


def test_s3_body_round_trip_matches_kis_decoding() -> None:
    market = SimMarket(DEFAULT_TICKERS, 2024)
    kis, ls = KisDecoder("x"), LsDecoder("x", {})
    # received on the same KST day as NOW, so the LS receive date equals KIS's BSOP_DATE
    received_ns = int(NOW.timestamp()) * 1_000_000_000
    signs = set()
    for i in range(600):
        rec = market.trade(NOW + timedelta(seconds=i))
        (k,) = kis.decode("0|H0STCNT0|001|" + "^".join(rec), received_ns)  # type: ignore[misc]
        text = data_message("S3_", rec[0], s3_body(rec))
        out = ls.decode(text, received_ns)
        assert isinstance(out, list) and len(out) == 1
        t = out[0]
        assert isinstance(t, Tick) and isinstance(k, Tick)
        # value travels in million KRW: LS loses what is below one million
        assert t == _replace(k, value=k.value // 1_000_000 * 1_000_000)
        assert (t.price, t.volume, t.trade_volume, t.change) == (
            k.price, k.volume, k.trade_volume, k.change)  # fmt: skip
        signs.add(rec[3])
    assert {"2", "5"} <= signs  # both directions were exercised
    assert ls.stats.errors == {} and kis.stats.errors == {}


def test_data_message_shape() -> None:
    text = data_message("S3_", "005930", {"price": "71000", "title": "삼성"})
    assert text == ('{"header":{"tr_cd":"S3_","tr_key":"005930"},'
                    '"body":{"price":"71000","title":"삼성"}}')  # fmt: skip


def test_a_real_feed_without_a_table_names_no_media_and_the_simulator_has_its_own() -> None:
    from dataclasses import replace

    from tradestream.config import LsSettings, Settings
    from tradestream.feeds.ls import use_simulator
    from tradestream.feeds.ls.adapter import LsAdapter

    real = LsSettings(ws_url="wss://openapi.ls-sec.co.kr:9443/websocket", rest_url="https://x")
    assert LsAdapter(real, "ls-1").decoder.media == {}  # ids will be stored as unknown:<id>
    on_sim = use_simulator(replace(Settings(), ls=LsSettings()), "http://sim", "ws://sim/ws")
    assert LsAdapter(on_sim.ls, "ls-1").decoder.media == load_media_map()  # the sim's ids
    header = LsAdapter(on_sim.ls, "ls-1").recording_header()
    assert [kind for kind, _ in header] == ["media"]
