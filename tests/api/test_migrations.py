"""Alembic: the migrated schema equals ``metadata.create_all``'s; ``gate db upgrade``
adopts a database the engine created before migrations existed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from gate import db
from gate.api.cli import standalone
from gate.api.migrate import current_revision, schema_differences, upgrade


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


def create_all(url: str) -> None:
    engine = db.make_engine(url)
    db.create_schema(engine)
    engine.dispose()


def check_equal(migrated: str, reference: str) -> None:
    assert upgrade(migrated) == "0002"
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


def test_upgrade_is_idempotent_and_adopts_create_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    create_all(url)
    assert current_revision(url) is None
    assert upgrade(url) == "0002"
    assert upgrade(url) == "0002"


def test_db_upgrade_command(tmp_path: Path) -> None:
    r = CliRunner().invoke(standalone(), ["db", "upgrade", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "revision 0002" in r.stdout
    r = CliRunner().invoke(standalone(), ["db", "current", "--data-dir", str(tmp_path / "d")])
    assert r.stdout.strip() == "0002"
