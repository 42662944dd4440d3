"""Strategies and the market gate from configuration (strategies/loader.py, config.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tradestream.config import from_env
from tradestream.errors import ConfigError
from tradestream.events import News
from tradestream.strategies.loader import StrategySpec, build_strategies, parse_specs
from tradestream.strategies.news import NewsKeywordStrategy


class Echo:
    """A strategy a user's package would ship: parameters, and the prices it may ask for."""

    wants: tuple[type, ...] = (News,)

    def __init__(self, *, id: str = "echo", window_s: float = 60.0, prices: Any = None) -> None:
        self.id, self.window_s, self.prices = id, window_s, prices

    async def handle(self, event: Any) -> list[dict[str, Any]]:
        return []


def not_a_strategy(**kw: Any) -> object:
    return object()


def test_specs_parse_names_and_json_parameters() -> None:
    raw = 'news{"keywords": {"watch_long": ["수주;{x}"]}}; tests.unit.test_strategy_loader:Echo'
    assert parse_specs(raw) == [
        StrategySpec("news", {"keywords": {"watch_long": ["수주;{x}"]}}),
        StrategySpec("tests.unit.test_strategy_loader:Echo", {}),
    ]
    assert parse_specs(" news ;") == [StrategySpec("news", {})]
    assert parse_specs("") == []
    for bad in ('news{"a": 1', 'news{"a": 1} echo', "news{not json}", ";news"):
        with pytest.raises(ConfigError, match="TRADESTREAM_STRATEGIES"):
            parse_specs(bad)


def test_strategies_are_built_from_entry_points_and_paths() -> None:
    prices: dict[str, Any] = {}
    built = build_strategies(
        'news{"id": "kw", "keywords": {"watch_long": ["수주"], "watch_short": ["횡령"]}};'
        'tests.unit.test_strategy_loader:Echo{"window_s": 30}',
        prices=prices,
        names={},
    )
    news, echo = built
    assert isinstance(news, NewsKeywordStrategy) and news.id == "kw"
    assert news.rules.keywords == {"watch_long": ["수주"], "watch_short": ["횡령"]}
    assert isinstance(echo, Echo) and echo.window_s == 30
    prices["005930"] = "a tick"
    assert echo.prices["005930"] == "a tick"  # the live mapping, read-only
    with pytest.raises(TypeError):
        echo.prices["x"] = 1


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("nosuch", "unknown strategy 'nosuch' (installed: news"),
        ("tests.unit.nosuch:Echo", "cannot load strategy"),
        ("tests.unit.test_strategy_loader:not_a_strategy", "did not make a strategy"),
        ('tests.unit.test_strategy_loader:Echo{"nope": 1}', "unexpected keyword"),
        ("tests.unit.test_strategy_loader:Echo; tests.unit.test_strategy_loader:Echo",
         "two strategies with the id 'echo'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_item(raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match="TRADESTREAM_STRATEGIES") as err:
        build_strategies(raw, prices={}, names={})
    assert says in str(err.value)


def test_strategies_and_gate_settings() -> None:
    assert from_env({}).detect.strategies == "news"
    assert from_env({"TRADESTREAM_STRATEGIES": "none"}).detect.strategies == ""
    gate = from_env({"TRADESTREAM_MARKET_GATE": '{"red_index_pct": -2.5, "confirm_updates": 3}'})
    assert gate.detect.gate == (("red_index_pct", -2.5), ("confirm_updates", 3.0))
    for bad in ("[1]", '{"red_index_pct": "low"}', "{"):
        with pytest.raises(ConfigError, match="TRADESTREAM_MARKET_GATE"):
            from_env({"TRADESTREAM_MARKET_GATE": bad})


def test_the_gate_is_built_with_the_thresholds() -> None:
    from tradestream.roles.ingest import _gate

    s = from_env({"TRADESTREAM_MARKET_GATE": '{"red_index_pct": -2.5, "confirm_updates": 3}'})
    g = _gate(s)
    assert (g.red_index_pct, g.confirm_updates) == (-2.5, 3)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        _gate(from_env({"TRADESTREAM_MARKET_GATE": '{"nope": 1}'}))
    with pytest.raises(ConfigError, match="red_index_pct <= yellow_index_pct"):
        _gate(from_env({"TRADESTREAM_MARKET_GATE": '{"red_index_pct": 5}'}))
