"""Upstream vocabulary: the brokers' TR ids and limits, named once, and the register/unregister
op that the slot layer decides and a feed session sends (bottom layer: pure constants).

KIS (../shared/protocols/kis.md): a registration is (tr_id, tr_key); a session may hold 41 of
them over all TR ids (§3). LS (../shared/protocols/ls.md): (tr_cd, tr_key), with no documented
limit. A decoder reads these tables to tell an event's venue; the slot layer to map a client
topic to the registration that serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# --- KIS (kis.md §7) -----------------------------------------------------------------------
KIS_TRADES: Final = "H0STCNT0"  # KRX trades (§7.1)
KIS_TRADES_NXT: Final = "H0NXCNT0"
KIS_TRADES_UNIFIED: Final = "H0UNCNT0"
KIS_BOOK: Final = "H0STASP0"  # KRX 10-level order book (§7.2)
KIS_BOOK_NXT: Final = "H0NXASP0"
KIS_BOOK_UNIFIED: Final = "H0UNASP0"
KIS_PROGRAM: Final = "H0STPGM0"  # program trading (§7.3)
KIS_PROGRAM_NXT: Final = "H0NXPGM0"
KIS_PROGRAM_UNIFIED: Final = "H0UNPGM0"
KIS_INDEX: Final = "H0UPCNT0"  # index updates (docs/kis-index.md); tr_key an index code
KIS_NOTICE: Final = "H0STCNI0"  # execution notices, live account (§7.4)
KIS_NOTICE_PAPER: Final = "H0STCNI9"  # ... paper-trading account

#: trade TRs -> the venue their records are (KRX, NXT, or UN: the two combined)
TRADE_TRS: Final = {KIS_TRADES: "KRX", KIS_TRADES_NXT: "NXT", KIS_TRADES_UNIFIED: "UN"}
ORDER_BOOK_TRS: Final = {KIS_BOOK: "KRX", KIS_BOOK_NXT: "NXT", KIS_BOOK_UNIFIED: "UN"}
PROGRAM_TRADE_TRS: Final = {KIS_PROGRAM: "KRX", KIS_PROGRAM_NXT: "NXT", KIS_PROGRAM_UNIFIED: "UN"}
INDEX_TR: Final = KIS_INDEX
#: index codes (tr_key of H0UPCNT0) -> the index's name in `market:{name}` topics
INDEX_NAMES: Final = {"0001": "kospi", "1001": "kosdaq", "2001": "kospi200"}
NOTICE_TRS: Final = (KIS_NOTICE, KIS_NOTICE_PAPER)
NOTICE_TR_IDS: Final = frozenset(NOTICE_TRS)
#: KIS allows 41 registrations per session over all TR ids (kis.md §3)
KIS_REGISTRATION_LIMIT: Final = 41

# --- LS (ls.md §8) ---------------------------------------------------------------------------
LS_NEWS: Final = "NWS"  # headlines (§8.1) ...
LS_NEWS_KEY: Final = "NWS001"  # ... under their one key
LS_TRADE_TRS: Final = frozenset({"S3_", "K3_"})  # KOSPI, KOSDAQ trades (§8.2)
LS_BOOK_TRS: Final = frozenset({"H1_", "HA_"})  # KOSPI, KOSDAQ order books (§8.3)

# --- Kiwoom (kiwoom.md §4, §6) ----------------------------------------------------------------
KIWOOM_TRADE: Final = "0B"  # stock trades (§6.1)
KIWOOM_BOOK: Final = "0D"  # 10-level order book (§6.2)
#: venue -> the item's suffix: 005930 KRX, 005930_NX NXT, 005930_AL the SOR (combined) stream
KIWOOM_VENUE_SUFFIX: Final = {"KRX": "", "NXT": "_NX", "UN": "_AL"}


OpAction = Literal["subscribe", "unsubscribe"]


@dataclass(frozen=True, slots=True)
class Op:
    """One upstream request for a session's feed to send: register or unregister (tr_id, code)."""

    session: str
    action: OpAction
    tr_id: str
    code: str
