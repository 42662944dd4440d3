"""Typed, immutable events that flow through the pipeline.

Events are msgspec Structs: cheap to create (no __dict__, no GC tracking) and cheap to encode.
Every event carries the feed session it came from (`source`), its receive time
(`received_ns`, wall clock, ns since the epoch) and a natural key that identifies it across
reconnects, so that storage can de-duplicate re-sent records.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec

KST = timezone(timedelta(hours=9), "KST")


class Tick(msgspec.Struct, frozen=True, gc=False, tag=True):
    """One trade (KIS H0STCNT0 record and siblings).

    `volume` is the day's accumulated volume (ACML_VOL); `trade_volume` is this trade's.
    """

    source: str
    venue: str  # "KRX", "NXT" or "UN" (KRX+NXT unified stream)
    code: str
    trade_time: datetime  # business date + execution time, tz-aware (KST)
    price: int
    change: int  # signed, versus the prior close
    change_percent: float
    open: int
    high: int
    low: int
    ask: int
    bid: int
    trade_volume: int
    volume: int
    value: int  # accumulated traded value, KRW
    strength: float  # execution strength (CTTR)
    received_ns: int

    @property
    def key(self) -> tuple[str, str, datetime, int]:
        """Natural key: a venue's accumulated volume only grows, so it pins one trade."""
        return (self.venue, self.code, self.trade_time, self.volume)


class OrderBook(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A 10-level order book snapshot (KIS H0STASP0, LS H1_/HA_). Level 1 is the best."""

    source: str
    venue: str
    code: str
    quote_time: datetime  # tz-aware KST; the date is the receive date when the feed has none
    ask_prices: tuple[int, ...]
    bid_prices: tuple[int, ...]
    ask_sizes: tuple[int, ...]
    bid_sizes: tuple[int, ...]
    total_ask_size: int
    total_bid_size: int
    expected_price: int  # expected match price during call auctions, else 0
    expected_volume: int
    volume: int  # accumulated volume, 0 when the feed does not say
    received_ns: int

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.venue,
            self.code,
            self.quote_time,
            self.volume,
            self.total_ask_size,
            self.total_bid_size,
            self.ask_prices[0],
            self.bid_prices[0],
        )


class ProgramTrade(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Accumulated program trading for a code (KIS H0STPGM0)."""

    source: str
    venue: str
    code: str
    trade_time: datetime  # tz-aware KST
    sell_qty: int
    sell_value: int
    buy_qty: int
    buy_value: int
    net_qty: int
    net_value: int
    sell_rest: int
    buy_rest: int
    net_rest: int
    received_ns: int

    @property
    def key(self) -> tuple[object, ...]:
        return (self.venue, self.code, self.trade_time, self.sell_qty, self.buy_qty)


class Execution(msgspec.Struct, frozen=True, gc=False, tag=True):
    """An order or fill notice for the account (KIS H0STCNI0/H0STCNI9, decrypted)."""

    source: str
    customer_id: str  # HTS id
    account: str
    order_no: str
    original_order_no: str
    side: str  # "buy" or "sell"
    kind: str  # "order" (accepted/modified/cancelled/rejected notice) or "fill"
    correction: str  # "new", "modify" or "cancel"
    rejected: bool
    code: str
    quantity: int  # executed quantity for a fill; order quantity for an order notice
    price: int  # executed price for a fill; order price for an order notice
    order_qty: int
    order_price: int
    time: datetime  # tz-aware KST
    name: str
    received_ns: int
    # KIS gives a notice no id of its own: two genuine partial fills of one order with the same
    # quantity and price in the same second are identical. `seq` tells them apart: the how-many-
    # th notice with this content one session received (1, 2, ...). The same notice arriving on
    # two sockets (a handover) is the first on each, so it is stored and counted once.
    seq: int = 1

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.account, self.order_no, self.kind, self.time, self.quantity, self.price, self.seq
        )  # fmt: skip


class News(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A news headline (LS NWS), normalised as in seed 000."""

    source: str
    realkey: str
    title: str
    tickers: tuple[str, ...]
    ticker: str | None  # the primary ticker: the first one, if any
    media_id: str
    media: str
    published_at: datetime  # tz-aware KST
    body_size: int
    received_ns: int

    @property
    def key(self) -> str:
        return self.realkey


class FeedGap(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A feed session was not streaming from `start` to `end` (UTC): silence is not a quiet
    market."""

    source: str
    start: datetime
    end: datetime
    reason: str
    # the codes the gap concerns when not all of the session's (a failover: the codes that
    # moved to another session); empty: every code the session carries
    codes: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[object, ...]:
        return (self.source, self.start)


class IndexTick(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A market index update (KIS H0UPCNT0, docs/kis-index.md).

    `volume` and `traded_value` are the day's accumulated figures as the broker sends them
    (ACML_VOL, ACML_TR_PBMN): by their magnitudes in KIS's own example, thousands of shares and
    millions of KRW (inferred, not documented). The issue counts are 0 when not reported.
    """

    source: str
    index: str  # "kospi", "kosdaq", "kospi200", or the raw code when unknown
    code: str  # the raw index code (tr_key), e.g. "0001"
    time: datetime  # tz-aware KST; the record has no date: the date is the receive date
    value: float  # index points
    change: float  # signed, versus the prior close
    change_percent: float  # signed
    volume: int  # accumulated (ACML_VOL)
    traded_value: int  # accumulated (ACML_TR_PBMN)
    advancers: int  # ASCN_ISSU_CNT, as sent
    decliners: int  # DOWN_ISSU_CNT, as sent
    unchanged: int  # STNR_ISSU_CNT
    received_ns: int

    @property
    def key(self) -> tuple[str, datetime, int]:
        """Natural key: an index's accumulated volume only grows within a day."""
        return (self.code, self.time, self.volume)


class Alert(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A detector's finding, e.g. a sudden move (detect/sudden.py)."""

    source: str  # the detector, e.g. "sudden-move"
    code: str
    kind: str  # "sudden_move"
    direction: str  # "up" or "down"
    change_percent: float  # signed
    price: int
    reference_price: int  # the window's extreme the move is measured from
    window_s: float
    triggered_at: datetime  # the triggering trade's time (KST)
    message: str
    received_ns: int  # the triggering trade's upstream receive time

    @property
    def key(self) -> tuple[object, ...]:
        return (self.code, self.kind, self.direction, self.triggered_at)


class Signal(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A scanner's or a strategy's output, stored as one row per item."""

    source: str  # who produced it: "scanner", "rest", "redis", "strategy"
    kind: str  # "vcp", "daytrading", "strategy:<id>"
    strategy: str
    code: str  # "" when market-wide
    payload: dict[str, object]
    created_at: datetime
    received_ns: int

    @property
    def key(self) -> tuple[object, ...]:
        return (self.kind, self.strategy, self.code, self.created_at)


class SlotAudit(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A slot manager decision (grant, evict, refuse, move, ...) with its reason."""

    source: str  # "slots"
    at: datetime
    action: str
    session: str  # "" when none (pending, refused)
    tr_id: str
    code: str
    priority: str
    reason: str
    received_ns: int = 0

    @property
    def key(self) -> tuple[object, ...]:
        return (self.at, self.action, self.tr_id, self.code)


class MinuteBar(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A one-minute bar the broker gave for a minute a feed gap lost (a backfill); `minute`
    is the minute's start (UTC)."""

    source: str  # "kis-rest"
    code: str
    minute: datetime
    open: int
    high: int
    low: int
    close: int
    volume: int
    received_ns: int = 0

    @property
    def key(self) -> tuple[object, ...]:
        return (self.code, self.minute)


class Backfill(msgspec.Struct, frozen=True, gc=False, tag=True):
    """What the backfill of one feed gap did: `status` "done", "partial" (part of the gap
    lies beyond the minute-bar endpoint's reach, said in `detail`), "beyond_reach", "closed"
    (the market was closed all through it) or "failed"."""

    source: str  # the gap's session
    start: datetime
    end: datetime
    codes: int
    bars: int
    status: str
    detail: str
    received_ns: int = 0

    @property
    def key(self) -> tuple[object, ...]:
        return (self.source, self.start)


Event = (
    Tick
    | OrderBook
    | ProgramTrade
    | Execution
    | News
    | FeedGap
    | IndexTick
    | Alert
    | Signal
    | SlotAudit
    | MinuteBar
    | Backfill
)
