"""The simulator's Kiwoom side (../shared/protocols/kiwoom.md §11): the access token (au10001),
and the WebSocket session: LOGIN first, REG/REMOVE per group with `refresh`, a registration
limit, PINGs with a miss tolerance, SYSTEM R10001/R10002/R10004, and REAL messages built from
the one simulated market's KIS records, so a Kiwoom client and a KIS client see the same
trades (the same accumulated volume, the same second).

Pure: the server (sim/server.py) owns the sockets and hands each text frame to `handle`,
which returns what to send back and whether to close.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from tradestream.events import KST
from tradestream.feeds.kiwoom.codec import TYPE_NAMES, split_item
from tradestream.feeds.kiwoom.codec import KiwoomFrameError as _ItemError
from tradestream.upstream import KIWOOM_BOOK, KIWOOM_TRADE

TOKEN_LIFE = timedelta(hours=24)
OK = (0, "정상적으로 처리되었습니다")
BAD_TOKEN = (1, "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]")
BAD_KEY = (8001, "App Key와 Secret Key 검증에 실패했습니다")
TOO_MANY = (1, "등록 종목수 초과")
BAD_REQUEST = (1, "잘못된 요청입니다")
NO_LOGIN = ("R10004", "접속허용요청이 들어오지 않았습니다")
HEARTBEAT = (
    "R10002",
    "사용자 프로그램으로부터 Heartbeat(연결유지) 메시지가 오지않아서 접속을 종료합니다",
)
OTHER_LOGIN = ("R10001", "동일한 App Key로 다른 접속이 발생하여 접속을 종료합니다")
TYPES = frozenset({KIWOOM_TRADE, KIWOOM_BOOK})


def _signed(value: int, reference: int) -> str:
    """A price with its direction versus the prior close (§5): "+71000", "-69000", "70000"."""
    if value == 0:
        return "0"
    return f"+{value}" if value > reference else f"-{value}" if value < reference else str(value)


def trade_values(record: Sequence[str]) -> dict[str, str]:
    """0B values (§6.1, every documented key) of a KIS H0STCNT0 record of the simulated market:
    the same trade as Kiwoom reports it."""
    price, change = int(record[2]), int(record[4])
    prev = price - change
    buy = record[21] == "1"
    value_m = int(record[14]) // 1_000_000
    sign = record[3]
    rate = float(record[5])
    return {
        "20": record[1],
        "10": _signed(price, prev),
        "11": f"{change:+d}" if change else "0",
        "12": f"{rate:+.2f}" if rate else "0.00",
        "27": _signed(int(record[10]), prev),
        "28": _signed(int(record[11]), prev),
        "15": ("+" if buy else "-") + record[12],
        "13": record[13],
        "14": str(value_m),
        "16": _signed(int(record[7]), prev),
        "17": _signed(int(record[8]), prev),
        "18": _signed(int(record[9]), prev),
        "25": sign,
        "26": "0", "29": "0", "30": record[23], "31": "0.02", "32": "44",
        "228": record[18], "311": "0", "290": "2", "691": "0", "567": "000000",
        "568": "000000", "851": "", "1890": record[24], "1891": record[27], "1892": record[30],
        "1030": record[19], "1031": record[20], "1032": record[22], "1071": record[15],
        "1072": record[16], "1313": "", "1315": "", "1316": "", "1314": "", "1497": "",
        "1498": "", "620": record[6], "732": "", "852": "", "9081": "1",
    }  # fmt: skip


def book_values(record: Sequence[str], prev_close: int) -> dict[str, str]:
    """0D values (§6.2) of a KIS H0STASP0 record: ask price L is FID 40+L, bid 50+L, ask size
    60+L, bid size 70+L; an empty level is "0"."""
    out = {"21": record[1], "121": record[43], "125": record[44], "23": "0", "24": "0",
           "13": record[53], "215": "2"}  # fmt: skip
    for level in range(1, 11):
        out[str(40 + level)] = _signed(int(record[2 + level]), prev_close)
        out[str(50 + level)] = _signed(int(record[12 + level]), prev_close)
        out[str(60 + level)] = record[22 + level]
        out[str(70 + level)] = record[32 + level]
    return out


def real_message(entries: Sequence[tuple[str, str, Mapping[str, str]]]) -> str:
    """A REAL message (§5) of (type, item, values) entries."""
    return msgspec.json.encode(
        {
            "trnm": "REAL",
            "data": [
                {"type": t, "name": TYPE_NAMES.get(t, t), "item": i, "values": v}
                for t, i, v in entries
            ],
        }
    ).decode()


def _reply(trnm: str, code: tuple[int, str]) -> str:
    return msgspec.json.encode(
        {"trnm": trnm, "return_code": code[0], "return_msg": code[1]}
    ).decode()


def system_message(code: tuple[str, str]) -> str:
    return msgspec.json.encode({"trnm": "SYSTEM", "code": code[0], "message": code[1]}).decode()


@dataclass
class KiwoomSession:
    """One Kiwoom connection's state on the simulator."""

    cid: int
    app_key: str | None = None  # set by a good LOGIN
    groups: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # grp_no -> (type, item)
    missed_pings: int = 0

    @property
    def registered(self) -> set[tuple[str, str]]:
        return set().union(*self.groups.values()) if self.groups else set()


@dataclass
class Answer:
    """What `handle` asks the server to do: send these frames; close after them, and to which
    other connections (by id) to send SYSTEM R10001 and close."""

    send: list[str] = field(default_factory=list)
    close: bool = False
    evict: list[int] = field(default_factory=list)


class KiwoomSim:
    """Tokens and sessions; `listed(code)` says whether the market has a code."""

    def __init__(self, seed: int, limit: int, listed: object) -> None:
        self._rng = random.Random(seed + 3)
        self.limit = limit
        self._listed = listed
        self.tokens: dict[str, tuple[str, datetime]] = {}  # token -> (app key, expiry)
        self.sessions: dict[int, KiwoomSession] = {}
        self.tokens_issued = 0

    # -- REST ------------------------------------------------------------------------------
    def issue_token(self, body: Mapping[str, object], *, refused: bool) -> dict[str, object]:
        """au10001 (§2): always HTTP 200; `return_code` says."""
        app_key, secret = body.get("appkey"), body.get("secretkey")
        if body.get("grant_type") != "client_credentials" or not app_key or not secret:
            return {"return_code": BAD_REQUEST[0], "return_msg": BAD_REQUEST[1]}
        if refused:
            return {"return_code": BAD_KEY[0], "return_msg": BAD_KEY[1]}
        token = "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(64))
        expires = datetime.now(KST).replace(microsecond=0) + TOKEN_LIFE
        self.tokens[token] = (str(app_key), expires)
        self.tokens_issued += 1
        return {"expires_dt": expires.strftime("%Y%m%d%H%M%S"), "token_type": "bearer",
                "token": token, "return_code": OK[0], "return_msg": OK[1]}  # fmt: skip

    def revoke(self, app_key: str | None = None) -> None:
        for token in [t for t, (k, _) in self.tokens.items() if app_key in (None, k)]:
            del self.tokens[token]

    # -- WebSocket -------------------------------------------------------------------------
    def open(self, cid: int) -> KiwoomSession:
        self.sessions[cid] = session = KiwoomSession(cid)
        return session

    def close(self, cid: int) -> None:
        self.sessions.pop(cid, None)

    def handle(self, session: KiwoomSession, text: str) -> Answer:
        if text == "PING":
            session.missed_pings = 0
            return Answer()
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return Answer([_reply("", BAD_REQUEST)])
        trnm = msg.get("trnm") if isinstance(msg, dict) else None
        if trnm == "PING":
            session.missed_pings = 0  # the echo
            return Answer()
        if trnm == "LOGIN":
            return self._login(session, msg)
        if session.app_key is None:  # §3: LOGIN first, else R10004 and the end
            return Answer([system_message(NO_LOGIN)], close=True)
        if trnm in ("REG", "REMOVE"):
            return Answer([self._register(session, trnm, msg)])
        return Answer([_reply(str(trnm), BAD_REQUEST)])

    def _login(self, session: KiwoomSession, msg: Mapping[str, object]) -> Answer:
        found = self.tokens.get(str(msg.get("token", "")))
        if found is None or found[1] <= datetime.now(KST):
            return Answer([_reply("LOGIN", BAD_TOKEN)])
        app_key = found[0]
        # §8: one login per app key; the new one wins, the old one hears R10001
        evict = [s.cid for s in self.sessions.values() if s.app_key == app_key and s is not session]
        session.app_key = app_key
        return Answer([_reply("LOGIN", (0, ""))], evict=evict)

    def _register(self, session: KiwoomSession, trnm: str, msg: Mapping[str, object]) -> str:
        grp = str(msg.get("grp_no", ""))
        data = msg.get("data")
        if not grp or len(grp) > 4 or not isinstance(data, list) or not data:
            return _reply(trnm, BAD_REQUEST)
        pairs: set[tuple[str, str]] = set()
        for entry in data:
            if not isinstance(entry, dict):
                return _reply(trnm, BAD_REQUEST)
            items, types = entry.get("item"), entry.get("type")
            if not isinstance(items, list) or not isinstance(types, list):
                return _reply(trnm, BAD_REQUEST)
            for t in types:
                for i in items:
                    if t not in TYPES or not self._valid(str(i)):
                        return _reply(trnm, BAD_REQUEST)
                    pairs.add((str(t), str(i)))
        if trnm == "REMOVE":
            held = session.groups.get(grp, set())
            held -= pairs
            if not held:
                session.groups.pop(grp, None)
            return _reply(trnm, OK)
        keep = session.groups.get(grp, set()) if msg.get("refresh", "1") != "0" else set()
        others = sum(len(v) for g, v in session.groups.items() if g != grp)
        if others + len(keep | pairs) > self.limit:
            return _reply(trnm, TOO_MANY)  # nothing of this request registered
        session.groups[grp] = keep | pairs
        return _reply(trnm, OK)

    def _valid(self, item: str) -> bool:
        try:
            _, code = split_item(item)
        except _ItemError:
            return False
        return bool(self._listed(code))  # type: ignore[operator]

    def heartbeat(self, session: KiwoomSession, tolerance: int) -> tuple[str, bool]:
        """The next PING, or R10002 and the end when `tolerance` went unanswered."""
        if tolerance and session.missed_pings >= tolerance:
            return system_message(HEARTBEAT), True
        session.missed_pings += 1
        return '{"trnm":"PING"}', False

    def data(
        self,
        session: KiwoomSession,
        trades: Sequence[Sequence[str]],
        books: Mapping[str, tuple[Sequence[str], int]],
        max_entries: int,
        rng: random.Random,
    ) -> list[str]:
        """REAL messages for one market step: the trades and books of the session's items,
        1 to `max_entries` entries per message (§5: a message may carry several)."""
        held = session.registered
        if not held:
            return []
        entries: list[tuple[str, str, Mapping[str, str]]] = []
        for record in trades:
            for suffix in ("", "_NX", "_AL"):
                if (KIWOOM_TRADE, record[0] + suffix) in held:
                    entries.append((KIWOOM_TRADE, record[0] + suffix, trade_values(record)))
        for code, (record, prev) in books.items():
            for suffix in ("", "_NX", "_AL"):
                if (KIWOOM_BOOK, code + suffix) in held:
                    entries.append((KIWOOM_BOOK, code + suffix, book_values(record, prev)))
        out, i = [], 0
        while i < len(entries):
            k = rng.randint(1, max_entries)
            out.append(real_message(entries[i : i + k]))
            i += k
        return out
