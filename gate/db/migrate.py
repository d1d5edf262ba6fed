"""Schema migrations with Alembic: the only way the gate's tables are made, in every mode.

``ensure_schema(engine)`` runs when a gate opens its database: SQLite (the embedded
default) is upgraded to the newest revision on the spot; PostgreSQL too unless
``auto_migrate`` is off, in which case a database behind the code is a clear error that
says to run ``gate db upgrade`` (replicas of a scaled deployment usually leave migrations
to one job). Upgrades on PostgreSQL hold an advisory lock, so replicas that start together
migrate once.

A database made before migrations existed (tables but no ``alembic_version``) is adopted:
stamped at the revision its tables match, then upgraded. Any other difference is an
error, never a silent rewrite.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from gate import db
from gate.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK = 0x6761_746D  # "gatm": one migrating process at a time
#: Tables each early revision created (for adopting databases made by ``create_all``).
_ADOPTABLE = {"0001": {"subjects", "templates", "grants", "audit_events", "changes",
                       "api_keys", "gate_meta"}}


def migrations_dir() -> Path:
    """$GATE_MIGRATIONS_DIR, else the migrations shipped inside the package."""
    given = os.environ.get("GATE_MIGRATIONS_DIR")
    path = Path(given) if given else MIGRATIONS_DIR
    if not (path / "env.py").is_file():
        raise StorageError(f"the migrations folder {path} is missing its env.py")
    return path


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = _config_without_connection()
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _config_without_connection() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def current_revision(url_or_engine: str | Engine) -> str | None:
    engine, own = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        if own:
            engine.dispose()


def schema_differences(url_or_engine: str | Engine) -> list[object]:
    """Alembic's diff between the database and ``gate.db.metadata`` (empty: equal)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine, own = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, db.metadata))
    finally:
        if own:
            engine.dispose()


def _engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return db.make_engine(url_or_engine), True


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> str | None:
    """Upgrade the database to ``revision``; returns the revision reached."""
    from alembic import command

    engine, own = _engine(url_or_engine)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
            config = _config(conn)
            adopted = _adoption_revision(conn)
            if adopted is not None:
                command.stamp(config, adopted)
            command.upgrade(config, revision)
        return current_revision(engine)
    except SQLAlchemyError as exc:
        raise StorageError("the database could not be migrated") from exc
    finally:
        if own:
            engine.dispose()


#: Tables later revisions created (an unversioned 0002 database has none of them).
_ADDED_AFTER_0002 = frozenset({"self_enrolments", "marks", "blocklist", "reports", "attempts",
                               "notifications"})


def _adoption_revision(conn: Connection) -> str | None:
    """The revision an unversioned database (made by ``create_all`` before migrations
    existed) matches, or None when it is versioned or empty."""
    names = set(inspect(conn).get_table_names())
    gate_tables = names & set(db.metadata.tables)
    if "alembic_version" in names or not gate_tables:
        return None
    if gate_tables == _ADOPTABLE["0001"]:
        return "0001"
    if gate_tables >= _ADOPTABLE["0001"] and gate_tables == set(db.metadata.tables) - \
            _ADDED_AFTER_0002:
        return "0002"
    raise StorageError("the database has gate tables that differ from every schema "
                       "revision and no migration history; migrate it by hand")


def ensure_schema(engine: Engine, *, auto_migrate: bool = True) -> str:
    """Bring the database to the newest schema (see module doc); returns the revision."""
    head = head_revision()
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        raise StorageError("the consent database is unreachable") from exc
    if current == head:
        return head
    if engine.dialect.name == "sqlite" or auto_migrate:
        reached = upgrade(engine)
        if reached != head:
            raise StorageError(f"the database schema is at {reached}, not {head}")
        return head
    raise StorageError(f"the database schema is at {current or 'nothing'} but this gate "
                       f"needs {head}: run `gate db upgrade` (or set GATE_AUTO_MIGRATE=true)")
