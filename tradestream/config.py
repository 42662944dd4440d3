"""Settings: frozen dataclasses, one per area, built once from the environment in cli.py.

Every default runs on a laptop: SQLite in the working directory, the built-in simulator as the
broker, the gateway on 127.0.0.1:8000. Each task receives only its own slice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tradestream.sim.market import DEFAULT_TICKERS


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


#: KIS allows 41 registrations per session over all TR IDs (kis.md §3); keep one spare.
KIS_SESSION_CAP = 40


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str = ""
    jwt_secret_generated: bool = False  # made up for this process: print a token at start
    outbox_max: int = 1024  # lossless messages queued per client before it is "slow"
    graceful_s: float = 2.0


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///tradestream.db"
    flush_rows: int = 500
    flush_interval_s: float = 0.1
    final_write_s: float = 5.0  # budget for the last write when cancelled
    auto_upgrade: bool = False  # apply migrations at start instead of refusing to run


@dataclass(frozen=True)
class KisSettings:
    ws_url: str = ""  # empty: the built-in simulator's
    rest_url: str = ""
    app_key: str = "sim-appkey"
    app_secret: str = "sim-appsecret"
    approval_key: str = ""  # set: no approval request is made
    custtype: str = "P"
    watchlist: tuple[str, ...] = ()
    tr_id: str = "H0STCNT0"
    stale_s: float = 150.0  # no frame (data or PINGPONG) for this long: the session is dead
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.25
    backoff_cap_s: float = 2.0


@dataclass(frozen=True)
class SimSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 7
    tickers: tuple[str, ...] = tuple(t.code for t in DEFAULT_TICKERS)
    tick_rate: float = 200.0  # trades per second over all tickers
    ping_interval_s: float = 5.0
    max_missed_pings: int = 3
    max_records_per_frame: int = 3
    registration_limit: int = 41


@dataclass(frozen=True)
class PipelineSettings:
    tick_buffer: int = 10_000  # feed -> router: block (lossless)
    store_buffer: int = 10_000  # router -> flusher: block (lossless)


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    kis: KisSettings = field(default_factory=KisSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    shutdown_timeout_s: float = 15.0  # hard stop after the first signal

    def with_sim_urls(self, rest_url: str, ws_url: str) -> Settings:
        """Point the KIS feed at the built-in simulator once it is listening."""
        return replace(self, kis=replace(self.kis, rest_url=rest_url, ws_url=ws_url))


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(f"TRADESTREAM_{name}")
    return value.strip() if value is not None and value.strip() else None


def _num(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"TRADESTREAM_{name}={raw!r} is not a {kind.__name__}") from None
    if value < 0:
        raise ConfigError(f"TRADESTREAM_{name} must not be negative")
    return value


def _codes(raw: str, name: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    bad = [c for c in codes if not (len(c) == 6 and c.isalnum())]
    if bad:
        raise ConfigError(f"TRADESTREAM_{name}: not 6-character stock codes: {bad}")
    return codes


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from TRADESTREAM_* variables (see README, Configuration)."""
    env = os.environ if env is None else env
    ws_url, rest_url = _get(env, "KIS_WS_URL"), _get(env, "KIS_REST_URL")
    if (ws_url is None) != (rest_url is None):
        raise ConfigError("set both TRADESTREAM_KIS_WS_URL and TRADESTREAM_KIS_REST_URL, or neither")
    use_sim = ws_url is None
    sim = SimSettings(
        enabled=use_sim,
        port=int(_num(env, "SIM_PORT", 0, int)),
        seed=int(_num(env, "SIM_SEED", 7, int)),
        tick_rate=_num(env, "SIM_TICK_RATE", SimSettings.tick_rate),
    )
    watch_raw = _get(env, "WATCHLIST")
    watchlist = _codes(watch_raw, "WATCHLIST") if watch_raw else sim.tickers[:KIS_SESSION_CAP]
    if len(watchlist) > KIS_SESSION_CAP:
        raise ConfigError(
            f"TRADESTREAM_WATCHLIST has {len(watchlist)} codes; one KIS session takes at most "
            f"{KIS_SESSION_CAP} (41 per session, one kept spare)"
        )
    kis = KisSettings(
        ws_url=ws_url or "",
        rest_url=rest_url or "",
        app_key=_get(env, "KIS_APP_KEY") or KisSettings.app_key,
        app_secret=_get(env, "KIS_APP_SECRET") or KisSettings.app_secret,
        approval_key=_get(env, "KIS_APPROVAL_KEY") or "",
        watchlist=watchlist,
        # The simulator pings every few seconds; the real server's interval is unknown and
        # reported at up to ~110 s (kis.md §5.3), so only a long silence means a dead session.
        stale_s=_num(env, "KIS_STALE_S", 15.0 if use_sim else KisSettings.stale_s),
    )
    secret = _get(env, "JWT_SECRET")
    if secret is not None and len(secret.encode()) < 32:
        raise ConfigError("TRADESTREAM_JWT_SECRET must be at least 32 bytes (RFC 7518 §3.2)")
    gateway = GatewaySettings(
        host=_get(env, "HOST") or GatewaySettings.host,
        port=int(_num(env, "PORT", GatewaySettings.port, int)),
        jwt_secret=secret or os.urandom(32).hex(),
        jwt_secret_generated=secret is None,
    )
    store = StoreSettings(
        url=_get(env, "DATABASE_URL") or StoreSettings.url,
        flush_rows=int(_num(env, "FLUSH_ROWS", StoreSettings.flush_rows, int)) or 1,
        flush_interval_s=_num(env, "FLUSH_INTERVAL_S", StoreSettings.flush_interval_s),
        auto_upgrade=(_get(env, "DB_AUTO_UPGRADE") or "0").lower() in ("1", "true", "yes"),
    )
    return Settings(gateway=gateway, store=store, kis=kis, sim=sim)
