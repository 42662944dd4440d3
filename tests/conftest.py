"""Shared fixtures: settings for a whole tree on ephemeral ports with a throwaway SQLite file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tradestream.config import (
    GatewaySettings,
    KisSettings,
    Settings,
    SimSettings,
    StoreSettings,
)
from tradestream.sim.market import DEFAULT_TICKERS


def make_settings(tmp_path: Path, **kis: object) -> Settings:
    codes = tuple(t.code for t in DEFAULT_TICKERS)
    return Settings(
        gateway=GatewaySettings(port=0, jwt_secret="test-secret-test-secret-test-secret"),
        store=StoreSettings(url=f"sqlite:///{tmp_path / 'ts.db'}", auto_upgrade=True),
        kis=replace(KisSettings(watchlist=codes[:10], stale_s=5.0), **kis),
        sim=SimSettings(port=0, tick_rate=400.0, ping_interval_s=0.5),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
