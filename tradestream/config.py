"""Settings: frozen dataclasses, one per area, built once from the environment in cli.py.

Every default runs on a laptop: SQLite in the working directory, the built-in simulator as the
broker, the gateway on 127.0.0.1:8000. Each task receives only its own slice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, time

from tradestream.errors import ConfigError
from tradestream.universe import DEFAULT_TICKERS
from tradestream.upstream import (
    KIS_BOOK,
    KIS_INDEX,
    KIS_NOTICE,
    KIS_NOTICE_PAPER,
    KIS_PROGRAM,
    KIS_REGISTRATION_LIMIT,
    KIS_TRADES,
    LS_NEWS,
    LS_NEWS_KEY,
    NOTICE_TR_IDS,
)


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str = ""
    jwt_secret_generated: bool = False  # made up for this process: print a token at start
    # the dashboard at / may carry a token: the simulator's dev mode only (a made-up secret,
    # and the built-in simulator in this process, not the gateway role)
    dev_token: bool = False
    outbox_max: int = 1024  # lossless messages queued per client before it is "slow"
    # lossless topics' history for recovery (history.py): messages kept per topic (0: none)
    # and for how long
    history_size: int = 1000
    history_ttl_s: float = 600.0
    ping_interval_s: float = 30.0  # server heartbeat to clients
    max_missed_pongs: int = 2  # then the client is closed (4002)
    graceful_s: float = 2.0
    jwt_algorithm: str = "HS256"  # or RS256 with jwt_public_key
    jwt_public_key: str = ""  # PEM, for RS256
    jwt_leeway_s: float = 5.0  # clock skew allowed on exp
    # limits per connection, per user and in total
    rate_per_s: float = 20.0  # client messages per second (token bucket) ...
    rate_burst: int = 40  # ... with this many at once
    rate_close_after: int = 200  # messages dropped in a row before the client is closed (4429)
    max_subscriptions: int = 200  # per connection
    max_message_bytes: int = 16 * 1024  # larger client messages close the connection (1009)
    max_connections_per_user: int = 20
    max_connections: int = 10_000
    handshake_timeout_s: float = 10.0  # to authenticate when the URL carries no token
    max_pending_handshakes: int = 256  # sockets waiting for an auth message, at most
    max_demand_per_user: int = 10  # upstream slots one user's subscriptions alone may hold
    send_timeout_s: float = 10.0  # a socket write blocked this long: the client stopped reading
    # ?batch=1 clients: messages wait this long for others to share their frame (0: none)
    batch_delay_s: float = 0.02
    # topic kind -> roles allowed to subscribe (kinds not listed: every role)
    topic_roles: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///tradestream.db"
    flush_rows: int = 500
    flush_interval_s: float = 0.1
    final_write_s: float = 5.0  # budget for saving what is left when cancelled
    # a write not done by then fails (retried, or spooled at a stop): a hung database is found
    # out on our side, where no server-side timeout reaches
    write_timeout_s: float = 30.0
    drain_s: float = 5.0  # at shutdown: time to write what is pending before spooling it
    memory_rows: int = 50_000  # rows held in memory while the database is away; then: spool
    spool_dir: str = "spool"  # batches the database could not take (replayed at start)
    journal: bool = True  # journal intake under spool_dir/journal: a kill -9 loses nothing
    auto_upgrade: bool = False  # apply migrations at start instead of refusing to run


@dataclass(frozen=True)
class KisSettings:
    ws_url: str = ""  # empty: the built-in simulator's
    rest_url: str = ""
    app_key: str = "sim-appkey"
    app_secret: str = "sim-appsecret"
    approval_key: str = ""  # set: no approval request is made
    custtype: str = "P"
    watchlist: tuple[str, ...] = ()  # trades (H0STCNT0) for these codes
    extra: tuple[tuple[str, str], ...] = ()  # more (tr_id, tr_key) registrations
    hts_id: str = ""  # set: execution notices for this HTS id
    paper: bool = False  # paper trading: notices come as H0STCNI9
    stale_s: float = 150.0  # no frame (data or PINGPONG) for this long: the session is dead
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.25
    backoff_cap_s: float = 1.0  # reconnect within ~1 s of the broker coming back
    # more sessions (approval keys), each with its own registrations: (app_key, app_secret)
    app_keys: tuple[tuple[str, str], ...] = ()
    registration_limit: int = KIS_REGISTRATION_LIMIT  # per session, over all TR IDs
    slot_margin: int = 1  # registrations kept spare per session
    lost_after_s: float = 120.0  # a session down this long: its slots move to the others
    scanner_dwell_s: float = 300.0  # a scanner find keeps its slot at least this long
    scanner_slots: int = 5  # movers promoted to scanner slots (0: none)
    scanner_every_s: float = 10.0  # how often the movers are ranked for those slots
    # the broker's rankings for market-wide finds (kis-rest.md §4, §5): how often (0: never)
    # and the rise a fluctuation-ranked code needs to be a find
    market_movers_every_s: float = 60.0
    market_movers_min_pct: float = 5.0
    slot_stale_s: float = 120.0  # a slot without data this long (market open) is re-registered
    market_holidays: tuple[date, ...] = ()  # KRX closed all day (weekends always are)
    # KRX's sessions moved on a day: (day, open delay, close delay) in minutes
    market_special_days: tuple[tuple[date, int, int], ...] = ()
    # a positions document (accounts.parse_positions) overriding the balance inquiry
    positions_url: str = ""
    positions_every_s: float = 60.0  # 0: never reconcile
    # the account (8 + 2 digits) whose balance inquiry gives the holdings (kis-rest.md §3);
    # the simulator's demo account when KIS is simulated
    account: str = ""
    token_file: str = "state/kis-tokens.json"  # access tokens kept across restarts (0600)
    rest_rate_per_s: float = 15.0  # REST calls a second per app key (1 on a paper account)
    # the broker's stock master files (kis-rest.md §8.3): names and markets ("": not loaded)
    master_url: str = "https://new.real.download.dws.co.kr/common/master"
    backfill: bool = True  # a closed feed gap's minutes fetched from the broker's minute bars
    daily_bars: bool = True  # the watched codes' daily bars cached (the daily VCP scan)
    # daily picks refreshed from a file or URL (slots/picks.py) at picks_at KST on trading days
    picks_source: str = ""
    picks_at: time = time(7, 20)

    def session_keys(self) -> list[tuple[str, str]]:
        return [(self.app_key, self.app_secret), *self.app_keys]

    def pick_keys(self) -> list[tuple[str, str]]:
        """The configured daily picks as (tr_id, code): trades for the watchlist, then the
        extra registrations."""
        regs = [(KIS_TRADES, code) for code in self.watchlist]
        return regs + [r for r in self.extra if r not in regs]

    def notice_key(self) -> tuple[str, str] | None:
        """The execution-notice registration (H0STCNI0, or H0STCNI9 when paper) for the HTS
        id, if one is configured."""
        return (
            (KIS_NOTICE_PAPER if self.paper else KIS_NOTICE, self.hts_id) if self.hts_id else None
        )

    def registrations(self) -> list[tuple[str, str]]:
        regs = [(KIS_TRADES, code) for code in self.watchlist]
        regs += [r for r in self.extra if r not in regs]
        notice = self.notice_key()
        if notice is not None:
            regs.append(notice)
        return regs


@dataclass(frozen=True)
class KiwoomSettings:
    """Kiwoom's REST API (kiwoom.md): a second price source pooled with KIS in the slot
    manager. Its sessions carry trades and order books for the codes it is preferred for,
    and take over KIS's when a KIS session is lost (and the other way round)."""

    enabled: bool = False
    ws_url: str = ""  # empty: the built-in simulator's
    rest_url: str = ""
    app_key: str = "sim-kiwoom-appkey"
    app_secret: str = "sim-kiwoom-secret"
    # registrations (item x type) per session: Kiwoom documents no limit (kiwoom.md §9); the
    # third-party clients keep to 100
    registration_limit: int = 100
    # codes whose trades and books come from Kiwoom while it is up ("*": every code); the
    # others prefer KIS, and either broker takes the other's codes when it is lost
    preferred: tuple[str, ...] = ()
    stale_s: float = 60.0  # Kiwoom PINGs (kiwoom.md §7): a silence this long is a lost session
    # with two brokers pooled, a session down this long is lost: its codes fail over to the
    # other broker (KIS's lost_after_s applies when KIS sessions only share the load)
    failover_after_s: float = 10.0
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.25
    backoff_cap_s: float = 1.0

    def prefers(self, code: str) -> bool:
        return self.enabled and ("*" in self.preferred or code in self.preferred)


@dataclass(frozen=True)
class LsSettings:
    enabled: bool = True
    ws_url: str = ""  # empty: the built-in simulator's
    rest_url: str = ""
    app_key: str = "sim-appkey"
    app_secret: str = "sim-appsecret"
    subscriptions: tuple[tuple[str, str], ...] = ((LS_NEWS, LS_NEWS_KEY),)
    min_title_chars: int = 5
    # id -> media name JSON; empty: no table, ids stored as "unknown:<id>" (LS publishes none;
    # against the simulator, its own table)
    media_file: str = ""
    stale_s: float = 600.0  # LS documents no heartbeat: only a long silence means dead
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.25
    backoff_cap_s: float = 1.0  # reconnect within ~1 s of the broker coming back


@dataclass(frozen=True)
class SimSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 7
    tickers: tuple[str, ...] = tuple(t.code for t in DEFAULT_TICKERS)
    tick_rate: float = 200.0  # trades per second over all tickers
    orderbook_rate: float = 1.0  # order-book snapshots per code per second
    program_rate: float = 0.2  # program-trading updates per code per second
    news_rate: float = 0.5  # headlines per second
    order_rate_per_min: float = 2.0  # the demo account's own orders
    demo_hts_id: str = "demo"
    demo_account: str = "5012345601"
    # the demo account's positions at start: (code, quantity, average price)
    demo_positions: tuple[tuple[str, int, float], ...] = ()
    ping_interval_s: float = 5.0
    max_missed_pings: int = 3
    max_records_per_frame: int = 3
    registration_limit: int = KIS_REGISTRATION_LIMIT
    kiwoom_registration_limit: int = 100  # per Kiwoom session (kiwoom.md §9: undocumented)
    drop_every_s: float = 0.0  # fault: close every session this often (0: never)
    malformed_rate: float = 0.0  # fault: share of data frames replaced by garbage
    reject_credentials: bool = False  # fault: refuse approval keys and tokens


@dataclass(frozen=True)
class DetectSettings:
    window_s: float = 60.0  # sudden move: the sliding window (seed 001: one minute) ...
    threshold: float = 0.05  # ... and the move from its extreme that raises an alert
    debounce_s: float = 60.0  # per code and direction: no second alert sooner
    redis_url: str = ""  # set: alerts go to Redis too, and signals come from it
    redis_alert_channel: str = "tradestream:alerts"
    redis_signal_channel: str = "tradestream:signals"
    # the strategies to run (strategies/loader.py): "name[{json}]; ..." ("": none)
    strategies: str = "news"
    scan_every_s: float = 0.0  # the VCP and day-trading scans on a schedule (0: on POST only)
    # the market gate's thresholds (detect/gate.py MarketGate's keywords), e.g. red_index_pct
    gate: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class PipelineSettings:
    tick_buffer: int = 10_000  # feed -> router: block (lossless)
    store_buffer: int = 10_000  # router -> flusher: block (lossless)


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    kis: KisSettings = field(default_factory=KisSettings)
    ls: LsSettings = field(default_factory=LsSettings)
    kiwoom: KiwoomSettings = field(default_factory=KiwoomSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    detect: DetectSettings = field(default_factory=DetectSettings)
    shutdown_timeout_s: float = 15.0  # hard stop after the first signal
    # "all" (one process, no Redis), "ingest" (brokers, store; messages out to Redis) or
    # "gateway" (clients, fed from Redis); the stream they share
    role: str = "all"
    redis_stream: str = "tradestream:stream"


ROLES = ("all", "ingest", "gateway")


# KOSPI and KOSDAQ (H0UPCNT0): registered by default, on the simulator and a real account alike
INDEX_PICKS: tuple[tuple[str, str], ...] = ((KIS_INDEX, "0001"), (KIS_INDEX, "1001"))
# picks that fit one real KIS session beside the execution notices (41 registrations less the
# spare the slot manager keeps, less one for the notices)
SESSION_PICKS = 39


def _time_of_day(raw: str | None, name: str, default: time) -> time:
    if raw is None:
        return default
    try:
        hh, mm = raw.split(":")
        return time(int(hh), int(mm))
    except ValueError:
        raise ConfigError(f"TRADESTREAM_{name}={raw!r} is not a time of day HH:MM") from None


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
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(
            f"TRADESTREAM_{name}={raw!r} is not {what} (default: {default:g})"
        ) from None
    if value < 0:
        raise ConfigError(f"TRADESTREAM_{name} must not be negative")
    return value


def _codes(raw: str, name: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    bad = [c for c in codes if not (len(c) == 6 and c.isalnum())]
    if bad:
        raise ConfigError(f"TRADESTREAM_{name}: not 6-character stock codes: {bad}")
    return codes


def _pairs(raw: str, name: str) -> tuple[tuple[str, str], ...]:
    """``TR:KEY,TR:KEY`` -> ((TR, KEY), ...)."""
    out = []
    for item in raw.split(","):
        tr, sep, key = item.strip().partition(":")
        if not (sep and tr and key):
            raise ConfigError(f"TRADESTREAM_{name}: expected TR:KEY pairs, got {item!r}")
        out.append((tr, key))
    return tuple(out)


def _positions(raw: str, name: str) -> tuple[tuple[str, int, float], ...]:
    """``CODE:QTY:AVG,...`` -> ((code, qty, avg), ...)."""
    out = []
    for item in filter(None, (i.strip() for i in raw.split(","))):
        parts = item.split(":")
        try:
            code, qty, avg = parts[0], int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ConfigError(
                f"TRADESTREAM_{name}: expected CODE:QTY:AVG_PRICE, got {item!r}"
            ) from None
        if len(code) != 6 or qty <= 0 or avg < 0:
            raise ConfigError(f"TRADESTREAM_{name}: bad position {item!r}")
        out.append((code, qty, avg))
    return tuple(out)


def _special_days(raw: str) -> tuple[tuple[date, int, int], ...]:
    """``2026-11-19=60/60,2027-01-04=60/0``: the day, then by how many minutes KRX's open
    and close move (session_calendar.SpecialDay)."""
    out = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        try:
            day, _, delays = item.partition("=")
            open_min, _, close_min = delays.partition("/")
            out.append((date.fromisoformat(day.strip()), int(open_min), int(close_min)))
        except ValueError:
            raise ConfigError(
                f"TRADESTREAM_MARKET_SPECIAL_DAYS: expected YYYY-MM-DD=open/close minutes, "
                f"got {item!r}"
            ) from None
    return tuple(sorted(out))


def _dates(raw: str, name: str) -> tuple[date, ...]:
    try:
        return tuple(sorted({date.fromisoformat(d.strip()) for d in raw.split(",") if d.strip()}))
    except ValueError:
        raise ConfigError(f"TRADESTREAM_{name}: expected YYYY-MM-DD,YYYY-MM-DD,...") from None


def _topic_roles(raw: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``strategy=admin|producer;signal=admin`` -> (("strategy", ("admin", "producer")), ...)."""
    out = []
    for item in filter(None, (i.strip() for i in raw.split(";"))):
        kind, sep, roles = item.partition("=")
        names = tuple(r.strip() for r in roles.split("|") if r.strip())
        if not (sep and kind.strip() and names):
            raise ConfigError(f"TRADESTREAM_WS_TOPIC_ROLES: expected kind=role|role, got {item!r}")
        unknown = [r for r in names if r not in ("user", "producer", "admin")]
        if unknown:
            raise ConfigError(
                f"TRADESTREAM_WS_TOPIC_ROLES: unknown roles {unknown} (user, producer, admin)"
            )
        from tradestream.topics import KINDS  # the gateway's topic kinds

        if kind.strip() not in KINDS:  # a misspelt kind would leave that topic open to all
            raise ConfigError(
                f"TRADESTREAM_WS_TOPIC_ROLES: unknown topic kind {kind.strip()!r} "
                f"({', '.join(sorted(KINDS))})"
            )
        out.append((kind.strip(), names))
    return tuple(out)


# The demo account's holdings when TRADESTREAM_SIM_POSITIONS is not set ("none": no holdings):
# SK hynix and Kakao, outside the default watchlist's first codes, so holding slots show.
DEMO_POSITIONS = "000660:15:182000,035720:40:45250"


def _sim_positions(raw: str | None) -> str:
    if raw is None:
        return DEMO_POSITIONS
    return "" if raw.strip().lower() in ("", "none") else raw


def _gate(raw: str | None) -> tuple[tuple[str, float], ...]:
    if raw is None:
        return ()
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in doc.values()
        ):
            raise ValueError("an object of numbers")
    except ValueError as exc:
        raise ConfigError(
            f"TRADESTREAM_MARKET_GATE must be a JSON object of numbers, e.g. "
            f'{{"red_index_pct": -1.5}} ({exc})'
        ) from None
    return tuple((str(k), float(v)) for k, v in doc.items())


def _strategies(env: Mapping[str, str]) -> str:
    raw = env.get("TRADESTREAM_STRATEGIES")
    if raw is None:
        return DetectSettings.strategies
    return "" if raw.strip().lower() in ("", "none") else raw.strip()


def _master_url(raw: str | None, default: str) -> str:
    if raw is None:
        return default
    return "" if raw.lower() in ("none", "0", "off") else raw


def _account(raw: str) -> str:
    digits = raw.replace("-", "").strip()
    if digits and (len(digits) != 10 or not digits.isdigit()):
        raise ConfigError(
            f"TRADESTREAM_KIS_ACCOUNT={raw!r} is not a KIS account number (8 + 2 digits, "
            "e.g. 50012345-01)"
        )
    return digits


def _flag(env: Mapping[str, str], name: str) -> bool:
    return (_get(env, name) or "0").lower() in ("1", "true", "yes")


def _kiwoom(env: Mapping[str, str], sim: SimSettings, watchlist: Sequence[str]) -> KiwoomSettings:
    """Kiwoom: on with its URLs, or on the simulator unless TRADESTREAM_KIWOOM_DISABLED; there
    it is preferred for every second code of the watchlist unless told otherwise, so that the
    simulated run streams through both brokers."""
    ws, rest = _get(env, "KIWOOM_WS_URL"), _get(env, "KIWOOM_REST_URL")
    if (ws is None) != (rest is None):
        raise ConfigError(
            "set both TRADESTREAM_KIWOOM_WS_URL and TRADESTREAM_KIWOOM_REST_URL, or neither"
        )
    enabled = ws is not None or sim.enabled and not _flag(env, "KIWOOM_DISABLED")
    raw = _get(env, "KIWOOM_PREFERRED")
    if raw is None:
        preferred = tuple(watchlist[1::2]) if ws is None else ()
    else:
        preferred = tuple(c.strip() for c in raw.split(",") if c.strip())
    bad = [c for c in preferred if c != "*" and not (len(c) == 6 and c.isalnum())]
    if bad:
        raise ConfigError(f"TRADESTREAM_KIWOOM_PREFERRED: not stock codes: {', '.join(bad)}")
    d = KiwoomSettings
    limit = int(_num(env, "KIWOOM_REGISTRATION_LIMIT", d.registration_limit, int))
    if limit < 1:
        raise ConfigError("TRADESTREAM_KIWOOM_REGISTRATION_LIMIT must be at least 1")
    return KiwoomSettings(
        enabled=enabled,
        ws_url=ws or "",
        rest_url=rest or "",
        app_key=_get(env, "KIWOOM_APP_KEY") or d.app_key,
        app_secret=_get(env, "KIWOOM_APP_SECRET") or d.app_secret,
        registration_limit=limit,
        preferred=preferred,
        stale_s=_num(env, "KIWOOM_STALE_S", d.stale_s) or d.stale_s,
        failover_after_s=_num(env, "FAILOVER_AFTER_S", d.failover_after_s) or d.failover_after_s,
    )


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from TRADESTREAM_* variables (see README, Configuration)."""
    env = os.environ if env is None else env
    ws_url, rest_url = _get(env, "KIS_WS_URL"), _get(env, "KIS_REST_URL")
    if (ws_url is None) != (rest_url is None):
        raise ConfigError(
            "set both TRADESTREAM_KIS_WS_URL and TRADESTREAM_KIS_REST_URL, or neither"
        )
    ls_ws, ls_rest = _get(env, "LS_WS_URL"), _get(env, "LS_REST_URL")
    if (ls_ws is None) != (ls_rest is None):
        raise ConfigError("set both TRADESTREAM_LS_WS_URL and TRADESTREAM_LS_REST_URL, or neither")
    use_sim = ws_url is None
    sim = SimSettings(
        enabled=use_sim,
        port=int(_num(env, "SIM_PORT", 0, int)),
        seed=int(_num(env, "SIM_SEED", 7, int)),
        tick_rate=_num(env, "SIM_TICK_RATE", SimSettings.tick_rate),
        news_rate=_num(env, "SIM_NEWS_RATE", SimSettings.news_rate),
        orderbook_rate=_num(env, "SIM_ORDERBOOK_RATE", SimSettings.orderbook_rate),
        program_rate=_num(env, "SIM_PROGRAM_RATE", SimSettings.program_rate),
        order_rate_per_min=_num(env, "SIM_ORDER_RATE", SimSettings.order_rate_per_min),
        drop_every_s=_num(env, "SIM_DROP_EVERY_S", 0.0),
        malformed_rate=_num(env, "SIM_MALFORMED_RATE", 0.0),
        demo_positions=_positions(_sim_positions(_get(env, "SIM_POSITIONS")), "SIM_POSITIONS"),
    )
    watch_raw = _get(env, "WATCHLIST")
    extra_raw = _get(env, "KIS_EXTRA")
    indexes = (_get(env, "KIS_INDEXES") or "1").lower() in ("1", "true", "yes")
    hts_id = _get(env, "KIS_HTS_ID")
    keys_raw = _get(env, "KIS_EXTRA_APP_KEYS")
    app_keys = _pairs(keys_raw, "KIS_EXTRA_APP_KEYS") if keys_raw else ()
    if use_sim:
        # The demo: trades for all 50 simulated codes, two order books, one program-trading
        # stream, KOSPI and KOSDAQ, and the demo account's notices: 56 registrations, which
        # the slot manager spreads over two KIS sessions.
        watchlist = _codes(watch_raw, "WATCHLIST") if watch_raw else sim.tickers
        extra = (
            _pairs(extra_raw, "KIS_EXTRA")
            if extra_raw
            else (
                (KIS_BOOK, "005930"),
                (KIS_BOOK, "000660"),
                (KIS_PROGRAM, "005930"),
                *(INDEX_PICKS if indexes else ()),
            )
        )
        hts_id = hts_id if hts_id is not None else sim.demo_hts_id
    else:
        # A real account: KOSPI and KOSDAQ (the market gate, market:* topics) unless turned
        # off, inside one session's budget with the default watchlist and the notices
        extra = _pairs(extra_raw, "KIS_EXTRA") if extra_raw else ()
        added = tuple(p for p in INDEX_PICKS if p not in extra) if indexes else ()
        extra = (*extra, *added)
        default_codes = sim.tickers[: SESSION_PICKS - len(added)]
        watchlist = _codes(watch_raw, "WATCHLIST") if watch_raw else default_codes
    notices = [f"{t}:{c}" for t, c in extra if t in NOTICE_TR_IDS]
    if notices:  # the driver registers the notices itself; a pick too would double every fill
        raise ConfigError(
            f"TRADESTREAM_KIS_EXTRA: {', '.join(notices)}: execution notices "
            "are registered from TRADESTREAM_KIS_HTS_ID, not as picks"
        )
    k = KisSettings
    kis = KisSettings(
        ws_url=ws_url or "",
        rest_url=rest_url or "",
        app_key=_get(env, "KIS_APP_KEY") or KisSettings.app_key,
        app_secret=_get(env, "KIS_APP_SECRET") or KisSettings.app_secret,
        approval_key=_get(env, "KIS_APPROVAL_KEY") or "",
        watchlist=watchlist,
        extra=extra,
        hts_id=hts_id or "",
        paper=_flag(env, "KIS_PAPER"),
        # The simulator pings every few seconds; the real server's interval is unknown and
        # reported at up to ~110 s (kis.md §5.3), so only a long silence means a dead session.
        stale_s=_num(env, "KIS_STALE_S", 15.0 if use_sim else KisSettings.stale_s),
        app_keys=app_keys if app_keys or not use_sim else (("sim-appkey-2", "sim-appsecret-2"),),
        registration_limit=int(_num(env, "KIS_REGISTRATION_LIMIT", k.registration_limit, int)),
        slot_margin=int(_num(env, "KIS_SLOT_MARGIN", k.slot_margin, int)),
        lost_after_s=_num(env, "KIS_LOST_AFTER_S", k.lost_after_s),
        slot_stale_s=_num(env, "KIS_SLOT_STALE_S", k.slot_stale_s) or k.slot_stale_s,
        scanner_slots=int(_num(env, "SCANNER_SLOTS", k.scanner_slots, int)),
        scanner_dwell_s=_num(env, "SCANNER_DWELL_S", k.scanner_dwell_s),
        scanner_every_s=_num(env, "SCANNER_EVERY_S", k.scanner_every_s) or k.scanner_every_s,
        market_movers_every_s=_num(env, "MARKET_MOVERS_EVERY_S", k.market_movers_every_s),
        market_movers_min_pct=_num(env, "MARKET_MOVERS_MIN_PCT", k.market_movers_min_pct),
        market_holidays=_dates(_get(env, "MARKET_HOLIDAYS") or "", "MARKET_HOLIDAYS"),
        market_special_days=_special_days(_get(env, "MARKET_SPECIAL_DAYS") or ""),
        positions_url=_get(env, "POSITIONS_URL") or "",
        positions_every_s=_num(env, "POSITIONS_EVERY_S", k.positions_every_s),
        account=_account(_get(env, "KIS_ACCOUNT") or ""),
        token_file=_get(env, "KIS_TOKEN_FILE") or k.token_file,
        master_url=_master_url(_get(env, "KIS_MASTER_URL"), k.master_url),
        backfill=(_get(env, "BACKFILL") or "1").lower() not in ("0", "false", "no"),
        daily_bars=(_get(env, "DAILY_BARS") or "1").lower() not in ("0", "false", "no"),
        rest_rate_per_s=_num(env, "KIS_REST_RATE", 1.0 if _flag(env, "KIS_PAPER") else 15.0) or 1.0,
        picks_source=_get(env, "PICKS_SOURCE") or "",
        picks_at=_time_of_day(_get(env, "PICKS_AT"), "PICKS_AT", k.picks_at),
    )
    notice_slots = 1 if kis.hts_id else 0
    if kis.registration_limit - kis.slot_margin - notice_slots < 1:
        raise ConfigError(
            "TRADESTREAM_KIS_REGISTRATION_LIMIT minus TRADESTREAM_KIS_SLOT_MARGIN leaves no "
            "registration for market data"
            + (" beside the execution notice" if notice_slots else "")
        )
    ls_subs = _get(env, "LS_SUBSCRIBE")
    ls = LsSettings(
        enabled=ls_ws is not None or sim.enabled and not _flag(env, "LS_DISABLED"),
        ws_url=ls_ws or "",
        rest_url=ls_rest or "",
        app_key=_get(env, "LS_APP_KEY") or LsSettings.app_key,
        app_secret=_get(env, "LS_APP_SECRET") or LsSettings.app_secret,
        subscriptions=_pairs(ls_subs, "LS_SUBSCRIBE") if ls_subs else LsSettings.subscriptions,
        media_file=_get(env, "LS_MEDIA_FILE") or "",
        stale_s=_num(env, "LS_STALE_S", 30.0 if ls_ws is None else LsSettings.stale_s),
    )
    kiwoom = _kiwoom(env, sim, kis.watchlist)
    secret = _get(env, "JWT_SECRET")
    if secret is not None and len(secret.encode()) < 32:
        raise ConfigError("TRADESTREAM_JWT_SECRET must be at least 32 bytes (RFC 7518 §3.2)")
    algorithm = (_get(env, "JWT_ALGORITHM") or "HS256").upper()
    if algorithm not in ("HS256", "RS256"):
        raise ConfigError("TRADESTREAM_JWT_ALGORITHM must be HS256 or RS256")
    public_key = ""
    if algorithm == "RS256":
        key_file = _get(env, "JWT_PUBLIC_KEY_FILE")
        if key_file is None:
            raise ConfigError("RS256 needs TRADESTREAM_JWT_PUBLIC_KEY_FILE (a PEM public key)")
        try:
            with open(key_file, encoding="ascii") as f:
                public_key = f.read()
        except OSError as exc:
            raise ConfigError(f"TRADESTREAM_JWT_PUBLIC_KEY_FILE: {exc}") from None
    g = GatewaySettings
    gateway = GatewaySettings(
        host=_get(env, "HOST") or g.host,
        port=int(_num(env, "PORT", g.port, int)),
        jwt_secret=secret or os.urandom(32).hex(),
        jwt_secret_generated=secret is None and algorithm == "HS256",
        jwt_algorithm=algorithm,
        jwt_public_key=public_key,
        ping_interval_s=_num(env, "WS_PING_INTERVAL_S", g.ping_interval_s) or g.ping_interval_s,
        max_missed_pongs=int(_num(env, "WS_MAX_MISSED_PONGS", g.max_missed_pongs, int)) or 1,
        rate_per_s=_num(env, "WS_RATE_PER_S", g.rate_per_s) or g.rate_per_s,
        rate_burst=int(_num(env, "WS_RATE_BURST", g.rate_burst, int)) or 1,
        max_subscriptions=int(_num(env, "WS_MAX_SUBSCRIPTIONS", g.max_subscriptions, int)),
        max_message_bytes=int(_num(env, "WS_MAX_MESSAGE_BYTES", g.max_message_bytes, int)),
        max_connections_per_user=int(
            _num(env, "WS_MAX_CONNECTIONS_PER_USER", g.max_connections_per_user, int)
        ),
        max_connections=int(_num(env, "WS_MAX_CONNECTIONS", g.max_connections, int)),
        send_timeout_s=_num(env, "WS_SEND_TIMEOUT_S", g.send_timeout_s) or g.send_timeout_s,
        batch_delay_s=_num(env, "WS_BATCH_DELAY_MS", g.batch_delay_s * 1000) / 1000,
        handshake_timeout_s=_num(env, "WS_HANDSHAKE_TIMEOUT_S", g.handshake_timeout_s)
        or g.handshake_timeout_s,
        outbox_max=int(_num(env, "WS_OUTBOX_MAX", g.outbox_max, int)) or g.outbox_max,
        history_size=int(_num(env, "HISTORY_SIZE", g.history_size, int)),
        history_ttl_s=_num(env, "HISTORY_TTL_S", g.history_ttl_s) or g.history_ttl_s,
        max_pending_handshakes=int(
            _num(env, "WS_MAX_PENDING_HANDSHAKES", g.max_pending_handshakes, int)
        ),
        max_demand_per_user=int(_num(env, "WS_MAX_DEMAND_PER_USER", g.max_demand_per_user, int)),
        rate_close_after=int(_num(env, "WS_RATE_CLOSE_AFTER", g.rate_close_after, int))
        or g.rate_close_after,
        topic_roles=_topic_roles(_get(env, "WS_TOPIC_ROLES") or ""),
    )
    store = StoreSettings(
        url=_get(env, "DATABASE_URL") or StoreSettings.url,
        flush_rows=int(_num(env, "FLUSH_ROWS", StoreSettings.flush_rows, int)) or 1,
        flush_interval_s=_num(env, "FLUSH_INTERVAL_S", StoreSettings.flush_interval_s),
        write_timeout_s=_num(env, "DB_WRITE_TIMEOUT_S", StoreSettings.write_timeout_s)
        or StoreSettings.write_timeout_s,
        auto_upgrade=_flag(env, "DB_AUTO_UPGRADE"),
        spool_dir=_get(env, "SPOOL_DIR") or StoreSettings.spool_dir,
        journal=(_get(env, "JOURNAL") or "1").lower() not in ("0", "false", "no"),
        memory_rows=int(_num(env, "MEMORY_ROWS", StoreSettings.memory_rows, int)),
    )
    detect = DetectSettings(
        window_s=_num(env, "ALERT_WINDOW_S", DetectSettings.window_s) or DetectSettings.window_s,
        threshold=_num(env, "ALERT_THRESHOLD", DetectSettings.threshold)
        or DetectSettings.threshold,
        debounce_s=_num(env, "ALERT_DEBOUNCE_S", DetectSettings.debounce_s),
        redis_url=_get(env, "REDIS_URL") or "",
        strategies=_strategies(env),
        gate=_gate(_get(env, "MARKET_GATE")),
        scan_every_s=_num(env, "SCAN_EVERY_S", 0.0),
    )
    role = (_get(env, "ROLE") or "all").lower()
    if role not in ROLES:
        raise ConfigError(f"TRADESTREAM_ROLE={role!r}: one of {', '.join(ROLES)}")
    if role != "all" and not detect.redis_url:
        raise ConfigError(f"the {role} role needs TRADESTREAM_REDIS_URL (the roles share Redis)")
    dev = gateway.jwt_secret_generated and sim.enabled and role != "gateway"
    return Settings(
        gateway=replace(gateway, dev_token=dev),
        store=store,
        kis=kis,
        ls=ls,
        kiwoom=kiwoom,
        sim=sim,
        detect=detect,
        role=role,
        redis_stream=_get(env, "REDIS_STREAM") or Settings.redis_stream,
    )
