"""Shared fixtures: settings for a whole tree on ephemeral ports with a throwaway SQLite file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tradestream.config import (
    GatewaySettings,
    KisSettings,
    LsSettings,
    Settings,
    SimSettings,
    StoreSettings,
)
from tradestream.sim.market import DEFAULT_TICKERS


def make_settings(
    tmp_path: Path,
    *,
    ls: bool | tuple[tuple[str, str], ...] = False,
    sim: dict[str, object] | None = None,
    **kis: object,
) -> Settings:
    """A whole tree on ephemeral ports against the simulator: KIS trades for 10 codes; LS
    (news) only when asked, so most tests see one feed."""
    codes = tuple(t.code for t in DEFAULT_TICKERS)
    return Settings(
        gateway=GatewaySettings(port=0, jwt_secret="test-secret-test-secret-test-secret"),
        store=StoreSettings(
            url=f"sqlite:///{tmp_path / 'ts.db'}",
            auto_upgrade=True,
            spool_dir=str(tmp_path / "spool"),
        ),
        # market-wide finds off unless a test asks (they take scanner slots at start)
        kis=replace(
            KisSettings(
                watchlist=codes[:10],
                stale_s=5.0,
                market_movers_every_s=0.0,
                token_file=str(tmp_path / "state" / "kis-tokens.json"),  # the test's own
            ),
            **kis,
        ),
        ls=LsSettings(
            enabled=bool(ls),
            stale_s=5.0,
            **({"subscriptions": ls} if isinstance(ls, tuple) else {}),
        ),
        sim=replace(
            SimSettings(port=0, tick_rate=400.0, ping_interval_s=0.5, order_rate_per_min=0.0),
            **(sim or {}),
        ),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


# -- real database backends ---------------------------------------------------------------------

import os  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import sqlalchemy as sa  # noqa: E402

BACKEND_ENV = {
    "postgres": "TRADESTREAM_TEST_POSTGRES_URL",
    "mariadb": "TRADESTREAM_TEST_MARIADB_URL",
}


def _unavailable(reason: str) -> None:
    # In CI every backend must be there (.ci/run starts them); elsewhere skip, saying why.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _scratch_database(backend: str) -> Iterator[str]:
    """Create a throwaway database on a real server, yield its URL, drop it afterwards."""
    base = os.environ.get(BACKEND_ENV[backend])
    if not base:
        _unavailable(f"{BACKEND_ENV[backend]} is not set")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"ts_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(f"{backend} at {base} is not reachable: {exc.orig}")
    try:
        yield sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgres" else ""
            conn.execute(sa.text(f"DROP DATABASE {name}{force}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _scratch_database(request.param)


@pytest.fixture(params=["postgres", "mariadb"])
def server_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on each database server (for what SQLite has no equivalent of)."""
    yield from _scratch_database(request.param)


# -- a real Redis -------------------------------------------------------------------------------

import socket  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

REDIS_URL_ENV = "TRADESTREAM_TEST_REDIS_URL"


@pytest.fixture
def redis_url() -> str:
    """The test Redis. Probed with a plain socket (sync, so that a skip stays a skip): a refused
    coredis connect would leave ResourceWarnings for the GC to raise in some later test."""
    url = os.environ.get(REDIS_URL_ENV) or "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError as exc:
        _unavailable(f"redis at {url} is not reachable: {exc!r}")
    return url


@pytest.fixture
def prefix() -> str:
    return f"ts-test:{uuid.uuid4().hex[:12]}:"
