"""KIS wire formats (kis.md §4-§7): data frames built field by field, control frames, drift."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from tradestream.errors import FrameError
from tradestream.events import KST, Tick
from tradestream.feeds.kis.codec import (
    H0STCNT0_FIELDS,
    Ack,
    AckResult,
    KisDecoder,
    PingPong,
    parse_control,
    subscribe_message,
)

SOURCE = "kis-test"
RECEIVED_NS = 1_735_777_815_123_456_789

# kis.md §7.1, the table column "field", in the documented order (index = position).
DOC_H0STCNT0 = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS",
    "PRDY_CTRT", "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1",
    "BIDP1", "CNTG_VOL", "ACML_VOL", "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU",
    "NTBY_CNTG_CSNU", "CTTR", "SELN_CNTG_SMTN", "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE",
    "PRDY_VOL_VRSS_ACML_VOL_RATE", "OPRC_HOUR", "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR",
    "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN", "HGPR_VRSS_PRPR", "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN",
    "LWPR_VRSS_PRPR", "BSOP_DATE", "NEW_MKOP_CLS_CODE", "TRHT_YN", "ASKP_RSQN1", "BIDP_RSQN1",
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL",
    "PRDY_SMNS_HOUR_ACML_VOL_RATE", "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE", "VI_STND_PRC",
)  # fmt: skip

# One plausible SK hynix trade, field by field (values chosen for this test, not the simulator's).
BASE_RECORD: dict[str, str] = {
    "MKSC_SHRN_ISCD": "000660",
    "STCK_CNTG_HOUR": "101502",
    "STCK_PRPR": "178500",
    "PRDY_VRSS_SIGN": "5",
    "PRDY_VRSS": "-1500",
    "PRDY_CTRT": "-0.83",
    "WGHN_AVRG_STCK_PRC": "178912.55",
    "STCK_OPRC": "180000",
    "STCK_HGPR": "181200",
    "STCK_LWPR": "177900",
    "ASKP1": "178600",
    "BIDP1": "178500",
    "CNTG_VOL": "37",
    "ACML_VOL": "845210",
    "ACML_TR_PBMN": "151219876500",
    "SELN_CNTG_CSNU": "3120",
    "SHNU_CNTG_CSNU": "2875",
    "NTBY_CNTG_CSNU": "-245",
    "CTTR": "93.41",
    "SELN_CNTG_SMTN": "437002",
    "SHNU_CNTG_SMTN": "408208",
    "CCLD_DVSN": "5",
    "SHNU_RATE": "48.30",
    "PRDY_VOL_VRSS_ACML_VOL_RATE": "42.26",
    "OPRC_HOUR": "090000",
    "OPRC_VRSS_PRPR_SIGN": "5",
    "OPRC_VRSS_PRPR": "-1500",
    "HGPR_HOUR": "091107",
    "HGPR_VRSS_PRPR_SIGN": "5",
    "HGPR_VRSS_PRPR": "-2700",
    "LWPR_HOUR": "094433",
    "LWPR_VRSS_PRPR_SIGN": "2",
    "LWPR_VRSS_PRPR": "600",
    "BSOP_DATE": "20250103",
    "NEW_MKOP_CLS_CODE": "20",
    "TRHT_YN": "N",
    "ASKP_RSQN1": "2210",
    "BIDP_RSQN1": "5310",
    "TOTAL_ASKP_RSQN": "120450",
    "TOTAL_BIDP_RSQN": "98770",
    "VOL_TNRT": "0.12",
    "PRDY_SMNS_HOUR_ACML_VOL": "1002345",
    "PRDY_SMNS_HOUR_ACML_VOL_RATE": "84.32",
    "HOUR_CLS_CODE": "0",
    "MRKT_TRTM_CLS_CODE": "",
    "VI_STND_PRC": "180000",
}

BASE_TICK = Tick(
    source=SOURCE,
    venue="KRX",
    code="000660",
    trade_time=datetime(2025, 1, 3, 10, 15, 2, tzinfo=KST),
    price=178500,
    change=-1500,
    change_percent=-0.83,
    open=180000,
    high=181200,
    low=177900,
    ask=178600,
    bid=178500,
    trade_volume=37,
    volume=845210,
    value=151219876500,
    strength=93.41,
    received_ns=RECEIVED_NS,
)


def record(**overrides: str) -> list[str]:
    """The 46 values of one H0STCNT0 record: BASE_RECORD with some fields replaced by name."""
    unknown = set(overrides) - set(H0STCNT0_FIELDS)
    assert not unknown, unknown
    return [overrides.get(name, BASE_RECORD[name]) for name in H0STCNT0_FIELDS]


def frame(tr_id: str, *records: list[str], enc: str = "0", count: str | None = None) -> str:
    """``enc|tr_id|count|payload`` with the records simply concatenated (kis.md §6)."""
    n = f"{len(records):03d}" if count is None else count
    return f"{enc}|{tr_id}|{n}|" + "^".join(v for r in records for v in r)


def decode_ticks(text: str, decoder: KisDecoder | None = None) -> list[Tick]:
    dec = decoder or KisDecoder(SOURCE)
    out = dec.decode(text, RECEIVED_NS)
    assert isinstance(out, list)
    assert dec.last_error is None, dec.last_error
    return out


# --- layout --------------------------------------------------------------------------------


def test_field_layout_matches_kis_md_7_1() -> None:
    assert H0STCNT0_FIELDS == DOC_H0STCNT0
    assert len(H0STCNT0_FIELDS) == 46
    assert set(BASE_RECORD) == set(H0STCNT0_FIELDS)


def test_record_helper_places_values_at_documented_indices() -> None:
    r = record(STCK_PRPR="1", ACML_VOL="2", VI_STND_PRC="3")
    assert len(r) == 46
    assert (r[0], r[2], r[13], r[33], r[45]) == ("000660", "1", "2", "20250103", "3")


# --- data frames ---------------------------------------------------------------------------


def test_single_record_frame_gives_exact_tick() -> None:
    dec = KisDecoder(SOURCE)
    ticks = decode_ticks(frame("H0STCNT0", record()), dec)
    assert ticks == [BASE_TICK]
    t = ticks[0]
    assert t.trade_time.utcoffset() == timedelta(hours=9)
    assert t.trade_time.tzinfo is KST
    assert t.volume == 845210 and t.trade_volume == 37  # ACML_VOL vs CNTG_VOL
    assert t.key == ("KRX", "000660", datetime(2025, 1, 3, 10, 15, 2, tzinfo=KST), 845210)
    assert (dec.stats.frames, dec.stats.records, dec.stats.controls) == (1, 1, 0)
    assert dec.stats.errors == {} and dec.stats.drift == 0 and dec.stats.drift_sample is None


@pytest.mark.parametrize(
    ("tr_id", "venue"), [("H0STCNT0", "KRX"), ("H0NXCNT0", "NXT"), ("H0UNCNT0", "UN")]
)
def test_venue_follows_tr_id(tr_id: str, venue: str) -> None:
    ticks = decode_ticks(frame(tr_id, record()))
    assert len(ticks) == 1
    assert ticks[0].venue == venue
    assert ticks[0] == Tick(**{**_as_dict(BASE_TICK), "venue": venue})


def _as_dict(t: Tick) -> dict[str, object]:
    return {f: getattr(t, f) for f in t.__struct_fields__}


def test_source_and_received_ns_are_passed_through() -> None:
    dec = KisDecoder("kis-7")
    out = dec.decode(frame("H0STCNT0", record()), 42)
    assert isinstance(out, list) and len(out) == 1
    assert (out[0].source, out[0].received_ns) == ("kis-7", 42)


@pytest.mark.parametrize(
    ("sign", "change", "pct", "expected_change", "expected_pct"),
    [
        ("2", "500", "0.71", 500, 0.71),
        ("5", "-1500", "-0.83", -1500, -0.83),
        ("3", "0", "0.00", 0, 0.0),
        ("1", "54000", "30.00", 54000, 30.0),
        ("4", "-54000", "-30.00", -54000, -30.0),
    ],
)
def test_signed_change_and_percent(
    sign: str, change: str, pct: str, expected_change: int, expected_pct: float
) -> None:
    (t,) = decode_ticks(
        frame("H0STCNT0", record(PRDY_VRSS_SIGN=sign, PRDY_VRSS=change, PRDY_CTRT=pct))
    )
    assert t.change == expected_change
    assert t.change_percent == expected_pct


def test_empty_optional_numbers_mean_zero() -> None:
    (t,) = decode_ticks(frame("H0STCNT0", record(PRDY_VRSS="", CTTR="", ACML_TR_PBMN="")))
    assert (t.change, t.strength, t.value) == (0, 0.0, 0)


# kis.md §7.1, "Example (made-up values, two records in one frame)", copied literally.
DOC_EXAMPLE_FRAME = (
    "0|H0STCNT0|002|005930^093015^71000^2^500^0.71^70812.40^70600^71200^70400^71000^70900^12^"
    "1233600^87654321000^4210^5105^895^112.35^580000^651600^1^52.90^61.22^090000^2^400^091512^"
    "5^-200^090207^2^600^20250102^20^N^15320^40110^512300^803400^0.02^2015000^61.22^0^^70500^"
    "005930^093015^70900^2^500^0.71^70812.40^70600^71200^70400^71000^70900^3^1233603^"
    "87654321000^4210^5105^895^112.35^580000^651600^5^52.90^61.22^090000^2^400^091512^5^-200^"
    "090207^2^600^20250102^20^N^15320^40110^512300^803400^0.02^2015000^61.22^0^^70500"
)


def test_kis_md_two_record_example() -> None:
    assert len(DOC_EXAMPLE_FRAME.split("|", 3)[3].split("^")) == 92
    dec = KisDecoder(SOURCE)
    ticks = decode_ticks(DOC_EXAMPLE_FRAME, dec)
    common = dict(
        source=SOURCE, venue="KRX", code="005930",
        trade_time=datetime(2025, 1, 2, 9, 30, 15, tzinfo=KST), change=500, change_percent=0.71,
        open=70600, high=71200, low=70400, ask=71000, bid=70900, value=87654321000,
        strength=112.35, received_ns=RECEIVED_NS,
    )  # fmt: skip
    assert ticks == [
        Tick(price=71000, trade_volume=12, volume=1233600, **common),
        Tick(price=70900, trade_volume=3, volume=1233603, **common),
    ]
    assert (dec.stats.frames, dec.stats.records, dec.stats.drift) == (1, 2, 0)


def test_three_record_frame() -> None:
    recs = [
        record(MKSC_SHRN_ISCD="005930", STCK_PRPR="71000", CNTG_VOL="1", ACML_VOL="100"),
        record(MKSC_SHRN_ISCD="000660", STCK_PRPR="178400", CNTG_VOL="2", ACML_VOL="200",
               STCK_CNTG_HOUR="101503"),
        record(MKSC_SHRN_ISCD="035420", STCK_PRPR="190500", CNTG_VOL="3", ACML_VOL="300",
               BSOP_DATE="20241230", STCK_CNTG_HOUR="153000"),
    ]  # fmt: skip
    text = frame("H0STCNT0", *recs)
    assert text.startswith("0|H0STCNT0|003|005930^")
    dec = KisDecoder(SOURCE)
    ticks = decode_ticks(text, dec)
    assert [(t.code, t.price, t.trade_volume, t.volume, t.trade_time) for t in ticks] == [
        ("005930", 71000, 1, 100, datetime(2025, 1, 3, 10, 15, 2, tzinfo=KST)),
        ("000660", 178400, 2, 200, datetime(2025, 1, 3, 10, 15, 3, tzinfo=KST)),
        ("035420", 190500, 3, 300, datetime(2024, 12, 30, 15, 30, 0, tzinfo=KST)),
    ]
    assert dec.stats.records == 3 and dec.stats.drift == 0


# --- malformed data frames -----------------------------------------------------------------

GOOD = record()
MALFORMED = [
    # field count: values do not split into `count` records
    pytest.param(frame("H0STCNT0", GOOD, GOOD) + "^x", "field_count", id="93-values-for-2"),
    pytest.param(frame("H0STCNT0", GOOD, GOOD, count="003"), "field_count", id="92-values-for-3"),
    pytest.param(frame("H0STCNT0", GOOD, count="047"), "field_count", id="count-exceeds-values"),
    pytest.param(frame("H0STCNT0", GOOD, count="002"), "field_count", id="23-fields-each"),
    # bad numbers
    pytest.param(frame("H0STCNT0", record(STCK_PRPR="abc")), "bad_value", id="price-abc"),
    pytest.param(frame("H0STCNT0", record(STCK_PRPR="")), "bad_value", id="price-empty"),
    pytest.param(frame("H0STCNT0", record(STCK_PRPR="71000.5")), "bad_value", id="price-float"),
    pytest.param(frame("H0STCNT0", record(STCK_PRPR="7 1000")), "bad_value", id="price-space"),
    pytest.param(frame("H0STCNT0", record(ACML_VOL="")), "bad_value", id="acml-vol-empty"),
    pytest.param(frame("H0STCNT0", record(CNTG_VOL="1.5")), "bad_value", id="cntg-vol-float"),
    pytest.param(frame("H0STCNT0", record(CTTR="strong")), "bad_value", id="cttr-text"),
    pytest.param(frame("H0STCNT0", record(BSOP_DATE="20251301")), "bad_value", id="month-13"),
    pytest.param(frame("H0STCNT0", record(BSOP_DATE="")), "bad_value", id="date-empty"),
    pytest.param(frame("H0STCNT0", record(STCK_CNTG_HOUR="246000")), "bad_value", id="hour-24"),
    pytest.param(frame("H0STCNT0", record(STCK_CNTG_HOUR="09:30")), "bad_value", id="time-colon"),
    # kis.md §7.1: STCK_CNTG_HOUR is HHMMSS and BSOP_DATE is YYYYMMDD; a truncated value must not
    # silently become another time (the parser slices [4:6] of "09301" to "1" -> 09:30:01).
    pytest.param(frame("H0STCNT0", record(STCK_CNTG_HOUR="09301")), "bad_value",
                 id="time-5-digits"),
    pytest.param(frame("H0STCNT0", record(BSOP_DATE="2025013")), "bad_value",
                 id="date-7-digits"),
    # encryption flag
    pytest.param(frame("H0STCNT0", GOOD, enc="2"), "bad_frame", id="enc-2"),
    pytest.param(frame("H0STCNT0", GOOD, enc=""), "bad_frame", id="enc-empty"),
    pytest.param(frame("H0STCNT0", GOOD, enc="00"), "bad_frame", id="enc-00"),
    # record count
    pytest.param(frame("H0STCNT0", GOOD, count="000"), "bad_frame", id="count-0"),
    pytest.param(frame("H0STCNT0", GOOD, count=""), "bad_frame", id="count-empty"),
    pytest.param(frame("H0STCNT0", GOOD, count="-01"), "bad_frame", id="count-negative"),
    pytest.param(frame("H0STCNT0", GOOD, count="0x1"), "bad_frame", id="count-hex"),
    pytest.param(frame("H0STCNT0", GOOD, count=" 01"), "bad_frame", id="count-space"),
    # str.isdigit() accepts "²", int() does not: must still be a counted bad_frame, not a raise
    pytest.param(frame("H0STCNT0", GOOD, count="00\u00b2"), "bad_frame", id="count-superscript"),
    # fewer than 4 '|' parts
    pytest.param("0|H0STCNT0|001", "bad_frame", id="3-parts"),
    pytest.param("0|H0STCNT0", "bad_frame", id="2-parts"),
    pytest.param("0", "bad_frame", id="1-part"),
    pytest.param("", "bad_frame", id="empty-text"),
    pytest.param("hello world", "bad_frame", id="garbage"),
    # unknown tr_id
    # H0STANC0 (expected price) is a real KIS TR that this parser does not support
    pytest.param(frame("H0STANC0", GOOD), "unknown_tr", id="expected-price-tr"),
    # a supported TR with a trade record: 46 fields is not an order book layout
    pytest.param(frame("H0STASP0", GOOD), "field_count", id="orderbook-tr-trade-record"),
    pytest.param(frame("h0stcnt0", GOOD), "unknown_tr", id="lower-case"),
    pytest.param(frame("", GOOD), "unknown_tr", id="empty-tr"),
    pytest.param("1|H0STXXX0|001|R0I5c2VjcmV0", "unknown_tr", id="encrypted-unknown-tr"),
    # the notice TR is known, but no ack has brought its key yet (kis.md §6.1)
    pytest.param("1|H0STCNI0|001|R0I5c2VjcmV0", "no_key", id="encrypted-notice-no-key"),
    # encrypted payload on a trade TR
    pytest.param("1|H0STCNT0|001|R0I1cklYWlptZllTemM0bnZKQ3E=", "unexpected_encryption",
                 id="enc-1-krx"),
    pytest.param(frame("H0NXCNT0", GOOD, enc="1"), "unexpected_encryption", id="enc-1-nxt"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), MALFORMED)
def test_malformed_frame_is_counted_not_raised(text: str, reason: str) -> None:
    dec = KisDecoder(SOURCE)
    assert dec.decode(text, RECEIVED_NS) == []
    assert dec.stats.errors == {reason: 1}
    assert isinstance(dec.last_error, FrameError)
    assert dec.last_error.reason == reason
    assert (dec.stats.frames, dec.stats.records, dec.stats.controls) == (1, 0, 0)
    assert dec.stats.drift == 0


def test_errors_accumulate_per_reason() -> None:
    dec = KisDecoder(SOURCE)
    for text in ("0|H0STCNT0|001", "x", frame("H0STANC0", GOOD)):
        assert dec.decode(text, 0) == []
    assert dec.stats.errors == {"bad_frame": 2, "unknown_tr": 1}
    assert dec.last_error is not None and dec.last_error.reason == "unknown_tr"
    assert dec.decode(frame("H0STCNT0", GOOD), RECEIVED_NS) == [BASE_TICK]
    assert dec.stats.as_dict() == {
        "frames": 4, "records": 1, "controls": 0,
        "errors": {"bad_frame": 2, "unknown_tr": 1}, "drift": 0, "drift_sample": None,
        "layouts": {},
    }  # fmt: skip


# --- schema drift --------------------------------------------------------------------------


def drifted(**overrides: str) -> list[str]:
    """A record with two fields appended after VI_STND_PRC (48 fields)."""
    return [*record(**overrides), "X46", "X47"]


@pytest.mark.parametrize("n_records", [1, 2])
def test_drifted_records_are_accepted_and_counted(n_records: int) -> None:
    recs = [drifted(MKSC_SHRN_ISCD=f"00000{k}", ACML_VOL=str(1000 + k)) for k in range(n_records)]
    text = frame("H0STCNT0", *recs)
    assert text.split("|")[2] == f"{n_records:03d}"
    dec = KisDecoder(SOURCE)
    ticks = decode_ticks(text, dec)
    assert ticks == [
        Tick(**{**_as_dict(BASE_TICK), "code": f"00000{k}", "volume": 1000 + k})
        for k in range(n_records)
    ]
    assert dec.stats.drift == 1
    assert dec.stats.drift_sample == text
    assert dec.stats.as_dict()["drift_sample"] == text  # shown in the status endpoint
    assert dec.stats.records == n_records
    assert dec.stats.errors == {}
    assert dec.decode(text, RECEIVED_NS) == ticks
    assert dec.stats.drift == 2


def test_drift_sample_is_truncated_to_2000_chars() -> None:
    text = frame("H0STCNT0", *[drifted() for _ in range(10)])
    assert len(text) > 2000
    dec = KisDecoder(SOURCE)
    assert len(decode_ticks(text, dec)) == 10
    assert dec.stats.drift_sample == text[:2000]


@pytest.mark.parametrize("n_fields", [20, 33])
@pytest.mark.parametrize("n_records", [1, 2])
def test_too_short_records_are_an_error(n_fields: int, n_records: int) -> None:
    text = frame("H0STCNT0", *[record()[:n_fields] for _ in range(n_records)])
    dec = KisDecoder(SOURCE)
    assert dec.decode(text, RECEIVED_NS) == []
    assert dec.stats.errors == {"field_count": 1}
    assert dec.last_error is not None and dec.last_error.reason == "field_count"
    assert (dec.stats.drift, dec.stats.drift_sample, dec.stats.records) == (0, None, 0)


# --- control frames ------------------------------------------------------------------------

PING = '{"header":{"tr_id":"PINGPONG","datetime":"20250102093015"}}'


@pytest.mark.parametrize(
    "text",
    [
        PING,
        '{ "header" : { "datetime" : "20250102093015", "tr_id" : "PINGPONG" } }',
        '{"header":{"tr_id":"PINGPONG"},"body":{"rt_cd":"0"}}',
    ],
)
def test_pingpong_keeps_exact_raw_text(text: str) -> None:
    assert parse_control(text) == PingPong(raw=text)
    dec = KisDecoder(SOURCE)
    out = dec.decode(text, RECEIVED_NS)
    assert isinstance(out, PingPong) and out.raw == text
    assert (dec.stats.frames, dec.stats.controls, dec.stats.errors) == (1, 1, {})


# kis.md §5.1, copied literally.
DOC_SUCCESS_ACK = """{
  "header": {"tr_id": "H0STCNI0", "tr_key": "myhtsid", "encrypt": "Y"},
  "body": {
    "rt_cd": "0",
    "msg_cd": "OPSP0000",
    "msg1": "SUBSCRIBE SUCCESS",
    "output": {"iv": "0123456789abcdef", "key": "abcdefghijklmnopqrstuvwxyz012345"}
  }
}"""


def test_success_ack_with_key_and_iv() -> None:
    expected = Ack(
        tr_id="H0STCNI0", tr_key="myhtsid", result=AckResult.SUBSCRIBED, msg_cd="OPSP0000",
        msg1="SUBSCRIBE SUCCESS", encrypt=True,
        key="abcdefghijklmnopqrstuvwxyz012345", iv="0123456789abcdef",
    )  # fmt: skip
    assert parse_control(DOC_SUCCESS_ACK) == expected
    dec = KisDecoder(SOURCE)
    assert dec.decode(DOC_SUCCESS_ACK, RECEIVED_NS) == expected
    assert (dec.stats.controls, dec.stats.records, dec.stats.errors) == (1, 0, {})


def test_refusal_example_without_output() -> None:
    # kis.md §5.2 example refusal, copied literally.
    text = (
        '{"header":{"tr_id":"H0STCNT0","tr_key":"000660","encrypt":"N"},\n'
        ' "body":{"rt_cd":"1","msg_cd":"OPSP0008","msg1":"MAX SUBSCRIBE OVER"}}'
    )
    assert parse_control(text) == Ack(
        tr_id="H0STCNT0", tr_key="000660", result=AckResult.LIMIT_EXCEEDED, msg_cd="OPSP0008",
        msg1="MAX SUBSCRIBE OVER", encrypt=False, key=None, iv=None,
    )  # fmt: skip


def ack_text(msg_cd: str, msg1: str, rt_cd: str, tr_key: str = "005930") -> str:
    return json.dumps(
        {
            "header": {"tr_id": "H0STCNT0", "tr_key": tr_key, "encrypt": "N",
                       "datetime": "20250102093015"},
            "body": {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1},
        }
    )  # fmt: skip


# kis.md §5.2 table: msg_cd, msg1 as reported, rt_cd as the doc describes it.
@pytest.mark.parametrize(
    ("msg_cd", "msg1", "rt_cd", "result"),
    [
        ("OPSP0000", "SUBSCRIBE SUCCESS", "0", AckResult.SUBSCRIBED),
        ("OPSP0001", "UNSUBSCRIBE SUCCESS", "0", AckResult.UNSUBSCRIBED),
        ("OPSP0002", "ALREADY IN SUBSCRIBE", "1", AckResult.ALREADY_SUBSCRIBED),
        ("OPSP0003", "UNSUBSCRIBE ERROR(not found!)", "1", AckResult.NOT_SUBSCRIBED),
        ("OPSP0008", "MAX SUBSCRIBE OVER", "1", AckResult.LIMIT_EXCEEDED),
        ("OPSP0011", "invalid approval : NOT FOUND", "1", AckResult.INVALID_APPROVAL_KEY),
        ("OPSP8991", "SUBSCRIBE ERROR : invalid tr_id", "1", AckResult.UNKNOWN_TR),
        ("OPSP8992", "SUBSCRIBE ERROR : invalid tr_key", "1", AckResult.INVALID_TR_KEY),
        ("OPSP8993", "JSON PARSING ERROR : invalid tr_key", "1", AckResult.INVALID_TR_KEY),
        ("OPSP9990", "JSON PARSING ERROR : tr_key not found", "1", AckResult.INVALID_TR_KEY),
        ("OPSP8996", "ALREADY IN USE appkey", "1", AckResult.KEY_IN_USE),
        # unknown codes: rt_cd decides, msg1 tells unsubscribe from subscribe
        ("OPSP0100", "UNSUBSCRIBE SUCCESS", "0", AckResult.UNSUBSCRIBED),
        ("OPSP0100", "unsubscribe success", "0", AckResult.UNSUBSCRIBED),
        ("OPSP0100", "SUBSCRIBE SUCCESS", "0", AckResult.SUBSCRIBED),
        ("", "", "0", AckResult.SUBSCRIBED),
        ("OPSP0007", "SUBSCRIBE INTERNAL ERROR", "1", AckResult.ERROR),
        ("OPSP9999", "JSON PARSING ERROR : invalid json format", "9", AckResult.ERROR),
        ("OPSP0100", "UNSUBSCRIBE SUCCESS", "1", AckResult.ERROR),
        ("", "", "", AckResult.ERROR),
    ],
)
def test_message_codes_map_to_ack_results(
    msg_cd: str, msg1: str, rt_cd: str, result: AckResult
) -> None:
    assert parse_control(ack_text(msg_cd, msg1, rt_cd)) == Ack(
        tr_id="H0STCNT0", tr_key="005930", result=result, msg_cd=msg_cd, msg1=msg1,
        encrypt=False, key=None, iv=None,
    )  # fmt: skip


@pytest.mark.parametrize("result", list(AckResult))
def test_ack_live_only_for_subscribed_and_already_subscribed(result: AckResult) -> None:
    ack = Ack(tr_id="H0STCNT0", tr_key="005930", result=result, msg_cd="", msg1="")
    assert ack.live is (result in (AckResult.SUBSCRIBED, AckResult.ALREADY_SUBSCRIBED))


@pytest.mark.parametrize("tr_key", ["005930    ", "  005930", "005930\t"])
def test_padded_tr_key_is_stripped(tr_key: str) -> None:
    ack = parse_control(ack_text("OPSP0000", "SUBSCRIBE SUCCESS", "0", tr_key=tr_key))
    assert isinstance(ack, Ack)
    assert ack.tr_key == "005930"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "bad_json"),
        ("{", "bad_json"),
        ('{"header":', "bad_json"),
        ("{}", "bad_json"),  # no header
        ('{"body":{"rt_cd":"0","msg_cd":"OPSP0000","msg1":"SUBSCRIBE SUCCESS"}}', "bad_json"),
        ('{"header":{"tr_id":1}}', "bad_json"),
        ('{"header":"PINGPONG"}', "bad_json"),
        ('{"header":{"tr_id":"H0STCNT0","tr_key":"005930","encrypt":"N"}}', "bad_control"),
        ('{"header":{"tr_id":"H0STCNT0"},"body":null}', "bad_control"),
    ],
)
def test_bad_control_frames(text: str, reason: str) -> None:
    with pytest.raises(FrameError) as exc_info:
        parse_control(text)
    assert exc_info.value.reason == reason
    dec = KisDecoder(SOURCE)
    assert dec.decode(text, RECEIVED_NS) == []
    assert dec.stats.errors == {reason: 1}
    assert dec.last_error is not None and dec.last_error.reason == reason
    assert (dec.stats.frames, dec.stats.controls) == (1, 1)


def test_frame_error_message_and_reason() -> None:
    assert str(FrameError("bad_frame", "detail")) == "bad_frame: detail"
    assert str(FrameError("bad_frame")) == "bad_frame"
    assert isinstance(FrameError("x"), ValueError)


# --- subscribe / unsubscribe request (kis.md §4) ----------------------------------------------


@pytest.mark.parametrize(("subscribe", "tr_type"), [(True, "1"), (False, "2")])
def test_subscribe_message_structure(subscribe: bool, tr_type: str) -> None:
    text = subscribe_message("appr-key-123", "H0STCNT0", "005930", subscribe=subscribe)
    assert json.loads(text) == {
        "header": {
            "approval_key": "appr-key-123",
            "custtype": "P",
            "tr_type": tr_type,
            "content-type": "utf-8",
        },
        "body": {"input": {"tr_id": "H0STCNT0", "tr_key": "005930"}},
    }


def test_subscribe_message_default_is_register_and_custtype_passes_through() -> None:
    msg = json.loads(subscribe_message("k", "H0UNCNT0", "000660", custtype="B"))
    assert msg["header"]["tr_type"] == "1"
    assert msg["header"]["custtype"] == "B"
    assert msg["body"]["input"] == {"tr_id": "H0UNCNT0", "tr_key": "000660"}
