"""API keys of the sidecar, stored in the ``api_keys`` table.

A key reads ``gk_<key_id>_<secret>``: ``key_id`` (12 hex characters) names the row and is
safe to log and list; ``secret`` is 32 random bytes (base64url), shown once at creation
and stored only as its sha256. Verification looks the row up by ``key_id`` and compares
hashes with ``hmac.compare_digest``. A revoked key never verifies again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gate import db
from gate.clock import aware, utcnow
from gate.errors import InvalidRequest, NotFound, StorageError

#: ``check``: /v1/check and /v1/check-output for the key's app. ``admin``: subjects,
#: grants and audit for the whole deployment (an operator-level scope).
SCOPES: tuple[str, ...] = ("check", "admin")
_KEY_RE = re.compile(r"^gk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_APP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a verified key grants. Holds no secret."""

    key_id: str
    app_id: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    #: Jurisdiction packs this app's decisions add to the deployment's.
    jurisdictions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``token`` is shown once and never stored."""

    key: ApiKey
    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class KeyStore:
    """Create, verify, list and revoke API keys (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the schema is made by gate.db.migrate.ensure_schema

    def create(self, app_id: str, scopes: Iterable[str],
               jurisdictions: str | Iterable[str] = ()) -> NewKey:
        """A new key; ``jurisdictions`` are packs every decision of this key's app adds."""
        from gate.policy.jurisdictions import parse_jurisdictions

        codes = parse_jurisdictions(jurisdictions)
        wanted = frozenset(s.strip() for s in scopes if s.strip())
        if not wanted or not wanted <= set(SCOPES):
            raise InvalidRequest(f"scopes must be a non-empty subset of {list(SCOPES)}",
                                 field="scopes")
        if not _APP_RE.match(app_id):
            raise InvalidRequest("app id must be 1-128 letters, digits or ._:-", field="app")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = ApiKey(key_id=key_id, app_id=app_id, scopes=wanted, created_at=utcnow(),
                     jurisdictions=codes)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(db.api_keys).values(
                    key_id=key_id, app_id=app_id, scopes=sorted(wanted),
                    secret_hash=_hash(secret), created_at=key.created_at,
                    jurisdictions=list(codes) or None))
        except SQLAlchemyError as exc:
            raise StorageError("the key could not be stored") from exc
        return NewKey(key=key, token=f"gk_{key_id}_{secret}")

    def verify(self, token: str) -> ApiKey | None:
        """The key's grants when ``token`` is a valid, unrevoked key; otherwise None."""
        match = _KEY_RE.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        row = self._row(key_id)
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        key = self._from_row(row)
        return key if key.revoked_at is None else None

    def list(self) -> list[ApiKey]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(db.api_keys).order_by(db.api_keys.c.created_at)).all()
        except SQLAlchemyError as exc:
            raise StorageError("the key database is unavailable") from exc
        return [self._from_row(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        try:
            with self.engine.begin() as conn:
                conn.execute(update(db.api_keys).where(
                    db.api_keys.c.key_id == key_id, db.api_keys.c.revoked_at.is_(None)
                ).values(revoked_at=utcnow()))
        except SQLAlchemyError as exc:
            raise StorageError("the key database is unavailable") from exc
        row = self._row(key_id)
        if row is None:
            raise NotFound("no such API key")
        return self._from_row(row)

    def _row(self, key_id: str) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(db.api_keys).where(db.api_keys.c.key_id == key_id)).first()
        except SQLAlchemyError as exc:
            raise StorageError("the key database is unavailable") from exc

    @staticmethod
    def _from_row(row: Any) -> ApiKey:
        return ApiKey(key_id=row.key_id, app_id=row.app_id, scopes=frozenset(row.scopes),
                      created_at=aware(row.created_at),
                      revoked_at=aware(row.revoked_at),
                      jurisdictions=tuple(row.jurisdictions or ()))

    def close(self) -> None:
        self.engine.dispose()
