"""Alembic is the only way tables are made: the migrated schema equals the declared
metadata; a gate opening an empty SQLite database migrates it; a PostgreSQL database
behind the code is refused with the command to run (unless auto-migrating); ``gate db
upgrade`` adopts a database the engine created before migrations existed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from gate import db
from gate.api.cli import standalone
from gate.db.migrate import (
    current_revision,
    ensure_schema,
    head_revision,
    schema_differences,
    upgrade,
)
from gate.errors import StorageError


def describe(url: str) -> dict[str, object]:
    """Tables, columns (name, type, nullability), keys and indexes, as the DB reports."""
    engine = db.make_engine(url)
    try:
        insp = inspect(engine)
        out: dict[str, object] = {}
        for table in sorted(t for t in insp.get_table_names() if t != "alembic_version"):
            out[table] = (
                [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
                insp.get_pk_constraint(table)["constrained_columns"],
                sorted((tuple(f["constrained_columns"]), f["referred_table"],
                        f.get("options", {}).get("ondelete"))
                       for f in insp.get_foreign_keys(table)),
                sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
            )
        return out
    finally:
        engine.dispose()


HEAD = "0005"


def create_all(url: str) -> None:
    """The reference: the declared tables, made without migrations (tests only)."""
    engine = db.make_engine(url)
    db.metadata.create_all(engine)
    engine.dispose()


def check_equal(migrated: str, reference: str) -> None:
    assert head_revision() == HEAD
    assert upgrade(migrated) == HEAD
    create_all(reference)
    assert schema_differences(migrated) == []
    assert describe(migrated) == describe(reference)
    assert set(describe(migrated)) == set(db.metadata.tables)


def test_sqlite_migration_equals_create_all(tmp_path: Path) -> None:
    check_equal(f"sqlite:///{tmp_path / 'm.db'}", f"sqlite:///{tmp_path / 'c.db'}")


@pytest.mark.postgres
def test_postgres_migration_equals_create_all(pg_url_factory: object) -> None:
    make = pg_url_factory
    check_equal(make(), make())  # type: ignore[operator]


def test_upgrade_is_idempotent_and_adopts_an_unversioned_database(tmp_path: Path) -> None:
    """A database the engine made with create_all before migrations existed (the 0002
    tables, no alembic_version) is stamped and upgraded."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert upgrade(url, "0002") == "0002"
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    assert current_revision(url) is None
    assert upgrade(url) == HEAD
    assert upgrade(url) == HEAD
    assert schema_differences(url) == []


def test_a_database_unlike_every_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE subjects (subject_id TEXT PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(StorageError, match="by hand"):
        upgrade(url)


def test_opening_a_gate_migrates_its_sqlite_database(tmp_path: Path) -> None:
    from gate.engine import FaceGate

    FaceGate.open(tmp_path / "d", detector="fake", embedder="fake").close()
    url = f"sqlite:///{(tmp_path / 'd' / 'gate.db').resolve()}"
    assert current_revision(url) == HEAD
    assert schema_differences(url) == []


@pytest.mark.postgres
def test_postgres_behind_the_code_is_refused_unless_auto_migrating(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    try:
        with pytest.raises(StorageError, match="gate db upgrade"):
            ensure_schema(engine, auto_migrate=False)
        assert ensure_schema(engine, auto_migrate=True) == HEAD
        assert ensure_schema(engine, auto_migrate=False) == HEAD
    finally:
        engine.dispose()


def test_db_upgrade_command(tmp_path: Path) -> None:
    r = CliRunner().invoke(standalone(), ["db", "upgrade", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert f"revision {HEAD}" in r.stdout
    r = CliRunner().invoke(standalone(), ["db", "current", "--data-dir", str(tmp_path / "d")])
    assert r.stdout.strip() == HEAD
