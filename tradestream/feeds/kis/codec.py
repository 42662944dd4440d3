"""KIS real-time protocol, sans I/O: message builders, frame and control parsers.

Wire format (../shared/protocols/kis.md):
- data frame, text: ``<enc>|<tr_id>|<count>|<payload>``; the payload holds ``count`` records of
  N ``^``-separated fields each, simply concatenated (§6); with ``enc`` = 1 the payload is
  base64 of AES-CBC ciphertext, keyed by the subscribe ack of that tr_id (§6.1);
- control frame, JSON: subscribe acknowledgements (§5.1, §5.2) and the PINGPONG heartbeat (§5.3).

Record layouts are tuples of field names (§7), one per TR and layout; parsers read fields by
name through index maps built from those tuples, so a layout change is a change of one tuple.

Everything here takes values and returns values; the feed session (session.py) does the I/O.
Bad frames raise `FrameError` with a short reason; `KisDecoder` counts them and never raises.
"""

from __future__ import annotations

import base64
import enum
import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import date, datetime
from operator import itemgetter
from typing import Any, Final, NamedTuple, NoReturn

import msgspec
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tradestream.errors import FrameError
from tradestream.events import KST, Event, Execution, IndexTick, OrderBook, ProgramTrade, Tick
from tradestream.upstream import (
    INDEX_NAMES,
    INDEX_TR,
    KIS_TRADES,
    NOTICE_TRS,
    PROGRAM_TRADE_TRS,
    TRADE_TRS,
)

# --- field layouts (kis.md §7) ---------------------------------------------------------------

#: H0STCNT0 / H0NXCNT0 / H0UNCNT0 trade record, 46 fields (kis.md §7.1)
H0STCNT0_FIELDS: Final = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL",
    "ACML_VOL", "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR",
    "SELN_CNTG_SMTN", "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE", "PRDY_VOL_VRSS_ACML_VOL_RATE",
    "OPRC_HOUR", "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR", "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN",
    "HGPR_VRSS_PRPR", "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN", "LWPR_VRSS_PRPR", "BSOP_DATE",
    "NEW_MKOP_CLS_CODE", "TRHT_YN", "ASKP_RSQN1", "BIDP_RSQN1", "TOTAL_ASKP_RSQN",
    "TOTAL_BIDP_RSQN", "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL", "PRDY_SMNS_HOUR_ACML_VOL_RATE",
    "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE", "VI_STND_PRC",
)  # fmt: skip
assert len(H0STCNT0_FIELDS) == 46

_LEVELS = range(1, 11)
#: H0STASP0 10-level order book, 59 fields (kis.md §7.2)
H0STASP0_FIELDS: Final = (
    "MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE",
    *(f"ASKP{i}" for i in _LEVELS), *(f"BIDP{i}" for i in _LEVELS),
    *(f"ASKP_RSQN{i}" for i in _LEVELS), *(f"BIDP_RSQN{i}" for i in _LEVELS),
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "OVTM_TOTAL_ASKP_RSQN", "OVTM_TOTAL_BIDP_RSQN",
    "ANTC_CNPR", "ANTC_CNQN", "ANTC_VOL", "ANTC_CNTG_VRSS", "ANTC_CNTG_VRSS_SIGN",
    "ANTC_CNTG_PRDY_CTRT", "ACML_VOL", "TOTAL_ASKP_RSQN_ICDC", "TOTAL_BIDP_RSQN_ICDC",
    "OVTM_TOTAL_ASKP_ICDC", "OVTM_TOTAL_BIDP_ICDC", "STCK_DEAL_CLS_CODE",
)  # fmt: skip
assert len(H0STASP0_FIELDS) == 59
#: H0NXASP0 (NXT) and H0UNASP0 (combined): the 59 plus 6 mid-price fields = 65 (kis.md §7.2)
H0NXASP0_FIELDS: Final = (
    *H0STASP0_FIELDS,
    "KMID_PRC", "KMID_TOTAL_RSQN", "KMID_CLS_CODE", "NMID_PRC", "NMID_TOTAL_RSQN", "NMID_CLS_CODE",
)  # fmt: skip
assert len(H0NXASP0_FIELDS) == 65

#: H0STPGM0 / H0NXPGM0 / H0UNPGM0 program trading, 11 fields (kis.md §7.3)
H0STPGM0_FIELDS: Final = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "SELN_CNQN", "SELN_TR_PBMN", "SHNU_CNQN", "SHNU_TR_PBMN",
    "NTBY_CNQN", "NTBY_TR_PBMN", "SELN_RSQN", "SHNU_RSQN", "WHOL_NTBY_QTY",
)  # fmt: skip
assert len(H0STPGM0_FIELDS) == 11

#: H0STCNI0 / H0STCNI9 execution notice, current layout, 26 fields (kis.md §7.4)
H0STCNI0_FIELDS: Final = (
    "CUST_ID", "ACNT_NO", "ODER_NO", "OODER_NO", "SELN_BYOV_CLS", "RCTF_CLS", "ODER_KIND",
    "ODER_COND", "STCK_SHRN_ISCD", "CNTG_QTY", "CNTG_UNPR", "STCK_CNTG_HOUR", "RFUS_YN",
    "CNTG_YN", "ACPT_YN", "BRNC_NO", "ODER_QTY", "ACNT_NAME", "ORD_COND_PRC", "ORD_EXG_GB",
    "POPUP_YN", "FILLER", "CRDT_CLS", "CRDT_LOAN_DATE", "CNTG_ISNM40", "ODER_PRC",
)  # fmt: skip
assert len(H0STCNI0_FIELDS) == 26
#: the same notice in the older 23-field layout parsed by python-kis (kis.md §7.4 "Disagreement")
H0STCNI0_LEGACY_FIELDS: Final = (
    *H0STCNI0_FIELDS[:18], "CNTG_ISNM", "CRDT_CLS", "CRDT_LOAN_DATE", "CNTG_ISNM40", "ODER_PRC",
)  # fmt: skip
assert len(H0STCNI0_LEGACY_FIELDS) == 23

#: H0UPCNT0 domestic index (국내지수 실시간체결), 30 fields. Not in kis.md: the official
#: open-trading-api column list (examples_llm/domestic_stock/index_ccnl), see docs/kis-index.md.
H0UPCNT0_FIELDS: Final = (
    "BSTP_CLS_CODE", "BSOP_HOUR", "PRPR_NMIX", "PRDY_VRSS_SIGN", "BSTP_NMIX_PRDY_VRSS",
    "ACML_VOL", "ACML_TR_PBMN", "PCAS_VOL", "PCAS_TR_PBMN", "PRDY_CTRT", "OPRC_NMIX",
    "NMIX_HGPR", "NMIX_LWPR", "OPRC_VRSS_NMIX_PRPR", "OPRC_VRSS_NMIX_SIGN",
    "HGPR_VRSS_NMIX_PRPR", "HGPR_VRSS_NMIX_SIGN", "LWPR_VRSS_NMIX_PRPR", "LWPR_VRSS_NMIX_SIGN",
    "PRDY_CLPR_VRSS_OPRC_RATE", "PRDY_CLPR_VRSS_HGPR_RATE", "PRDY_CLPR_VRSS_LWPR_RATE",
    "UPLM_ISSU_CNT", "ASCN_ISSU_CNT", "STNR_ISSU_CNT", "DOWN_ISSU_CNT", "LSLM_ISSU_CNT",
    "QTQT_ASCN_ISSU_CNT", "QTQT_DOWN_ISSU_CNT", "TICK_VRSS",
)  # fmt: skip
assert len(H0UPCNT0_FIELDS) == 30

# The TR tables (trades, order books, program trading per venue; the index TR and its codes;
# the execution notices, whose frames are encrypted, kis.md §7.4, §6.1) are the project's
# shared vocabulary: tradestream/upstream.py.

PINGPONG: Final = "PINGPONG"


# --- client -> server ------------------------------------------------------------------------


def subscribe_message(
    approval_key: str, tr_id: str, tr_key: str, *, subscribe: bool = True, custtype: str = "P"
) -> str:
    """Register (tr_type "1") or unregister ("2") one (tr_id, tr_key) pair (kis.md §4)."""
    return msgspec.json.encode(
        {
            "header": {
                "approval_key": approval_key,
                "custtype": custtype,
                "tr_type": "1" if subscribe else "2",
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
        }
    ).decode()


# --- control frames (JSON) -------------------------------------------------------------------


class AckResult(enum.Enum):
    """What an acknowledgement means for the subscription it answers (kis.md §5.2)."""

    SUBSCRIBED = "subscribed"  # OPSP0000
    UNSUBSCRIBED = "unsubscribed"  # OPSP0001
    ALREADY_SUBSCRIBED = "already_subscribed"  # OPSP0002: live, treat as subscribed
    NOT_SUBSCRIBED = "not_subscribed"  # OPSP0003
    LIMIT_EXCEEDED = "limit_exceeded"  # OPSP0008: use another session
    INVALID_APPROVAL_KEY = "invalid_approval_key"  # OPSP0011: re-issue the key, reconnect
    UNKNOWN_TR = "unknown_tr"  # OPSP8991
    INVALID_TR_KEY = "invalid_tr_key"  # OPSP8992, OPSP8993, OPSP9990
    KEY_IN_USE = "key_in_use"  # OPSP8996: another session owns the app key
    ERROR = "error"  # anything else


_ACK_CODES: Final = {
    "OPSP0000": AckResult.SUBSCRIBED,
    "OPSP0001": AckResult.UNSUBSCRIBED,
    "OPSP0002": AckResult.ALREADY_SUBSCRIBED,
    "OPSP0003": AckResult.NOT_SUBSCRIBED,
    "OPSP0008": AckResult.LIMIT_EXCEEDED,
    "OPSP0011": AckResult.INVALID_APPROVAL_KEY,
    "OPSP8991": AckResult.UNKNOWN_TR,
    "OPSP8992": AckResult.INVALID_TR_KEY,
    "OPSP8993": AckResult.INVALID_TR_KEY,
    "OPSP9990": AckResult.INVALID_TR_KEY,
    "OPSP8996": AckResult.KEY_IN_USE,
}


class Ack(msgspec.Struct, frozen=True):
    """A subscribe/unsubscribe acknowledgement or refusal (kis.md §5.1)."""

    tr_id: str
    tr_key: str
    result: AckResult
    msg_cd: str
    msg1: str
    encrypt: bool = False
    key: str | None = None  # AES-256 key for encrypted TRs (ASCII, 32 chars)
    iv: str | None = None  # AES IV (ASCII, 16 chars)

    @property
    def live(self) -> bool:
        return self.result in (AckResult.SUBSCRIBED, AckResult.ALREADY_SUBSCRIBED)


class PingPong(msgspec.Struct, frozen=True):
    """Server heartbeat; the client echoes `raw` unchanged as a text frame (kis.md §5.3)."""

    raw: str


class _Header(msgspec.Struct):
    tr_id: str = ""
    tr_key: str = ""
    encrypt: str = "N"


class _Output(msgspec.Struct):
    key: str | None = None
    iv: str | None = None


class _Body(msgspec.Struct):
    rt_cd: str = ""
    msg_cd: str = ""
    msg1: str = ""
    output: _Output | None = None


class _Control(msgspec.Struct):
    header: _Header
    body: _Body | None = None


_control_decoder = msgspec.json.Decoder(_Control)


def parse_control(text: str) -> Ack | PingPong:
    """Parse a JSON control frame.

    >>> parse_control('{"header":{"tr_id":"PINGPONG","datetime":"20250102093015"}}')
    PingPong(raw='{"header":{"tr_id":"PINGPONG","datetime":"20250102093015"}}')
    """
    try:
        msg = _control_decoder.decode(text)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise FrameError("bad_json", str(exc)) from None
    except UnicodeEncodeError as exc:  # a lone surrogate: msgspec reads str as UTF-8
        raise FrameError("bad_json", str(exc)) from None
    if msg.header.tr_id == PINGPONG:
        return PingPong(text)
    body = msg.body
    if body is None:
        raise FrameError("bad_control", "no body")
    if body.msg_cd in _ACK_CODES:
        result = _ACK_CODES[body.msg_cd]
    elif body.rt_cd == "0":
        # A success code we do not know: trust rt_cd, and tell subscribe from unsubscribe.
        unsub = body.msg1.upper().startswith("UNSUB")
        result = AckResult.UNSUBSCRIBED if unsub else AckResult.SUBSCRIBED
    else:
        result = AckResult.ERROR
    out = body.output
    return Ack(
        tr_id=msg.header.tr_id,
        tr_key=msg.header.tr_key.strip(),
        result=result,
        msg_cd=body.msg_cd,
        msg1=body.msg1,
        encrypt=msg.header.encrypt == "Y",
        key=out.key if out else None,
        iv=out.iv if out else None,
    )


# --- data frames -----------------------------------------------------------------------------


def split_frame(text: str) -> tuple[bool, str, int, str]:
    """Split ``enc|tr_id|count|payload`` into its parts (kis.md §6)."""
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise FrameError("bad_frame", "expected 4 '|'-separated parts")
    enc, tr_id, count_s, payload = parts
    if enc not in ("0", "1"):
        raise FrameError("bad_frame", f"encryption flag {enc!r}")
    if not (count_s.isascii() and count_s.isdigit()) or (count := int(count_s)) < 1:
        raise FrameError("bad_frame", f"record count {count_s!r}")
    return enc == "1", tr_id, count, payload


def cut_records(values: Sequence[str], count: int, expected: int) -> tuple[int, bool]:
    """Return (fields per record, drifted) for ``count`` records concatenated in ``values``.

    The count in the frame header fixes the layout: N = len(values) / count. When N differs
    from the documented layout the record may still be usable (brokers append fields without
    notice), and the caller is told so it can pick a known layout or count the drift.
    """
    n, rest = divmod(len(values), count)
    if rest or n == 0:
        raise FrameError("field_count", f"{len(values)} values do not split into {count} records")
    return n, n != expected


def decrypt_payload(cipher: Cipher[modes.CBC], payload: str) -> str:
    """base64 -> AES-CBC -> PKCS#7 unpad -> UTF-8 (kis.md §6.1). Raises FrameError("decrypt")."""
    try:
        # Like the broker's sample (b64decode without validate): characters outside the base64
        # alphabet, such as MIME line breaks, are dropped. Anything worse fails the padding.
        data = base64.b64decode(payload)  # binascii.Error is a ValueError
        dec = cipher.decryptor()
        padded = dec.update(data) + dec.finalize()  # ValueError unless whole 16-byte blocks
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode()  # ValueError: padding
    except ValueError as exc:  # also UnicodeDecodeError, and non-ASCII base64 text
        raise FrameError("decrypt", str(exc)) from None


def aes_cipher(key: str, iv: str) -> Cipher[modes.CBC]:
    """The AES-CBC cipher for an ack's ``output.key``/``output.iv``: their UTF-8 bytes are used
    as they are, not hex or base64 decoded (kis.md §6.1; 32 bytes -> AES-256). ValueError for a
    key that is not 16, 24 or 32 bytes or an IV that is not 16."""
    return Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode()))


# Strict numbers. kis.md §6: "numbers are unpadded decimal strings, signs use a leading -".
# int() and float() alone also take " 71000", "+5", "7_1000", full-width digits or "1e3"; the
# checks below refuse those. str.isascii() is O(1) on CPython and an ASCII str.isdigit() is
# exactly [0-9]+, so two C calls do what a regex would at a fraction of the cost.


MAX_DIGITS = 18  # every value fits a signed 64-bit column (and msgpack)


def _int(s: str) -> int:
    """An integer field; empty means "not reported" and reads as 0."""
    if len(s) > MAX_DIGITS + 1:
        raise FrameError("bad_value", f"integer of {len(s)} characters")
    if s.isascii():
        if s.isdigit():
            return int(s)
        if not s:
            return 0
        if s[0] == "-" and s[1:].isdigit():
            return int(s)
    raise FrameError("bad_value", f"integer {s!r}")


def _req_int(s: str) -> int:
    """An integer field that must be present (a price, an accumulated volume)."""
    if (
        len(s) <= MAX_DIGITS + 1
        and s.isascii()
        and (s.isdigit() or (s[:1] == "-" and s[1:].isdigit()))
    ):
        return int(s)
    raise FrameError("bad_value", f"integer {s!r}")


def _issue_count(s: str) -> int:
    """A number of issues (advancers, decliners, unchanged): an integer field that cannot be
    negative; empty reads as 0. A negative count is a bad value, so the record never reaches
    the market gate, which refuses one (detect/gate.py)."""
    n = _int(s)
    if n < 0:
        raise FrameError("bad_value", f"negative count {s!r}")
    return n


def _req_float(s: str) -> float:
    """A decimal field that must be present (an index level)."""
    if not s:
        raise FrameError("bad_value", "empty decimal")
    return _float(s)


def _float(s: str) -> float:
    """A rate: digits with at most one '.' between digits, optional leading '-'; empty is 0."""
    if not s:
        return 0.0
    t = s[1:] if s[0] == "-" else s
    if t.isascii() and t.replace(".", "0", 1).isdigit() and t[0] != "." and t[-1] != ".":
        return float(s)
    raise FrameError("bad_value", f"rate {s!r}")


# Building a datetime costs more than the rest of a tick together, and a burst of ticks shares
# a handful of seconds: memoise (datetimes are immutable; errors are not cached).
@functools.lru_cache(maxsize=4096)
def _date_time(yyyymmdd: str, hhmmss: str) -> datetime:
    # A short field would otherwise read as another time ("09301" as 09:30:01).
    if not (len(yyyymmdd) == 8 and len(hhmmss) == 6 and (yyyymmdd + hhmmss).isascii()
            and (yyyymmdd + hhmmss).isdigit()):  # fmt: skip
        raise FrameError("bad_value", f"date/time {yyyymmdd!r} {hhmmss!r}")
    return datetime(
        int(yyyymmdd[0:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]),
        int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6]), tzinfo=KST,
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _time_on(day: date | None, hhmmss: str) -> datetime:
    if day is None or not (len(hhmmss) == 6 and hhmmss.isascii() and hhmmss.isdigit()):
        raise FrameError("bad_value", f"time {hhmmss!r}")
    return datetime(day.year, day.month, day.day,
                    int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6]), tzinfo=KST)  # fmt: skip


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_KST_OFFSET_S: Final = 9 * 3600  # KST has no daylight saving time


def kst_date(received_ns: int) -> date:
    """The KST calendar date of a wall-clock time given in ns since the epoch."""
    return date.fromordinal(
        _EPOCH_ORDINAL + (received_ns // 1_000_000_000 + _KST_OFFSET_S) // 86_400
    )


# --- record builders -------------------------------------------------------------------------
# Each builder reads the fields named in its *_NAMES tuple, in that order, as picked from one
# record by an itemgetter made for the record's layout (see _tr below): no per-record dicts.

_TICK_NAMES: Final = (
    "MKSC_SHRN_ISCD", "BSOP_DATE", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS", "PRDY_CTRT",
    "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL", "ACML_VOL",
    "ACML_TR_PBMN", "CTTR",
)  # fmt: skip


def _tick(f: Sequence[str], venue: str, source: str, received_ns: int, day: date | None) -> Tick:
    """H0STCNT0 and siblings (kis.md §7.1). The record carries its business date."""
    code, ymd, hms, price, change, pct, open_, high, low, ask, bid, qty, vol, value, cttr = f
    return Tick(
        source=source,
        venue=venue,
        code=code,
        trade_time=_date_time(ymd, hms),
        price=_req_int(price),
        change=_int(change),
        change_percent=_float(pct),
        open=_int(open_),
        high=_int(high),
        low=_int(low),
        ask=_int(ask),
        bid=_int(bid),
        trade_volume=_int(qty),
        volume=_req_int(vol),
        value=_int(value),
        strength=_float(cttr),
        received_ns=received_ns,
    )


_BOOK_NAMES: Final = (
    "MKSC_SHRN_ISCD", "BSOP_HOUR",
    *(f"ASKP{i}" for i in _LEVELS), *(f"BIDP{i}" for i in _LEVELS),
    *(f"ASKP_RSQN{i}" for i in _LEVELS), *(f"BIDP_RSQN{i}" for i in _LEVELS),
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "ANTC_CNPR", "ANTC_VOL", "ACML_VOL",
)  # fmt: skip


def _order_book(
    f: Sequence[str], venue: str, source: str, received_ns: int, day: date | None
) -> OrderBook:
    """H0STASP0 and siblings (kis.md §7.2). The record has a time but no date: the date is the
    receive date. Empty levels (none beyond the daily limit) read as 0."""
    return OrderBook(
        source=source,
        venue=venue,
        code=f[0],
        quote_time=_time_on(day, f[1]),
        ask_prices=tuple(map(_int, f[2:12])),
        bid_prices=tuple(map(_int, f[12:22])),
        ask_sizes=tuple(map(_int, f[22:32])),
        bid_sizes=tuple(map(_int, f[32:42])),
        total_ask_size=_int(f[42]),
        total_bid_size=_int(f[43]),
        expected_price=_int(f[44]),
        expected_volume=_int(f[45]),
        volume=_int(f[46]),
        received_ns=received_ns,
    )


_PROGRAM_NAMES: Final = H0STPGM0_FIELDS


def _program_trade(
    f: Sequence[str], venue: str, source: str, received_ns: int, day: date | None
) -> ProgramTrade:
    """H0STPGM0 and siblings (kis.md §7.3); the date is the receive date."""
    code, hms, sell_q, sell_v, buy_q, buy_v, net_q, net_v, sell_r, buy_r, net_r = f
    return ProgramTrade(
        source=source,
        venue=venue,
        code=code,
        trade_time=_time_on(day, hms),
        sell_qty=_req_int(sell_q),
        sell_value=_int(sell_v),
        buy_qty=_req_int(buy_q),
        buy_value=_int(buy_v),
        net_qty=_int(net_q),
        net_value=_int(net_v),
        sell_rest=_int(sell_r),
        buy_rest=_int(buy_r),
        net_rest=_int(net_r),
        received_ns=received_ns,
    )


_INDEX_NAMES: Final = (
    "BSTP_CLS_CODE", "BSOP_HOUR", "PRPR_NMIX", "PRDY_VRSS_SIGN", "BSTP_NMIX_PRDY_VRSS",
    "PRDY_CTRT", "ACML_VOL", "ACML_TR_PBMN", "ASCN_ISSU_CNT", "DOWN_ISSU_CNT", "STNR_ISSU_CNT",
)  # fmt: skip
_DOWN_SIGNS: Final = frozenset({"4", "5"})  # PRDY_VRSS_SIGN: lower limit, down (kis.md §7.1)
_UP_SIGNS: Final = frozenset({"1", "2"})  # upper limit, up


def _signed(x: float, sign: str) -> float:
    """Apply PRDY_VRSS_SIGN to a change. KIS sends changes with a leading '-' (kis.md §6; the
    REST index quote does), and the trade parser relies on that; the index stream's own example
    only shows a rise, so a magnitude sent with a down sign is taken as a fall as well. Any
    other sign code (3 unchanged, empty) leaves the value as sent."""
    if sign in _DOWN_SIGNS:
        return -abs(x)
    if sign in _UP_SIGNS:
        return abs(x)
    return x


def _index_tick(
    f: Sequence[str], venue: str, source: str, received_ns: int, day: date | None
) -> IndexTick:
    """H0UPCNT0 (docs/kis-index.md): a time without a date, so the date is the receive date.
    Levels are decimals ("2624.54"), parsed as strictly as rates; issue counts must not be
    negative."""
    code, hms, level, sign, change, pct, vol, value, up, down, flat = f
    return IndexTick(
        source=source,
        index=INDEX_NAMES.get(code, code),
        code=code,
        time=_time_on(day, hms),
        value=_req_float(level),
        change=_signed(_float(change), sign),
        change_percent=_signed(_float(pct), sign),
        volume=_req_int(vol),
        traded_value=_int(value),
        advancers=_issue_count(up),
        decliners=_issue_count(down),
        unchanged=_issue_count(flat),
        received_ns=received_ns,
    )


_NOTICE_NAMES: Final = (
    "CUST_ID", "ACNT_NO", "ODER_NO", "OODER_NO", "SELN_BYOV_CLS", "CNTG_YN", "RCTF_CLS",
    "RFUS_YN", "STCK_SHRN_ISCD", "CNTG_QTY", "CNTG_UNPR", "ODER_QTY", "ODER_PRC",
    "STCK_CNTG_HOUR", "CNTG_ISNM40",
)  # fmt: skip
# Code tables of kis.md §7.4. An unknown code is a bad record, not a guess: an account event
# must not be reported as the opposite side or kind.
_SIDES: Final = {"01": "sell", "02": "buy"}  # SELN_BYOV_CLS
_KINDS: Final = {"1": "order", "2": "fill"}  # CNTG_YN
_CORRECTIONS: Final = {"0": "new", "1": "modify", "2": "cancel"}  # RCTF_CLS
_REJECTED: Final = {"0": False, "1": True}  # RFUS_YN


def _execution(
    f: Sequence[str], venue: str, source: str, received_ns: int, day: date | None
) -> Execution:
    """H0STCNI0/H0STCNI9 after decryption (kis.md §7.4), either layout; the date is the receive
    date. Quantities and prices may be empty on an order notice (e.g. a market order): 0."""
    cust, acnt, order_no, orig_no, side, kind, corr, refused, code, qty, price, oqty, oprice, \
        hms, name = f  # fmt: skip
    return Execution(
        source=source,
        customer_id=cust,
        account=acnt,
        order_no=order_no,
        original_order_no=orig_no,
        side=_SIDES.get(side) or _bad("SELN_BYOV_CLS", side),
        kind=_KINDS.get(kind) or _bad("CNTG_YN", kind),
        correction=_CORRECTIONS.get(corr) or _bad("RCTF_CLS", corr),
        rejected=_REJECTED[refused] if refused in _REJECTED else _bad("RFUS_YN", refused),
        code=code,
        quantity=_int(qty),
        price=_int(price),
        order_qty=_int(oqty),
        order_price=_int(oprice),
        time=_time_on(day, hms),
        name=name.strip(),
        received_ns=received_ns,
    )


def _bad(field: str, value: str) -> NoReturn:
    raise FrameError("bad_value", f"{field} {value!r}")


Builder = Callable[[Sequence[str], str, str, int, date | None], Event]


class _Tr(NamedTuple):
    """How to parse one TR."""

    venue: str
    current: int  # fields per record in the current layout
    getters: dict[int, itemgetter[Any]]  # each known layout's field count -> field picker
    build: Builder
    dated: bool  # records carry a time but no date: use the receive date (KST)
    encrypted: bool  # documented as encrypted (kis.md §7.4): no key yet is "no_key"


def _tr(
    venue: str,
    layouts: tuple[tuple[str, ...], ...],
    names: tuple[str, ...],
    build: Builder,
    *,
    dated: bool,
    encrypted: bool = False,
) -> _Tr:
    """Compile a TR's layouts (current first) into pickers of the fields `build` reads."""
    getters: dict[int, itemgetter[Any]] = {}
    for fields in layouts:
        assert len(fields) not in getters, "layouts are told apart by their field count"
        index = {name: i for i, name in enumerate(fields)}
        getters[len(fields)] = itemgetter(*(index[name] for name in names))
    return _Tr(venue, len(layouts[0]), getters, build, dated, encrypted)


_TRS: Final[dict[str, _Tr]] = {
    **{tr: _tr(v, (H0STCNT0_FIELDS,), _TICK_NAMES, _tick, dated=False)
       for tr, v in TRADE_TRS.items()},
    "H0STASP0": _tr("KRX", (H0STASP0_FIELDS,), _BOOK_NAMES, _order_book, dated=True),
    "H0NXASP0": _tr("NXT", (H0NXASP0_FIELDS,), _BOOK_NAMES, _order_book, dated=True),
    "H0UNASP0": _tr("UN", (H0NXASP0_FIELDS,), _BOOK_NAMES, _order_book, dated=True),
    **{tr: _tr(v, (H0STPGM0_FIELDS,), _PROGRAM_NAMES, _program_trade, dated=True)
       for tr, v in PROGRAM_TRADE_TRS.items()},
    **{tr: _tr("", (H0STCNI0_FIELDS, H0STCNI0_LEGACY_FIELDS), _NOTICE_NAMES, _execution,
               dated=True, encrypted=True)
       for tr in NOTICE_TRS},
    INDEX_TR: _tr("KRX", (H0UPCNT0_FIELDS,), _INDEX_NAMES, _index_tick, dated=True),
}  # fmt: skip
_TICK_GET: Final = _TRS[KIS_TRADES].getters[len(H0STCNT0_FIELDS)]


def tick_from_fields(
    v: Sequence[str], base: int, venue: str, source: str, received_ns: int
) -> Tick:
    """Build a Tick from the record starting at ``v[base]`` (H0STCNT0 layout, kis.md §7.1)."""
    try:
        return _tick(_TICK_GET(v[base : base + len(H0STCNT0_FIELDS)]), venue, source,
                     received_ns, None)  # fmt: skip
    except FrameError:
        raise
    except (ValueError, IndexError) as exc:
        raise FrameError("bad_value", str(exc)) from None


class DecoderStats:
    """Counters of one decoder; read by the status endpoint.

    `layouts` counts frames per ``"<tr_id>:<fields per record>"`` whose layout is not the TR's
    current one: known alternates (the 23-field notice) and drifted layouts alike.
    """

    __slots__ = ("frames", "records", "controls", "errors", "drift", "drift_sample", "layouts")

    def __init__(self) -> None:
        self.frames = 0
        self.records = 0
        self.controls = 0
        self.errors: dict[str, int] = {}
        self.drift = 0
        self.drift_sample: str | None = None
        self.layouts: dict[str, int] = {}

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "records": self.records,
            "controls": self.controls,
            "errors": dict(self.errors),
            "drift": self.drift,
            "drift_sample": self.drift_sample,  # the last drifted frame, for an operator
            "layouts": dict(self.layouts),
        }


DRIFT_SAMPLE_CHARS: Final = 2000
SEEN_NOTICES: Final = 4096  # notice contents a session remembers, to number repeats


class KisDecoder:
    """Decode KIS frames into events or control messages, counting as it goes.

    One decoder per feed session. `decode` never raises: a bad frame from the broker is
    recorded in `stats.errors` under its reason and yields an empty list, and `last_error`
    holds the error for the caller to log.

    The decoder keeps the AES key/iv of every acknowledged tr_id (kis.md §6.1): a subscribe
    ack carrying ``output.key``/``output.iv`` stores them, and `forget_keys` drops them all,
    for the session to call on reconnect (the new session's acks bring new ones, §8).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.stats = DecoderStats()
        # Always a FrameError; typed as the session's decoder protocol declares it (a
        # writable attribute must match exactly).
        self.last_error: Exception | None = None
        self._ciphers: dict[str, Cipher[modes.CBC]] = {}
        # a notice's natural key -> how many times this connection brought it (Execution.seq);
        # bounded: identical notices arrive within the same second, never far apart
        self._notices: OrderedDict[tuple[object, ...], int] = OrderedDict()

    def forget_keys(self) -> None:
        """A new connection: drop every stored key/iv (encrypted frames are "no_key" until the
        next acks) and start numbering notices afresh (Execution.seq counts per connection)."""
        self._ciphers.clear()
        self._notices.clear()

    def has_key(self, tr_id: str) -> bool:
        return tr_id in self._ciphers

    def decode(self, text: str, received_ns: int) -> list[Event] | Ack | PingPong:
        """Decode one WebSocket text message: events for a data frame, else the control message.

        >>> KisDecoder("kis-1").decode("0|H0STPGM0|001|005930^093015^1^2^3^4^2^2^0^0^0",
        ...                            1735777815000000000)[0].trade_time.isoformat()
        '2025-01-02T09:30:15+09:00'
        """
        self.stats.frames += 1
        try:
            if text[:1] == "{":
                self.stats.controls += 1
                msg = parse_control(text)
                if isinstance(msg, Ack) and (msg.key or msg.iv):
                    self._remember_key(msg)
                return msg
            return self._data(text, received_ns)
        except FrameError as exc:
            self._count(exc)
        except Exception as exc:  # a parser bug must cost one frame, not the feed session
            self._count(FrameError("internal", repr(exc)))
        return []

    def _count(self, exc: FrameError) -> None:
        self.last_error = exc
        self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1

    def _remember_key(self, ack: Ack) -> None:
        try:
            if not (ack.key and ack.iv):
                raise ValueError("key or iv missing")
            self._ciphers[ack.tr_id] = aes_cipher(ack.key, ack.iv)
        except ValueError as exc:  # the ack still counts; its frames will be "no_key"
            self._ciphers.pop(ack.tr_id, None)
            self._count(FrameError("bad_key", f"{ack.tr_id}: {exc}"))

    def _data(self, text: str, received_ns: int) -> list[Event]:
        encrypted, tr_id, count, payload = split_frame(text)
        spec = _TRS.get(tr_id)
        if spec is None:
            raise FrameError("unknown_tr", tr_id)
        if encrypted:
            cipher = self._ciphers.get(tr_id)
            if cipher is None:
                raise FrameError("no_key" if spec.encrypted else "unexpected_encryption", tr_id)
            payload = decrypt_payload(cipher, payload)
        values = payload.split("^")
        n, drifted = cut_records(values, count, spec.current)
        get = spec.getters.get(n)
        if drifted:
            # Schema drift (kis.md §6 "Robust parsing"): a known alternate layout is used as it
            # is; a longer record is taken as fields appended to the current layout and read by
            # its known prefix; a shorter one could be misaligned anywhere, so it is refused.
            if get is None:
                if n < spec.current:
                    raise FrameError("field_count", f"{tr_id} record of {n} fields")
                get = spec.getters[spec.current]
                self.stats.drift += 1
                self.stats.drift_sample = text[:DRIFT_SAMPLE_CHARS]
            key = f"{tr_id}:{n}"
            self.stats.layouts[key] = self.stats.layouts.get(key, 0) + 1
        assert get is not None
        build, venue, source = spec.build, spec.venue, self.source
        try:
            day = kst_date(received_ns) if spec.dated else None
            if count == 1:
                events = [build(get(values), venue, source, received_ns, day)]
            else:
                events = [
                    build(get(values[k * n : (k + 1) * n]), venue, source, received_ns, day)
                    for k in range(count)
                ]
        except FrameError:
            raise
        except (ValueError, IndexError, OverflowError) as exc:  # a datetime out of range
            raise FrameError("bad_value", str(exc)) from None
        self.stats.records += count
        if spec.build is _execution:
            return [self._numbered(ev) for ev in events]  # type: ignore[arg-type]
        return events

    def _numbered(self, ev: Execution) -> Execution:
        """The notice with its occurrence number in this session (Execution.seq)."""
        key = ev.key  # seq is 1 here: the content alone
        n = self._notices.get(key, 0) + 1
        self._notices[key] = n
        self._notices.move_to_end(key)
        if len(self._notices) > SEEN_NOTICES:
            self._notices.popitem(last=False)
        return ev if n == 1 else msgspec.structs.replace(ev, seq=n)
