"""Kiwoom's real-time protocol (../shared/protocols/kiwoom.md), sans I/O: the token request and
answer, the LOGIN / REG / REMOVE requests, and a decoder from JSON text frames to events and
control messages.

- Every frame is one JSON object with `trnm` (§3-§8): `LOGIN` (the login's answer), `REG` /
  `REMOVE` (a registration's answer), `REAL` (data: `data[]` entries of `type`, `item` and
  FID-keyed string `values`), `PING` (echo it unchanged, §7), `SYSTEM` (the server closing the
  session, §8). A bare text `PING` is a heartbeat too.
- Prices are "numbers with a sign" (§5): `+` / `-` say above or below the prior close, not a
  negative price; the magnitude is the price. The change (FID 11) and rate (12) keep their
  sign. Empty order-book levels may be "", "0" or "-0".
- Kiwoom gives the trade time as HHmmss (FID 20) only: the date is the receive date (KST).
- An item's suffix names its venue (§4): `005930` KRX, `005930_NX` NXT, `005930_AL` the SOR
  (combined) stream, which is venue "UN" here as KIS's unified TRs are.

`KiwoomDecoder.decode` never raises for a bad frame: the reason is counted in `stats.errors`
and the error kept in `last_error` for the session to log; a bad entry of a REAL message is
dropped alone, the others still come out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final

import msgspec

from tradestream.errors import FeedError, FrameError
from tradestream.events import KST, Event, OrderBook, Tick
from tradestream.upstream import KIWOOM_BOOK, KIWOOM_TRADE, KIWOOM_VENUE_SUFFIX

TOKEN_PATH: Final = "/oauth2/token"  # au10001 (§2)
BOOK_LEVELS: Final = 10
VALUE_UNIT_KRW: Final = 1_000_000  # FID 14, accumulated value, is in million KRW (§6.1)
TYPE_NAMES: Final = {KIWOOM_TRADE: "주식체결", KIWOOM_BOOK: "주식호가잔량"}
#: real-time types this decoder does not turn into events: counted as skipped, not errors
KNOWN_TYPES: Final = frozenset(
    {"00", "04", "0A", "0C", "0E", "0F", "0G", "0H", "0I", "0J", "0U", "0g", "0m", "0s", "0u",
     "0w", "1h"}
)  # fmt: skip

_VENUE_OF_SUFFIX: Final = {suffix: venue for venue, suffix in KIWOOM_VENUE_SUFFIX.items()}

# §2: the error-code families of the official helper (kiwoom/core/errors.py)
CREDENTIAL_CODES: Final = frozenset({8001, 8002, 8011, 8012})
TOKEN_CODES: Final = frozenset({8003, 8005, 8006, 8009, 8015, 8016})
MISMATCH_CODES: Final = frozenset({8030, 8031})
DEVICE_CODES: Final = frozenset({8010, 8040, 8050, 8103})
RATE_LIMIT_CODES: Final = frozenset({1700})
INPUT_CODES: Final = frozenset({1501, 1504, 1505, 1687, 8020, *range(1511, 1518)})
NOT_FOUND_CODES: Final = frozenset({1901, 1902})
#: the official WebSocket client logs in once more with a fresh token on these (§2)
RELOGIN_CODES: Final = frozenset({8005, 8031, 8103})

_CODE_IN_TEXT = re.compile(r"CODE\s*=\s*(\d+)")


class KiwoomFrameError(FrameError):
    """A Kiwoom frame or entry that cannot be read; `reason` is the stats key."""


class KiwoomTokenError(FeedError):
    """The token request was refused (`code`: the answer's return_code) or unreadable."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}".strip())
        self.code = code
        self.message = message


# --- items and requests (§4) ------------------------------------------------------------------


def item_for(venue: str, code: str) -> str:
    """The registration item of a code on a venue: "005930", "005930_NX", "005930_AL"."""
    try:
        return code + KIWOOM_VENUE_SUFFIX[venue]
    except KeyError:
        raise KiwoomFrameError("bad_venue", venue) from None


def split_item(item: str) -> tuple[str, str]:
    """(venue, code) of an item; KiwoomFrameError for an unknown suffix."""
    code, sep, suffix = item.partition("_")
    venue = _VENUE_OF_SUFFIX.get(sep + suffix)
    if venue is None or not code:
        raise KiwoomFrameError("bad_item", item)
    return venue, code


def login_message(token: str) -> str:
    """§3: the first message of a connection; the raw token, without "Bearer "."""
    return msgspec.json.encode({"trnm": "LOGIN", "token": token}).decode()


def reg_message(
    grp_no: str, items: Sequence[str], types: Sequence[str], *, refresh: str = "1"
) -> str:
    """§4: register every item x type in group `grp_no`; `refresh` "1" keeps the group's
    other registrations, "0" replaces them."""
    return msgspec.json.encode(
        {
            "trnm": "REG",
            "grp_no": grp_no,
            "refresh": refresh,
            "data": [{"item": list(items), "type": list(types)}],
        }
    ).decode()


def remove_message(grp_no: str, items: Sequence[str], types: Sequence[str]) -> str:
    return msgspec.json.encode(
        {"trnm": "REMOVE", "grp_no": grp_no, "data": [{"item": list(items), "type": list(types)}]}
    ).decode()


# --- token (§2) ----------------------------------------------------------------------------------


def token_request(app_key: str, secret: str) -> dict[str, str]:
    """The au10001 JSON body: note `secretkey`, and `token` (not access_token) in the answer."""
    return {"grant_type": "client_credentials", "appkey": app_key, "secretkey": secret}


def parse_token_response(body: object, now: float) -> tuple[str, float]:
    """(token, expires_at epoch seconds) of an au10001 answer; `expires_dt` is KST
    YYYYMMDDHHMMSS. KiwoomTokenError when refused (return_code != 0) or unreadable."""
    if not isinstance(body, dict):
        raise KiwoomTokenError(-1, "the answer is not a JSON object")
    code = _as_int(body.get("return_code"), -1)
    message = str(body.get("return_msg", ""))
    if code != 0:
        raise KiwoomTokenError(code, message)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise KiwoomTokenError(code, "no token in the answer")
    try:
        expires = datetime.strptime(str(body.get("expires_dt", "")), "%Y%m%d%H%M%S")
    except ValueError:
        raise KiwoomTokenError(code, f"bad expires_dt {body.get('expires_dt')!r}") from None
    expires_at = expires.replace(tzinfo=KST).timestamp()
    if expires_at <= now:
        raise KiwoomTokenError(code, f"the token expired at {body.get('expires_dt')}")
    return token, expires_at


def login_code(return_code: int, message: str) -> int:
    """The error code of a refused LOGIN: its return_code, or the `[CODE=8005, ...]` in the
    message when the return code says no more than "failed" (§3)."""
    found = _CODE_IN_TEXT.search(message)
    if found is not None and return_code in (0, 1, -1):
        return int(found.group(1))
    return return_code


def refusal_kind(code: int) -> str:
    """What a refusal code means for the session (§2): "token" (log in again with a new
    token), "credentials", "mismatch" (real/mock), "device", "rate_limit", "input",
    "not_found" or "other"."""
    if code in RELOGIN_CODES or code in TOKEN_CODES:
        return "token"
    for kind, codes in (
        ("credentials", CREDENTIAL_CODES),
        ("mismatch", MISMATCH_CODES),
        ("device", DEVICE_CODES),
        ("rate_limit", RATE_LIMIT_CODES),
        ("input", INPUT_CODES),
        ("not_found", NOT_FOUND_CODES),
    ):
        if code in codes:
            return kind
    return "other"


# --- control messages ------------------------------------------------------------------------


class Login(msgspec.Struct, frozen=True):
    ok: bool
    code: int
    message: str


class RegReply(msgspec.Struct, frozen=True):
    trnm: str  # "REG" or "REMOVE"
    ok: bool
    code: int
    message: str


class Ping(msgspec.Struct, frozen=True):
    raw: str  # the frame as received: echoed unchanged (§7)


class System(msgspec.Struct, frozen=True):
    code: str  # R10001, R10002, R10004, ...
    message: str


Control = Login | RegReply | Ping | System


class _Entry(msgspec.Struct):
    type: str = ""
    item: str = ""
    values: dict[str, str] = {}


class _Frame(msgspec.Struct):
    trnm: str = ""
    data: list[_Entry] | None = None
    return_code: Any = None
    return_msg: str = ""
    code: Any = None
    message: str = ""


_frame_decoder = msgspec.json.Decoder(_Frame)


class KiwoomDecoderStats:
    __slots__ = ("frames", "records", "controls", "skipped", "errors")

    def __init__(self) -> None:
        self.frames = 0
        self.records = 0
        self.controls = 0
        self.skipped: dict[str, int] = {}  # REAL entries of types not decoded, by type
        self.errors: dict[str, int] = {}

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "records": self.records,
            "controls": self.controls,
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
        }


def _receive_date(received_ns: int) -> date:
    return datetime.fromtimestamp(received_ns / 1e9, KST).date()


class KiwoomDecoder:
    """Frames of one Kiwoom session to events (`Tick`, `OrderBook`) and control messages."""

    def __init__(self, source: str, clock_date: Callable[[int], date] | None = None) -> None:
        self.source = source
        self._date = clock_date or _receive_date
        self.stats = KiwoomDecoderStats()
        self.last_error: KiwoomFrameError | None = None

    def decode(self, text: str, received_ns: int) -> list[Event] | Control:
        self.stats.frames += 1
        if text == "PING":
            self.stats.controls += 1
            return Ping(text)
        try:
            frame = _frame_decoder.decode(text)
        except msgspec.DecodeError as exc:
            return self._bad(KiwoomFrameError("bad_json", str(exc)[:120]))
        trnm = frame.trnm
        if trnm == "REAL":
            return self._real(frame, received_ns)
        self.stats.controls += 1
        if trnm == "PING":
            return Ping(text)
        if trnm == "LOGIN":
            code = _as_int(frame.return_code, -1)
            return Login(code == 0, code, frame.return_msg)
        if trnm in ("REG", "REMOVE"):
            code = _as_int(frame.return_code, -1)
            return RegReply(trnm, code == 0, code, frame.return_msg)
        if trnm == "SYSTEM":  # code/message, or return_code/return_msg (§8)
            code_text = frame.code if frame.code is not None else frame.return_code
            return System(
                "" if code_text is None else str(code_text), frame.message or frame.return_msg
            )
        self.stats.controls -= 1
        return self._bad(KiwoomFrameError("unknown_trnm", repr(trnm)[:40]))

    def _bad(self, exc: KiwoomFrameError) -> list[Event]:
        self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1
        self.last_error = exc
        return []

    def _real(self, frame: _Frame, received_ns: int) -> list[Event]:
        if not frame.data:
            return self._bad(KiwoomFrameError("empty_real"))
        out: list[Event] = []
        day: date | None = None
        for entry in frame.data:
            kind = entry.type
            try:
                if kind == KIWOOM_TRADE:
                    day = day or self._date(received_ns)
                    out.append(self._tick(entry, day, received_ns))
                elif kind == KIWOOM_BOOK:
                    day = day or self._date(received_ns)
                    out.append(self._book(entry, day, received_ns))
                elif kind in KNOWN_TYPES:
                    self.stats.skipped[kind] = self.stats.skipped.get(kind, 0) + 1
                else:
                    raise KiwoomFrameError("unknown_type", repr(kind)[:20])
            except KiwoomFrameError as exc:
                self._bad(exc)  # this entry only
        self.stats.records += len(out)
        return out

    def _tick(self, e: _Entry, day: date, received_ns: int) -> Tick:
        """0B (§6.1)."""
        v = e.values
        venue, code = split_item(e.item)
        return Tick(
            source=self.source,
            venue=venue,
            code=code,
            trade_time=datetime.combine(day, _hhmmss(v, "20"), KST),
            price=_price(v, "10"),
            change=_signed_int(v, "11"),
            change_percent=_signed_float(v, "12"),
            open=_price(v, "16", 0),
            high=_price(v, "17", 0),
            low=_price(v, "18", 0),
            ask=_price(v, "27", 0),
            bid=_price(v, "28", 0),
            trade_volume=abs(_signed_int(v, "15")),
            volume=_price(v, "13"),
            value=_price(v, "14", 0) * VALUE_UNIT_KRW,
            strength=abs(_signed_float(v, "228", 0.0)),
            received_ns=received_ns,
        )

    def _book(self, e: _Entry, day: date, received_ns: int) -> OrderBook:
        """0D (§6.2): ask price level L = FID 40+L, bid 50+L, ask size 60+L, bid size 70+L."""
        v = e.values
        venue, code = split_item(e.item)
        levels = range(1, BOOK_LEVELS + 1)
        return OrderBook(
            source=self.source,
            venue=venue,
            code=code,
            quote_time=datetime.combine(day, _hhmmss(v, "21"), KST),
            ask_prices=tuple(_price(v, str(40 + i), 0) for i in levels),
            bid_prices=tuple(_price(v, str(50 + i), 0) for i in levels),
            ask_sizes=tuple(_price(v, str(60 + i), 0) for i in levels),
            bid_sizes=tuple(_price(v, str(70 + i), 0) for i in levels),
            total_ask_size=_price(v, "121", 0),
            total_bid_size=_price(v, "125", 0),
            expected_price=_price(v, "23", 0),
            expected_volume=_price(v, "24", 0),
            volume=_price(v, "13", 0),
            received_ns=received_ns,
        )


# --- values -------------------------------------------------------------------------------------


def _as_int(raw: object, default: int) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        return default


def _signed_int(v: Mapping[str, str], fid: str, default: int | None = None) -> int:
    """A FID's integer with its sign ("+71000", "-0"); `default` for an absent or empty
    value (None: the field is required)."""
    raw = v.get(fid, "").strip()
    if not raw:
        if default is None:
            raise KiwoomFrameError("missing_field", fid)
        return default
    try:
        return int(raw)
    except ValueError:
        raise KiwoomFrameError("bad_value", f"{fid}={raw!r}") from None


def _signed_float(v: Mapping[str, str], fid: str, default: float | None = None) -> float:
    raw = v.get(fid, "").strip()
    if not raw:
        if default is None:
            raise KiwoomFrameError("missing_field", fid)
        return default
    try:
        return float(raw)
    except ValueError:
        raise KiwoomFrameError("bad_value", f"{fid}={raw!r}") from None


def _price(v: Mapping[str, str], fid: str, default: int | None = None) -> int:
    """A magnitude: the sign says direction (§5), never a negative price."""
    return abs(_signed_int(v, fid, default))


def _hhmmss(v: Mapping[str, str], fid: str) -> time:
    raw = v.get(fid, "")
    if len(raw) != 6 or not raw.isdigit():
        raise KiwoomFrameError("bad_time", f"{fid}={raw!r}")
    try:
        return time(int(raw[:2]), int(raw[2:4]), int(raw[4:]))
    except ValueError:
        raise KiwoomFrameError("bad_time", f"{fid}={raw!r}") from None
