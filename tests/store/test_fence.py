"""The database half of the ingest lease's fence (store/fence.py) on every backend: each holder
gets a larger token, and a batch written with a stale one is refused whole by the database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from tests.store.test_writer import counts, engine, events  # noqa: F401  (fixture)
from tradestream.errors import Fenced
from tradestream.store.fence import Fence, current_token, take_token
from tradestream.store.writer import EventWriter, transient


def test_each_holder_gets_a_larger_token(engine: Engine) -> None:  # noqa: F811
    assert current_token(engine, "ingest:s") == 0
    assert take_token(engine, "ingest:s", "a:1") == 1
    assert take_token(engine, "ingest:s", "b:2") == 2
    assert take_token(engine, "ingest:other", "a:1") == 1  # per name
    assert current_token(engine, "ingest:s") == 2


def test_a_stale_token_writes_nothing(engine: Engine) -> None:  # noqa: F811
    old = Fence("ingest:s", take_token(engine, "ingest:s", "a:1"))
    EventWriter(engine, guard=old.check).write(events())  # current: written
    written = counts(engine)
    assert sum(written.values()) > 0
    new = Fence("ingest:s", take_token(engine, "ingest:s", "b:2"))
    with pytest.raises(Fenced) as refused:
        EventWriter(engine, guard=old.check).write(events()[:3])
    assert transient(refused.value)  # held and spooled by the flusher, never set aside as bad
    assert counts(engine) == written
    EventWriter(engine, guard=new.check).write(events())  # the new holder writes on
    assert current_token(engine, "ingest:s") == 2


def test_takers_at_once_get_distinct_tokens(engine: Engine) -> None:  # noqa: F811
    got: list[int] = []

    def take(i: int) -> None:
        got.append(take_token(engine, "ingest:race", f"h:{i}"))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4]
