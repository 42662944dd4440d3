"""The database half of the ingest lease's fencing (redis_lease.py holds the other half).

The lease in Redis says who should be the ingest; the token that fences writers lives here, in
`ingest_leases`, so it survives a Redis restart (which forgets Redis's keys) and is checked by
the database itself:

- `take_token` is called by a process that has just won the lease in Redis: it raises the
  name's token by one, atomically, and returns it. Every later holder gets a larger one.
- `Fence.check(conn)` runs first in each batch's transaction: an UPDATE that matches only while
  the token is still the current one. It holds the row's lock until the batch commits, so a
  newer holder's `take_token` waits for that commit and every batch after it is refused
  (`Fenced`): a deposed ingest cannot store, whatever it believes about the lease.

Plain blocking functions (the flusher's worker thread runs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tradestream.errors import Fenced
from tradestream.store.schema import ingest_leases as table


def take_token(engine: Engine, name: str, holder: str) -> int:
    """The next token for `name`, now the current one (the first is 1)."""
    now = datetime.now(UTC)
    for _ in range(3):  # two first takers at once: one insert fails and goes round again
        try:
            with engine.begin() as conn:
                # the UPDATE first: it takes the row's lock (SQLite: the database's), so the
                # read after it is of our own write, whoever else is taking one
                bumped = conn.execute(
                    table.update()
                    .where(table.c.name == name)
                    .values(token=table.c.token + 1, holder=holder, taken_at=now)
                )
                if bumped.rowcount == 0:
                    conn.execute(table.insert().values(name=name, token=1, holder=holder,
                                                       taken_at=now))  # fmt: skip
                    return 1
                return int(
                    conn.execute(sa.select(table.c.token).where(table.c.name == name)).scalar_one()
                )
        except sa.exc.IntegrityError:
            continue
    raise RuntimeError(f"could not take a token for lease {name!r}")


def current_token(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(sa.select(table.c.token).where(table.c.name == name)).scalar()
    return int(found or 0)


@dataclass(frozen=True)
class Fence:
    """A holder's token for `name`: `check` refuses a transaction once a newer one exists."""

    name: str
    token: int

    def check(self, conn: Connection) -> None:
        done = conn.execute(
            table.update()
            .where(table.c.name == self.name, table.c.token == self.token)
            .values(token=self.token)
        )
        if done.rowcount != 1:
            raise Fenced(self.name, self.token)
