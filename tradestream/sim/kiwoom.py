"""The simulator's Kiwoom side (../shared/protocols/kiwoom.md §11): the access token (au10001),
the WebSocket session (LOGIN first, REG/REMOVE per group with `refresh`, a registration limit,
PINGs with a miss tolerance, SYSTEM R10001/R10002/R10004), and REAL messages built from the one
simulated market's KIS records (market.py), so that a Kiwoom client and a KIS client see the
same trades: the same code, second and accumulated volume, hence equal `Tick.key`s.

No I/O and no clock reads: the server (sim/server.py) owns the sockets, hands each text frame
to `KiwoomSim.handle` with the time, and does what the returned `Answer` says.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from tradestream.feeds.kiwoom.codec import KiwoomFrameError, real_message, split_item
from tradestream.upstream import KIWOOM_BOOK, KIWOOM_TRADE, KIWOOM_VENUE_SUFFIX

TOKEN_LIFE = timedelta(hours=24)  # as the broker's (au10001 gives an absolute expires_dt)
TOKEN_CHARS = 64

# (return_code, return_msg). The refusal texts follow kiwoom.md: §2 (8001, the helper's family
# for bad credentials), §3 (the [CODE=8005] form of a refused LOGIN, return_code 1: the
# third-party fixture shows the message, not the code), §4 (등록 종목수 초과, unverified).
OK = (0, "정상적으로 처리되었습니다")
LOGIN_OK = (0, "")
BAD_TOKEN = (1, "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]")
BAD_KEY = (8001, "App Key와 Secret Key 검증에 실패했습니다")
BAD_GRANT = (1501, "입력 값 오류입니다")
TOO_MANY = (1, "등록 종목수 초과")
BAD_REQUEST = (1, "잘못된 요청입니다")
# SYSTEM (code, message), §8
OTHER_LOGIN = ("R10001", "동일한 App Key로 다른 접속이 발생하여 접속을 종료합니다")
HEARTBEAT = (
    "R10002",
    "사용자 프로그램으로부터 Heartbeat(연결유지) 메시지가 오지않아서 접속을 종료합니다",
)
NO_LOGIN = ("R10004", "접속허용요청이 들어오지 않았습니다")
PING = '{"trnm":"PING"}'  # §7

TYPES = frozenset({KIWOOM_TRADE, KIWOOM_BOOK})  # the types the simulator streams
SUFFIXES = tuple(KIWOOM_VENUE_SUFFIX.values())  # one market: every venue sees its trades
MAX_GROUP_CHARS = 4  # grp_no (§4)

#: §6.1: every documented 0B key, in the documented order
TRADE_FIDS = (
    "20", "10", "11", "12", "27", "28", "15", "13", "14", "16", "17", "18", "25", "26", "29",
    "30", "31", "32", "228", "311", "290", "691", "567", "568", "851", "1890", "1891", "1892",
    "1030", "1031", "1032", "1071", "1072", "1313", "1315", "1316", "1314", "1497", "1498",
    "620", "732", "852", "9081",
)  # fmt: skip
#: §6.2: every documented 0D key
BOOK_FIDS = (
    "21", *(str(f) for f in range(41, 101)), "121", "122", "125", "126", "23", "24", "128",
    "129", "138", "139", "200", "201", "238", "291", "292", "293", "294", "295",
    *(str(f) for f in range(621, 641)), "13", "299", "215", "216",
    *(str(f) for f in range(6044, 6088)), *(str(f) for f in range(6100, 6116)),
)  # fmt: skip
_BOOK_TEMPLATE = dict.fromkeys(BOOK_FIDS, "")


def _signed(value: int, reference: int) -> str:
    """A price with its direction versus the prior close (§5): "+71000", "-69000", "70000";
    an empty level is "0"."""
    if value == 0 or value == reference:
        return str(value)
    return f"+{value}" if value > reference else f"-{value}"


def _plus(n: int) -> str:
    """A signed difference as Kiwoom writes one: "+500", "-500", "0"."""
    return f"{n:+d}" if n else "0"


def trade_values(record: Sequence[str]) -> dict[str, str]:
    """The 0B values (§6.1, every documented key) of a KIS H0STCNT0 record of the simulated
    market (kis.md §7.1): the same trade as Kiwoom reports it. Prices carry their direction
    versus the prior close (§5), FID 15 is "+" for a buy-initiated trade (CCLD_DVSN 1) and "-"
    for a sell-initiated one, FID 25 is the record's PRDY_VRSS_SIGN (the same 1-5 codes),
    FID 14 the accumulated value in million KRW. Figures the market does not keep are ""."""
    price, change = int(record[2]), int(record[4])
    prev = price - change
    qty, volume = int(record[12]), int(record[13])
    buy = record[21] == "1"
    sell_qty, buy_qty = int(record[19]), int(record[20])
    rate = float(record[5])
    return {
        "20": record[1],
        "10": _signed(price, prev),
        "11": _plus(change),
        "12": f"{rate:+.2f}" if rate else "0.00",
        "27": _signed(int(record[10]), prev),
        "28": _signed(int(record[11]), prev),
        "15": ("+" if buy else "-") + record[12],
        "13": record[13],
        "14": str(int(record[14]) // 1_000_000),
        "16": _signed(int(record[7]), prev),
        "17": _signed(int(record[8]), prev),
        "18": _signed(int(record[9]), prev),
        "25": record[3],
        "26": _plus(volume - int(record[41])),  # versus the prior day's volume at this time
        "29": "",
        "30": record[23],
        "31": record[40],
        "32": "",
        "228": record[18],
        "311": "",
        "290": "2",  # the regular session
        "691": "0",
        "567": "000000",
        "568": "000000",
        "851": record[42],
        "1890": record[24],
        "1891": record[27],
        "1892": record[30],
        "1030": record[19],
        "1031": record[20],
        "1032": record[22],
        "1071": record[15],
        "1072": record[16],
        "1313": str(price * qty),
        "1315": "0" if buy else record[12],
        "1316": record[12] if buy else "0",
        "1314": _plus(buy_qty - sell_qty),
        "1497": "",
        "1498": "",
        "620": str(round(float(record[6]))),
        "732": "",
        "852": "",
        "9081": "1",
    }


def book_values(record: Sequence[str], prev_close: int) -> dict[str, str]:
    """The 0D values (§6.2, every documented key) of a KIS H0STASP0 record (kis.md §7.2): ask
    price level L is FID 40+L, bid 50+L, ask size 60+L, bid size 70+L, prices signed versus
    the prior close; an empty level is "0". The book is KRX's: the NXT and mid-price fields
    are "" or 0."""
    out = dict(_BOOK_TEMPLATE)
    total_ask, total_bid = int(record[43]), int(record[44])
    both = total_ask + total_bid
    for level in range(1, 11):
        out[str(40 + level)] = _signed(int(record[2 + level]), prev_close)
        out[str(50 + level)] = _signed(int(record[12 + level]), prev_close)
        out[str(60 + level)] = out[str(6043 + level)] = record[22 + level]
        out[str(70 + level)] = out[str(6053 + level)] = record[32 + level]
        out[str(80 + level)] = out[str(90 + level)] = "0"
        out[str(620 + level)] = out[str(630 + level)] = "0"
        out[str(6065 + level)] = out[str(6075 + level)] = "0"
    out.update({
        "21": record[1], "121": record[43], "122": _plus(int(record[54])), "125": record[44],
        "126": _plus(int(record[55])), "23": record[47], "24": record[48],
        "128": _plus(total_bid - total_ask),
        "129": f"{total_bid / both * 100:.2f}" if both else "0.00",
        "138": _plus(total_ask - total_bid),
        "139": f"{total_ask / both * 100:.2f}" if both else "0.00",
        "200": record[50], "201": record[52], "238": record[51], "291": record[47],
        "292": record[49], "293": "3", "294": "0", "295": "0.00", "13": record[53],
        "215": "2", "6064": record[43], "6065": record[44], "6086": "0", "6087": "0",
    })  # fmt: skip
    return out


def _reply(trnm: str, code: tuple[int, str]) -> str:
    """A LOGIN, REG or REMOVE answer (§3, §4)."""
    return msgspec.json.encode(
        {"trnm": trnm, "return_code": code[0], "return_msg": code[1]}
    ).decode()


def system_message(code: tuple[str, str]) -> str:
    """A SYSTEM message (§8): ``{"trnm":"SYSTEM","code":"R10002","message":"..."}``."""
    return msgspec.json.encode({"trnm": "SYSTEM", "code": code[0], "message": code[1]}).decode()


Pair = tuple[str, str]  # (type, item), one registration


@dataclass
class KiwoomSession:
    """One Kiwoom connection's state on the simulator."""

    cid: int
    app_key: str | None = None  # set by a good LOGIN
    groups: dict[str, set[Pair]] = field(default_factory=dict)  # grp_no -> its registrations
    registered: set[Pair] = field(default_factory=set)  # every group's (a new set on change)
    missed_pings: int = 0


@dataclass
class Answer:
    """What `KiwoomSim.handle` asks of the server: send `send`, then close if `close`; send
    SYSTEM R10001 to the connections `evict` (by id) and close them; start trading the codes
    of `streams` (registered for the first time)."""

    send: list[str] = field(default_factory=list)
    close: bool = False
    evict: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RealFrame:
    """One REAL message for a connection, with what it holds (for the simulator's counters)."""

    text: str
    entries: int
    malformed: bool = False


class KiwoomSim:
    """Kiwoom's tokens and sessions.

    `listed(code)` says whether the market lists a code (and so whether it may be registered);
    `tokens` (token -> (app key, expiry)) is the server's, so a revocation of every credential
    reaches Kiwoom's tokens too; `limit` is the number of registrations (type x item, over
    every group) one session may hold (kiwoom.md §9 documents none).
    """

    def __init__(
        self,
        seed: int,
        limit: int,
        listed: Callable[[str], bool],
        tokens: dict[str, tuple[str, datetime]] | None = None,
    ) -> None:
        self._rng = random.Random(seed + 3)
        self.limit = limit
        self._listed = listed
        self.tokens: dict[str, tuple[str, datetime]] = {} if tokens is None else tokens
        self.sessions: dict[int, KiwoomSession] = {}
        self.tokens_issued = 0

    # -- REST (§2) ---------------------------------------------------------------------------
    def issue_token(
        self, body: Mapping[str, object], now: datetime, *, refused: bool
    ) -> dict[str, object]:
        """The au10001 answer, always with HTTP 200: `return_code` says (§2). `now` is
        tz-aware (KST): `expires_dt` is KST wall time."""
        app_key, secret = body.get("appkey"), body.get("secretkey")
        if body.get("grant_type") != "client_credentials" or not app_key or not secret:
            return {"return_code": BAD_GRANT[0], "return_msg": BAD_GRANT[1]}
        if refused:
            return {"return_code": BAD_KEY[0], "return_msg": BAD_KEY[1]}
        alphabet = string.ascii_letters + string.digits
        token = "".join(self._rng.choice(alphabet) for _ in range(TOKEN_CHARS))
        expires = now.replace(microsecond=0) + TOKEN_LIFE
        self.tokens[token] = (str(app_key), expires)
        self.tokens_issued += 1
        return {
            "expires_dt": expires.strftime("%Y%m%d%H%M%S"),
            "token_type": "bearer",
            "token": token,
            "return_code": OK[0],
            "return_msg": OK[1],
        }

    # -- WebSocket (§3-§8) -------------------------------------------------------------------
    def open(self, cid: int) -> KiwoomSession:
        self.sessions[cid] = session = KiwoomSession(cid)
        return session

    def close(self, cid: int) -> None:
        self.sessions.pop(cid, None)

    def handle(self, session: KiwoomSession, text: str, now: datetime) -> Answer:
        """One text frame from the client. LOGIN must come first (else SYSTEM R10004 and the
        end, §3/§8); a PING echo (or a bare PING) answers the heartbeat (§7)."""
        if text == "PING":
            session.missed_pings = 0
            return Answer()
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            msg = None
        trnm = msg.get("trnm") if isinstance(msg, dict) else None
        if trnm == "PING":  # the echo
            session.missed_pings = 0
            return Answer()
        if trnm == "LOGIN":
            assert isinstance(msg, dict)
            return self._login(session, msg, now)
        if session.app_key is None:
            return Answer([system_message(NO_LOGIN)], close=True)
        if trnm in ("REG", "REMOVE"):
            assert isinstance(msg, dict)
            return self._register(session, str(trnm), msg)
        return Answer([_reply(trnm if isinstance(trnm, str) else "", BAD_REQUEST)])

    def _login(self, session: KiwoomSession, msg: Mapping[str, object], now: datetime) -> Answer:
        """§3: an unknown, revoked or expired token is refused in the [CODE=8005] form, and
        the connection stays open for another LOGIN. A good one takes the app key from any
        other session of it, which hears R10001 and is closed (§8)."""
        found = self.tokens.get(str(msg.get("token", "")))
        if found is None or found[1] <= now:
            return Answer([_reply("LOGIN", BAD_TOKEN)])
        app_key = found[0]
        evict = [s.cid for s in self.sessions.values() if s.app_key == app_key and s is not session]
        for cid in evict:
            self.sessions[cid].app_key = None  # it is being closed: no longer holds the key
        session.app_key = app_key
        return Answer([_reply("LOGIN", LOGIN_OK)], evict=evict)

    def _register(self, session: KiwoomSession, trnm: str, msg: Mapping[str, object]) -> Answer:
        """§4: every item x type of `data[]` in group `grp_no`. A request with an unknown type
        or item, or that would take the session past `limit`, is refused whole (return_code
        1): nothing of it is registered. REG with `refresh` "0" replaces the group's
        registrations; REMOVE of a pair not registered is not an error."""
        grp = msg.get("grp_no")
        pairs = self._pairs(msg.get("data"))
        if not isinstance(grp, str) or not grp or len(grp) > MAX_GROUP_CHARS or pairs is None:
            return Answer([_reply(trnm, BAD_REQUEST)])
        held = session.groups.get(grp, set())
        if trnm == "REMOVE":
            kept = held - pairs
        else:
            kept = (set() if msg.get("refresh", "1") == "0" else held) | pairs
            others = sum(len(v) for g, v in session.groups.items() if g != grp)
            if others + len(kept) > self.limit:
                return Answer([_reply(trnm, TOO_MANY)])
        before = session.registered
        if kept:
            session.groups[grp] = kept
        else:
            session.groups.pop(grp, None)
        session.registered = set().union(*session.groups.values())
        new_codes = {split_item(item)[1] for _, item in session.registered - before}
        return Answer([_reply(trnm, OK)], streams=sorted(new_codes))

    def _pairs(self, data: object) -> set[Pair] | None:
        """The (type, item) pairs of a request's `data[]`; None when one cannot be had."""
        if not isinstance(data, list) or not data:
            return None
        pairs: set[Pair] = set()
        for entry in data:
            if not isinstance(entry, dict):
                return None
            items, types = entry.get("item"), entry.get("type")
            if not isinstance(items, list) or not isinstance(types, list) or not items:
                return None
            for kind in types:
                for item in items:
                    if kind not in TYPES or not isinstance(item, str) or not self._valid(item):
                        return None
                    pairs.add((kind, item))
        return pairs

    def _valid(self, item: str) -> bool:
        try:
            _, code = split_item(item)
        except KiwoomFrameError:
            return False
        return self._listed(code)

    def heartbeat(self, session: KiwoomSession, tolerance: int) -> tuple[str, bool]:
        """The next heartbeat frame (§7) and whether the session ends with it: after
        `tolerance` PINGs went unanswered (0: never), SYSTEM R10002 instead, or R10004 when
        the session never logged in either (§8)."""
        if tolerance and session.missed_pings >= tolerance:
            return system_message(HEARTBEAT if session.app_key else NO_LOGIN), True
        session.missed_pings += 1
        return PING, False

    def data(
        self,
        session: KiwoomSession,
        trades: Sequence[Sequence[str]],
        books: Mapping[str, tuple[Sequence[str], int]],
        max_entries: int,
        rng: random.Random,
        malformed_rate: float = 0.0,
    ) -> list[RealFrame]:
        """The REAL messages of one market step for a session: the step's trades (H0STCNT0
        records) and books (code -> (H0STASP0 record, prior close)) of its registered items,
        in that order, 1 to `max_entries` entries per message (§5: a message may carry
        several). A share `malformed_rate` of them is spoiled (see `_malformed`)."""
        held = session.registered
        if not held:
            return []
        entries: list[tuple[str, str, Mapping[str, str]]] = []
        for record in trades:
            items = [i for i in (record[0] + s for s in SUFFIXES) if (KIWOOM_TRADE, i) in held]
            if items:
                values = trade_values(record)
                entries += [(KIWOOM_TRADE, item, values) for item in items]
        for code, (record, prev) in books.items():
            items = [i for i in (code + s for s in SUFFIXES) if (KIWOOM_BOOK, i) in held]
            if items:
                values = book_values(record, prev)
                entries += [(KIWOOM_BOOK, item, values) for item in items]
        out: list[RealFrame] = []
        i = 0
        while i < len(entries):
            chunk = entries[i : i + rng.randint(1, max(1, max_entries))]
            i += len(chunk)
            if malformed_rate and rng.random() < malformed_rate:
                out.append(RealFrame(_malformed(chunk, rng), len(chunk), True))
            else:
                out.append(RealFrame(real_message(chunk), len(chunk)))
        return out


def _malformed(chunk: list[tuple[str, str, Mapping[str, str]]], rng: random.Random) -> str:
    """A spoiled REAL message: cut short (bad JSON), its first entry's price not a number or
    its type unknown (that entry lost, the others kept), or not JSON at all."""
    kind = rng.randrange(4)
    if kind == 0:
        text = real_message(chunk)
        return text[: len(text) // 2]
    if kind == 1:
        first_type, first_item, values = chunk[0]
        spoiled = {**values, "10": "x", "41": "x"}
        return real_message([(first_type, first_item, spoiled), *chunk[1:]])
    if kind == 2:
        return real_message([("ZZ", chunk[0][1], chunk[0][2]), *chunk[1:]])
    return "garbage \x00\x01 frame"
