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
