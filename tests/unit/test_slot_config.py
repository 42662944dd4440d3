"""The slot manager's and the positions reconciliation's settings from the environment."""

from __future__ import annotations

from datetime import date

import pytest

from tradestream.config import Settings, from_env
from tradestream.errors import ConfigError
from tradestream.feeds.registry import use_simulator

BROKER = {
    "TRADESTREAM_KIS_WS_URL": "ws://broker.example:21000/tryitout",
    "TRADESTREAM_KIS_REST_URL": "https://broker.example:9443",
}


def test_slot_settings_from_the_environment() -> None:
    k = from_env(
        {
            "TRADESTREAM_KIS_REGISTRATION_LIMIT": "20",
            "TRADESTREAM_KIS_SLOT_MARGIN": "2",
            "TRADESTREAM_SCANNER_DWELL_S": "60",
            "TRADESTREAM_SCANNER_EVERY_S": "5",
            "TRADESTREAM_KIS_SLOT_STALE_S": "30",
            "TRADESTREAM_MARKET_HOLIDAYS": "2026-09-25, 2026-01-01",
            "TRADESTREAM_POSITIONS_URL": "http://bridge.example/positions",
            "TRADESTREAM_POSITIONS_EVERY_S": "15",
        }
    ).kis
    assert (
        k.registration_limit,
        k.slot_margin,
        k.scanner_dwell_s,
        k.scanner_every_s,
        k.slot_stale_s,
    ) == (20, 2, 60.0, 5.0, 30.0)
    assert k.market_holidays == (date(2026, 1, 1), date(2026, 9, 25))
    assert (k.positions_url, k.positions_every_s) == ("http://bridge.example/positions", 15.0)
    d = from_env({}).kis
    assert (
        d.registration_limit,
        d.scanner_dwell_s,
        d.scanner_every_s,
        d.slot_stale_s,
        d.positions_every_s,
        d.market_holidays,
    ) == (41, 300.0, 10.0, 120.0, 60.0, ())


def test_positions_come_from_the_simulator_only_when_kis_is_simulated() -> None:
    sim = use_simulator(from_env({}), "http://127.0.0.1:1234", "ws://127.0.0.1:1234")
    assert sim.kis.positions_url == ""  # the demo account's balance inquiry instead
    assert sim.kis.account == "5012345601" and sim.kis.token_file == ""
    broker = from_env(BROKER)
    assert broker.kis.positions_url == "" and broker.kis.account == ""  # none configured
    assert not broker.sim.enabled
    kept = use_simulator(
        from_env({"TRADESTREAM_POSITIONS_URL": "http://bridge.example/p"}),
        "http://127.0.0.1:1",
        "ws://127.0.0.1:1",
    )
    assert kept.kis.positions_url == "http://bridge.example/p"


def test_simulated_positions_at_start() -> None:
    sim = from_env({"TRADESTREAM_SIM_POSITIONS": "005930:10:71000,000660:2:180000.5"}).sim
    assert sim.demo_positions == (("005930", 10, 71000.0), ("000660", 2, 180000.5))
    assert Settings().sim.demo_positions == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRADESTREAM_KIS_REGISTRATION_LIMIT": "2", "TRADESTREAM_KIS_SLOT_MARGIN": "1"},
            "beside the execution notice",
        ),  # the simulator's demo has an HTS id
        (
            {
                **BROKER,
                "TRADESTREAM_KIS_REGISTRATION_LIMIT": "1",
                "TRADESTREAM_KIS_SLOT_MARGIN": "1",
            },
            "no registration for market data",
        ),
        ({"TRADESTREAM_KIS_REGISTRATION_LIMIT": "many"}, "KIS_REGISTRATION_LIMIT"),
        ({"TRADESTREAM_SCANNER_DWELL_S": "-1"}, "SCANNER_DWELL_S must not be negative"),
        ({"TRADESTREAM_MARKET_HOLIDAYS": "2026-13-01"}, "MARKET_HOLIDAYS"),
        ({"TRADESTREAM_SIM_POSITIONS": "005930:ten:1"}, "SIM_POSITIONS"),
        ({"TRADESTREAM_SIM_POSITIONS": "5930:1:1"}, "SIM_POSITIONS"),
    ],
)
def test_bad_slot_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


def test_indexes_are_on_by_default_with_a_real_account_within_one_session() -> None:
    from tradestream.config import INDEX_PICKS

    real = from_env({**BROKER, "TRADESTREAM_KIS_HTS_ID": "me"}).kis
    assert set(INDEX_PICKS) <= set(real.extra)
    # the default watchlist, the indexes and the notices fit one session's usable slots
    usable = real.registration_limit - real.slot_margin
    assert len(real.registrations()) == usable == 40
    off = from_env({**BROKER, "TRADESTREAM_KIS_INDEXES": "0"}).kis
    assert not set(INDEX_PICKS) & set(off.extra) and len(off.watchlist) == 39
    mine = from_env(
        {**BROKER, "TRADESTREAM_KIS_EXTRA": "H0UPCNT0:0001,H0STASP0:005930"}
    ).kis  # an index of the user's own is not added twice
    assert mine.extra == (("H0UPCNT0", "0001"), ("H0STASP0", "005930"), ("H0UPCNT0", "1001"))
    sim = from_env({"TRADESTREAM_KIS_INDEXES": "0"}).kis
    assert not set(INDEX_PICKS) & set(sim.extra)


def test_kiwoom_settings_from_the_environment() -> None:
    sim = from_env({})
    k = sim.kiwoom
    assert k.enabled and k.ws_url == ""  # the simulator's
    assert k.preferred == sim.kis.watchlist[1::2]  # half the watchlist through Kiwoom
    assert k.prefers(sim.kis.watchlist[1]) and not k.prefers(sim.kis.watchlist[0])
    assert (k.registration_limit, k.failover_after_s) == (100, 10.0)
    off = from_env({"TRADESTREAM_KIWOOM_DISABLED": "1"}).kiwoom
    assert not off.enabled and not off.prefers(sim.kis.watchlist[1])
    real = from_env(
        {
            **BROKER,
            "TRADESTREAM_KIWOOM_WS_URL": "wss://api.kiwoom.com:10000/api/dostk/websocket",
            "TRADESTREAM_KIWOOM_REST_URL": "https://api.kiwoom.com",
            "TRADESTREAM_KIWOOM_APP_KEY": "key",
            "TRADESTREAM_KIWOOM_APP_SECRET": "secret",
            "TRADESTREAM_KIWOOM_PREFERRED": "005930, 000660",
            "TRADESTREAM_KIWOOM_REGISTRATION_LIMIT": "95",
            "TRADESTREAM_FAILOVER_AFTER_S": "4",
        }
    ).kiwoom
    assert real.enabled and real.rest_url == "https://api.kiwoom.com"
    assert (real.app_key, real.app_secret) == ("key", "secret")
    assert real.preferred == ("005930", "000660")
    assert (real.registration_limit, real.failover_after_s) == (95, 4.0)
    assert from_env({"TRADESTREAM_KIWOOM_PREFERRED": "*"}).kiwoom.prefers("123456")
    assert not from_env(BROKER).kiwoom.enabled  # a real KIS account: Kiwoom only when asked


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRADESTREAM_KIWOOM_WS_URL": "wss://x"}, "KIWOOM_WS_URL and TRADESTREAM_KIWOOM_REST"),
        ({"TRADESTREAM_KIWOOM_PREFERRED": "5930"}, "not stock codes: 5930"),
        ({"TRADESTREAM_KIWOOM_REGISTRATION_LIMIT": "0"}, "at least 1"),
    ],
)
def test_bad_kiwoom_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)
