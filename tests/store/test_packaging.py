"""The migrations ship inside the package: an installed wheel migrates like a checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

from tradestream.store import migrate

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_finds_the_top_level_migrations() -> None:
    link = ROOT / "tradestream" / "_migrations"
    assert link.is_symlink() and link.resolve() == (ROOT / "migrations").resolve()
    assert migrate.MIGRATIONS_DIR.resolve() == (ROOT / "migrations").resolve()
    assert migrate.head_revision() is not None


def test_package_data_takes_every_migration_file() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["tradestream"]
    files = [
        p.relative_to(ROOT / "migrations").as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert any(f.startswith("versions/") for f in files)
    for f in files:
        path = PurePosixPath("_migrations", f)
        # a package-data glob matches within one directory level, as setuptools reads it
        assert any(
            len(PurePosixPath(g).parts) == len(path.parts) and path.match(g) for g in globs
        ), f
