"""Alembic environment. tradestream.store.migrate passes the engine in `config.attributes`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from tradestream.store.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: the URL comes from -x url=...
    engine = create_engine(context.get_x_argument(as_dictionary=True)["url"])

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
