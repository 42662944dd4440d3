"""KIS domestic index updates, H0UPCNT0 (docs/kis-index.md): decoder, simulator model, server.

Frames are built field by field from the official column list (not from the simulator), except
in the simulator round trips. The first frame is KIS's own example; other values are made up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tradestream.config import SimSettings
from tradestream.events import KST, IndexTick
from tradestream.feeds.kis.codec import (
    H0UPCNT0_FIELDS,
    AckResult,
    KisDecoder,
    parse_control,
    subscribe_message,
)
from tradestream.sim.market import (
    DEFAULT_TICKERS,
    KOSDAQ_CODES,
    SIM_INDEXES,
    SimMarket,
    SimTicker,
    data_frame,
)
from tradestream.sim.server import INDEX_INTERVAL_S, KIS_INDEX_TR, SimControl, Simulator

SOURCE = "kis-test"
# 2025-01-02 00:30:15.123456789 UTC = 2025-01-02 09:30:15 KST
RECEIVED_NS = 1_735_777_815_123_456_789

# The official column list, lower case as published (open-trading-api,
# examples_llm/domestic_stock/index_ccnl/index_ccnl.py).
OFFICIAL_COLUMNS = (
    "bstp_cls_code", "bsop_hour", "prpr_nmix", "prdy_vrss_sign", "bstp_nmix_prdy_vrss",
    "acml_vol", "acml_tr_pbmn", "pcas_vol", "pcas_tr_pbmn", "prdy_ctrt", "oprc_nmix",
    "nmix_hgpr", "nmix_lwpr", "oprc_vrss_nmix_prpr", "oprc_vrss_nmix_sign",
    "hgpr_vrss_nmix_prpr", "hgpr_vrss_nmix_sign", "lwpr_vrss_nmix_prpr", "lwpr_vrss_nmix_sign",
    "prdy_clpr_vrss_oprc_rate", "prdy_clpr_vrss_hgpr_rate", "prdy_clpr_vrss_lwpr_rate",
    "uplm_issu_cnt", "ascn_issu_cnt", "stnr_issu_cnt", "down_issu_cnt", "lslm_issu_cnt",
    "qtqt_ascn_issu_cnt", "qtqt_down_issu_cnt", "tick_vrss",
)  # fmt: skip

# KIS's example output for H0UPCNT0 (API portal page 실시간-026), line break removed.
DOC_FRAME = (
    "0|H0UPCNT0|001|0001^091240^2624.54^2^32.68^63952^1650684^439^10335^1.26^2615"
    ".72^2624.82^2610.00^23.86^2^32.96^2^18.14^2^0.92^1.27^0.70^0^670^72^177^0^0^0^19"
)

# A made-up KOSDAQ record, falling, by name.
KOSDAQ = {
    "BSTP_CLS_CODE": "1001", "BSOP_HOUR": "093015", "PRPR_NMIX": "866.95",
    "PRDY_VRSS_SIGN": "5", "BSTP_NMIX_PRDY_VRSS": "-3.05", "ACML_VOL": "215300",
    "ACML_TR_PBMN": "1234567", "PCAS_VOL": "120", "PCAS_TR_PBMN": "810", "PRDY_CTRT": "-0.35",
    "OPRC_NMIX": "871.20", "NMIX_HGPR": "872.00", "NMIX_LWPR": "865.10",
    "OPRC_VRSS_NMIX_PRPR": "1.20", "OPRC_VRSS_NMIX_SIGN": "2", "HGPR_VRSS_NMIX_PRPR": "2.00",
    "HGPR_VRSS_NMIX_SIGN": "2", "LWPR_VRSS_NMIX_PRPR": "-4.90", "LWPR_VRSS_NMIX_SIGN": "5",
    "PRDY_CLPR_VRSS_OPRC_RATE": "0.14", "PRDY_CLPR_VRSS_HGPR_RATE": "0.23",
    "PRDY_CLPR_VRSS_LWPR_RATE": "-0.56", "UPLM_ISSU_CNT": "2", "ASCN_ISSU_CNT": "512",
    "STNR_ISSU_CNT": "88", "DOWN_ISSU_CNT": "1011", "LSLM_ISSU_CNT": "1",
    "QTQT_ASCN_ISSU_CNT": "0", "QTQT_DOWN_ISSU_CNT": "0", "TICK_VRSS": "-2",
}  # fmt: skip


def at(hh: int, mm: int, ss: int, day: int = 2) -> datetime:
    return datetime(2025, 1, day, hh, mm, ss, tzinfo=KST)


def record(**overrides: str) -> list[str]:
    unknown = set(overrides) - set(H0UPCNT0_FIELDS)
    assert not unknown, unknown
    return [overrides.get(name, KOSDAQ[name]) for name in H0UPCNT0_FIELDS]


def frame(*records: list[str], count: str | None = None) -> str:
    n = f"{len(records):03d}" if count is None else count
    return f"0|H0UPCNT0|{n}|" + "^".join("^".join(r) for r in records)


def decode_ok(
    text: str, dec: KisDecoder | None = None, received_ns: int = RECEIVED_NS
) -> list[IndexTick]:
    dec = dec or KisDecoder(SOURCE)
    out = dec.decode(text, received_ns)
    assert dec.stats.errors == {}, dec.last_error
    assert isinstance(out, list)
    assert all(isinstance(e, IndexTick) for e in out)
    return out  # type: ignore[return-value]


def decode_err(text: str, reason: str) -> KisDecoder:
    dec = KisDecoder(SOURCE)
    assert dec.decode(text, RECEIVED_NS) == []
    assert dec.stats.errors == {reason: 1}, dec.last_error
    assert dec.stats.records == 0
    return dec


KOSDAQ_TICK = IndexTick(
    source=SOURCE, index="kosdaq", code="1001", time=at(9, 30, 15), value=866.95, change=-3.05,
    change_percent=-0.35, volume=215300, traded_value=1234567, advancers=512, decliners=1011,
    unchanged=88, received_ns=RECEIVED_NS,
)  # fmt: skip


# --- layout ------------------------------------------------------------------------------------


def test_layout_is_the_official_column_list() -> None:
    assert H0UPCNT0_FIELDS == tuple(c.upper() for c in OFFICIAL_COLUMNS)
    assert len(H0UPCNT0_FIELDS) == len(set(H0UPCNT0_FIELDS)) == 30
    assert set(KOSDAQ) == set(H0UPCNT0_FIELDS)


# --- decoding ----------------------------------------------------------------------------------


def test_kis_example_frame() -> None:
    assert len(DOC_FRAME.split("|", 3)[3].split("^")) == 30
    dec = KisDecoder(SOURCE)
    assert decode_ok(DOC_FRAME, dec) == [
        IndexTick(
            source=SOURCE, index="kospi", code="0001", time=at(9, 12, 40), value=2624.54,
            change=32.68, change_percent=1.26, volume=63952, traded_value=1650684,
            advancers=670, decliners=177, unchanged=72, received_ns=RECEIVED_NS,
        )
    ]  # fmt: skip
    assert dec.stats.as_dict() == {"frames": 1, "records": 1, "controls": 0, "errors": {},
                                   "drift": 0, "drift_sample": None, "layouts": {}}  # fmt: skip


def test_record_by_name() -> None:
    assert decode_ok(frame(record())) == [KOSDAQ_TICK]


def test_multi_record_frame() -> None:
    kospi = record(
        BSTP_CLS_CODE="0001",
        PRPR_NMIX="2650.12",
        PRDY_VRSS_SIGN="2",
        BSTP_NMIX_PRDY_VRSS="12.40",
        PRDY_CTRT="0.47",
        ACML_VOL="400100",
    )
    k200 = record(
        BSTP_CLS_CODE="2001",
        PRPR_NMIX="351.00",
        PRDY_VRSS_SIGN="3",
        BSTP_NMIX_PRDY_VRSS="0.00",
        PRDY_CTRT="0.00",
        ACML_VOL="90000",
        BSOP_HOUR="093016",
    )
    out = decode_ok(frame(kospi, record(), k200))
    assert [(e.index, e.code, e.value, e.change, e.change_percent, e.volume) for e in out] == [
        ("kospi", "0001", 2650.12, 12.40, 0.47, 400100),
        ("kosdaq", "1001", 866.95, -3.05, -0.35, 215300),
        ("kospi200", "2001", 351.00, 0.0, 0.0, 90000),
    ]
    assert out[1] == KOSDAQ_TICK
    assert out[2].time == at(9, 30, 16)
    assert len({e.key for e in out}) == 3


@pytest.mark.parametrize("code", ["0002", "0028", "1002", "9999"])
def test_an_unknown_index_code_keeps_its_raw_code(code: str) -> None:
    (e,) = decode_ok(frame(record(BSTP_CLS_CODE=code)))
    assert (e.index, e.code) == (code, code)


@pytest.mark.parametrize(
    ("sign", "change", "pct", "expected"),
    [
        ("5", "-3.05", "-0.35", (-3.05, -0.35)),  # signed, as the REST index quote sends it
        ("5", "3.05", "0.35", (-3.05, -0.35)),  # a magnitude with a down sign
        ("4", "3.05", "0.35", (-3.05, -0.35)),
        ("2", "3.05", "0.35", (3.05, 0.35)),
        ("1", "3.05", "0.35", (3.05, 0.35)),
        ("2", "-3.05", "-0.35", (3.05, 0.35)),  # the sign code wins
        ("3", "0.00", "0.00", (0.0, 0.0)),
        ("", "-3.05", "-0.35", (-3.05, -0.35)),  # no sign code: as sent
    ],
)
def test_change_sign(sign: str, change: str, pct: str, expected: tuple[float, float]) -> None:
    (e,) = decode_ok(frame(record(PRDY_VRSS_SIGN=sign, BSTP_NMIX_PRDY_VRSS=change, PRDY_CTRT=pct)))
    assert (e.change, e.change_percent) == expected


def test_the_date_is_the_kst_receive_date() -> None:
    # 2025-01-02 15:00:00 UTC is 2025-01-03 00:00:00 KST
    (e,) = decode_ok(frame(record(BSOP_HOUR="000001")), received_ns=1_735_830_000_000_000_000)
    assert e.time == at(0, 0, 1, day=3)
    assert e.time.utcoffset() == timedelta(hours=9)


def test_empty_optional_numbers_read_as_zero() -> None:
    (e,) = decode_ok(
        frame(
            record(
                BSTP_NMIX_PRDY_VRSS="",
                PRDY_CTRT="",
                ACML_TR_PBMN="",
                ASCN_ISSU_CNT="",
                DOWN_ISSU_CNT="",
                STNR_ISSU_CNT="",
                PRDY_VRSS_SIGN="3",
            )
        )
    )
    assert (e.change, e.change_percent, e.traded_value, e.advancers, e.decliners,
            e.unchanged) == (0.0, 0.0, 0, 0, 0, 0)  # fmt: skip


def test_fields_the_event_does_not_carry_are_not_parsed() -> None:
    (e,) = decode_ok(frame(record(OPRC_NMIX="x", TICK_VRSS="?", PCAS_VOL="")))
    assert e == KOSDAQ_TICK


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRPR_NMIX", ""), ("PRPR_NMIX", "2624.x4"), ("PRPR_NMIX", "2,624.54"),
        ("PRPR_NMIX", "1e3"), ("PRPR_NMIX", " 2624.54"), ("PRPR_NMIX", "+2624.54"),
        ("PRPR_NMIX", "2624..54"), ("PRPR_NMIX", ".54"), ("PRPR_NMIX", "2624."),
        ("PRPR_NMIX", "nan"), ("PRPR_NMIX", "inf"), ("PRPR_NMIX", "２６２４.５４"),
        ("BSTP_NMIX_PRDY_VRSS", "-"), ("BSTP_NMIX_PRDY_VRSS", "3.0.5"),
        ("PRDY_CTRT", "0.35%"), ("ACML_VOL", ""), ("ACML_VOL", "215300.0"),
        ("ACML_VOL", "2e5"), ("ACML_TR_PBMN", "1_234"), ("ASCN_ISSU_CNT", "5.0"),
        ("DOWN_ISSU_CNT", "x"), ("STNR_ISSU_CNT", " 8"), ("BSOP_HOUR", "09301"),
        ("BSOP_HOUR", "0930155"), ("BSOP_HOUR", "093060"), ("BSOP_HOUR", ""),
    ],
)  # fmt: skip
def test_bad_values_are_counted_not_raised(name: str, value: str) -> None:
    dec = decode_err(frame(record(), record(**{name: value})), "bad_value")
    # the decoder goes on: the next good frame decodes
    assert dec.decode(frame(record()), RECEIVED_NS) == [KOSDAQ_TICK]
    assert dec.stats.records == 1


@pytest.mark.parametrize("name", ["ASCN_ISSU_CNT", "DOWN_ISSU_CNT", "STNR_ISSU_CNT"])
def test_a_negative_issue_count_drops_the_frame(name: str) -> None:
    # The market gate refuses a negative count (ValueError): it must never get one.
    dec = decode_err(frame(record(**{name: "-1"})), "bad_value")
    assert dec.last_error is not None and "negative count '-1'" in str(dec.last_error)
    assert dec.decode(frame(record()), RECEIVED_NS) == [KOSDAQ_TICK]
    assert dec.stats.errors == {"bad_value": 1} and dec.stats.records == 1


def test_a_zero_issue_count_is_a_count() -> None:
    (e,) = decode_ok(frame(record(ASCN_ISSU_CNT="0", DOWN_ISSU_CNT="-0", STNR_ISSU_CNT="0")))
    assert (e.advancers, e.decliners, e.unchanged) == (0, 0, 0)


@pytest.mark.parametrize("n_fields", [0, 1, 29])
def test_too_short(n_fields: int) -> None:
    decode_err(frame(record()[:n_fields]), "field_count")


def test_appended_fields_are_drift() -> None:
    dec = KisDecoder(SOURCE)
    assert decode_ok(frame(record() + ["1", "2"], record() + ["3", "4"]), dec) == [
        KOSDAQ_TICK,
        KOSDAQ_TICK,
    ]
    assert (dec.stats.drift, dec.stats.layouts) == (1, {"H0UPCNT0:32": 1})


# --- simulator: the index model ----------------------------------------------------------------

NOW = at(9, 30, 15)
IX = {f: i for i, f in enumerate(H0UPCNT0_FIELDS)}


def centi(x: str) -> int:
    return round(float(x) * 100)


def expected_level(
    m: SimMarket, market: str, prior_close: int, tickers: tuple[SimTicker, ...] = DEFAULT_TICKERS
) -> float:
    codes = [t.code for t in tickers if t.market == market]
    closes = sum(t.base_price for t in tickers if t.market == market)
    prices = sum(m.price(c) for c in codes)
    return round(prior_close * prices / closes) / 100


def test_sim_indexes() -> None:
    assert [(i.code, i.market, i.prior_close) for i in SIM_INDEXES] == [
        ("0001", "KOSPI", 265000),
        ("1001", "KOSDAQ", 87000),
        ("2001", "KOSPI", 35000),
    ]
    assert {t.code for t in DEFAULT_TICKERS if t.market == "KOSDAQ"} == KOSDAQ_CODES
    assert SimMarket(DEFAULT_TICKERS, 1).index_codes == ["0001", "1001", "2001"]


def test_index_starts_at_its_prior_close() -> None:
    m = SimMarket(DEFAULT_TICKERS, 3)
    r = m.index_record("0001", NOW)
    assert len(r) == 30
    assert (
        r[IX["PRPR_NMIX"]],
        r[IX["PRDY_VRSS_SIGN"]],
        r[IX["BSTP_NMIX_PRDY_VRSS"]],
        r[IX["PRDY_CTRT"]],
        r[IX["ACML_VOL"]],
    ) == ("2650.00", "3", "0.00", "0.00", "0")
    n_kospi = sum(t.market == "KOSPI" for t in DEFAULT_TICKERS)
    assert r[IX["UPLM_ISSU_CNT"] : IX["LSLM_ISSU_CNT"] + 1] == ["0", "0", str(n_kospi), "0", "0"]
    assert m.index_level("1001") == 870.00


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_level_moves_with_its_stocks(seed: int) -> None:
    m = SimMarket(DEFAULT_TICKERS, seed)
    seen = set()
    for _ in range(40):
        for _ in range(500):
            m.trade(NOW)
        for ix in SIM_INDEXES:
            level = m.index_level(ix.code)
            assert level == pytest.approx(expected_level(m, ix.market, ix.prior_close), abs=0.006)
            # up when the members' summed price is up, and only then
            members = [t for t in DEFAULT_TICKERS if t.market == ix.market]
            moved = sum(m.price(t.code) - t.base_price for t in members)
            assert (level > ix.prior_close / 100) == (moved > 0)
            assert (level < ix.prior_close / 100) == (moved < 0)
            seen.add((ix.code, (moved > 0) - (moved < 0)))
    assert len(seen) >= 3  # the walk moved the indexes at all


def test_an_index_only_follows_its_own_market() -> None:
    kospi_only = tuple(t for t in DEFAULT_TICKERS if t.market == "KOSPI")
    m = SimMarket(kospi_only, 5)
    for _ in range(5000):
        m.trade(NOW)
    assert m.index_level("0001") != 2650.00
    r = m.index_record("1001", NOW)
    assert (r[IX["PRPR_NMIX"]], r[IX["ACML_VOL"]], r[IX["ASCN_ISSU_CNT"]]) == ("870.00", "0", "0")


def test_one_stock_index_tracks_its_percent_change() -> None:
    t = SimTicker("000100", "Solo", 10000, "KOSDAQ")
    m = SimMarket((t,), 9)
    for _ in range(300):
        m.trade(NOW)
        pct = (m.price("000100") - 10000) / 10000
        assert m.index_level("1001") == pytest.approx(870.00 * (1 + pct), abs=0.006)


def test_index_records_do_not_change_the_trade_sequence() -> None:
    plain, busy = SimMarket(DEFAULT_TICKERS, 11), SimMarket(DEFAULT_TICKERS, 11)
    for _ in range(500):
        a = plain.trade(NOW)
        for c in busy.index_codes:
            busy.index_record(c, NOW)
        assert busy.trade(NOW) == a


def test_index_record_fields_are_consistent() -> None:
    m = SimMarket(DEFAULT_TICKERS, 4)
    last_vol = 0
    levels = []
    for i in range(60):
        for _ in range(400):
            m.trade(NOW)
        r = m.index_record("0001", NOW + timedelta(seconds=i))
        level, base = centi(r[IX["PRPR_NMIX"]]), 265000
        levels.append(level)
        change = centi(r[IX["BSTP_NMIX_PRDY_VRSS"]])
        assert change == level - base
        assert r[IX["PRDY_VRSS_SIGN"]] == ("2" if change > 0 else "5" if change < 0 else "3")
        assert float(r[IX["PRDY_CTRT"]]) == pytest.approx(change / base * 100, abs=0.005)
        assert (
            centi(r[IX["OPRC_NMIX"]]),
            centi(r[IX["NMIX_HGPR"]]),
            centi(r[IX["NMIX_LWPR"]]),
        ) == (levels[0], max(levels), min(levels))
        # the "vs" fields are versus the prior close, as in KIS's example
        assert centi(r[IX["HGPR_VRSS_NMIX_PRPR"]]) == max(levels) - base
        vol = int(r[IX["ACML_VOL"]])
        assert int(r[IX["PCAS_VOL"]]) == vol - last_vol >= 0
        last_vol = vol
        counts = [int(x) for x in r[IX["UPLM_ISSU_CNT"] : IX["LSLM_ISSU_CNT"] + 1]]
        assert sum(counts) == sum(t.market == "KOSPI" for t in DEFAULT_TICKERS)
    assert last_vol > 0


@pytest.mark.parametrize("seed", [1, 7])
def test_sim_index_records_through_the_decoder(seed: int) -> None:
    m = SimMarket(DEFAULT_TICKERS, seed)
    dec = KisDecoder(SOURCE)
    for i in range(30):
        for _ in range(300):
            m.trade(NOW)
        now = NOW + timedelta(seconds=i)
        records = [m.index_record(c, now) for c in m.index_codes]
        # KIS example's receive date: 2025-01-02 KST
        out = decode_ok(data_frame("H0UPCNT0", records), dec)
        assert [e.index for e in out] == ["kospi", "kosdaq", "kospi200"]
        for e, r, ix in zip(out, records, SIM_INDEXES, strict=True):
            assert e.code == ix.code and e.time == now
            assert e.value == m.index_level(ix.code)
            assert e.change == pytest.approx(e.value - ix.prior_close / 100, abs=1e-9)
            members = [t.code for t in DEFAULT_TICKERS if t.market == ix.market]
            ups = sum(m.price(c) > BASE[c] for c in members)
            downs = sum(m.price(c) < BASE[c] for c in members)
            uplm, lslm = int(r[IX["UPLM_ISSU_CNT"]]), int(r[IX["LSLM_ISSU_CNT"]])
            assert (e.advancers + uplm, e.decliners + lslm) == (ups, downs)
            assert e.unchanged == len(members) - ups - downs
            assert e.volume == sum(m.volume(c) for c in members) // 1000
    assert dec.stats.records == 90


BASE = {t.code: t.base_price for t in DEFAULT_TICKERS}


def test_sim_falling_index_sends_a_signed_change() -> None:
    t = SimTicker("000100", "Solo", 10000, "KOSDAQ")
    m = SimMarket((t,), 0)
    for _ in range(2000):
        m.trade(NOW)
        if m.price("000100") < 10000:
            break
    else:
        pytest.fail("the stock never fell")
    r = m.index_record("1001", NOW)
    assert r[IX["PRDY_VRSS_SIGN"]] == "5" and r[IX["BSTP_NMIX_PRDY_VRSS"]].startswith("-")
    (e,) = decode_ok(data_frame("H0UPCNT0", [r]))
    assert e.change < 0 and e.change_percent <= 0 and e.value < 870.00


# --- simulator: the server ---------------------------------------------------------------------


def drain(conn: object) -> list[str]:
    out = []
    while True:
        try:
            out.append(conn.out_rx.receive_nowait())  # type: ignore[attr-defined]
        except Exception:
            return out


def sim_session(**settings: object) -> tuple[Simulator, object, str]:
    sim = Simulator(SimSettings(**settings), SimControl())  # type: ignore[arg-type]
    body, status = sim.approval(
        {"grant_type": "client_credentials", "appkey": "a", "secretkey": "s"}
    )
    assert status == 200
    return sim, sim.open_conn("kis"), body["approval_key"]


def test_sim_server_sends_index_frames_once_per_interval() -> None:
    sim, conn, key = sim_session()
    sim.handle_kis(conn, subscribe_message(key, KIS_INDEX_TR, "0001"))  # type: ignore[arg-type]
    sim.handle_kis(conn, subscribe_message(key, KIS_INDEX_TR, "1001"))  # type: ignore[arg-type]
    acks = [parse_control(t) for t in drain(conn)]
    assert [(a.tr_id, a.tr_key, a.result) for a in acks] == [  # type: ignore[union-attr]
        (KIS_INDEX_TR, "0001", AckResult.SUBSCRIBED),
        (KIS_INDEX_TR, "1001", AckResult.SUBSCRIBED),
    ]
    dec = KisDecoder(SOURCE)
    step = 0.02
    seconds = 5
    got: list[IndexTick] = []
    for i in range(round(seconds / step)):
        now = NOW + timedelta(seconds=i * step)
        sim.step(now, 4, step)
        for text in drain(conn):
            assert text.startswith("0|H0UPCNT0|001|")  # one record per frame, nothing else
            out = dec.decode(text, RECEIVED_NS)
            assert isinstance(out, list)
            got.extend(out)  # type: ignore[arg-type]
    assert dec.stats.errors == {}
    assert INDEX_INTERVAL_S == 1.0
    assert [e.index for e in got] == ["kospi", "kosdaq"] * seconds
    assert all(isinstance(e, IndexTick) for e in got)
    assert len({e.key for e in got}) == len(got)
    assert sim.control.stats.records_sent == 2 * seconds


def test_sim_server_index_keys_and_the_limit() -> None:
    sim, conn, key = sim_session(registration_limit=3)
    codes = [t.code for t in DEFAULT_TICKERS[:2]]
    msgs = [
        subscribe_message(key, KIS_INDEX_TR, "9999"),  # not an index code
        subscribe_message(key, KIS_INDEX_TR, codes[0]),  # a stock code is not either
        subscribe_message(key, "H0STCNT0", codes[0]),
        subscribe_message(key, "H0STCNT0", codes[1]),
        subscribe_message(key, KIS_INDEX_TR, "2001"),
        subscribe_message(key, KIS_INDEX_TR, "0001"),
    ]  # the 4th registration
    for msg in msgs:
        sim.handle_kis(conn, msg)  # type: ignore[arg-type]
    results = [parse_control(t).result for t in drain(conn)]  # type: ignore[union-attr]
    assert results == [
        AckResult.INVALID_TR_KEY,
        AckResult.INVALID_TR_KEY,
        AckResult.SUBSCRIBED,
        AckResult.SUBSCRIBED,
        AckResult.SUBSCRIBED,
        AckResult.LIMIT_EXCEEDED,
    ]
    # unregistering frees a slot
    sim.handle_kis(conn, subscribe_message(key, KIS_INDEX_TR, "2001", subscribe=False))  # type: ignore[arg-type]
    sim.handle_kis(conn, subscribe_message(key, KIS_INDEX_TR, "0001"))  # type: ignore[arg-type]
    assert [parse_control(t).result for t in drain(conn)] == [  # type: ignore[union-attr]
        AckResult.UNSUBSCRIBED,
        AckResult.SUBSCRIBED,
    ]


def test_sim_server_sends_no_index_frames_unasked() -> None:
    sim, conn, key = sim_session()
    sim.handle_kis(conn, subscribe_message(key, "H0STCNT0", DEFAULT_TICKERS[0].code))  # type: ignore[arg-type]
    drain(conn)
    for i in range(120):
        sim.step(NOW + timedelta(seconds=i * 0.02), 2, 0.02)
    assert not any("H0UPCNT0" in t for t in drain(conn))
