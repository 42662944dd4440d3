"""The KIS REST client (../shared/protocols/kis-rest.md): one per app key, shared by every REST
use in the process (the balance inquiry, rankings, bars, stock info).

- **Access token** (§2.1): a "kis-access" `Credential` (feeds/credentials.py), shared with every
  other user of the app key in the process (and the cluster): issued by ``POST /oauth2/tokenP``
  (`issue_access_token`) at most once a minute per app key (the broker answers EGW00133
  otherwise: the manager then waits out the minute), reused until `REFRESH_BEFORE_S` before its
  expiry, and kept in a file (mode 0600) under the app key's identity (a hash, never the key)
  so a restart reuses it instead of issuing a new one.
- **Rate limit** (§1.7): a token bucket per app key (`rate_per_s`, 15/s by default, 1/s on a
  paper account) in front of every call; the broker's "per-second count exceeded" (EGW00201)
  halves the bucket's rate for every caller (won back answer by answer) and the call is
  retried behind it.
- **Expired or invalid token** (EGW00123, EGW00121): the token is reported refused to the
  credential, a new one comes (within the issuance limit), then the call once more.
- **Paging** (§1.5): `get_pages` follows the response header ``tr_cont`` (F/M: more) with the
  body's continuation keys.

Errors come out as `KisRestError` (the broker's msg_cd and text, or the transport's failure);
callers retry on their own schedules. The parsers of the answers are plain functions below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import httpx
import trio

from tradestream.errors import CredentialRejected, FeedError
from tradestream.events import KST
from tradestream.feeds.credentials import Credential, CredentialKind, IssuedTooSoon

# moved to feeds/credentials.py; kept importable from here
from tradestream.feeds.credentials import Token as Token
from tradestream.feeds.credentials import TokenFile as TokenFile
from tradestream.feeds.credentials import key_identity as key_identity
from tradestream.session_calendar import parse_holidays

log = logging.getLogger(__name__)

REFRESH_BEFORE_S = 600.0  # a token this close to its expiry is replaced (KIS_ACCESS)
ISSUE_EVERY_S = 60.0  # the broker's limit: one access token per minute per app key
RATE_LIMITED = "EGW00201"  # per-second call count exceeded
TOKEN_EXPIRED = ("EGW00123", "EGW00121")  # expired, invalid
TOKEN_TOO_SOON = "EGW00133"  # a token asked for again within the minute
BUSY_RETRIES = 8  # EGW00201 answers retried before the call fails
MAX_PAGES = 20

BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
FLUCTUATION_PATH = "/uapi/domestic-stock/v1/ranking/fluctuation"
FLUCTUATION_TR = "FHPST01700000"
VOLUME_RANK_PATH = "/uapi/domestic-stock/v1/quotations/volume-rank"
VOLUME_RANK_TR = "FHPST01710000"
HOLIDAY_PATH = "/uapi/domestic-stock/v1/quotations/chk-holiday"
HOLIDAY_TR = "CTCA0903R"  # real accounts only; the broker asks for about one call a day
DAILY_PATH = "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice"
DAILY_TR = "FHKST03010100"
DAILY_PER_CALL = 100
TODAY_BARS_PATH = "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice"
TODAY_BARS_TR = "FHKST03010200"
BARS_PER_CALL = 30
BALANCE_TR = ("TTTC8434R", "VTTC8434R")  # real, paper


class KisRestError(FeedError):
    """A REST call that did not give an answer: `code` is the broker's msg_cd (or error_code
    for OAuth), or "" for a transport failure."""

    def __init__(self, what: str, code: str = "", message: str = "") -> None:
        super().__init__(f"{what}: {code} {message}".strip() if code else what)
        self.code = code
        self.message = message


class TokenRefused(KisRestError, CredentialRejected):
    """tokenP refused the app key or secret (EGW00103, ...): a KisRestError for REST callers,
    a CredentialRejected for the credential manager and the feeds."""


# -- pure parts --------------------------------------------------------------------------------


class RateLimit:
    """A token bucket: `rate_per_s` calls a second, bursts up to `burst`. `delay()` reserves
    a call and says how long to wait before making it. Time comes from `clock`.

    The broker's own count decides in the end: `slow_down()` (it answered "too many") halves
    the rate, down to one call a second, and puts every caller behind one more interval;
    `recover()` (an answer) wins a twentieth of the configured rate back."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = self.max_rate = rate_per_s
        self.min_rate = min(1.0, rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def delay(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def slow_down(self) -> None:
        self.rate = max(self.min_rate, self.rate / 2)
        self._tokens = min(self._tokens, 0.0) - 1.0

    def recover(self) -> None:
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate / 20)


def token_from_reply(body: Mapping[str, Any], now: float) -> Token:
    """The token of a tokenP answer (§2.1); the expiry from ``access_token_token_expired``
    (KST) or else ``expires_in``."""
    value = body.get("access_token")
    if not isinstance(value, str) or not value:
        raise KisRestError("tokenP: no access_token in the answer")
    expires_at = now + float(body.get("expires_in") or 86_400)
    stamp = body.get("access_token_token_expired")
    if isinstance(stamp, str):
        try:
            expires_at = (
                datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST).timestamp()
            )
        except ValueError:
            pass
    return Token(value, expires_at, now)


async def issue_access_token(http: httpx.AsyncClient, app_key: str, app_secret: str) -> Token:
    """``POST /oauth2/tokenP`` (§2.1; the secret goes in `appsecret`): the token, stamped with
    this host's clock. EGW00133 (within the minute) -> IssuedTooSoon; a refusal (HTTP 4xx)
    -> TokenRefused; anything else -> KisRestError."""
    try:
        resp = await http.post(
            "/oauth2/tokenP",
            json={"grant_type": "client_credentials", "appkey": app_key, "appsecret": app_secret},
        )
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KisRestError(f"tokenP: {exc!r}"[:300]) from None
    if isinstance(body, dict) and body.get("error_code") == TOKEN_TOO_SOON:
        # issued elsewhere (another process, a lost file) within the minute
        raise IssuedTooSoon(f"tokenP: {TOKEN_TOO_SOON} {body.get('error_description', '')}")
    if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        code = str(body.get("error_code", "")) if isinstance(body, dict) else ""
        text = str(body.get("error_description", "")) if isinstance(body, dict) else ""
        error = TokenRefused if 400 <= resp.status_code < 500 else KisRestError
        raise error(f"tokenP: HTTP {resp.status_code}", code, text)
    return token_from_reply(body, time.time())


#: the access token of an app key (§2.1): one a minute, renewed 10 minutes before its end
KIS_ACCESS = CredentialKind(
    "kis-access", issue_access_token, min_interval_s=ISSUE_EVERY_S, renew_before_s=REFRESH_BEFORE_S
)


class Holding(NamedTuple):
    code: str
    quantity: int
    avg_price: float
    name: str


def parse_balance_rows(rows: list[Mapping[str, Any]]) -> list[Holding]:
    """inquire-balance ``output1`` rows (§3) -> the holdings (held quantity > 0), with the
    names the broker gave them."""
    held: list[Holding] = []
    for row in rows:
        try:
            code = str(row["pdno"]).strip()
            qty = int(str(row["hldg_qty"]).strip() or 0)
            avg = float(str(row.get("pchs_avg_pric") or 0).strip() or 0)
        except (KeyError, ValueError) as exc:
            raise KisRestError(f"inquire-balance: bad row {dict(row)!r}: {exc!r}"[:300]) from None
        if qty > 0:  # a sold-out holding lingers with 0 until D+2
            held.append(Holding(code, qty, avg, str(row.get("prdt_name") or "").strip()))
    return held


class Ranked(NamedTuple):
    """One row of a ranking (kis-rest.md §4, §5)."""

    code: str
    name: str
    rank: int
    price: int
    change_pct: float
    volume: int


def parse_ranking(rows: list[Mapping[str, Any]], code_field: str) -> list[Ranked]:
    """Ranking ``output`` rows -> `Ranked`, in rank order; rows without a 6-digit code or
    with unreadable numbers are skipped (a ranking is advice, not a record)."""
    out: list[Ranked] = []
    for i, row in enumerate(rows, 1):
        code = str(row.get(code_field) or "").strip()
        if len(code) != 6 or not code.isalnum():
            continue
        try:
            out.append(
                Ranked(
                    code,
                    str(row.get("hts_kor_isnm") or "").strip(),
                    int(str(row.get("data_rank") or i)),
                    int(str(row.get("stck_prpr") or 0)),
                    float(str(row.get("prdy_ctrt") or 0)),
                    int(str(row.get("acml_vol") or 0)),
                )
            )
        except ValueError:
            continue
    return sorted(out, key=lambda r: r.rank)


class Bar(NamedTuple):
    """A one-minute bar of today's minute-bar TR (§6.1); `minute` is its label, taken as the
    minute's start (the document leaves start or end open)."""

    minute: datetime  # KST
    open: int
    high: int
    low: int
    close: int
    volume: int


def parse_bars(rows: list[Mapping[str, Any]]) -> list[Bar]:
    """``output2`` rows -> bars, oldest first; unreadable rows are skipped."""
    out = []
    for row in rows:
        try:
            minute = datetime.strptime(
                str(row["stck_bsop_date"]) + str(row["stck_cntg_hour"])[:4], "%Y%m%d%H%M"
            ).replace(tzinfo=KST)
            out.append(
                Bar(
                    minute,
                    int(row["stck_oprc"]),
                    int(row["stck_hgpr"]),
                    int(row["stck_lwpr"]),
                    int(row["stck_prpr"]),
                    int(row["cntg_vol"]),
                )
            )
        except (KeyError, ValueError):
            continue
    return sorted(out)


def parse_daily(rows: list[Mapping[str, Any]]) -> list[tuple[date, int, int, int, int, int]]:
    """Period-price ``output2`` rows (§6.3) -> (day, open, high, low, close, volume), in
    the answer's order; an empty row (no trading that day) or garbage is skipped."""
    out = []
    for row in rows:
        try:
            day = datetime.strptime(str(row["stck_bsop_date"]), "%Y%m%d").date()
            out.append(
                (day, int(row["stck_oprc"]), int(row["stck_hgpr"]), int(row["stck_lwpr"]),
                 int(row["stck_clpr"]), int(row["acml_vol"]))
            )  # fmt: skip
        except (KeyError, ValueError):
            continue
    return out


def split_account(account: str) -> tuple[str, str]:
    """'50012345-01' or '5001234501' -> ('50012345', '01')."""
    digits = account.replace("-", "").strip()
    if len(digits) != 10 or not digits.isdigit():
        raise ValueError(f"a KIS account is 10 digits (8 + 2), got {account!r}")
    return digits[:8], digits[8:]


# -- the client --------------------------------------------------------------------------------


@dataclass
class RestStats:
    calls: int = 0
    tokens_issued: int = 0  # by the app key's credential (shared with its other users)
    token_reused_from_file: bool = False  # the credential came from the file (or Redis)
    rate_limited: int = 0  # EGW00201 answers
    token_refreshes: int = 0  # EGW00123/EGW00121 answers
    errors: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class KisRest:
    """One app key's REST access. The access token comes from `credential` (the process's
    "kis-access" credential of the app key, `KIS_ACCESS`); without one, the client makes its
    own, kept in `token_file`, with `wall` as its epoch clock. The rate limit and waits use
    Trio's clock, so tests run on MockClock."""

    def __init__(
        self,
        base_url: str,
        app_key: str,
        app_secret: str,
        *,
        credential: Credential | None = None,
        token_file: TokenFile | None = None,
        rate_per_s: float = 15.0,
        paper: bool = False,
        custtype: str = "P",
        timeout_s: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url
        self.app_key = app_key
        self._secret = app_secret
        self._own_credential = credential is None
        self.credential = credential or Credential(
            KIS_ACCESS,
            app_key,
            app_secret,
            base_url,
            token_file=token_file,
            timeout_s=timeout_s,
            wall=wall,
        )
        self.paper = paper
        self._custtype = custtype
        self._timeout_s = timeout_s
        self._rate_per_s = rate_per_s
        self._limit: RateLimit | None = None  # made on first use: needs a running Trio
        self._http: httpx.AsyncClient | None = None
        self.stats = RestStats()

    # -- token -------------------------------------------------------------------------------
    async def token(self) -> str:
        """A valid access token, from the credential: the one held, the file's (or the
        cluster's), or a new one (at most one a minute; waits out the minute if the last was
        issued less than one ago). A failure comes out as KisRestError."""
        cred = self.credential
        try:
            value = await cred.get()
        except KisRestError:
            raise
        except IssuedTooSoon:
            raise KisRestError("tokenP", TOKEN_TOO_SOON, "refused three times") from None
        except FeedError as exc:
            raise KisRestError(f"tokenP: {exc}"[:300]) from None
        self.stats.tokens_issued = cred.issued
        self.stats.token_reused_from_file = cred.reused > 0
        return value

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout_s)
        return self._http

    async def aclose(self) -> None:
        """Close the client (and the credential, when it is the client's own)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._own_credential:
            await self.credential.aclose()

    # -- calls -------------------------------------------------------------------------------
    async def get(
        self, path: str, tr_id: str, params: Mapping[str, str], *, tr_cont: str = ""
    ) -> tuple[dict[str, Any], str]:
        """One GET: (body, the response's tr_cont). Waits for the rate limit; retries
        EGW00201 with backoff and an expired token once."""
        if self._limit is None:
            self._limit = RateLimit(
                self._rate_per_s, max(1, int(self._rate_per_s)), trio.current_time
            )
        refreshed = False
        tries = 0
        while True:
            delay = self._limit.delay()
            if delay > 0:
                await trio.sleep(delay)
            token = await self.token()
            headers = {
                "content-type": "application/json; charset=utf-8",
                "authorization": f"Bearer {token}",
                "appkey": self.app_key,
                "appsecret": self._secret,
                "tr_id": tr_id,
                "custtype": self._custtype,
                "tr_cont": tr_cont,
            }
            self.stats.calls += 1
            try:
                resp = await self._client().get(path, params=dict(params), headers=headers)
                body = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                self._failed(f"GET {path}: {exc!r}"[:300])
                raise KisRestError(f"GET {path}: {exc!r}"[:300]) from None
            if not isinstance(body, dict):
                self._failed(f"GET {path}: not a JSON object")
                raise KisRestError(f"GET {path}: HTTP {resp.status_code}, not a JSON object")
            if body.get("rt_cd") == "0":
                self._limit.recover()
                return body, resp.headers.get("tr_cont", "")
            code, text = str(body.get("msg_cd", "")), str(body.get("msg1", ""))
            if code == RATE_LIMITED and tries < BUSY_RETRIES:
                tries += 1
                self.stats.rate_limited += 1
                self._limit.slow_down()  # every caller of this key waits: the next delay()
                continue
            if code in TOKEN_EXPIRED and not refreshed:
                refreshed = True
                self.stats.token_refreshes += 1
                self.credential.refused(token)  # the next token() is a new one
                continue
            self._failed(f"GET {path}: {code} {text}")
            raise KisRestError(f"GET {path} ({tr_id})", code, text)

    def _failed(self, what: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = what

    async def get_pages(
        self,
        path: str,
        tr_id: str,
        params: Mapping[str, str],
        *,
        keys: tuple[str, str] = ("CTX_AREA_FK100", "CTX_AREA_NK100"),
    ) -> list[dict[str, Any]]:
        """Every page of a paged TR (§1.5), in order."""
        pages: list[dict[str, Any]] = []
        query = dict(params)
        for k in keys:
            query.setdefault(k, "")
        tr_cont = ""
        for _ in range(MAX_PAGES):
            body, more = await self.get(path, tr_id, query, tr_cont=tr_cont)
            pages.append(body)
            if more not in ("F", "M"):
                return pages
            for k in keys:
                query[k] = str(body.get(k.lower(), ""))
            tr_cont = "N"
        log.warning("GET %s: more than %d pages; the rest not read", path, MAX_PAGES)
        return pages

    async def balance(self, account: str) -> list[Holding]:
        """inquire-balance, every page (§3): the holdings."""
        cano, prdt = split_account(account)
        pages = await self.get_pages(
            BALANCE_PATH,
            BALANCE_TR[1] if self.paper else BALANCE_TR[0],
            {
                "CANO": cano,
                "ACNT_PRDT_CD": prdt,
                "AFHR_FLPR_YN": "N",
                "OFL_YN": "",
                "INQR_DVSN": "02",
                "UNPR_DVSN": "01",
                "FUND_STTL_ICLD_YN": "N",
                "FNCG_AMT_AUTO_RDPT_YN": "N",
                "PRCS_DVSN": "00",
            },
        )
        rows = [row for page in pages for row in (page.get("output1") or [])]
        return parse_balance_rows(rows)

    async def daily_bars(
        self, code: str, first: date, last: date
    ) -> list[tuple[date, int, int, int, int, int]]:
        """Daily bars (§6.3, adjusted prices) of `code` from `first` to `last`, oldest first:
        pages of 100, newest first, moving the end date back."""
        out: dict[date, tuple[date, int, int, int, int, int]] = {}
        end = last
        while end >= first:
            body, _ = await self.get(
                DAILY_PATH,
                DAILY_TR,
                {
                    "FID_COND_MRKT_DIV_CODE": "J",
                    "FID_INPUT_ISCD": code,
                    "FID_INPUT_DATE_1": first.strftime("%Y%m%d"),
                    "FID_INPUT_DATE_2": end.strftime("%Y%m%d"),
                    "FID_PERIOD_DIV_CODE": "D",
                    "FID_ORG_ADJ_PRC": "0",
                },
            )
            rows = body.get("output2") or []
            for bar in parse_daily(rows):
                if first <= bar[0] <= last:
                    out[bar[0]] = bar
            if len(rows) < DAILY_PER_CALL or not out:
                break
            end = min(out) - timedelta(days=1)
        return [out[d] for d in sorted(out)]

    async def market_days(self, base: date) -> dict[date, bool]:
        """§9: the stock market open or not (`opnd_yn`) for the days the broker returns from
        `base` on (session_calendar.parse_holidays). One call: the broker asks for about one a
        day, so the caller caches the answer."""
        body, _ = await self.get(
            HOLIDAY_PATH,
            HOLIDAY_TR,
            {"BASS_DT": base.strftime("%Y%m%d"), "CTX_AREA_FK": "", "CTX_AREA_NK": ""},
        )
        rows = body.get("output") or []
        return parse_holidays(rows if isinstance(rows, list) else [rows])

    async def bars_today(self, code: str, first: datetime, last: datetime) -> list[Bar]:
        """Today's one-minute bars of `code` from `first` to `last` (KST minutes, both
        included): pages of 30 back from `last` (§6.1), oldest first."""
        out: dict[datetime, Bar] = {}
        until = last
        while until >= first:
            body, _ = await self.get(
                TODAY_BARS_PATH,
                TODAY_BARS_TR,
                {
                    "FID_ETC_CLS_CODE": "",
                    "FID_COND_MRKT_DIV_CODE": "J",
                    "FID_INPUT_ISCD": code,
                    "FID_INPUT_HOUR_1": until.strftime("%H%M%S"),
                    "FID_PW_DATA_INCU_YN": "Y",
                },
            )
            page = parse_bars(body.get("output2") or [])
            for b in page:
                if first <= b.minute <= last:
                    out[b.minute] = b
            if len(page) < BARS_PER_CALL or page[0].minute <= first:
                break
            until = page[0].minute - timedelta(minutes=1)
        return [out[m] for m in sorted(out)]

    async def fluctuation(self, *, falling: bool = False) -> list[Ranked]:
        """The fluctuation ranking (§4), all of KRX: risers (or fallers), at most 30."""
        body, _ = await self.get(
            FLUCTUATION_PATH,
            FLUCTUATION_TR,
            {
                "fid_cond_mrkt_div_code": "J",
                "fid_cond_scr_div_code": "20170",
                "fid_input_iscd": "0000",
                "fid_rank_sort_cls_code": "1" if falling else "0",
                "fid_input_cnt_1": "0",
                "fid_prc_cls_code": "0",
                "fid_input_price_1": "",
                "fid_input_price_2": "",
                "fid_vol_cnt": "",
                "fid_trgt_cls_code": "0",
                "fid_trgt_exls_cls_code": "0",
                "fid_div_cls_code": "0",
                "fid_rsfl_rate1": "",
                "fid_rsfl_rate2": "",
            },
        )
        return parse_ranking(body.get("output") or [], "stck_shrn_iscd")

    async def volume_rank(self) -> list[Ranked]:
        """The volume ranking (§5), all of KRX, at most 30."""
        body, _ = await self.get(
            VOLUME_RANK_PATH,
            VOLUME_RANK_TR,
            {
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_COND_SCR_DIV_CODE": "20171",
                "FID_INPUT_ISCD": "0000",
                "FID_DIV_CLS_CODE": "0",
                "FID_BLNG_CLS_CODE": "0",
                "FID_TRGT_CLS_CODE": "111111111",
                "FID_TRGT_EXLS_CLS_CODE": "000000",
                "FID_INPUT_PRICE_1": "",
                "FID_INPUT_PRICE_2": "",
                "FID_VOL_CNT": "",
                "FID_INPUT_DATE_1": "",
            },
        )
        return parse_ranking(body.get("output") or [], "mksc_shrn_iscd")
