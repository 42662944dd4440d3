"""The KIS REST client's pure parts and the simulator's REST rules, on injected clocks."""

from __future__ import annotations

from datetime import datetime

import pytest

from tradestream.events import KST
from tradestream.feeds.kis.rest import (
    Holding,
    KisRestError,
    RateLimit,
    parse_balance_rows,
    split_account,
    token_from_reply,
)
from tradestream.sim.kis_rest import KisRestSim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_spaces_calls_after_the_burst() -> None:
    clock = Clock()
    limit = RateLimit(10.0, 3, clock)
    assert [limit.delay() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limit.delay() == pytest.approx(0.1)
    assert limit.delay() == pytest.approx(0.2)  # each reserves its own turn
    clock.now += 10  # idle: the bucket refills, to its burst only
    assert [limit.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.delay() > 0


def test_token_expiry_from_the_kst_stamp_or_expires_in() -> None:
    t = token_from_reply(
        {"access_token": "abc", "expires_in": 86400,
         "access_token_token_expired": "2025-01-03 08:31:07"}, now=5.0)  # fmt: skip
    assert t.expires_at == datetime(2025, 1, 3, 8, 31, 7, tzinfo=KST).timestamp()
    assert token_from_reply({"access_token": "abc", "expires_in": 100}, now=5.0).expires_at == 105
    with pytest.raises(KisRestError):
        token_from_reply({"error_code": "EGW00103"}, now=5.0)


def test_balance_rows_skip_sold_out_holdings_and_refuse_garbage() -> None:
    rows = [
        {
            "pdno": "005930",
            "prdt_name": "삼성전자",
            "hldg_qty": "10",
            "pchs_avg_pric": "68500.5000",
        },
        {"pdno": "000660", "prdt_name": "SK하이닉스", "hldg_qty": "0", "pchs_avg_pric": "0"},
    ]
    assert parse_balance_rows(rows) == [Holding("005930", 10, 68500.5, "삼성전자")]
    with pytest.raises(KisRestError, match="bad row"):
        parse_balance_rows([{"pdno": "005930", "hldg_qty": "ten"}])


def test_account_numbers() -> None:
    assert split_account("50012345-01") == ("50012345", "01")
    assert split_account("5001234501") == ("50012345", "01")
    with pytest.raises(ValueError, match="10 digits"):
        split_account("5001-2345")


def _sim(clock: Clock, positions: dict[str, tuple[int, int]] | None = None) -> KisRestSim:
    return KisRestSim(
        app_secret_of=lambda k: None,
        positions=lambda: positions or {},
        names={"005930": "삼성전자"},
        account="5012345601",
        clock=clock,
        rate_per_s=3,
    )


def balance_headers(sim: KisRestSim) -> dict[str, str]:
    """A token for app key "k", and the headers of a balance inquiry with it."""
    ask = {"grant_type": "client_credentials", "appkey": "k", "appsecret": "s"}
    token = sim.issue_token(ask)[0]["access_token"]
    return {"authorization": f"Bearer {token}", "appkey": "k", "appsecret": "s",
            "tr_id": "TTTC8434R"}  # fmt: skip


def test_sim_token_rules() -> None:
    clock = Clock()
    sim = _sim(clock)
    ask = {"grant_type": "client_credentials", "appkey": "k", "appsecret": "s"}
    first, status = sim.issue_token(ask)
    assert status == 200 and first["expires_in"] == 86400
    again, status = sim.issue_token(ask)
    assert status == 403 and again["error_code"] == "EGW00133"  # within the minute
    clock.now += 61
    same, _ = sim.issue_token(ask)
    assert same["access_token"] == first["access_token"]  # within 6 h: the same token
    clock.now += 7 * 3600
    newer, _ = sim.issue_token(ask)
    assert newer["access_token"] != first["access_token"]
    assert sim.issue_token({**ask, "grant_type": "x"})[1] == 400


def test_sim_calls_need_a_live_token_and_keep_the_rate() -> None:
    clock = Clock()
    sim = _sim(clock, {"005930": (10, 685000)})
    headers = balance_headers(sim)
    params = {"CANO": "50123456", "ACNT_PRDT_CD": "01"}
    path = "/uapi/domestic-stock/v1/trading/inquire-balance"
    codes = [sim.call(path, headers, params)[0]["msg_cd"] for _ in range(4)]
    assert codes[:3] == ["KIOK0460"] * 3 and codes[3] == "EGW00201"  # 3 a second
    clock.now += 1.0
    body, status, hdrs = sim.call(path, headers, params)
    assert (
        status == 200 and hdrs["tr_cont"] == "D" and body["output1"][0]["prdt_name"] == "삼성전자"
    )
    assert (
        sim.call(path, {**headers, "authorization": "Bearer nope"}, params)[0]["msg_cd"]
        == "EGW00121"
    )
    assert sim.call(path, headers, {**params, "CANO": "99999999"})[0]["msg_cd"] == "OPSQ2000"
    sim.expire_tokens()
    clock.now += 1.0
    assert sim.call(path, headers, params)[0]["msg_cd"] == "EGW00123"


def test_sim_balance_pages() -> None:
    clock = Clock()
    positions = {f"{i:06d}": (i, i * 1000) for i in range(1, 46)}
    sim = _sim(clock, positions)
    sim.rate_per_s = 100
    headers = balance_headers(sim)
    params = {"CANO": "50123456", "ACNT_PRDT_CD": "01", "CTX_AREA_FK100": "", "CTX_AREA_NK100": ""}
    path = "/uapi/domestic-stock/v1/trading/inquire-balance"
    seen, conts, cont = [], [], ""
    while True:
        body, _, hdrs = sim.call(path, {**headers, "tr_cont": cont}, params)
        seen += [r["pdno"] for r in body["output1"]]
        conts.append(hdrs["tr_cont"])
        if hdrs["tr_cont"] not in ("F", "M"):
            break
        params = {
            **params,
            "CTX_AREA_FK100": body["ctx_area_fk100"],
            "CTX_AREA_NK100": body["ctx_area_nk100"],
        }
        cont = "N"
    assert conts == ["F", "M", "E"]
    assert seen == sorted(positions)


def test_rate_limit_halves_on_too_many_and_wins_it_back() -> None:
    clock = Clock()
    limit = RateLimit(8.0, 1, clock)
    assert limit.delay() == 0.0
    limit.slow_down()  # the broker said "too many": 4/s, and one more interval for all
    assert limit.rate == 4.0
    assert limit.delay() == pytest.approx(0.5)  # two intervals of 0.25 s behind
    for _ in range(3):
        limit.slow_down()
    assert limit.rate == 1.0  # never below one call a second
    for _ in range(100):
        limit.recover()
    assert limit.rate == 8.0  # never above the configured rate
