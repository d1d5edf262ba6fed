"""API keys: shown once, stored hashed, verified in constant time, revocable; the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gate import db
from gate.api.cli import standalone
from gate.api.keys import KeyStore
from gate.errors import InvalidRequest, NotFound


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    from gate.db.migrate import ensure_schema

    engine = db.make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    ensure_schema(engine)
    return KeyStore(engine)


def test_secret_is_stored_only_as_its_sha256(store: KeyStore) -> None:
    new = store.create("studio", ["check"])
    secret = new.token.split("_", 2)[2]
    assert len(new.token) == len("gk_") + 12 + 1 + 43
    with store.engine.connect() as conn:
        row = conn.execute(select(db.api_keys)).one()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(tuple(row))
    assert store.verify(new.token) == new.key


def test_verify_rejects_wrong_malformed_and_revoked(store: KeyStore) -> None:
    new = store.create("studio", ["check", "admin"])
    assert new.key.scopes == frozenset({"check", "admin"})
    key_id = new.key.key_id
    assert store.verify(f"gk_{key_id}_{'A' * 43}") is None
    assert store.verify("gk_short") is None
    assert store.verify("") is None
    assert store.revoke(key_id).revoked_at is not None
    assert store.verify(new.token) is None
    assert store.revoke(key_id).revoked_at is not None  # idempotent


def test_verify_uses_compare_digest() -> None:
    import inspect

    from gate.api import keys

    assert "hmac.compare_digest" in inspect.getsource(keys.KeyStore.verify)


def test_bad_scopes_apps_and_ids(store: KeyStore) -> None:
    with pytest.raises(InvalidRequest):
        store.create("studio", ["root"])
    with pytest.raises(InvalidRequest):
        store.create("studio", [])
    with pytest.raises(InvalidRequest):
        store.create("bad app id!", ["check"])
    with pytest.raises(NotFound):
        store.revoke("000000000000")


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    cli = standalone()
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(cli, ["keys", "create", "--app", "studio", "--scopes", "check,admin",
                            "--json", *data])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["scopes"] == ["admin", "check"] and created["api_key"].startswith("gk_")
    r = runner.invoke(cli, ["keys", "list", *data])
    assert created["key_id"] in r.stdout and "active" in r.stdout
    assert created["api_key"] not in r.stdout
    r = runner.invoke(cli, ["keys", "revoke", created["key_id"], *data])
    assert r.exit_code == 0 and "revoked" in r.stdout
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json", *data]).stdout)
    assert listed[0]["revoked_at"] is not None
    r = runner.invoke(cli, ["keys", "create", "--app", "studio", *data])
    assert r.stdout.strip().startswith("gk_") and "not shown again" in r.stderr
