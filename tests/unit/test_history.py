"""The lossless topics' history (history.py): offsets, recovery and its limits."""

from __future__ import annotations

import msgspec

from tradestream.history import History
from tradestream.hub import Msg


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def msg(i: int) -> Msg:
    return Msg(msgspec.json.encode({"type": "alert", "data": {"i": i}}).decode(), "alert")


def test_one_offset_per_message_in_its_payload() -> None:
    h = History(epoch="e1")
    m = msg(1)
    h.record("alert", m)
    h.record("alert:005930", m)  # the same message on a second topic: one offset
    assert m.offset == 1 == h.offset
    assert msgspec.json.decode(m.payload) == {
        "type": "alert", "data": {"i": 1}, "offset": 1, "epoch": "e1"
    }  # fmt: skip


def test_recovery_replays_what_was_missed_in_order() -> None:
    h = History(epoch="e1")
    msgs = [msg(i) for i in range(5)]
    for i, m in enumerate(msgs):
        h.record("alert" if i % 2 else "news", m)  # offsets 1..5 over two topics
    ok, missed = h.since(["alert"], 2, "e1")
    assert ok and [m.offset for m in missed] == [4]
    ok, missed = h.since(["alert", "news"], 1, "e1")
    assert ok and [m.offset for m in missed] == [2, 3, 4, 5]
    assert h.since(["alert"], 5, "e1") == (True, [])  # up to date
    assert h.since(["quiet"], 3, "e1") == (True, [])  # nothing ever published there
    assert h.since(["alert"], 2, "other") == (False, [])  # another process's stream
    assert h.since(["alert"], 9, "e1") == (False, [])  # an offset this stream never gave


def test_a_trimmed_history_is_never_presented_as_complete() -> None:
    clock = Clock()
    h = History(size=2, ttl_s=60, epoch="e", clock=clock)
    for i in range(4):
        h.record("alert", msg(i))  # 1, 2 dropped: 3, 4 kept
    assert h.since(["alert"], 1, "e") == (False, [])
    ok, missed = h.since(["alert"], 2, "e")
    assert ok and [m.offset for m in missed] == [3, 4]
    clock.now = 61  # both too old now
    assert h.since(["alert"], 2, "e") == (False, [])
    assert h.since(["alert"], 4, "e") == (True, [])


def test_a_forgotten_topic_raises_the_floor() -> None:
    h = History(max_topics=2, epoch="e")
    h.record("a", msg(1))  # offset 1
    h.record("b", msg(2))
    h.record("c", msg(3))  # "a" is forgotten, with its offset 1
    assert h.since(["a"], 0, "e") == (False, [])  # it may have had something after 0
    assert h.since(["a"], 1, "e") == (True, [])
    ok, missed = h.since(["b"], 0, "e")
    assert ok and [m.offset for m in missed] == [2]
