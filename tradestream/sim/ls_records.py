"""LS wire records for the simulator (pure, deterministic per seed).

- `NewsGenerator`: NWS bodies (ls.md §8.1) with Korean headlines built from templates;
- `s3_body`: a KIS H0STCNT0 record (sim/market.py) re-expressed as an LS S3_/K3_ body (§8.2),
  so one simulated market can be served over both protocols;
- `data_message`, `ack_message`: the JSON envelopes of §5 and §4.

Only the caller's `now` and the seed decide the output; nothing reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

import msgspec

from tradestream.events import KST
from tradestream.feeds.kis.codec import H0STCNT0_FIELDS
from tradestream.feeds.ls.codec import NEWS_CODE_CHUNK, VALUE_UNIT_KRW, load_media_map

# --- news (§8.1) --------------------------------------------------------------------------------

# Headlines by the number of companies they name. {a}, {b}, {c}: company names, first = the
# primary ticker; {q} quarter, {n} percent, {amt} 억원 amount, {broker} securities firm,
# {lv} index level, {fx} KRW/USD, {rate} base rate.
_TEMPLATES: Final[tuple[tuple[str, ...], ...]] = (
    (
        "코스피, 외국인 순매수에 {lv}선 회복",
        "코스닥, 기관 매도에 {n}% 하락 마감",
        "원·달러 환율, {fx}원 마감…달러 강세 지속",
        "한국은행, 기준금리 연 {rate}%로 동결",
        "[마감시황] 코스피 {n}% 상승…반도체 대형주 강세",
    ),
    (
        "{a}, {q}분기 영업이익 {n}% 증가",
        "{a}, {q}분기 영업이익 {n}% 감소…시장 예상 하회",
        '{a} 목표주가 상향…{broker} "실적 개선 본격화"',
        "{broker}, {a} 목표주가 하향 조정",
        "{a}, {amt}억원 규모 단일판매·공급계약 체결",
        "{a}, {amt}억원 규모 자사주 취득 결정",
        "[특징주] {a}, 외국인 매수세에 {n}% 강세",
        "[특징주] {a}, 차익실현 매물에 {n}% 약세",
        "{a}, 신규 시설투자에 {amt}억원 투입",
        "{a} 주가, 장중 52주 신고가 경신",
        "{a}, 주주배정 유상증자 결정…{amt}억원 규모",
        "[단독] {a}, 해외 생산법인 설립 추진",
    ),
    (
        "{a}·{b}, 차세대 기술 공동개발 MOU 체결",
        "{a}, {b}와 {amt}억원 규모 합작법인 설립",
        "{a}·{b}, 외국인 순매수 상위 종목 올라",
    ),
    (
        "{a}·{b}·{c} 등 대형주 동반 상승",
        "외국인, {a}·{b}·{c} 집중 매수",
    ),
)
_BROKERS: Final = ("KB증권", "NH투자증권", "미래에셋증권", "한국투자증권", "삼성증권", "키움증권")
# Titles the decoder must drop (seed 000 validation): empty, blank, shorter than 5 characters.
_BAD_TITLES: Final = ("", "   ", "속보", "[단독]", "특징주")
# How many tickers a headline names: 0..3, mostly one.
_TICKER_COUNTS: Final = (0, 0, 1, 1, 1, 1, 1, 1, 2, 3)


class NewsGenerator:
    """Deterministic NWS bodies: the same tickers, seed and `now` values give the same bodies.

    `tickers` are (code, name) pairs; a headline names 0-3 of them, the first being the
    primary ticker, and carries their codes in ``code`` as concatenated 12-character
    zero-padded chunks (ls.md §8.1, inferred layout). ``id`` is drawn from `media_ids` (by
    default the ids of the bundled ls_media.json). ``realkey`` is 24 digits: date, time and a
    10-digit sequence number, so it is unique per generator. With probability
    `bad_title_rate` the title is empty, blank or too short, to exercise validation.
    """

    def __init__(
        self,
        tickers: Sequence[tuple[str, str]],
        seed: int,
        *,
        media_ids: Sequence[str] | None = None,
        bad_title_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= bad_title_rate <= 1.0:
            raise ValueError(f"bad_title_rate must be in [0, 1], not {bad_title_rate!r}")
        self._tickers = list(tickers)
        self._rng = random.Random(seed)
        self._media_ids = sorted(load_media_map()) if media_ids is None else list(media_ids)
        if not self._media_ids:
            raise ValueError("need at least one media id")
        self._bad_title_rate = bad_title_rate
        self._seq = 0

    def next(self, now: datetime) -> dict[str, str]:
        """The next NWS body, stamped with `now` (converted to KST when tz-aware)."""
        rng = self._rng
        kst = now.astimezone(KST) if now.tzinfo is not None else now
        stamp = kst.strftime("%Y%m%d%H%M%S")
        self._seq += 1
        k = min(_TICKER_COUNTS[rng.randrange(len(_TICKER_COUNTS))], len(self._tickers))
        named = rng.sample(self._tickers, k)
        title = rng.choice(_TEMPLATES[k]).format(
            a=named[0][1] if k > 0 else "",
            b=named[1][1] if k > 1 else "",
            c=named[2][1] if k > 2 else "",
            q=rng.randint(1, 4),
            n=f"{rng.randint(1, 300) / 10:.1f}",
            amt=f"{rng.randrange(50, 30000):,}",
            broker=rng.choice(_BROKERS),
            lv=f"{rng.randrange(2400, 3000, 50):,}",
            fx=f"{rng.randrange(13000, 14800) / 10:,.1f}",
            rate=f"{rng.choice((2.75, 3.0, 3.25, 3.5)):.2f}",
        )
        # Both draws always happen, so the rate changes the titles and nothing else.
        bad_title = rng.choice(_BAD_TITLES)
        if rng.random() < self._bad_title_rate:
            title = bad_title
        return {
            "date": stamp[:8],
            "time": stamp[8:],
            "id": rng.choice(self._media_ids),
            "realkey": f"{stamp}{self._seq % 10**10:010d}",
            "title": title,
            "code": "".join(code.rjust(NEWS_CODE_CHUNK, "0") for code, _ in named),
            "bodysize": str(rng.randrange(200, 12000)),
        }


# --- trades (§8.2) ----------------------------------------------------------------------------

_I: Final = {name: i for i, name in enumerate(H0STCNT0_FIELDS)}


def s3_body(fields: Sequence[str]) -> dict[str, str]:
    """An LS S3_/K3_ body (ls.md §8.2) for one KIS H0STCNT0 record (46 fields, kis.md §7.1).

    Conversions: `change` is the magnitude of PRDY_VRSS (LS signs it with `sign`); `drate`
    keeps PRDY_CTRT as KIS gives it (signed; the decoder reads it as a magnitude); `value` is
    ACML_TR_PBMN in million KRW, truncated; `w_avrg` is the weighted average rounded to a
    whole won; `cgubun` is "+" for a buy-initiated trade (CCLD_DVSN "1"), else "-";
    `status` "00" (regular session); `exchname` "KRX".
    """
    if len(fields) < len(H0STCNT0_FIELDS):
        raise ValueError(f"H0STCNT0 record has {len(fields)} fields, not 46")

    def f(name: str) -> str:
        return fields[_I[name]]

    return {
        "chetime": f("STCK_CNTG_HOUR"),
        "sign": f("PRDY_VRSS_SIGN"),
        "change": f("PRDY_VRSS").lstrip("-"),
        "drate": f("PRDY_CTRT"),
        "price": f("STCK_PRPR"),
        "opentime": f("OPRC_HOUR"),
        "open": f("STCK_OPRC"),
        "hightime": f("HGPR_HOUR"),
        "high": f("STCK_HGPR"),
        "lowtime": f("LWPR_HOUR"),
        "low": f("STCK_LWPR"),
        "cgubun": "+" if f("CCLD_DVSN") == "1" else "-",
        "cvolume": f("CNTG_VOL"),
        "volume": f("ACML_VOL"),
        "value": str(int(f("ACML_TR_PBMN")) // VALUE_UNIT_KRW),
        "mdvolume": f("SELN_CNTG_SMTN"),
        "mdchecnt": f("SELN_CNTG_CSNU"),
        "msvolume": f("SHNU_CNTG_SMTN"),
        "mschecnt": f("SHNU_CNTG_CSNU"),
        "cpower": f("CTTR"),
        "w_avrg": str(Decimal(f("WGHN_AVRG_STCK_PRC")).quantize(Decimal(1), ROUND_HALF_UP)),
        "offerho": f("ASKP1"),
        "bidho": f("BIDP1"),
        "status": "00",
        "jnilvolume": f("PRDY_SMNS_HOUR_ACML_VOL"),
        "shcode": f("MKSC_SHRN_ISCD"),
        "exchname": "KRX",
    }


# --- envelopes (§4, §5) -----------------------------------------------------------------------


def data_message(tr_cd: str, tr_key: str, body: Mapping[str, str]) -> str:
    """``{"header":{"tr_cd","tr_key"},"body":{...}}`` (ls.md §5)."""
    return msgspec.json.encode(
        {"header": {"tr_cd": tr_cd, "tr_key": tr_key}, "body": dict(body)}
    ).decode()


def ack_message(
    tr_cd: str, tr_key: str, tr_type: str, rsp_cd: str = "00000",
    rsp_msg: str = "정상처리되었습니다",
) -> str:  # fmt: skip
    """The registration acknowledgement of ls.md §4 (shape inferred), echoing the request;
    a non-"00000" `rsp_cd` is a refusal."""
    return msgspec.json.encode(
        {
            "header": {"tr_cd": tr_cd, "tr_key": tr_key, "tr_type": tr_type,
                       "rsp_cd": rsp_cd, "rsp_msg": rsp_msg},
            "body": None,
        }
    ).decode()  # fmt: skip
