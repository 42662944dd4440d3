"""Stock master data in the store: names and markets by code, a prefix search. Synchronous
(SQLAlchemy Core): call from a worker thread."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradestream.store.schema import stocks

CHUNK = 500


class Stock(NamedTuple):
    code: str
    name: str
    market: str


def upsert_stocks(engine: Engine, rows: Iterable[Stock], source: str) -> int:
    """Insert or update each code's name and market; returns how many rows were given.
    A source without a market ("") does not erase a known one."""
    now = datetime.now(UTC)
    items = [
        {"code": r.code, "name": r.name[:100], "market": r.market, "source": source,
         "updated_at": now}
        for r in rows
    ]  # fmt: skip
    if not items:
        return 0
    dialect = engine.dialect.name
    stmt: Any
    with engine.begin() as conn:
        for i in range(0, len(items), CHUNK):
            chunk = items[i : i + CHUNK]
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
                ins = insert(stocks)
                market = sa.case(
                    (ins.excluded.market == "", stocks.c.market), else_=ins.excluded.market
                )
                stmt = ins.on_conflict_do_update(
                    index_elements=[stocks.c.code],
                    set_={
                        "name": ins.excluded.name,
                        "market": market,
                        "source": ins.excluded.source,
                        "updated_at": ins.excluded.updated_at,
                    },
                )
            else:
                from sqlalchemy.dialects.mysql import insert as my_insert

                mins: Any = my_insert(stocks)
                stmt = mins.on_duplicate_key_update(
                    name=mins.inserted.name,
                    # a literal, not a bound "": pymysql's executemany rewrite cannot take
                    # a parameter in this clause
                    market=sa.func.if_(mins.inserted.market == sa.literal_column("''"),
                                       stocks.c.market, mins.inserted.market),
                    source=mins.inserted.source,
                    updated_at=mins.inserted.updated_at,
                )  # fmt: skip
            conn.execute(stmt, chunk)
    return len(items)


def load_names(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r.code: r.name for r in conn.execute(sa.select(stocks.c.code, stocks.c.name))}


def last_loaded(engine: Engine, source: str) -> datetime | None:
    """When rows from `source` were last written (None: never)."""
    with engine.connect() as conn:
        at = conn.execute(
            sa.select(sa.func.max(stocks.c.updated_at)).where(stocks.c.source == source)
        ).scalar_one_or_none()
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def search(engine: Engine, q: str, limit: int) -> list[Stock]:
    """Codes starting with `q`, then names starting with it (Korean included), then names
    containing it; each group by code."""
    q = q.strip()
    if not q:
        return []
    esc = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    cols = (stocks.c.code, stocks.c.name, stocks.c.market)
    out: dict[str, Stock] = {}
    with engine.connect() as conn:
        for cond in (
            stocks.c.code.like(f"{esc}%", escape="\\"),
            stocks.c.name.like(f"{esc}%", escape="\\"),
            stocks.c.name.like(f"%{esc}%", escape="\\"),
        ):
            if len(out) >= limit:
                break
            for r in conn.execute(
                sa.select(*cols).where(cond).order_by(stocks.c.code).limit(limit)
            ):
                out.setdefault(r.code, Stock(r.code, r.name, r.market))
    return list(out.values())[:limit]
