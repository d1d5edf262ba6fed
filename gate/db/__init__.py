"""The database: one schema for SQLite (embedded) and PostgreSQL (scaled).

The tables are declared here (and in ``gate.consent.tables``) so Alembic can compare them
with the database; they are *made* only by the migrations in ``gate/db/migrations``
(``gate.db.migrate``), in every mode: the embedded SQLite database upgrades itself when a
gate opens it. SQLite runs in WAL mode with ``synchronous=FULL`` and every transaction
starts with ``BEGIN IMMEDIATE``, so a write that returned is on disk and writers are
serialised (the audit chain needs that); its files are private to the service user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(64), primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner_app", String(128)),
    Column("owner_user", String(256)),
    Column("aliases", JSON, nullable=False),
    Column("guardian", Boolean, nullable=False, default=False),
    Column("model_pack", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("template_id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(64),
           ForeignKey("subjects.subject_id", ondelete="CASCADE"), nullable=False),
    Column("model_pack", String(128), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_templates_subject", "subject_id"),
)

grants = Table(
    "grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("subject_id", String(64),
           ForeignKey("subjects.subject_id", ondelete="CASCADE"), nullable=False),
    Column("app_id", String(128), nullable=False),
    Column("user_id", String(256)),
    Column("operations", JSON, nullable=False),
    Column("content", JSON, nullable=False),
    Column("purpose", String(200)),
    Column("not_before", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("max_uses", Integer),
    Column("uses", Integer, nullable=False, default=0),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    #: How consent was given (gate.types.ConsentRecord as JSON); NULL: not recorded.
    Column("consent", JSON),
    Index("ix_grants_subject", "subject_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("body", Text, nullable=False),  # canonical JSON of the event
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    #: The request a decision event is about (indexed: trace finds its record).
    Column("request_id", String(64)),
    Index("ix_audit_events_request", "request_id"),
)

#: The change feed: every consent change appends a row. Replicas (and caches) catch up by
#: reading rows after the last ``seq`` they applied, so no change is ever lost.
changes = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # subject_add, subject_delete, consent
    Column("subject_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False),
)

#: API keys of the sidecar: only a hash of the secret is stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("app_id", String(128), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    #: Jurisdiction packs of the key's app (None: the deployment's GATE_JURISDICTIONS).
    Column("jurisdictions", JSON),
)

#: Small key/value table (schema version, ...).
gate_meta = Table(
    "gate_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine and, for SQLite, make it durable, serialised and private."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            _private_sqlite_files(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **kwargs)
        _harden_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    return engine


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URL (None: in memory)."""
    name = make_url(url).database
    return Path(name) if name and name != ":memory:" else None


def _private_sqlite_files(path: Path) -> None:
    """The database, its WAL and shared-memory files are 0600 in a 0700 folder: they hold
    display names, grants and key hashes. The database file is created 0600 before SQLite
    opens it; SQLite gives its -wal and -shm files the database file's permissions."""
    from gate.durable import PRIVATE_FILE_MODE, private_dir

    private_dir(path.parent)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file == path and not file.exists():
            fd = os.open(file, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
            os.close(fd)
        if file.exists() and file.stat().st_mode & 0o077:
            os.chmod(file, PRIVATE_FILE_MODE)


def _harden_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten, not left
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Tables of the consent lifecycle (requests, links, signing keys...) live beside it.
import gate.consent.tables  # noqa: E402
import gate.incident.tables  # noqa: E402, F401
