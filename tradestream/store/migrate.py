"""Schema migrations (Alembic, scripts in the top-level migrations/) applied and checked from
code. `tradestream/_migrations` links to that directory, so a checkout and an installed wheel
(which copies the scripts in as package data) find them at the same place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from tradestream.errors import SchemaOutOfDate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "_migrations"


def _config(engine: Engine | None = None) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"migrations not found at {MIGRATIONS_DIR}: a broken install")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Back to `revision` (each migration's downgrade; tests, and an operator's rollback)."""
    command.downgrade(_config(engine), revision)


def check(engine: Engine) -> None:
    """Raise SchemaOutOfDate with an actionable message unless the schema is at head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the code needs {head}: run "
            "`tradestream db upgrade` (or set TRADESTREAM_DB_AUTO_UPGRADE=1)"
        )
