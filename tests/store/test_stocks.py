"""Stock master data on every backend: master files parsed, upserted, searched by code and
Korean name prefix; the master format round-trips through the simulator's builder."""

from __future__ import annotations

import pytest

from tradestream.feeds.kis.master import Listed, master_zip, mst_from_zip, parse_master
from tradestream.store import migrate
from tradestream.store.stocks import Stock, last_loaded, load_names, search, upsert_stocks
from tradestream.store.writer import make_engine


def test_master_files_parse_as_the_broker_writes_them() -> None:
    rows = [
        Listed("005930", "삼성전자", "KOSPI", "ST"),
        Listed("069500", "KODEX 200", "KOSPI", "EF"),
        Listed("580000", "모의ELW", "KOSPI", "EW"),  # not kept: an ELW
    ]
    data = mst_from_zip(master_zip(rows, "KOSPI"), "KOSPI")
    assert data.decode("cp949").splitlines()[0].startswith("005930   KR7005930")
    parsed, bad = parse_master(data + b"short line\n", "KOSPI")
    assert parsed == rows[:2] and bad == 1
    kosdaq = [Listed("247540", "에코프로비엠", "KOSDAQ", "ST")]
    assert parse_master(mst_from_zip(master_zip(kosdaq, "KOSDAQ"), "KOSDAQ"), "KOSDAQ")[0] == kosdaq
    with pytest.raises(KeyError):
        mst_from_zip(master_zip(kosdaq, "KOSDAQ"), "KOSPI")  # the wrong member name


def test_upsert_and_search(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        migrate.upgrade(eng)
        assert last_loaded(eng, "master") is None
        n = upsert_stocks(
            eng,
            [
                Stock("005930", "삼성전자", "KOSPI"),
                Stock("005935", "삼성전자우", "KOSPI"),
                Stock("028260", "삼성물산", "KOSPI"),
                Stock("000660", "SK하이닉스", "KOSPI"),
                Stock("100_00", "under_score", "KOSDAQ"),
            ],
            "master",
        )
        assert n == 5 and last_loaded(eng, "master") is not None
        assert [s.code for s in search(eng, "하이닉스", 10)] == ["000660"]  # contained
        # a balance answer knows names, not markets: the market stays
        upsert_stocks(eng, [Stock("000660", "SK hynix", "")], "balance")
        assert load_names(eng)["000660"] == "SK hynix"
        assert [s.market for s in search(eng, "000660", 5)] == ["KOSPI"]
        assert [s.code for s in search(eng, "0059", 10)] == ["005930", "005935"]
        assert [s.code for s in search(eng, "삼성", 10)] == ["005930", "005935", "028260"]
        assert [s.code for s in search(eng, "삼성", 2)] == ["005930", "005935"]
        assert [s.code for s in search(eng, "hynix", 10)] == ["000660"]
        assert [s.code for s in search(eng, "_", 10)] == ["100_00"]  # not a wildcard
        assert search(eng, "  ", 10) == []
    finally:
        eng.dispose()
