"""``gate db upgrade``: bring a database to the newest schema with Alembic.

A database made before migrations existed (the engine's ``create_all``) is adopted: when
it has no ``alembic_version`` table but its tables already equal ``gate.db.metadata``,
it is stamped at the initial revision and then upgraded. Any other difference is an
error, never a silent rewrite.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect

from gate import db
from gate.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config



def migrations_dir() -> Path:
    """$GATE_MIGRATIONS_DIR, else ``migrations/`` of the source tree, else of the cwd."""
    candidates = [Path(p) for p in [os.environ.get("GATE_MIGRATIONS_DIR")] if p]
    candidates += [Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"]
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise StorageError("the migrations folder was not found; set GATE_MIGRATIONS_DIR")


def _config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    """Alembic's diff between the database and ``gate.db.metadata`` (empty: equal)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, db.metadata))
    finally:
        engine.dispose()


def _unversioned_tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return names & set(db.metadata.tables) if "alembic_version" not in names else set()


def _adopt(url: str) -> None:
    """Accept a ``create_all`` schema (possibly missing whole tables, which are added)."""
    diffs = schema_differences(url)
    if any(not (isinstance(d, tuple) and d[0] in ("add_table", "add_index")) for d in diffs):
        raise StorageError("the database has gate tables that differ from the schema and "
                           "no migration history; migrate it by hand")
    engine = db.make_engine(url)
    try:
        db.create_schema(engine)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Upgrade ``url`` to ``revision``; returns the revision reached."""
    from alembic import command

    config = _config(url)
    if _unversioned_tables(url):
        _adopt(url)
        command.stamp(config, "head")  # adoption created every table of the head schema
    command.upgrade(config, revision)
    return current_revision(url)
