"""LS Securities (formerly eBest) real-time protocol, sans I/O: token form, request builder,
and a decoder from JSON text frames to events.

Wire format (../shared/protocols/ls.md):
- token: ``POST /oauth2/token``, form-encoded, JSON answer (§2); the same access token goes in
  ``header.token`` of every WebSocket request (§3);
- every server message is one JSON object ``{"header": {...}, "body": {...} | null}`` (§5);
  a header with ``rsp_cd`` is an acknowledgement (§4, inferred), anything else is data,
  dispatched on ``header.tr_cd``: ``NWS`` news (§8.1), ``S3_``/``K3_`` trades (§8.2),
  ``H1_``/``HA_`` 10-level order books (§8.3). Every body value is a string.

Everything here takes values and returns values. The one exception is `load_media_map`,
which reads the id -> media table once at start-up (the CLI calls it; the decoder is given
the mapping). `LsDecoder.decode` never raises for a bad message: it counts the reason in
`stats.errors` and keeps the error in `last_error` for the session to log. Headlines that
are well formed but fail the content checks of seed 000 (empty or too-short title) are
counted in `stats.dropped` instead: they are not broker errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time
from importlib import resources
from pathlib import Path
from typing import Final

import msgspec

from tradestream.errors import FrameError, TokenError
from tradestream.events import KST, Event, News, OrderBook, Tick
from tradestream.upstream import LS_BOOK_TRS, LS_NEWS, LS_NEWS_KEY, LS_TRADE_TRS

__all__ = [
    "ACK_OK",
    "BOOK_LEVELS",
    "BOOK_TRS",
    "DEFAULT_VENUE",
    "MEDIA_FILE",
    "NEWS_CODE_CHUNK",
    "TOKEN_PATH",
    "VALUE_UNIT_KRW",
    "FrameError",
    "LsAck",
    "LsDecoder",
    "LsDecoderStats",
    "NEWS_TR",
    "NEWS_TR_KEY",
    "TRADE_TRS",
    "TokenError",
    "load_media_map",
    "sim_media_path",
    "parse_token_response",
    "split_tickers",
    "subscribe_message",
    "token_request_form",
]

TOKEN_PATH: Final = "/oauth2/token"  # on https://openapi.ls-sec.co.kr:8080 (§1, §2)
ACK_OK: Final = "00000"  # the only success rsp_cd seen (§4, inferred)
NEWS_TR: Final = LS_NEWS
NEWS_TR_KEY: Final = LS_NEWS_KEY  # §8.1: the one news key
TRADE_TRS: Final = LS_TRADE_TRS  # KOSPI, KOSDAQ trades: identical bodies (§8.2)
BOOK_TRS: Final = LS_BOOK_TRS  # KOSPI, KOSDAQ order books: identical (§8.3)
BOOK_LEVELS: Final = 10
DEFAULT_VENUE: Final = "KRX"
MEDIA_FILE: Final = "ls_media.json"
VALUE_UNIT_KRW: Final = 1_000_000  # S3_/K3_ `value` is in million KRW (§8.2, programgarden)
NEWS_CODE_CHUNK: Final = 12  # §8.1: `code` is 240 chars, read as up to 20 x 12-char codes


# --- token (§2) --------------------------------------------------------------------------------


def token_request_form(app_key: str, app_secret: str) -> dict[str, str]:
    """Form fields for ``POST /oauth2/token`` (x-www-form-urlencoded, ls.md §2).

    Note the secret's field name: ``appsecretkey``, not ``appsecret``.
    """
    return {
        "grant_type": "client_credentials",
        "appkey": app_key,
        "appsecretkey": app_secret,
        "scope": "oob",
    }


def parse_token_response(obj: Mapping[str, object]) -> tuple[str, float]:
    """Return (access_token, lifetime in seconds) from the token endpoint's JSON object.

    ls.md §2: the field table spells the lifetime ``expire_in``, the example ``expires_in``;
    both are accepted (``expires_in`` wins), as a number or a decimal string. A missing or
    unusable token or lifetime raises `TokenError`: refreshing on a guessed lifetime would
    fail later and less clearly.

    >>> parse_token_response({"access_token": "eyJ0", "token_type": "Bearer", "expires_in": 86400})
    ('eyJ0', 86400.0)
    """
    token = obj.get("access_token")
    if not isinstance(token, str) or not token.strip():
        detail = {k: obj[k] for k in ("rsp_cd", "rsp_msg", "error", "error_description")
                  if k in obj}  # fmt: skip
        raise TokenError(f"no access_token in token response {detail or sorted(obj)!r}")
    for name in ("expires_in", "expire_in"):
        if name in obj:
            raw = obj[name]
            break
    else:
        raise TokenError("token response has neither expires_in nor expire_in")
    lifetime: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        lifetime = float(raw)
    elif isinstance(raw, str) and _FLOAT_RE.fullmatch(raw.strip()):
        lifetime = float(raw.strip())
    if lifetime is None or not lifetime > 0 or lifetime == float("inf"):
        raise TokenError(f"bad token lifetime {name}={raw!r}")
    return token.strip(), lifetime


# --- client -> server (§3) --------------------------------------------------------------------


def subscribe_message(
    token: str, tr_cd: str, tr_key: str, *, subscribe: bool = True, account: bool = False
) -> str:
    """Register or unregister one (tr_cd, tr_key) pair (ls.md §3).

    tr_type: "3"/"4" market-data register/unregister, "1"/"2" for account TRs (SC0-SC4,
    with ``tr_key=""``). The token goes in without a ``Bearer `` prefix.

    >>> subscribe_message("tok", "S3_", "005930")
    '{"header":{"token":"tok","tr_type":"3"},"body":{"tr_cd":"S3_","tr_key":"005930"}}'
    """
    if account:
        tr_type = "1" if subscribe else "2"
    else:
        tr_type = "3" if subscribe else "4"
    return msgspec.json.encode(
        {"header": {"token": token, "tr_type": tr_type},
         "body": {"tr_cd": tr_cd, "tr_key": tr_key}}
    ).decode()  # fmt: skip


# --- server -> client -------------------------------------------------------------------------


class LsAck(msgspec.Struct, frozen=True):
    """A registration acknowledgement or refusal (ls.md §4, shape inferred).

    ``ok`` is ``rsp_cd == "00000"``; error codes are undocumented, ``rsp_msg`` says what
    went wrong. ``tr_key`` is trimmed (the header value may be blank-padded).
    """

    tr_cd: str
    tr_key: str
    ok: bool
    rsp_cd: str
    rsp_msg: str
    tr_type: str = ""  # echoed request type, when the server sends it: "3" register, "4" ...


class _Header(msgspec.Struct):
    tr_cd: str = ""
    tr_key: str = ""
    tr_type: str = ""
    rsp_cd: str | None = None
    rsp_msg: str = ""


class _Message(msgspec.Struct):
    header: _Header
    body: dict[str, str] | None = None  # §5: every body value is a string


_message_decoder = msgspec.json.Decoder(_Message)

# Strict ASCII decimals: no '+', no blanks, no thousands separators, no exponent. At most 18
# digits (the widest LS field is 12): int() refuses strings of over 4300 digits with an error.
_INT_RE: Final = re.compile(r"-?[0-9]{1,18}", re.ASCII)
_FLOAT_RE: Final = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?", re.ASCII)
_DIGITS_RE: Final = re.compile(r"[0-9]{1,18}", re.ASCII)
_CODE_RE: Final = re.compile(r"[0-9A-Z]+", re.ASCII)
_LIST_SEP_RE: Final = re.compile(r"[,\s]+")
_NEGATIVE_SIGNS: Final = frozenset({"4", "5"})  # lower limit, down (§8.2)
_POSITIVE_SIGNS: Final = frozenset({"1", "2"})  # upper limit, up
_SIGNS: Final = _NEGATIVE_SIGNS | _POSITIVE_SIGNS | {"3"}  # 3: unchanged


def _raw(body: Mapping[str, str], name: str) -> str:
    """A required field, as sent."""
    s = body.get(name)
    if s is None:
        raise FrameError("missing_field", name)
    return s


def _int(body: Mapping[str, str], name: str) -> int:
    """A required integer field."""
    s = _raw(body, name)
    if not _INT_RE.fullmatch(s):
        raise FrameError("bad_value", f"{name}={s!r}")
    return int(s)


def _float(body: Mapping[str, str], name: str) -> float:
    """A required decimal field (rates, strength)."""
    s = _raw(body, name)
    if not _FLOAT_RE.fullmatch(s):
        raise FrameError("bad_value", f"{name}={s!r}")
    return float(s)


def _book_int(body: Mapping[str, str], name: str) -> int:
    """An order-book number: a missing key or an empty value is 0 (§8.3: the portal example
    predates some fields and shows empty levels), anything else must be a strict decimal."""
    s = body.get(name, "")
    if s == "":
        return 0
    if not _INT_RE.fullmatch(s):
        raise FrameError("bad_value", f"{name}={s!r}")
    return int(s)


def _text(body: Mapping[str, str], name: str) -> str:
    """A required, non-blank text field, stripped."""
    s = body.get(name, "").strip()
    if not s:
        raise FrameError("missing_field", name)
    return s


def _hhmmss(s: str, name: str) -> time:
    if len(s) != 6 or not _DIGITS_RE.fullmatch(s):
        raise FrameError("bad_value", f"{name}={s!r}")
    try:
        return time(int(s[0:2]), int(s[2:4]), int(s[4:6]))
    except ValueError:
        raise FrameError("bad_value", f"{name}={s!r}") from None


def _yyyymmdd(s: str, name: str) -> date:
    if len(s) != 8 or not _DIGITS_RE.fullmatch(s):
        raise FrameError("bad_value", f"{name}={s!r}")
    try:
        return date(int(s[0:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        raise FrameError("bad_value", f"{name}={s!r}") from None


def _receive_date(received_ns: int) -> date:
    """The KST calendar date of the receive time. S3_/H1_ carry only HHMMSS; the sessions end
    by 20:00 KST, far from midnight, so the receive date is the business date."""
    return datetime.fromtimestamp(received_ns // 1_000_000_000, KST).date()


def _signed(sign: str, magnitude: int | float) -> int | float:
    """Apply the §8.2 prior-close sign: 4/5 negative, 1/2 positive, 3 as sent (zero).

    `change` is documented as a magnitude; whether `drate` carries its own '-' is not (the
    ls.md example is an up move), so both are read as magnitudes and signed here, which gives
    the same answer either way.
    """
    if sign in _NEGATIVE_SIGNS:
        return -abs(magnitude)
    if sign in _POSITIVE_SIGNS:
        return abs(magnitude)
    return magnitude


def _normalise_code(token: str) -> str | None:
    """One stock code from a 12-char zero-padded chunk or a plain token, else None.

    Leading zeros are stripped and the rest left-padded to 6 ("000000005930" -> "005930",
    "0000000072R0" -> "0072R0": KRX short codes may contain capital letters). Blank and
    all-zero chunks are padding; more than 6 significant characters is not a short code.
    """
    t = token.strip()
    if not t or not _CODE_RE.fullmatch(t):
        return None
    significant = t.lstrip("0")
    if not significant or len(significant) > 6:
        return None
    return significant.rjust(6, "0")


def split_tickers(code: str) -> tuple[str, ...]:
    """The stock codes in an NWS ``code`` field, in order, without duplicates.

    **Inferred** (ls.md §8.1, unverified): ``code`` (240 chars) holds up to 20 zero-padded
    12-character codes, concatenated: ``"000000005930000000000660"`` -> ("005930", "000660").
    When the length is not a multiple of 12, or a 12-char chunk is not a code (e.g. seven
    6-char codes separated by single blanks are also 48 chars), the field is read as a list
    of codes separated by commas and/or whitespace: ``"005930, 000660"``. Tokens that are
    not codes are skipped; an empty or all-zero field has no tickers.
    """
    tokens: list[str] | None = None
    if code and len(code) % NEWS_CODE_CHUNK == 0:
        chunks = [code[i : i + NEWS_CODE_CHUNK] for i in range(0, len(code), NEWS_CODE_CHUNK)]
        # A chunk is padding (blank or all zeros) or a code; otherwise this is not the layout.
        if all(c.strip("0 ") == "" or _normalise_code(c) is not None for c in chunks):
            tokens = chunks
    if tokens is None:
        tokens = _LIST_SEP_RE.split(code.strip())
    out: list[str] = []
    for t in tokens:
        c = _normalise_code(t)
        if c is not None and c not in out:
            out.append(c)
    return tuple(out)


class LsDecoderStats:
    """Counters of one decoder; read by the status endpoint."""

    __slots__ = ("frames", "records", "controls", "errors", "dropped")

    def __init__(self) -> None:
        self.frames = 0  # every message given to decode()
        self.records = 0  # events produced
        self.controls = 0  # acknowledgements
        self.errors: dict[str, int] = {}  # malformed messages, by reason
        self.dropped: dict[str, int] = {}  # well-formed records rejected by validation

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "records": self.records,
            "controls": self.controls,
            "errors": dict(self.errors),
            "dropped": dict(self.dropped),
        }


class _Drop(Exception):
    """A record that is well formed but rejected by content validation (seed 000)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LsDecoder:
    """Decode LS WebSocket messages into events or acknowledgements, counting as it goes.

    One decoder per feed session. `media` maps the NWS ``id`` to a media name (see
    `load_media_map`); an unmapped id becomes ``"unknown:<id>"``. Headlines whose stripped
    title is empty or shorter than `min_title_chars` characters are dropped (seed 000).

    `decode` never raises for any text: a malformed message is counted in `stats.errors`
    under a short reason (bad_json, bad_message, no_body, unknown_tr, missing_field,
    bad_value), kept in `last_error`, and gives ``[]``; a dropped headline is counted in
    `stats.dropped` (empty_title, short_title), gives ``[]`` and leaves `last_error` alone.
    """

    def __init__(self, source: str, media: Mapping[str, str], min_title_chars: int = 5) -> None:
        self.source = source
        self.media = dict(media)
        self.min_title_chars = min_title_chars
        self.stats = LsDecoderStats()
        # Always a FrameError; typed as the session's decoder protocol declares it (a
        # writable attribute must match exactly).
        self.last_error: Exception | None = None

    def decode(self, text: str, received_ns: int) -> list[Event] | LsAck:
        """Decode one WebSocket text message (ls.md §4, §5).

        >>> dec = LsDecoder("ls-1", {})
        >>> dec.decode('{"header":{"tr_cd":"S3_","tr_key":"005930","tr_type":"3",'
        ...            '"rsp_cd":"00000","rsp_msg":"ok"},"body":null}', 0)
        LsAck(tr_cd='S3_', tr_key='005930', ok=True, rsp_cd='00000', rsp_msg='ok', tr_type='3')
        """
        self.stats.frames += 1
        try:
            return self._decode(text, received_ns)
        except FrameError as exc:
            self.last_error = exc
            self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1
        except _Drop as drop:
            self.stats.dropped[drop.reason] = self.stats.dropped.get(drop.reason, 0) + 1
        return []

    def _decode(self, text: str, received_ns: int) -> list[Event] | LsAck:
        try:
            msg = _message_decoder.decode(text)
        except msgspec.ValidationError as exc:  # JSON, but not {"header": {...}, "body": ...}
            raise FrameError("bad_message", str(exc)) from None
        except (msgspec.DecodeError, UnicodeError) as exc:  # lone surrogates cannot encode
            raise FrameError("bad_json", str(exc)) from None
        h = msg.header
        if h.rsp_cd is not None:  # §4, §9 step 4: a header with rsp_cd is an ack
            self.stats.controls += 1
            return LsAck(
                tr_cd=h.tr_cd, tr_key=h.tr_key.strip(), ok=h.rsp_cd == ACK_OK,
                rsp_cd=h.rsp_cd, rsp_msg=h.rsp_msg, tr_type=h.tr_type,
            )  # fmt: skip
        if h.tr_cd != NEWS_TR and h.tr_cd not in TRADE_TRS and h.tr_cd not in BOOK_TRS:
            raise FrameError("unknown_tr", repr(h.tr_cd))
        body = msg.body
        if body is None:
            raise FrameError("no_body", h.tr_cd)
        tr_key = h.tr_key.strip()
        event: Event
        if h.tr_cd == NEWS_TR:
            event = self._news(body, received_ns)
        elif h.tr_cd in TRADE_TRS:
            event = self._tick(body, tr_key, received_ns)
        else:
            event = self._book(body, tr_key, received_ns)
        self.stats.records += 1
        return [event]

    def _news(self, body: Mapping[str, str], received_ns: int) -> News:
        """NWS (ls.md §8.1), normalised as in seed 000: title, tickers, primary ticker, media.

        {"date":"20250102","time":"093015","id":"27","realkey":"202501020930151234000101",
         "title":"Sample headline about company A","code":"000000005930000000000660",
         "bodysize":"2048"}

        Structure is checked before content, so a malformed record is an error, never a
        drop: date/time (required, valid), realkey (required, non-blank) and title (key
        required). `id` and `code` may be absent (no media, no tickers). `bodysize` is
        informational: absent or not a plain digit string reads as 0 rather than losing the
        headline.
        """
        d = _yyyymmdd(_raw(body, "date"), "date")
        t = _hhmmss(_raw(body, "time"), "time")
        realkey = _text(body, "realkey")
        title = _raw(body, "title").strip()
        if not title:
            raise _Drop("empty_title")
        if len(title) < self.min_title_chars:
            raise _Drop("short_title")
        tickers = split_tickers(body.get("code", ""))
        media_id = body.get("id", "").strip()
        size = body.get("bodysize", "")
        return News(
            source=self.source,
            realkey=realkey,
            title=title,
            tickers=tickers,
            ticker=tickers[0] if tickers else None,
            media_id=media_id,
            media=self.media.get(media_id) or f"unknown:{media_id}",
            published_at=datetime.combine(d, t, KST),
            body_size=int(size) if _DIGITS_RE.fullmatch(size) else 0,
            received_ns=received_ns,
        )

    def _code(self, body: Mapping[str, str], tr_key: str) -> str:
        code = body.get("shcode", "").strip() or tr_key
        if not code:
            raise FrameError("missing_field", "shcode")
        return code

    def _tick(self, body: Mapping[str, str], tr_key: str, received_ns: int) -> Tick:
        """S3_/K3_ (ls.md §8.2). Every field read is required and strict (`sign` one of 1-5),
        except `exchname` (default "KRX") and `shcode` (default: the header tr_key).

        {"chetime":"093015","sign":"2","change":"500","drate":"0.71","price":"71000",
         "open":"70600","high":"71200","low":"70400","cgubun":"+","cvolume":"12",
         "volume":"1233600","value":"87654","cpower":"112.34","offerho":"71000",
         "bidho":"70900","status":"00","shcode":"005930","exchname":"KRX", ...}
        """
        trade_time = datetime.combine(
            _receive_date(received_ns), _hhmmss(_raw(body, "chetime"), "chetime"), KST
        )
        sign = _raw(body, "sign")
        if sign not in _SIGNS:
            raise FrameError("bad_value", f"sign={sign!r}")
        return Tick(
            source=self.source,
            venue=body.get("exchname", "").strip() or DEFAULT_VENUE,
            code=self._code(body, tr_key),
            trade_time=trade_time,
            price=_int(body, "price"),
            change=int(_signed(sign, _int(body, "change"))),
            change_percent=float(_signed(sign, _float(body, "drate"))),
            open=_int(body, "open"),
            high=_int(body, "high"),
            low=_int(body, "low"),
            ask=_int(body, "offerho"),
            bid=_int(body, "bidho"),
            trade_volume=_int(body, "cvolume"),
            volume=_int(body, "volume"),
            # `value` is accumulated value in million KRW (§8.2, programgarden); Tick.value is
            # KRW, as KIS sends it, so scale up. Precision below 1M KRW is lost at the source.
            value=_int(body, "value") * VALUE_UNIT_KRW,
            strength=_float(body, "cpower"),
            received_ns=received_ns,
        )

    def _book(self, body: Mapping[str, str], tr_key: str, received_ns: int) -> OrderBook:
        """H1_/HA_ (ls.md §8.3): 10 levels, `hotime` required; missing or empty numbers are 0.

        {"hotime":"093015","offerho1":"71000","bidho1":"70900","offerrem1":"15320",
         "bidrem1":"40110", ..., "totofferrem":"512300","totbidrem":"803400",
         "donsigubun":"1","shcode":"005930","alloc_gubun":"", "volume":"1233600", ...}
        """
        quote_time = datetime.combine(
            _receive_date(received_ns), _hhmmss(_raw(body, "hotime"), "hotime"), KST
        )
        levels = range(1, BOOK_LEVELS + 1)
        return OrderBook(
            source=self.source,
            venue=DEFAULT_VENUE,  # H1_/HA_ are the KRX books; the body names no exchange
            code=self._code(body, tr_key),
            quote_time=quote_time,
            ask_prices=tuple(_book_int(body, f"offerho{i}") for i in levels),
            bid_prices=tuple(_book_int(body, f"bidho{i}") for i in levels),
            ask_sizes=tuple(_book_int(body, f"offerrem{i}") for i in levels),
            bid_sizes=tuple(_book_int(body, f"bidrem{i}") for i in levels),
            total_ask_size=_book_int(body, "totofferrem"),
            total_bid_size=_book_int(body, "totbidrem"),
            expected_price=0,  # H1_/HA_ carry no expected match price
            expected_volume=0,
            volume=_book_int(body, "volume"),
            received_ns=received_ns,
        )


# --- id -> media table ------------------------------------------------------------------------


class _MediaFile(msgspec.Struct):
    media: dict[str, str]  # other top-level keys (the "_note") are ignored


def sim_media_path() -> Path:
    """The bundled table of the ids the built-in simulator emits. LS does not publish what
    the ids mean (ls.md §8.1), so this table names nothing a real LS feed sends: it is used
    only against the simulator; a real feed without an operator's table stores ids as
    ``unknown:<id>``."""
    return Path(str(resources.files("tradestream.feeds.ls").joinpath(MEDIA_FILE)))


def load_media_map(path: Path | None = None) -> dict[str, str]:
    """Load an NWS id -> media name table (the simulator's when `path` is None).

    The file is a JSON object whose ``"media"`` member maps ids to names; every other
    top-level key (such as ``"_note"``) is ignored, so a comment is never taken for an id.
    Raises ValueError (msgspec.DecodeError) on a malformed file and OSError when it cannot
    be read. Called once at start-up; the decoder is pure.
    """
    data = (path or sim_media_path()).read_bytes()
    table = msgspec.json.decode(data, type=_MediaFile).media
    return {k.strip(): v.strip() for k, v in table.items()}
