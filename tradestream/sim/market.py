"""A deterministic random-walk market producing KIS records (pure, no I/O).

Given a seed, the sequence of trades (which code, price, volumes) is always the same; only the
wall-clock time stamped on each record comes from the caller. Prices move on the KRX tick-size
grid and stay within the daily +-30% limits, with the sign codes of kis.md §7.1.

Besides trades (H0STCNT0, §7.1) the market quotes order books (H0STASP0, §7.2) and program
trading (H0STPGM0, §7.3) around each stock's current price, from random streams of their own:
asking for a book never changes the trades a seed produces. `execution_notice` and
`encrypted_frame` build the account's notices (H0STCNI0, §7.4) and their encrypted frames (§6.1).

`index_record` reports a market index (H0UPCNT0, docs/kis-index.md) computed from the stocks of
its market: no randomness of its own, so it never changes what a seed produces either.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# the universe the market trades (re-exported: the simulator's callers name them from here)
from tradestream.universe import DEFAULT_TICKERS as DEFAULT_TICKERS
from tradestream.universe import KOSDAQ_CODES as KOSDAQ_CODES
from tradestream.universe import SimTicker as SimTicker


@dataclass(frozen=True)
class SimIndex:
    code: str  # the index code (업종구분코드), H0UPCNT0's tr_key
    name: str
    market: str  # its constituents: the tickers of this SimTicker.market
    prior_close: int  # hundredths of a point


SIM_INDEXES: tuple[SimIndex, ...] = (
    SimIndex("0001", "KOSPI", "KOSPI", 265000),
    SimIndex("1001", "KOSDAQ", "KOSDAQ", 87000),
    SimIndex("2001", "KOSPI200", "KOSPI", 35000),
)


def tick_size(price: int) -> int:
    """KRX price unit for a price level (2023 unified table)."""
    for bound, unit in ((2000, 1), (5000, 5), (20000, 10), (50000, 50), (200000, 100),
                        (500000, 500)):  # fmt: skip
        if price < bound:
            return unit
    return 1000


def _floor_to_tick(price: int) -> int:
    unit = tick_size(price)
    return price // unit * unit


def _ceil_to_tick(price: int) -> int:
    # Band bounds are multiples of the coarser unit, so rounding up never leaves the grid.
    unit = tick_size(price)
    return -(-price // unit) * unit


def step_ticks(price: int, steps: int) -> int:
    """Move `steps` ticks up (positive) or down on the KRX grid, one tick at a time: the
    unit depends on the price level, and a move across a band edge changes it."""
    for _ in range(steps):
        price += tick_size(price)
    for _ in range(-steps):
        price -= tick_size(price - 1)
    return price


class _Stock:
    __slots__ = (
        "code", "prev_close", "upper", "lower", "price", "open", "high", "low", "open_time",
        "high_time", "low_time", "volume", "value", "sell_count", "buy_count", "sell_qty",
        "buy_qty", "prior_volume", "book_totals", "pgm_sell_qty", "pgm_sell_value",
        "pgm_buy_qty", "pgm_buy_value",
    )  # fmt: skip

    def __init__(self, t: SimTicker, rng: random.Random) -> None:
        self.code = t.code
        self.prev_close = t.base_price
        # Daily limits: +-30% of the prior close, inside the band, on the grid (integer math).
        self.upper = _floor_to_tick(t.base_price * 13 // 10)
        self.lower = _ceil_to_tick(-(-t.base_price * 7 // 10))
        self.price = 0  # no trade yet today
        self.open = self.high = self.low = 0
        self.open_time = self.high_time = self.low_time = ""
        self.volume = self.value = 0
        self.sell_count = self.buy_count = self.sell_qty = self.buy_qty = 0
        self.prior_volume = rng.randrange(1_000_000, 20_000_000)
        self.book_totals: tuple[int, int] | None = None  # the last book's total ask/bid sizes
        self.pgm_sell_qty = self.pgm_sell_value = self.pgm_buy_qty = self.pgm_buy_value = 0


class _Index:
    __slots__ = ("spec", "members", "open", "high", "low", "volume", "value")

    def __init__(self, spec: SimIndex, members: list[_Stock]) -> None:
        self.spec = spec
        self.members = members
        self.open = self.high = self.low = 0  # hundredths; 0: not reported yet today
        self.volume = self.value = 0  # as last reported, for the per-update fields

    def level(self) -> int:
        """In hundredths of a point: the prior close times the members' summed price over their
        summed prior close (a price-weighted index: the prior-close-weighted average of their
        % changes), rounded half up. No members: the prior close."""
        base = self.spec.prior_close
        closes = sum(s.prev_close for s in self.members)
        if not closes:
            return base
        prices = sum(s.price or s.prev_close for s in self.members)
        return (2 * base * prices + closes) // (2 * closes)


def _points(centi: int) -> str:
    """Hundredths of a point as KIS writes a level or change: "2624.54", "-3.05"."""
    sign = "-" if centi < 0 else ""
    return f"{sign}{abs(centi) // 100}.{abs(centi) % 100:02d}"


def _sign(d: int) -> str:
    return "2" if d > 0 else "5" if d < 0 else "3"


_STEPS = (-2, -1, -1, 0, 0, 0, 1, 1, 2)
# Salts for the order book and program trading streams: each has its own random.Random, so
# that the trade sequence of a seed does not depend on what else was asked of the market.
_BOOK_SALT = 0x0B00C
_PROGRAM_SALT = 0x9A0
_BOOK_LOTS = (1, 1, 2, 3, 5, 10, 20, 50)
_PROGRAM_LOTS = (1, 2, 5, 10, 50, 100)


MAX_BAR_MINUTES = 1500  # a day of minute bars per code


class SimMarket:
    """The state of every simulated ticker; `trade()` advances one of them by one trade."""

    def __init__(self, tickers: tuple[SimTicker, ...], seed: int) -> None:
        if not tickers:
            raise ValueError("a market needs at least one ticker")
        self._rng = random.Random(seed)
        self._book_rng = random.Random(seed ^ _BOOK_SALT)
        self._program_rng = random.Random(seed ^ _PROGRAM_SALT)
        self._stocks = {t.code: _Stock(t, self._rng) for t in tickers}
        self._codes = list(self._stocks)
        # per code, its trades' one-minute bars: "YYYYMMDDHHMM" -> [open, high, low, close,
        # volume], the latest MAX_BAR_MINUTES of them (the broker's minute-bar endpoint)
        self.bars: dict[str, dict[str, list[int]]] = {}
        self._indexes = {
            i.code: _Index(i, [self._stocks[t.code] for t in tickers if t.market == i.market])
            for i in SIM_INDEXES
        }

    @property
    def index_codes(self) -> list[str]:
        """The codes of SIM_INDEXES, H0UPCNT0's tr_keys."""
        return list(self._indexes)

    def index_level(self, code: str) -> float:
        """The index's current level, in points."""
        return self._indexes[code].level() / 100

    def index_record(self, code: str, now: datetime) -> list[str]:
        """The index's 30 H0UPCNT0 fields (docs/kis-index.md), as of now.

        Level and change come from the member stocks' prices (see _Index.level); the open is
        the first level reported today, high and low the extremes of the reported levels.
        Volume is the members' accumulated volume in thousands of shares, the traded value
        in millions of KRW (the units KIS's example implies); the per-update fields are the
        growth since this index's previous record. Issue counts split the members by their
        sign versus the prior close: limit up, up, unchanged, down, limit down. Following
        KIS's example, the open/high/low "vs" fields are versus the prior close.
        """
        ix = self._indexes[code]
        base = ix.spec.prior_close
        level = ix.level()
        if not ix.open:
            ix.open = ix.high = ix.low = level
        ix.high, ix.low = max(ix.high, level), min(ix.low, level)
        volume = sum(s.volume for s in ix.members) // 1000
        value = sum(s.value for s in ix.members) // 1_000_000
        tick_vol, tick_value = volume - ix.volume, value - ix.value
        ix.volume, ix.value = volume, value
        counts = [0, 0, 0, 0, 0]  # upper limit, up, unchanged, down, lower limit
        for s in ix.members:
            p = s.price or s.prev_close
            counts[0 if p >= s.upper else 1 if p > s.prev_close else 2 if p == s.prev_close
                   else 4 if p <= s.lower else 3] += 1  # fmt: skip

        def vs_close(x: int) -> list[str]:
            return [_points(x - base), _sign(x - base)]

        def rate(x: int) -> str:  # % versus the prior close, 2 decimals, rounded half up
            d = abs(x - base)
            return _points((1 if x >= base else -1) * ((2 * d * 10_000 + base) // (2 * base)))

        return [
            code, now.strftime("%H%M%S"), _points(level), _sign(level - base),
            _points(level - base), str(volume), str(value), str(tick_vol), str(tick_value),
            rate(level), _points(ix.open), _points(ix.high), _points(ix.low),
            *vs_close(ix.open), *vs_close(ix.high), *vs_close(ix.low),
            rate(ix.open), rate(ix.high), rate(ix.low), *map(str, counts), "0", "0", "0",
        ]  # fmt: skip

    @property
    def codes(self) -> list[str]:
        return list(self._codes)

    def price(self, code: str) -> int:
        """The code's last traded price; the prior close before its first trade of the day."""
        s = self._stocks[code]
        return s.price or s.prev_close

    def prev_close(self, code: str) -> int:
        return self._stocks[code].prev_close

    def add(self, ticker: SimTicker, price: int) -> None:
        """Start trading a ticker the market did not have, at `price` (its day so far)."""
        if ticker.code in self._stocks:
            return
        s = _Stock(ticker, self._rng)
        s.price = s.open = s.high = s.low = min(s.upper, max(s.lower, price))
        self._stocks[ticker.code] = s
        self._codes.append(ticker.code)

    def volume(self, code: str) -> int:
        """The code's accumulated volume today (ACML_VOL)."""
        return self._stocks[code].volume

    def limits(self, code: str) -> tuple[int, int]:
        """The code's daily (lower, upper) price limits."""
        s = self._stocks[code]
        return s.lower, s.upper

    def order_book(self, code: str, now: datetime) -> list[str]:
        """A 10-level book around the code's current price: its 59 H0STASP0 fields (§7.2).

        Asks start one tick above the price, bids at the price, each level one KRX tick
        further; a level beyond the daily limit is empty (price and size 0). Totals are the
        sums of the ten sizes, the *_ICDC fields their change since the code's previous book,
        ACML_VOL the code's volume; no call auction, so the expected-match fields are 0.
        """
        s = self._stocks[code]
        rng = self._book_rng
        price = s.price or s.prev_close
        sizes = [rng.choice(_BOOK_LOTS) * rng.randint(1, 100) * 10 for _ in range(20)]
        asks = [p if p <= s.upper else 0 for p in (step_ticks(price, k) for k in range(1, 11))]
        bids = [p if p >= s.lower else 0 for p in (step_ticks(price, -k) for k in range(10))]
        ask_sizes = [q if p else 0 for p, q in zip(asks, sizes[:10], strict=True)]
        bid_sizes = [q if p else 0 for p, q in zip(bids, sizes[10:], strict=True)]
        total_ask, total_bid = sum(ask_sizes), sum(bid_sizes)
        last_ask, last_bid = s.book_totals or (total_ask, total_bid)
        s.book_totals = (total_ask, total_bid)
        return [
            code, now.strftime("%H%M%S"), "0",
            *map(str, asks), *map(str, bids), *map(str, ask_sizes), *map(str, bid_sizes),
            str(total_ask), str(total_bid), "0", "0",
            "0", "0", "0", "0", "3", "0.00",
            str(s.volume), str(total_ask - last_ask), str(total_bid - last_bid), "0", "0", "00",
        ]  # fmt: skip

    def program_trade(self, code: str, now: datetime) -> list[str]:
        """The code's accumulated program trading: its 11 H0STPGM0 fields (§7.3).

        Each call adds program sells and buys at the current price (together at least one
        share), so the accumulated quantities and values never fall.
        """
        s = self._stocks[code]
        rng = self._program_rng
        price = s.price or s.prev_close
        sell = rng.choice(_PROGRAM_LOTS) * rng.randint(0, 5)
        buy = rng.choice(_PROGRAM_LOTS) * rng.randint(0 if sell else 1, 5)
        sell_rest, buy_rest = rng.randrange(50_000), rng.randrange(50_000)
        s.pgm_sell_qty += sell
        s.pgm_sell_value += sell * price
        s.pgm_buy_qty += buy
        s.pgm_buy_value += buy * price
        return [
            code, now.strftime("%H%M%S"),
            str(s.pgm_sell_qty), str(s.pgm_sell_value), str(s.pgm_buy_qty), str(s.pgm_buy_value),
            str(s.pgm_buy_qty - s.pgm_sell_qty), str(s.pgm_buy_value - s.pgm_sell_value),
            str(sell_rest), str(buy_rest), str(buy_rest - sell_rest),
        ]  # fmt: skip

    def jump(self, code: str, fraction: float, now: datetime) -> list[str]:
        """A trade of `code` at its price moved by `fraction` (e.g. 0.06: +6%), within the
        daily limits: a sudden move for the detector. Returns its H0STCNT0 fields."""
        s = self._stocks[code]
        s.price = min(s.upper, max(s.lower, round((s.price or s.prev_close) * (1 + fraction))))
        hhmmss = now.strftime("%H%M%S")
        if not s.open:
            s.open = s.low = s.high = s.price
            s.open_time = s.high_time = s.low_time = hhmmss
        if s.price > s.high:
            s.high, s.high_time = s.price, hhmmss
        if s.price < s.low:
            s.low, s.low_time = s.price, hhmmss
        s.volume += 100
        s.value += 100 * s.price
        s.buy_count += 1
        s.buy_qty += 100
        self._bar(s.code, now, s.price, 100)
        return self._fields(s, 100, True, hhmmss, now.strftime("%Y%m%d"))

    def trade(self, now: datetime) -> list[str]:
        """Advance a randomly chosen ticker by one trade; return its 46 H0STCNT0 fields."""
        rng = self._rng
        s = self._stocks[self._codes[rng.randrange(len(self._codes))]]
        hhmmss = now.strftime("%H%M%S")
        if s.price == 0:
            s.price = s.prev_close
            s.open = s.high = s.low = s.price
            s.open_time = s.high_time = s.low_time = hhmmss
        else:
            p = step_ticks(s.price, _STEPS[rng.randrange(len(_STEPS))])
            s.price = min(s.upper, max(s.lower, p))
        if s.price > s.high:
            s.high, s.high_time = s.price, hhmmss
        if s.price < s.low:
            s.low, s.low_time = s.price, hhmmss
        qty = rng.choice((1, 1, 2, 3, 5, 10, 20, 50, 100)) * rng.randint(1, 10)
        buy = rng.random() < 0.5
        s.volume += qty
        s.value += qty * s.price
        if buy:
            s.buy_count += 1
            s.buy_qty += qty
        else:
            s.sell_count += 1
            s.sell_qty += qty
        self._bar(s.code, now, s.price, qty)
        return self._fields(s, qty, buy, hhmmss, now.strftime("%Y%m%d"))

    def _bar(self, code: str, now: datetime, price: int, qty: int) -> None:
        bars = self.bars.setdefault(code, {})
        minute = now.strftime("%Y%m%d%H%M")
        bar = bars.get(minute)
        if bar is None:
            bars[minute] = [price, price, price, price, qty]
            if len(bars) > MAX_BAR_MINUTES:
                del bars[next(iter(bars))]
        else:
            bar[1] = max(bar[1], price)
            bar[2] = min(bar[2], price)
            bar[3] = price
            bar[4] += qty

    @staticmethod
    def _fields(s: _Stock, qty: int, buy: bool, hhmmss: str, date: str) -> list[str]:
        change = s.price - s.prev_close
        if s.price >= s.upper:
            sign = "1"
        elif s.price <= s.lower:
            sign = "4"
        else:
            sign = "2" if change > 0 else "5" if change < 0 else "3"
        unit = tick_size(s.price)
        vwap = s.value / s.volume
        strength = s.buy_qty / s.sell_qty * 100 if s.sell_qty else 0.0
        total = s.buy_qty + s.sell_qty

        def vs(ref: int) -> tuple[str, str]:
            d = s.price - ref
            return ("2" if d > 0 else "5" if d < 0 else "3"), str(d)

        o_sign, o_diff = vs(s.open)
        h_sign, h_diff = vs(s.high)
        l_sign, l_diff = vs(s.low)
        return [
            s.code, hhmmss, str(s.price), sign, str(change),
            f"{change / s.prev_close * 100:.2f}", f"{vwap:.2f}",
            str(s.open), str(s.high), str(s.low),
            str(s.price + unit if buy else s.price), str(s.price if buy else s.price - unit),
            str(qty), str(s.volume), str(s.value),
            str(s.sell_count), str(s.buy_count), str(s.buy_count - s.sell_count),
            f"{strength:.2f}", str(s.sell_qty), str(s.buy_qty), "1" if buy else "5",
            f"{s.buy_qty / total * 100:.2f}", f"{s.volume / s.prior_volume * 100:.2f}",
            s.open_time, o_sign, o_diff, s.high_time, h_sign, h_diff, s.low_time, l_sign, l_diff,
            date, "20", "N", "1500", "4000", "512300", "803400", "0.02",
            str(s.prior_volume // 2), "61.22", "0", "", "0",
        ]  # fmt: skip


def data_frame(tr_id: str, records: list[list[str]]) -> str:
    """Build a plain data frame: records concatenated with '^', count as 3 digits (kis.md §6)."""
    return f"0|{tr_id}|{len(records):03d}|" + "^".join("^".join(r) for r in records)


def encrypted_frame(tr_id: str, records: list[list[str]], key: str, iv: str) -> str:
    """Build an encrypted data frame ``1|tr_id|NNN|<base64>`` (kis.md §6.1): the plain payload
    in UTF-8, PKCS#7-padded, AES-CBC with the UTF-8 bytes of `key` (32 -> AES-256) and `iv`."""
    padder = padding.PKCS7(128).padder()
    plain = "^".join("^".join(r) for r in records).encode()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).encryptor()
    payload = base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")
    return f"1|{tr_id}|{len(records):03d}|{payload}"


_SIDE_CODES = {"sell": "01", "buy": "02"}  # SELN_BYOV_CLS
_KIND_CODES = {"order": "1", "fill": "2"}  # CNTG_YN
_CORRECTION_CODES = {"new": "0", "modify": "1", "cancel": "2"}  # RCTF_CLS


def execution_notice(
    customer_id: str,
    account: str,
    order_no: str,
    code: str,
    side: str,
    kind: str,
    qty: int,
    price: int,
    order_qty: int,
    order_price: int,
    now: datetime,
    name: str,
    *,
    original_order_no: str = "0000000000",
    correction: str = "new",
    rejected: bool = False,
    account_name: str = "SIM ACCOUNT",
) -> list[str]:
    """One execution notice: the 26 fields of the current H0STCNI0/H0STCNI9 layout (§7.4).

    `side` is "buy" or "sell", `kind` "order" (an accepted/modified/cancelled/rejected order)
    or "fill", `correction` "new", "modify" or "cancel" (the strings of events.Execution).
    `qty`/`price` go to CNTG_QTY/CNTG_UNPR, `name` to CNTG_ISNM40. An order price of 0 is a
    market order (ODER_KIND 01), else a limit order (00).
    """
    for value, table in ((side, _SIDE_CODES), (kind, _KIND_CODES),
                         (correction, _CORRECTION_CODES)):  # fmt: skip
        if value not in table:
            raise ValueError(f"{value!r} is not one of {sorted(table)}")
    return [
        customer_id, account, order_no, original_order_no, _SIDE_CODES[side],
        _CORRECTION_CODES[correction], "00" if order_price else "01", "0", code, str(qty),
        str(price), now.strftime("%H%M%S"), "1" if rejected else "0", _KIND_CODES[kind],
        "2" if kind == "fill" else "1", "06010", str(order_qty), account_name, "0", "1", "Y",
        "", "10", "", name, str(order_price),
    ]  # fmt: skip
