"""KIS real-time protocol, sans I/O: message builders, frame and control parsers.

Wire format (../shared/protocols/kis.md):
- data frame, text: ``<enc>|<tr_id>|<count>|<payload>``; the payload holds ``count`` records of
  N ``^``-separated fields each, simply concatenated (§6);
- control frame, JSON: subscribe acknowledgements (§5.1, §5.2) and the PINGPONG heartbeat (§5.3).

Everything here takes values and returns values; the feed session (session.py) does the I/O.
Bad frames raise `FrameError` with a short reason; the session counts and logs them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from tradestream.events import KST, Tick

# --- field layouts (kis.md §7.1) -------------------------------------------------------------

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
_I = {name: i for i, name in enumerate(H0STCNT0_FIELDS)}
# The highest index the Tick parser reads; a drifted record shorter than this cannot be used.
_TICK_MIN_FIELDS: Final = max(
    _I[n] for n in ("BSOP_DATE", "CTTR", "ACML_TR_PBMN", "BIDP1", "STCK_CNTG_HOUR")
) + 1

#: trade TRs with the 46-field layout, and the venue each one reports (kis.md §7.1)
TRADE_TRS: Final = {"H0STCNT0": "KRX", "H0NXCNT0": "NXT", "H0UNCNT0": "UN"}

PINGPONG: Final = "PINGPONG"


class FrameError(ValueError):
    """A frame that cannot be parsed. `reason` is a short, stable counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


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
    from the documented layout the record is still usable (brokers append fields without
    notice), but the caller is told so it can count the drift and keep a sample.
    """
    n, rest = divmod(len(values), count)
    if rest or n == 0:
        raise FrameError(
            "field_count", f"{len(values)} values do not split into {count} records"
        )
    return n, n != expected


def _int(s: str) -> int:
    # KIS numbers are unpadded decimal strings with an optional leading '-' (kis.md §6);
    # an empty field means "not reported".
    return int(s) if s else 0


def _float(s: str) -> float:
    return float(s) if s else 0.0


def tick_from_fields(
    v: Sequence[str], base: int, venue: str, source: str, received_ns: int
) -> Tick:
    """Build a Tick from the record starting at ``v[base]`` (H0STCNT0 layout, kis.md §7.1)."""
    try:
        date = v[base + 33]
        hhmmss = v[base + 1]
        # A short field would otherwise read as another time ("09301" as 09:30:01).
        if not (len(date) == 8 and len(hhmmss) == 6 and (date + hhmmss).isascii()
                and (date + hhmmss).isdigit()):
            raise FrameError("bad_value", f"date/time {date!r} {hhmmss!r}")
        trade_time = datetime(
            int(date[0:4]), int(date[4:6]), int(date[6:8]),
            int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6]), tzinfo=KST,
        )  # fmt: skip
        return Tick(
            source=source,
            venue=venue,
            code=v[base],
            trade_time=trade_time,
            price=int(v[base + 2]),
            change=_int(v[base + 4]),
            change_percent=_float(v[base + 5]),
            open=_int(v[base + 7]),
            high=_int(v[base + 8]),
            low=_int(v[base + 9]),
            ask=_int(v[base + 10]),
            bid=_int(v[base + 11]),
            trade_volume=_int(v[base + 12]),
            volume=int(v[base + 13]),
            value=_int(v[base + 14]),
            strength=_float(v[base + 18]),
            received_ns=received_ns,
        )
    except (ValueError, IndexError) as exc:
        raise FrameError("bad_value", str(exc)) from None


class DecoderStats:
    """Counters of one decoder; read by the status endpoint."""

    __slots__ = ("frames", "records", "controls", "errors", "drift", "drift_sample")

    def __init__(self) -> None:
        self.frames = 0
        self.records = 0
        self.controls = 0
        self.errors: dict[str, int] = {}
        self.drift = 0
        self.drift_sample: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "records": self.records,
            "controls": self.controls,
            "errors": dict(self.errors),
            "drift": self.drift,
        }


class KisDecoder:
    """Decode KIS frames into events or control messages, counting as it goes.

    One decoder per feed session. `decode` never raises for a bad frame from the broker: it
    records the reason in `stats.errors` and returns an empty list, and `last_error` holds
    the error for the caller to log.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.stats = DecoderStats()
        self.last_error: FrameError | None = None

    def decode(self, text: str, received_ns: int) -> list[Tick] | Ack | PingPong:
        """Decode one WebSocket text message.

        >>> KisDecoder("kis-1").decode("0|H0STCNT0|001|005930^093015^71000^...", 0)  # doctest: +SKIP
        """
        self.stats.frames += 1
        try:
            if text[:1] == "{":
                self.stats.controls += 1
                return parse_control(text)
            return self._data(text, received_ns)
        except FrameError as exc:
            self.last_error = exc
            self.stats.errors[exc.reason] = self.stats.errors.get(exc.reason, 0) + 1
            return []

    def _data(self, text: str, received_ns: int) -> list[Tick]:
        encrypted, tr_id, count, payload = split_frame(text)
        venue = TRADE_TRS.get(tr_id)
        if venue is None:
            raise FrameError("unknown_tr", tr_id)
        if encrypted:
            raise FrameError("unexpected_encryption", tr_id)
        values = payload.split("^")
        n, drifted = cut_records(values, count, len(H0STCNT0_FIELDS))
        if drifted:
            if n < _TICK_MIN_FIELDS:
                raise FrameError("field_count", f"{tr_id} record of {n} fields")
            self.stats.drift += 1
            self.stats.drift_sample = text[:2000]
        ticks = [
            tick_from_fields(values, k * n, venue, self.source, received_ns)
            for k in range(count)
        ]
        self.stats.records += count
        return ticks
