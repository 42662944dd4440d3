"""The simulator's KIS REST endpoints (../shared/protocols/kis-rest.md), in the broker's wire
format: ``POST /oauth2/tokenP`` with its issuance rules, and the ``/uapi/...`` TRs with their
headers, envelope, paging and error codes. No I/O here: `create_sim_app` routes requests in.

Rules kept as the broker's:
- tokenP: one token a minute per app key (EGW00133, HTTP 403, otherwise); asked again within
  6 h, the same token; 24 h lifetime.
- Every ``/uapi`` call needs ``authorization: Bearer <token>`` of a live token (EGW00121
  invalid, EGW00123 expired), the matching ``appkey``/``appsecret``, and the TR's ``tr_id``.
- `rate_per_s` calls a second per app key; the next one in the same second gets EGW00201 in an
  HTTP 500 body, as the broker answers.
- fluctuation (§4) and volume-rank (§5): 30 rows at most, no paging, over sim/rankings.py's
  listed market (the streamed codes and 200 more).
- inquire-balance pages 20 holdings at a time with ``tr_cont`` F/M (more) and D/E (last) and
  ``ctx_area_fk100``/``ctx_area_nk100`` keys.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from tradestream.events import KST
from tradestream.sim.rankings import Row, fluctuation, volume_rank

TOKEN_LIFETIME_S = 86_400.0
SAME_TOKEN_WITHIN_S = 6 * 3600.0
ISSUE_EVERY_S = 60.0
BALANCE_PAGE = 20
DEFAULT_RATE_PER_S = 20

Reply = tuple[dict[str, Any], int, dict[str, str]]


@dataclass
class _Issued:
    app_key: str
    issued_at: float  # the simulator's clock
    expires_at: float


@dataclass
class RestStats:
    tokens_issued: int = 0
    token_refused: int = 0  # EGW00133
    calls: int = 0
    rate_limited: int = 0  # EGW00201
    expired: int = 0  # EGW00123 answers


@dataclass
class KisRestSim:
    """Token issuance and the TRs. `clock` is the simulator's (Trio time in the app);
    `wall` gives the KST wall time for expiry stamps."""

    app_secret_of: Callable[[str], str | None]  # app key -> its secret (None: unknown)
    positions: Callable[[], Mapping[str, tuple[int, int]]]  # code -> (qty, cost)
    names: Mapping[str, str]
    account: str
    clock: Callable[[], float]
    wall: Callable[[], datetime] = lambda: datetime.now(KST)
    rate_per_s: int = DEFAULT_RATE_PER_S
    rankings: Callable[[], list[Row]] = list  # the listed market now (sim/rankings.py)
    # a code's daily bars before today, oldest first (sim/history.py)
    daily_bars: Callable[[str], list[tuple[date, int, int, int, int, int]]] = lambda c: []
    # a code's one-minute bars: "YYYYMMDDHHMM" -> [open, high, low, close, volume]
    minute_bars: Callable[[str], Mapping[str, list[int]]] = lambda code: {}
    holidays: frozenset[date] = frozenset()  # weekdays the simulated KRX is closed (chk-holiday)
    tokens: dict[str, _Issued] = field(default_factory=dict)
    last_issue: dict[str, float] = field(default_factory=dict)  # app key -> clock
    calls: dict[str, list[float]] = field(default_factory=dict)  # app key -> this second's
    stats: RestStats = field(default_factory=RestStats)
    _serial: int = 0

    # -- OAuth -------------------------------------------------------------------------------
    def issue_token(
        self, data: Mapping[str, Any], refused: bool = False
    ) -> tuple[dict[str, Any], int]:
        key, secret = data.get("appkey"), data.get("appsecret")
        if data.get("grant_type") != "client_credentials" or not key or not secret:
            return {"error_code": "EGW00002", "error_description": "bad request"}, 400
        if refused or self.app_secret_of(str(key)) not in (None, secret):
            return {
                "error_code": "EGW00103",
                "error_description": "유효하지 않은 AppKey입니다.",
            }, 403
        now = self.clock()
        last = self.last_issue.get(str(key))
        if last is not None and now - last < ISSUE_EVERY_S:
            self.stats.token_refused += 1
            return {
                "error_code": "EGW00133",
                "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
            }, 403
        self.last_issue[str(key)] = now
        for token, t in self.tokens.items():
            if t.app_key == key and now - t.issued_at < SAME_TOKEN_WITHIN_S and now < t.expires_at:
                return self._token_body(token, t), 200
        self._serial += 1
        token = "sim." + _b62(hash((key, self._serial, now)) & (2**64 - 1)) + f".{self._serial}"
        t = _Issued(str(key), now, now + TOKEN_LIFETIME_S)
        self.tokens[token] = t
        self.stats.tokens_issued += 1
        return self._token_body(token, t), 200

    def _token_body(self, token: str, t: _Issued) -> dict[str, Any]:
        left = t.expires_at - self.clock()
        stamp = (self.wall() + timedelta(seconds=left)).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(left),
            "access_token_token_expired": stamp,
        }

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the next call with one: EGW00123)."""
        now = self.clock()
        for t in self.tokens.values():
            t.expires_at = now
            t.issued_at = min(t.issued_at, now - ISSUE_EVERY_S)  # a new one may be issued
        for key in self.last_issue:
            self.last_issue[key] = now - ISSUE_EVERY_S

    # -- the TRs -------------------------------------------------------------------------------
    def call(self, path: str, headers: Mapping[str, str], params: Mapping[str, str]) -> Reply:
        tr_id = headers.get("tr_id", "")
        refused = self._check(headers, tr_id)
        if refused is not None:
            return refused
        if path == "/uapi/domestic-stock/v1/trading/inquire-balance":
            if tr_id not in ("TTTC8434R", "VTTC8434R"):
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            return self._balance(params, headers.get("tr_cont", ""), tr_id)
        if path == "/uapi/domestic-stock/v1/ranking/fluctuation":
            if tr_id != "FHPST01700000":
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            sort = params.get("fid_rank_sort_cls_code") or params.get("FID_RANK_SORT_CLS_CODE", "0")
            return _ok(fluctuation(self.rankings(), sort), tr_id)
        if path == "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice":
            if tr_id != "FHKST03010200":
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            return self._today_bars(params, tr_id)
        if path == "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice":
            if tr_id != "FHKST03010100":
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            return self._daily(params, tr_id)
        if path == "/uapi/domestic-stock/v1/quotations/chk-holiday":
            if tr_id != "CTCA0903R":
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            return self._market_days(params, tr_id)
        if path == "/uapi/domestic-stock/v1/quotations/volume-rank":
            if tr_id != "FHPST01710000":
                return _error("EGW00205", "tr_id가 유효하지 않습니다.", tr_id, 500)
            return _ok(volume_rank(self.rankings()), tr_id)
        return _error("OPSQ0002", "없는 서비스 코드 입니다", tr_id, 404)

    def _check(self, headers: Mapping[str, str], tr_id: str) -> Reply | None:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        t = self.tokens.get(token)
        if t is None:
            return _error("EGW00121", "유효하지 않은 token 입니다.", tr_id, 500)
        key = headers.get("appkey", "")
        if key != t.app_key or self.app_secret_of(key) not in (None, headers.get("appsecret")):
            return _error("EGW00105", "유효하지 않은 AppSecret입니다.", tr_id, 500)
        now = self.clock()
        if now >= t.expires_at:
            self.stats.expired += 1
            return _error("EGW00123", "기간이 만료된 token 입니다.", tr_id, 500)
        recent = [c for c in self.calls.get(key, []) if now - c < 1.0]
        if len(recent) >= self.rate_per_s:
            self.calls[key] = recent
            self.stats.rate_limited += 1
            return _error("EGW00201", "초당 거래건수를 초과하였습니다.", tr_id, 500)
        recent.append(now)
        self.calls[key] = recent
        self.stats.calls += 1
        return None

    def _market_days(self, params: Mapping[str, str], tr_id: str) -> Reply:
        """§9: two weeks of days from BASS_DT, each with its flags (closed on weekends and
        `holidays`)."""
        try:
            base = datetime.strptime(params.get("BASS_DT", ""), "%Y%m%d").date()
        except ValueError:
            return _error("OPSQ2001", "BASS_DT 입력값 오류입니다.", tr_id, 500)
        rows = []
        for i in range(14):
            d = base + timedelta(days=i)
            yn = "N" if d.weekday() >= 5 or d in self.holidays else "Y"
            rows.append(
                {
                    "bass_dt": d.strftime("%Y%m%d"),
                    "wday_dvsn_cd": f"{(d.isoweekday() % 7) + 1:02d}",  # 01 Sunday
                    "bzdy_yn": yn,
                    "tr_day_yn": yn,
                    "opnd_yn": yn,
                    "sttl_day_yn": yn,
                }
            )
        return _ok(rows, tr_id)

    def _daily(self, params: Mapping[str, str], tr_id: str) -> Reply:
        """§6.3: daily bars from FID_INPUT_DATE_1 to FID_INPUT_DATE_2, newest first, at
        most 100 rows (the caller pages back by moving DATE_2)."""
        code = params.get("FID_INPUT_ISCD", "")
        if code not in self.names:
            return _error("OPSQ0002", "종목코드 오류입니다.", tr_id, 500)
        lo = params.get("FID_INPUT_DATE_1", "00000000")
        hi = params.get("FID_INPUT_DATE_2", "99999999")
        rows = [b for b in self.daily_bars(code) if lo <= b[0].strftime("%Y%m%d") <= hi]
        rows = rows[::-1][:100]
        body = {
            "rt_cd": "0",
            "msg_cd": "MCA00000",
            "msg1": "정상처리 되었습니다.",
            "output1": {"hts_kor_isnm": self.names.get(code, code), "stck_shrn_iscd": code},
            "output2": [
                {
                    "stck_bsop_date": d.strftime("%Y%m%d"),
                    "stck_oprc": str(o),
                    "stck_hgpr": str(h),
                    "stck_lwpr": str(low),
                    "stck_clpr": str(c),
                    "acml_vol": str(v),
                }
                for d, o, h, low, c, v in rows
            ],
        }
        return body, 200, {"tr_id": tr_id, "tr_cont": ""}

    def _today_bars(self, params: Mapping[str, str], tr_id: str) -> Reply:
        """§6.1: today's 30 one-minute bars at or before FID_INPUT_HOUR_1, newest first,
        labelled by the minute's start (HHMM00)."""
        code = params.get("FID_INPUT_ISCD", "")
        if code not in self.names:
            return _error("OPSQ0002", "종목코드 오류입니다.", tr_id, 500)
        today = self.wall().strftime("%Y%m%d")
        until = today + params.get("FID_INPUT_HOUR_1", "235959")[:4]
        bars = self.minute_bars(code)
        keys = sorted((k for k in bars if k.startswith(today) and k <= until), reverse=True)[:30]
        rows = [
            {
                "stck_bsop_date": k[:8],
                "stck_cntg_hour": k[8:] + "00",
                "stck_oprc": str(bars[k][0]),
                "stck_hgpr": str(bars[k][1]),
                "stck_lwpr": str(bars[k][2]),
                "stck_prpr": str(bars[k][3]),
                "cntg_vol": str(bars[k][4]),
                "acml_tr_pbmn": "0",
            }
            for k in keys
        ]
        body = {
            "rt_cd": "0",
            "msg_cd": "MCA00000",
            "msg1": "정상처리 되었습니다.",
            "output1": {"hts_kor_isnm": self.names.get(code, code)},
            "output2": rows,
        }
        return body, 200, {"tr_id": tr_id, "tr_cont": ""}

    def _balance(self, params: Mapping[str, str], tr_cont: str, tr_id: str) -> Reply:
        account = params.get("CANO", "") + params.get("ACNT_PRDT_CD", "")
        if account != self.account:
            return _error("OPSQ2000", "ERROR : INPUT INVALID_CHECK_ACNO", tr_id, 500)
        held = sorted(self.positions().items())
        start = int(params.get("CTX_AREA_NK100") or 0) if tr_cont == "N" else 0
        page = held[start : start + BALANCE_PAGE]
        end = start + len(page)
        more = end < len(held)
        rows = []
        for code, (qty, cost) in page:
            price = 0 if not qty else round(cost / qty)
            rows.append(
                {
                    "pdno": code,
                    "prdt_name": self.names.get(code, code),
                    "hldg_qty": str(qty),
                    "ord_psbl_qty": str(qty),
                    "pchs_avg_pric": f"{(cost / qty) if qty else 0:.4f}",
                    "pchs_amt": str(cost),
                    "prpr": str(price),
                    "evlu_amt": str(price * qty),
                }
            )
        total = sum(cost for _, (_, cost) in held)
        body = {
            "rt_cd": "0",
            "msg_cd": "KIOK0510" if more else "KIOK0460",
            "msg1": "조회가 계속됩니다..다음버튼을 Click 하십시오."
            if more
            else "조회가 완료되었습니다.",
            "ctx_area_fk100": self.account + "!^",
            "ctx_area_nk100": str(end) if more else "",
            "output1": rows,
            "output2": [{"dnca_tot_amt": "10000000", "scts_evlu_amt": str(total)}],
        }
        first = start == 0
        cont = ("F" if first else "M") if more else ("D" if first else "E")
        return body, 200, {"tr_id": tr_id, "tr_cont": cont}


def _ok(output: object, tr_id: str) -> Reply:
    body = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다.", "output": output}
    return body, 200, {"tr_id": tr_id, "tr_cont": ""}


def _error(code: str, text: str, tr_id: str, status: int) -> Reply:
    return {"rt_cd": "1", "msg_cd": code, "msg1": text}, status, {"tr_id": tr_id, "tr_cont": ""}


def _b62(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    out = ""
    while n:
        n, r = divmod(n, 62)
        out += alphabet[r]
    return out or "0"
