"""The process role settings: one of all, ingest, gateway; the Redis roles need Redis."""

from __future__ import annotations

import pytest

from tradestream.config import from_env
from tradestream.errors import ConfigError


def test_roles() -> None:
    assert from_env({}).role == "all"
    s = from_env({"TRADESTREAM_ROLE": "Gateway", "TRADESTREAM_REDIS_URL": "redis://r:6379/0"})
    assert (s.role, s.redis_stream) == ("gateway", "tradestream:stream")
    with pytest.raises(ConfigError, match="one of all, ingest, gateway"):
        from_env({"TRADESTREAM_ROLE": "router"})
    with pytest.raises(ConfigError, match="needs TRADESTREAM_REDIS_URL"):
        from_env({"TRADESTREAM_ROLE": "ingest"})


def test_market_special_days_setting() -> None:
    from datetime import date

    import pytest

    from tradestream.config import from_env
    from tradestream.errors import ConfigError

    s = from_env({"TRADESTREAM_MARKET_SPECIAL_DAYS": "2027-01-04=60/0, 2026-11-19=60/60"})
    assert s.kis.market_special_days == ((date(2026, 11, 19), 60, 60), (date(2027, 1, 4), 60, 0))
    with pytest.raises(ConfigError, match="MARKET_SPECIAL_DAYS"):
        from_env({"TRADESTREAM_MARKET_SPECIAL_DAYS": "2026-11-19=sixty"})
