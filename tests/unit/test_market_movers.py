"""Market-wide finds from the broker's rankings: the choice rule, the audit's reason, and the
simulator's rankings (pure)."""

from __future__ import annotations

from tradestream.feeds.kis.rest import Ranked, parse_ranking
from tradestream.sim.rankings import Rankings, Row, fluctuation, volume_rank
from tradestream.slots.market_movers import Find, choose_finds
from tradestream.slots.policy import Priority, SlotManager


def r(code: str, rank: int, pct: float, volume: int = 1000) -> Ranked:
    return Ranked(code, f"name {code}", rank, 10_000, pct, volume)


def test_finds_are_risers_then_rising_volume_leaders_not_already_watched() -> None:
    risers = [r("111110", 1, 12.0), r("222220", 2, 9.0), r("333330", 3, 4.9), r("444440", 4, 6.0)]
    volume = [r("555550", 1, -3.0), r("222220", 2, 9.0), r("666660", 3, 1.2)]
    watched = {"222220"}.__contains__
    finds = choose_finds(risers, volume, watched, n=4, min_change_pct=5.0)
    assert finds == [
        Find("111110", "name 111110", "fluctuation", 1, 12.0),
        Find("444440", "name 444440", "fluctuation", 4, 6.0),  # 333330 rose too little
        Find("666660", "name 666660", "volume", 3, 1.2),  # 555550 falls; 222220 is watched
    ]
    assert finds[0].why == "fluctuation #1 +12.00%"
    assert len(choose_finds(risers, volume, watched, n=1, min_change_pct=5.0)) == 1


def test_ranking_rows_are_parsed_in_rank_order_and_bad_rows_skipped() -> None:
    rows = [
        {"mksc_shrn_iscd": "005930", "data_rank": "2", "hts_kor_isnm": "삼성전자",
         "stck_prpr": "71000", "prdy_ctrt": "0.71", "acml_vol": "100"},
        {"mksc_shrn_iscd": "123450", "data_rank": "1", "hts_kor_isnm": "가나전자",
         "stck_prpr": "6500", "prdy_ctrt": "30.00", "acml_vol": "8123400"},
        {"mksc_shrn_iscd": "", "data_rank": "3"},
        {"mksc_shrn_iscd": "000660", "data_rank": "4", "stck_prpr": "n/a"},
    ]  # fmt: skip
    assert [x.code for x in parse_ranking(rows, "mksc_shrn_iscd")] == ["123450", "005930"]


def test_the_grant_of_a_find_says_where_it_was_found() -> None:
    m = SlotManager({"s1": 3}, scanner_dwell_s=60.0)
    changes = m.set_scanner(["123450"], 0.0, why={"123450": "fluctuation #1 +30.00%"})
    grants = [a for a in changes.audit if a.action == "grant"]
    assert grants and all(a.reason.endswith("; fluctuation #1 +30.00%") for a in grants)
    assert all(a.priority is Priority.SCANNER for a in grants)
    m.claim(Priority.PICK, "H0STCNT0", "005930", 1.0)
    plain = [a for a in m.claim(Priority.PICK, "H0STCNT0", "000660", 2.0).audit]
    assert all("fluctuation" not in a.reason for a in plain)


def test_sim_rankings_have_sharp_movers_beyond_the_streamed_codes() -> None:
    streamed = ["005930", "000660"]
    rk = Rankings(7, streamed)
    assert len(rk.codes) == 200 and not set(rk.codes) & set(streamed)
    assert all(len(c) == 6 for c in rk.codes)
    live = [Row("005930", "삼성전자", 71_000, 70_500, 5_000, "KOSPI")]
    rows = rk.rows(300.0, lambda: live)
    top = fluctuation(rows, "0")
    assert len(top) == 30 and float(top[0]["prdy_ctrt"]) >= 10.0  # sharp movers lead
    assert [int(x["data_rank"]) for x in top] == list(range(1, 31))
    falls = fluctuation(rows, "1")
    assert float(falls[0]["prdy_ctrt"]) < 0
    by_volume = volume_rank(rows)
    vols = [int(x["acml_vol"]) for x in by_volume]
    assert vols == sorted(vols, reverse=True) and "mksc_shrn_iscd" in by_volume[0]
    later = {
        x["stck_shrn_iscd"]: float(x["prdy_ctrt"])
        for x in fluctuation(rk.rows(900.0, lambda: live), "0")
    }
    earlier = {x["stck_shrn_iscd"]: float(x["prdy_ctrt"]) for x in top}
    assert any(later.get(c, 0) > pct for c, pct in earlier.items())  # they keep climbing
    ticker, price = rk.ticker_for(rk.codes[0], 300.0) or (None, 0)
    assert ticker is not None and price == rk.row(rk.codes[0], 300.0).price
    assert rk.ticker_for("005930", 0.0) is None
