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


def stamped(i: int, offset: int, epoch: str) -> Msg:
    """A message as the ingest stamped it (a gateway's mirror receives it so)."""
    m = Msg(f'{{"type":"alert","data":{{"i":{i}}},"offset":{offset},"epoch":"{epoch}"}}', "alert")
    m.offset = offset
    return m


def mirror(h: History, topic: str, m: Msg, epoch: str) -> None:
    h.follow(epoch, m.offset, lossless=True)
    h.record(topic, m)


def test_a_mirror_adopts_the_ingests_epoch_and_offsets() -> None:
    h = History(epoch="mine")
    h.follow("ing", 7, lossless=False)  # a price first: 7 lossless messages came before
    assert h.epoch == "ing" and h.offset == 7
    mirror(h, "alert", stamped(1, 8, "ing"), "ing")
    mirror(h, "alert:005930", h.since(["alert"], 7, "ing")[1][0], "ing")  # the same, 2nd topic
    mirror(h, "news", stamped(2, 9, "ing"), "ing")
    assert h.offset == 9
    ok, missed = h.since(["alert", "news"], 7, "ing")
    assert ok and [m.offset for m in missed] == [8, 9]
    assert '"offset":8,"epoch":"ing"' in missed[0].payload  # the ingest's stamp, untouched
    # it did not see anything up to 7: a client that left before that is not recovered
    assert h.since(["alert"], 6, "ing") == (False, [])
    assert h.since(["alert"], 9, "mine") == (False, [])


def test_a_hole_in_the_mirrors_offsets_is_never_replayed_as_complete() -> None:
    h = History(epoch="x")
    mirror(h, "alert", stamped(1, 1, "ing"), "ing")
    mirror(h, "alert", stamped(2, 2, "ing"), "ing")
    mirror(h, "alert", stamped(5, 5, "ing"), "ing")  # 3 and 4 never reached this process
    assert h.since(["alert"], 2, "ing") == (False, [])
    assert h.since(["news"], 3, "ing") == (False, [])  # even on a topic it has nothing of
    ok, missed = h.since(["alert"], 4, "ing")
    assert ok and [m.offset for m in missed] == [5]
    h.follow("ing", 8, lossless=False)  # a price says 8 lossless were given: 6..8 missed
    assert h.since(["alert"], 5, "ing") == (False, [])
    assert h.since(["alert"], 8, "ing") == (True, [])


def test_a_new_epoch_starts_the_mirror_afresh() -> None:
    h = History(epoch="x")
    mirror(h, "alert", stamped(1, 1, "old"), "old")
    mirror(h, "alert", stamped(2, 1, "new"), "new")  # a new ingest took over
    assert h.since(["alert"], 1, "old") == (False, [])
    ok, missed = h.since(["alert"], 0, "new")
    assert ok and [m.payload for m in missed] == [stamped(2, 1, "new").payload]
