"""The Kiwoom session adapter against its protocol (kiwoom.md §3-§8), with a recording socket:
nothing is registered before the LOGIN reply; then one REG per type of what the slot driver
holds; the driver's ops one request each, each reply matched to its request; PINGs echoed
unchanged; refusals typed (a token refusal gets a new token, R10001 is a key in use)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tradestream.config import KiwoomSettings
from tradestream.errors import CredentialRejected, FeedError, KeyInUse
from tradestream.feeds.kiwoom.adapter import CARRIES, KiwoomAdapter, to_kiwoom
from tradestream.feeds.kiwoom.codec import Login, Ping, RegReply, System
from tradestream.feeds.session import FeedStatus
from tradestream.upstream import KIS_BOOK, KIS_INDEX, KIS_TRADES, KIS_TRADES_NXT, Op


class Socket:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_message(self, text: str) -> None:
        self.sent.append(msgspec.json.decode(text) if text.startswith("{") else text)


def adapter(keys: list[tuple[str, str]]) -> tuple[KiwoomAdapter, FeedStatus]:
    a = KiwoomAdapter(KiwoomSettings(enabled=True), "kiwoom-1", desired=lambda: list(keys))
    a._cred.held = "tok"  # authenticated
    status = FeedStatus("kiwoom-1")
    status.state = "subscribing"
    a.on_connect(status)
    return a, status


def test_registrations_map_kis_keys_to_kiwoom_types_and_items() -> None:
    assert to_kiwoom(KIS_TRADES, "005930") == ("0B", "005930")
    assert to_kiwoom(KIS_TRADES_NXT, "005930") == ("0B", "005930_NX")
    assert to_kiwoom("H0UNCNT0", "005930") == ("0B", "005930_AL")
    assert to_kiwoom(KIS_BOOK, "000660") == ("0D", "000660")
    assert KIS_INDEX not in CARRIES and "H0STCNI0" not in CARRIES


async def test_login_first_then_one_reg_per_type_then_ops_in_order() -> None:
    a, status = adapter([(KIS_TRADES, "005930"), (KIS_BOOK, "005930"), (KIS_TRADES, "000660")])
    assert [msgspec.json.decode(m) for m in a.registrations()] == [
        {"trnm": "LOGIN", "token": "tok"}
    ]
    assert a.send_op(Op("kiwoom-1", "subscribe", KIS_TRADES, "035420")) is False  # not yet
    ws = Socket()
    assert await a.on_control(ws, Login(True, 0, ""), status) is True  # type: ignore[arg-type]
    assert ws.sent == [
        {"trnm": "REG", "grp_no": "1", "refresh": "1",
         "data": [{"item": ["000660", "005930"], "type": ["0B"]}]},
        {"trnm": "REG", "grp_no": "1", "refresh": "1",
         "data": [{"item": ["005930"], "type": ["0D"]}]},
    ]  # fmt: skip
    assert a.registered() == {(KIS_TRADES, "005930"), (KIS_BOOK, "005930"), (KIS_TRADES, "000660")}
    # replies in order: the trades' REG accepted, the book's refused
    await a.on_control(ws, RegReply("REG", True, 0, ""), status)  # type: ignore[arg-type]
    await a.on_control(ws, RegReply("REG", False, 1, "등록 종목수 초과"), status)  # type: ignore[arg-type]
    assert status.subscriptions == {
        f"{KIS_TRADES}:000660": "subscribed",
        f"{KIS_TRADES}:005930": "subscribed",
        f"{KIS_BOOK}:005930": "1 등록 종목수 초과",
    }
    assert status.as_dict()["refused"] == {f"{KIS_BOOK}:005930": "1 등록 종목수 초과"}
    # the driver's ops: one request each, queued for the pump
    assert a.send_op(Op("kiwoom-1", "subscribe", KIS_TRADES_NXT, "035420"))
    assert a.send_op(Op("kiwoom-1", "unsubscribe", KIS_TRADES, "000660"))
    queued = [msgspec.json.decode(m) for m in a._ops]
    assert queued == [
        {"trnm": "REG", "grp_no": "1", "refresh": "1",
         "data": [{"item": ["035420_NX"], "type": ["0B"]}]},
        {"trnm": "REMOVE", "grp_no": "1", "data": [{"item": ["000660"], "type": ["0B"]}]},
    ]  # fmt: skip
    await a.on_control(ws, RegReply("REG", True, 0, ""), status)  # type: ignore[arg-type]
    await a.on_control(ws, RegReply("REMOVE", True, 0, ""), status)  # type: ignore[arg-type]
    assert f"{KIS_TRADES_NXT}:035420" in status.subscriptions
    assert f"{KIS_TRADES}:000660" not in status.subscriptions
    assert a.refusals == {"REG": 1}
    # stopping: what the connection holds is removed, one request per type
    removed = [msgspec.json.decode(m) for m in a.unregistrations()]
    assert {tuple(r["data"][0]["type"]) for r in removed} == {("0B",), ("0D",)}
    assert all(r["trnm"] == "REMOVE" for r in removed)


async def test_pings_are_echoed_unchanged() -> None:
    a, status = adapter([])
    ws = Socket()
    raw = '{"trnm":"PING","extra":1}'
    assert await a.on_control(ws, Ping(raw), status) is False  # type: ignore[arg-type]
    assert ws.sent == [{"trnm": "PING", "extra": 1}]
    await a.on_control(ws, Ping("PING"), status)  # type: ignore[arg-type]
    assert ws.sent[-1] == "PING"


@pytest.mark.parametrize(
    ("login", "error"),
    [
        (Login(False, 1, "토큰 인증에 실패했습니다 [CODE=8005, MESSAGE=Token이 유효하지 않습니다]"),
         CredentialRejected),
        (Login(False, 8103, "device"), CredentialRejected),
        (Login(False, 8001, "bad app key"), FeedError),
    ],
)  # fmt: skip
async def test_a_refused_login_is_typed(login: Login, error: type[Exception]) -> None:
    a, status = adapter([(KIS_TRADES, "005930")])
    ws = Socket()
    with pytest.raises(error) as caught:
        await a.on_control(ws, login, status)  # type: ignore[arg-type]
    assert ws.sent == []  # nothing registered
    if error is FeedError:
        assert not isinstance(caught.value, CredentialRejected)
        assert "credentials" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "error"), [("R10001", KeyInUse), ("R10002", FeedError), ("R10004", FeedError)]
)
async def test_system_messages_end_the_session(code: str, error: type[Exception]) -> None:
    a, status = adapter([])
    with pytest.raises(error):
        await a.on_control(Socket(), System(code, "closing"), status)  # type: ignore[arg-type]
    await a.on_control(Socket(), System("R99999", "notice"), status)  # type: ignore[arg-type]
