"""Kiwoom Securities REST API real-time protocol, sans I/O: the token request and answer, the
LOGIN / REG / REMOVE requests, a decoder from JSON text frames to events and control messages,
and the REAL message encoder the simulator uses.

Wire format (../shared/protocols/kiwoom.md):
- token: ``POST /oauth2/token`` (au10001), JSON in and out; the answer's `token` (not
  access_token) expires at `expires_dt`, KST ``YYYYMMDDHHMMSS``; `return_code` 0 is success,
  even on HTTP 200 (§2);
- every WebSocket frame is one JSON object with `trnm` (§3-§8): ``LOGIN`` (the login's answer),
  ``REG`` / ``REMOVE`` (a registration's answer), ``REAL`` (data: `data[]` entries of `type`,
  `item` and FID-keyed string `values`, §5), ``PING`` (echo it unchanged, §7), ``SYSTEM`` (the
  server closing the session, §8). A bare text ``PING`` is a heartbeat too;
- prices are "numbers with a sign" (§5): ``+`` / ``-`` say above or below the prior close, not
  a negative price, so the magnitude is the price; the change (FID 11) and its rate (12) keep
  their sign. Empty order-book levels may be ``""``, ``"0"`` or ``"-0"``;
- the trade time is HHmmss only (FID 20): the date is the receive date (KST);
- an item's suffix names its venue (§4): ``005930`` KRX, ``005930_NX`` NXT, ``005930_AL`` the
  SOR (combined) stream, which is venue "UN" here as KIS's unified TRs are.

Everything here takes values and returns values. `KiwoomDecoder.decode` never raises for a bad
frame: the reason is counted in `stats.errors` and the error kept in `last_error` for the
session to log; a bad entry of a REAL message is dropped alone, the others still come out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Final

import msgspec

from tradestream.errors import FeedError, FrameError
from tradestream.events import KST, Event, OrderBook, Tick
from tradestream.upstream import KIWOOM_BOOK, KIWOOM_TRADE, KIWOOM_VENUE_SUFFIX

__all__ = [
    "BOOK_LEVELS",
    "CREDENTIAL_CODES",
    "DEVICE_CODES",
    "INPUT_CODES",
    "KNOWN_TYPES",
    "MISMATCH_CODES",
    "NOT_FOUND_CODES",
    "RATE_LIMIT_CODES",
    "RELOGIN_CODES",
    "TOKEN_CODES",
    "TOKEN_PATH",
    "TYPE_NAMES",
    "VALUE_UNIT_KRW",
    "Control",
    "KiwoomDecoder",
    "KiwoomDecoderStats",
    "KiwoomFrameError",
    "KiwoomTokenError",
    "Login",
    "Ping",
    "RegReply",
    "System",
    "item_for",
    "kst_date",
    "login_code",
    "login_message",
    "parse_token_response",
    "real_message",
    "refusal_kind",
    "reg_message",
    "remove_message",
    "split_item",
    "token_request",
]

TOKEN_PATH: Final = "/oauth2/token"  # au10001 (§2), on https://api.kiwoom.com (§1)
BOOK_LEVELS: Final = 10
VALUE_UNIT_KRW: Final = 1_000_000  # FID 14, the accumulated value, is in million KRW (§6.1)
#: the Korean `name` of a REAL entry, per type (§6)
TYPE_NAMES: Final = {KIWOOM_TRADE: "주식체결", KIWOOM_BOOK: "주식호가잔량"}
#: the other real-time types of §6: counted as skipped, not errors, when they arrive
KNOWN_TYPES: Final = frozenset(
    {"00", "04", "0A", "0C", "0E", "0F", "0G", "0H", "0I", "0J", "0U", "0g", "0m", "0s", "0u",
     "0w", "1h"}
)  # fmt: skip

_VENUE_OF_SUFFIX: Final = {suffix: venue for venue, suffix in KIWOOM_VENUE_SUFFIX.items()}

# §2: the error-code families of the official helper (kiwoom/core/errors.py). The official
# WebSocket client logs in once more with a fresh token on 8005, 8031 and 8103, so those read
# as token errors here although 8031 is also a real/mock mismatch and 8103 a device error.
RELOGIN_CODES: Final = frozenset({8005, 8031, 8103})
TOKEN_CODES: Final = frozenset({8003, 8005, 8006, 8009, 8015, 8016, 8031, 8103})
CREDENTIAL_CODES: Final = frozenset({8001, 8002, 8011, 8012})
MISMATCH_CODES: Final = frozenset({8030, 8031})
DEVICE_CODES: Final = frozenset({8010, 8040, 8050, 8103})
RATE_LIMIT_CODES: Final = frozenset({1700})
INPUT_CODES: Final = frozenset({1501, 1504, 1505, *range(1511, 1518), 1687, 8020})
NOT_FOUND_CODES: Final = frozenset({1901, 1902})
_KINDS: Final = (  # checked in this order: the first family that has the code names it
    ("token", TOKEN_CODES),
    ("credentials", CREDENTIAL_CODES),
    ("mismatch", MISMATCH_CODES),
    ("device", DEVICE_CODES),
    ("rate_limit", RATE_LIMIT_CODES),
    ("input", INPUT_CODES),
    ("not_found", NOT_FOUND_CODES),
)

_CODE_IN_TEXT: Final = re.compile(r"CODE\s*=\s*([0-9]{1,9})", re.ASCII)
MAX_DIGITS: Final = 18  # every value fits a signed 64-bit column


class KiwoomFrameError(FrameError):
    """A Kiwoom frame or REAL entry that cannot be read; `reason` is the stats key (bad_json,
    bad_message, unknown_trnm, empty_real, unknown_type, bad_item, missing_field, bad_value,
    bad_time, internal), or an item or venue that cannot be named (bad_item, bad_venue)."""


class KiwoomTokenError(FeedError):
    """The token request was refused (`code`: the answer's return_code) or its answer cannot
    be used (`code` -1 when it has no usable return_code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}".strip())
        self.code = code
        self.message = message


# --- items and requests (§4) -----------------------------------------------------------------


def item_for(venue: str, code: str) -> str:
    """The registration item of a code on a venue (§4).

    >>> [item_for(v, "005930") for v in ("KRX", "NXT", "UN")]
    ['005930', '005930_NX', '005930_AL']
    """
    suffix = KIWOOM_VENUE_SUFFIX.get(venue)
    if suffix is None:
        raise KiwoomFrameError("bad_venue", venue)
    return code + suffix


def split_item(item: str) -> tuple[str, str]:
    """(venue, code) of an item (§4); KiwoomFrameError("bad_item") for an unknown suffix.

    >>> split_item("005930_NX")
    ('NXT', '005930')
    """
    code, sep, suffix = item.partition("_")
    venue = _VENUE_OF_SUFFIX.get(sep + suffix)
    if venue is None or not code:
        raise KiwoomFrameError("bad_item", repr(item)[:40])
    return venue, code


def login_message(token: str) -> str:
    """§3: the first message of a connection; the raw token, without ``Bearer ``.

    >>> login_message("tok")
    '{"trnm":"LOGIN","token":"tok"}'
    """
    return msgspec.json.encode({"trnm": "LOGIN", "token": token}).decode()


def reg_message(
    grp_no: str, items: Sequence[str], types: Sequence[str], *, refresh: str = "1"
) -> str:
    """§4: register every item x type in group `grp_no`; `refresh` "1" keeps the group's other
    registrations, "0" replaces them with these.

    >>> reg_message("1", ["005930"], ["0B"])
    '{"trnm":"REG","grp_no":"1","refresh":"1","data":[{"item":["005930"],"type":["0B"]}]}'
    """
    return msgspec.json.encode(
        {
            "trnm": "REG",
            "grp_no": grp_no,
            "refresh": refresh,
            "data": [{"item": list(items), "type": list(types)}],
        }
    ).decode()


def remove_message(grp_no: str, items: Sequence[str], types: Sequence[str]) -> str:
    """§4: unregister every item x type of group `grp_no` (no `refresh`).

    >>> remove_message("1", ["005930"], ["0B"])
    '{"trnm":"REMOVE","grp_no":"1","data":[{"item":["005930"],"type":["0B"]}]}'
    """
    return msgspec.json.encode(
        {"trnm": "REMOVE", "grp_no": grp_no, "data": [{"item": list(items), "type": list(types)}]}
    ).decode()


def real_message(entries: Sequence[tuple[str, str, Mapping[str, str]]]) -> str:
    """A REAL message (§5) of (type, item, values) entries, each with its type's Korean name
    (§6); the simulator's, and the tests'.

    >>> msgspec.json.decode(real_message([("0B", "005930", {"10": "+71000"})]))["data"]
    [{'type': '0B', 'name': '주식체결', 'item': '005930', 'values': {'10': '+71000'}}]
    """
    return msgspec.json.encode(
        {
            "trnm": "REAL",
            "data": [
                {"type": kind, "name": TYPE_NAMES.get(kind, ""), "item": item, "values": values}
                for kind, item, values in entries
            ],
        }
    ).decode()


# --- token (§2) --------------------------------------------------------------------------------


def token_request(app_key: str, secret: str) -> dict[str, str]:
    """The au10001 JSON body (§2). Note `secretkey`, and `token` (not access_token) in the
    answer."""
    return {"grant_type": "client_credentials", "appkey": app_key, "secretkey": secret}


def parse_token_response(body: object, now: float) -> tuple[str, float]:
    """(token, expires_at in epoch seconds) of an au10001 answer (§2); `now` is epoch seconds.

    KiwoomTokenError(return_code, return_msg) when refused (return_code != 0), and when the
    answer has no token, an `expires_dt` that is not KST ``YYYYMMDDHHMMSS``, or one already
    past `now`.

    {"expires_dt":"20250103083713","token_type":"bearer","token":"WQJCwy...","return_code":0,
     "return_msg":"정상적으로 처리되었습니다"}
    """
    if not isinstance(body, dict):
        raise KiwoomTokenError(-1, f"the answer is not a JSON object: {type(body).__name__}")
    code = _as_int(body.get("return_code"), -1)
    message = str(body.get("return_msg", ""))
    if code != 0:
        raise KiwoomTokenError(code, message or "no return_code in the answer")
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise KiwoomTokenError(code, "no token in the answer")
    raw = body.get("expires_dt")
    if not (isinstance(raw, str) and len(raw) == 14 and raw.isascii() and raw.isdigit()):
        raise KiwoomTokenError(code, f"bad expires_dt {raw!r}")
    try:
        expires = datetime.strptime(raw, "%Y%m%d%H%M%S").replace(tzinfo=KST)
    except ValueError:
        raise KiwoomTokenError(code, f"bad expires_dt {raw!r}") from None
    expires_at = expires.timestamp()
    if expires_at <= now:
        raise KiwoomTokenError(code, f"the token expired at {raw}")
    return token.strip(), expires_at


# --- refusals (§2, §3) ------------------------------------------------------------------------


def login_code(return_code: int, message: str) -> int:
    """The error code behind a refused LOGIN: its return_code when that is one of §2's codes,
    else the ``[CODE=8005, ...]`` in the message when there is one (§3), else the return_code.

    >>> login_code(1, "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]")
    8005
    """
    if refusal_kind(return_code) == "other":
        found = _CODE_IN_TEXT.search(message)
        if found is not None:
            return int(found.group(1))
    return return_code


def refusal_kind(code: int) -> str:
    """What a refusal code means for the session (§2): "token" (get a fresh token and log in
    again), "credentials" (the app key or secret is wrong: do not hammer), "mismatch" (a real
    key on the mock server or the other way round), "device", "rate_limit", "input",
    "not_found" or "other". 8005, 8031 and 8103 are "token": the official client retries the
    login with a fresh token for them."""
    for kind, codes in _KINDS:
        if code in codes:
            return kind
    return "other"


# --- control messages -------------------------------------------------------------------------


class Login(msgspec.Struct, frozen=True):
    """The LOGIN answer (§3): ``{"trnm":"LOGIN","return_code":0,"return_msg":""}``."""

    ok: bool
    code: int  # return_code; -1 when absent or not a number
    message: str


class RegReply(msgspec.Struct, frozen=True):
    """A REG or REMOVE answer (§4): ``{"trnm":"REG","return_code":0,"return_msg":""}``. It
    does not name the items: replies come in the order of the requests."""

    trnm: str  # "REG" or "REMOVE"
    ok: bool
    code: int  # return_code: 0 normal, 1 error; -1 when absent or not a number
    message: str


class Ping(msgspec.Struct, frozen=True):
    """The server's heartbeat (§7): send `raw`, the frame exactly as received, back."""

    raw: str


class System(msgspec.Struct, frozen=True):
    """The server speaking of the session (§8), before it closes it:
    ``{"trnm":"SYSTEM","code":"R10002","message":"..."}`` (or return_code / return_msg)."""

    code: str  # R10001 another login with the app key, R10002 no heartbeat, R10004 no login
    message: str


Control = Login | RegReply | Ping | System

_Value = str | int | float | None  # §5 says strings; numbers are read as their text


class _Entry(msgspec.Struct):
    type: str = ""
    item: str = ""
    values: dict[str, _Value] = {}


class _Frame(msgspec.Struct):
    trnm: str = ""
    data: list[_Entry] | None = None
    return_code: int | str | None = None
    return_msg: str = ""
    code: int | str | None = None  # SYSTEM (§8)
    message: str = ""


_frame_decoder: Final = msgspec.json.Decoder(_Frame)


class KiwoomDecoderStats:
    """Counters of one decoder; read by the status endpoint."""

    __slots__ = ("frames", "records", "controls", "skipped", "errors")

    def __init__(self) -> None:
        self.frames = 0  # every message given to decode()
        self.records = 0  # events produced
        self.controls = 0  # LOGIN, REG/REMOVE, PING and SYSTEM messages
        self.skipped: dict[str, int] = {}  # REAL entries of the other known types, by type
        self.errors: dict[str, int] = {}  # bad frames and entries, by reason

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "records": self.records,
            "controls": self.controls,
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
        }


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_KST_OFFSET_S: Final = 9 * 3600  # KST has no daylight saving time


def kst_date(received_ns: int) -> date:
    """The KST calendar date of a wall-clock time in ns since the epoch: Kiwoom's trades and
    books carry HHmmss only, and the sessions end by 20:00 KST, far from midnight."""
    return date.fromordinal(
        _EPOCH_ORDINAL + (received_ns // 1_000_000_000 + _KST_OFFSET_S) // 86_400
    )


class KiwoomDecoder:
    """Decode the frames of one Kiwoom session into events (`Tick`, `OrderBook`) or a control
    message, counting as it goes.

    `clock_date(received_ns)` gives the date of the HHmmss times (default: the receive date in
    KST). `decode` never raises: a bad frame is counted in `stats.errors` under its reason,
    kept in `last_error`, and gives ``[]``; in a REAL message each bad entry is counted and
    dropped alone. Entries of the other known types (0C, 0H, ...) are counted in
    `stats.skipped`; an unknown type is an error ("unknown_type").
    """

    def __init__(self, source: str, clock_date: Callable[[int], date] | None = None) -> None:
        self.source = source
        self._date = clock_date or kst_date
        self.stats = KiwoomDecoderStats()
        # Always a KiwoomFrameError; typed as the session's decoder protocol declares it (a
        # writable attribute must match exactly).
        self.last_error: Exception | None = None

    def decode(self, text: str, received_ns: int) -> list[Event] | Control:
        """Decode one WebSocket text message (§3-§8).

        >>> KiwoomDecoder("kiwoom-1").decode('{"trnm":"REG","return_code":0,"return_msg":""}', 0)
        RegReply(trnm='REG', ok=True, code=0, message='')
        """
        self.stats.frames += 1
        if text == "PING":  # the official client accepts a bare PING too (§7)
            self.stats.controls += 1
            return Ping(text)
        try:
            frame = _frame_decoder.decode(text)
        except msgspec.ValidationError as exc:  # JSON, but not a message of §3-§8's shape
            return self._bad(KiwoomFrameError("bad_message", str(exc)[:200]))
        except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # a lone surrogate: not UTF-8
            return self._bad(KiwoomFrameError("bad_json", str(exc)[:200]))
        trnm = frame.trnm
        if trnm == "REAL":
            return self._real(frame, received_ns)
        if trnm == "PING":
            msg: Control = Ping(text)
        elif trnm == "LOGIN":
            code = _as_int(frame.return_code, -1)
            msg = Login(code == 0, code, frame.return_msg)
        elif trnm in ("REG", "REMOVE"):
            code = _as_int(frame.return_code, -1)
            msg = RegReply(trnm, code == 0, code, frame.return_msg)
        elif trnm == "SYSTEM":  # code/message, or return_code/return_msg (§8)
            raw = frame.code if frame.code is not None else frame.return_code
            msg = System("" if raw is None else str(raw), frame.message or frame.return_msg)
        else:
            return self._bad(KiwoomFrameError("unknown_trnm", repr(trnm)[:40]))
        self.stats.controls += 1
        return msg

    def _bad(self, exc: KiwoomFrameError) -> list[Event]:
        self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1
        self.last_error = exc
        return []

    def _real(self, frame: _Frame, received_ns: int) -> list[Event]:
        """§5: every entry of `data[]` by its type; a bad one is counted and dropped alone.

        {"trnm":"REAL","data":[{"type":"0B","name":"주식체결","item":"005930","values":{
         "20":"093015","10":"+71000","11":"+500","12":"+0.71","15":"+12","13":"1233600",...}}]}
        """
        if not frame.data:
            return self._bad(KiwoomFrameError("empty_real", "no data[]"))
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
            except Exception as exc:  # a parser bug must cost one entry, not the session
                self._bad(KiwoomFrameError("internal", repr(exc)[:200]))
        self.stats.records += len(out)
        return out

    def _tick(self, e: _Entry, day: date, received_ns: int) -> Tick:
        """0B (§6.1). Required: the time (20), the price (10), the accumulated volume (13);
        the others read as 0 when empty. Prices are magnitudes, the change and its rate keep
        their sign, the trade volume's sign (buy/sell-initiated) is dropped."""
        v = e.values
        venue, code = split_item(e.item)
        return Tick(
            source=self.source,
            venue=venue,
            code=code,
            trade_time=_time_on(day, _text(v, "20")),
            price=abs(_req_int(v, "10")),
            change=_int(v, "11"),
            change_percent=_float(v, "12"),
            open=abs(_int(v, "16")),
            high=abs(_int(v, "17")),
            low=abs(_int(v, "18")),
            ask=abs(_int(v, "27")),
            bid=abs(_int(v, "28")),
            trade_volume=abs(_int(v, "15")),
            volume=abs(_req_int(v, "13")),
            # FID 14 is in million KRW; Tick.value is KRW, as KIS sends it (precision below
            # 1M KRW is lost at the source)
            value=abs(_int(v, "14")) * VALUE_UNIT_KRW,
            strength=abs(_float(v, "228")),
            received_ns=received_ns,
        )

    def _book(self, e: _Entry, day: date, received_ns: int) -> OrderBook:
        """0D (§6.2): ask price level L is FID 40+L, bid price 50+L, ask size 60+L, bid size
        70+L; totals 121 / 125, the expected match price / quantity 23 / 24, the accumulated
        volume 13. The quote time (21) is required; an empty level ("", "0", "-0") is 0.

        {"21":"093016","41":"+71100","51":"+71000","61":"120","71":"340",...,"121":"5000",
         "125":"7000","23":"0","24":"0","13":"1233600",...}
        """
        v = e.values
        venue, code = split_item(e.item)
        return OrderBook(
            source=self.source,
            venue=venue,
            code=code,
            quote_time=_time_on(day, _text(v, "21")),
            ask_prices=tuple(abs(_int(v, f)) for f in _ASK_PRICE_FIDS),
            bid_prices=tuple(abs(_int(v, f)) for f in _BID_PRICE_FIDS),
            ask_sizes=tuple(abs(_int(v, f)) for f in _ASK_SIZE_FIDS),
            bid_sizes=tuple(abs(_int(v, f)) for f in _BID_SIZE_FIDS),
            total_ask_size=abs(_int(v, "121")),
            total_bid_size=abs(_int(v, "125")),
            expected_price=abs(_int(v, "23")),
            expected_volume=abs(_int(v, "24")),
            volume=abs(_int(v, "13")),
            received_ns=received_ns,
        )


_LEVELS: Final = range(1, BOOK_LEVELS + 1)
_ASK_PRICE_FIDS: Final = tuple(str(40 + i) for i in _LEVELS)
_BID_PRICE_FIDS: Final = tuple(str(50 + i) for i in _LEVELS)
_ASK_SIZE_FIDS: Final = tuple(str(60 + i) for i in _LEVELS)
_BID_SIZE_FIDS: Final = tuple(str(70 + i) for i in _LEVELS)


# --- values ------------------------------------------------------------------------------------
# Strict numbers: an optional '+' or '-' (§5) and ASCII digits. int() alone would also take
# " 71000", "7_1000", full-width digits or "1e3"; str.isascii() and an ASCII str.isdigit() are
# two C calls where a regex would cost several times more.


def _text(v: Mapping[str, _Value], fid: str) -> str:
    """A FID's value as text: "" when absent or null; a number as its decimal text."""
    raw = v.get(fid)
    if type(raw) is str:
        return raw
    if raw is None:
        return ""
    if isinstance(raw, bool):
        raise KiwoomFrameError("bad_value", f"{fid}={raw!r}")
    return str(raw)


def _digits(s: str, fid: str) -> int:
    body = s[1:] if s[:1] in ("+", "-") else s
    if 0 < len(body) <= MAX_DIGITS and body.isascii() and body.isdigit():
        return -int(body) if s[0] == "-" else int(body)
    raise KiwoomFrameError("bad_value", f"{fid}={s[:40]!r}")


def _int(v: Mapping[str, _Value], fid: str) -> int:
    """A signed integer ("+71000", "-500", "-0"); absent or empty is 0 (§5: values may be
    empty, order-book levels are)."""
    s = _text(v, fid)
    return _digits(s, fid) if s else 0


def _req_int(v: Mapping[str, _Value], fid: str) -> int:
    """A signed integer that must be there (a price, an accumulated volume)."""
    s = _text(v, fid)
    if not s:
        raise KiwoomFrameError("missing_field", fid)
    return _digits(s, fid)


def _float(v: Mapping[str, _Value], fid: str) -> float:
    """A signed decimal ("+0.71", "-2.13", "112.34"); absent or empty is 0.0."""
    s = _text(v, fid)
    if not s:
        return 0.0
    body = s[1:] if s[0] in ("+", "-") else s
    if (
        0 < len(body) <= 2 * MAX_DIGITS
        and body.isascii()
        and body.replace(".", "0", 1).isdigit()
        and body[0] != "."
        and body[-1] != "."
    ):
        return float(s)
    raise KiwoomFrameError("bad_value", f"{fid}={s[:40]!r}")


# A burst of entries shares a handful of seconds, and building a datetime costs more than the
# rest of a tick: memoise (datetimes are immutable; errors are not cached).
@functools.lru_cache(maxsize=4096)
def _time_on(day: date, hhmmss: str) -> datetime:
    """The KST datetime of an HHmmss on `day`; KiwoomFrameError("bad_time") otherwise."""
    if not (len(hhmmss) == 6 and hhmmss.isascii() and hhmmss.isdigit()):
        raise KiwoomFrameError("bad_time", repr(hhmmss)[:20])
    try:
        hour, minute, second = int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6])
        return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=KST)
    except ValueError:
        raise KiwoomFrameError("bad_time", repr(hhmmss)) from None


def _as_int(raw: object, default: int) -> int:
    """A return_code as sent (0, "0", 8005, "8005"); `default` for anything else."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        s = raw.strip()
        body = s[1:] if s[:1] == "-" else s
        if 0 < len(body) <= MAX_DIGITS and body.isascii() and body.isdigit():
            return int(s)
    return default
