"""The consent store: subjects, encrypted templates and grants.

Every write is one transaction that also appends to the change feed (``changes``), which
caches and replicas read to learn that consent changed. A write has reached the disk
(SQLite WAL + synchronous=FULL, or PostgreSQL commit) before the method returns.

Erasure (``delete_subject``) runs the erasure hooks of every module that keeps rows about
a person (``ErasureHook``, registered by ``gate.consent.lifecycle``) in the same
transaction as the subject's own rows, so a person is erased everywhere or nowhere.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from gate import db
from gate.clock import aware, utcnow
from gate.errors import NotFound, StorageError
from gate.types import ConsentRecord, Grant, Requester, Subject, SubjectStatus

_FEED_LOCK = 0x6761_7466  # "gatf": serialises change-feed writers on PostgreSQL


@dataclass(frozen=True, slots=True)
class Person:
    """What erasure and export hooks are told about a person."""

    subject_id: str
    #: The keyed, non-identifying reference the audit log and activity table use.
    subject_ref: str
    #: Every grant of the person (deleted in the same transaction).
    grant_ids: tuple[str, ...]


def append_change(conn: Connection, kind: str, subject_id: str | None = None) -> None:
    """Append to the change feed inside the same transaction as the change.

    Readers apply the feed in ``seq`` order and never look back, so seq order must be
    commit order. SQLite's ``BEGIN IMMEDIATE`` serialises writers already; on PostgreSQL
    a transaction-scoped advisory lock does (otherwise a transaction that took a lower seq
    could commit after a replica has read a higher one).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_FEED_LOCK})")
    conn.execute(insert(db.changes).values(kind=kind, subject_id=subject_id, at=utcnow()))


def erasure_digest(subject_id: str) -> str:
    """What the change feed says about an erased subject: not their id, a one-way digest
    of it. A replica that holds the subject in its index recognises it (it computes the
    same digest for the ids it holds); nobody else can turn it back into an id."""
    return "erased:" + hashlib.sha256(f"gate-erasure\x00{subject_id}".encode()).hexdigest()[:40]


#: Deletes one module's rows about a person, inside the erasure's transaction.
ErasureHook = Callable[[Connection, Person], None]
#: One module's data about a person, for their export (GDPR Art. 15 and 20).
ExportHook = Callable[[Connection, Person], dict[str, Any]]


@runtime_checkable
class ConsentStore(Protocol):
    """Durable subjects, templates and grants."""

    def add_subject(self, subject: Subject, ciphertexts: list[bytes], key_id: str) -> None: ...
    def get_subject(self, subject_id: str) -> Subject | None: ...
    def list_subjects(self) -> list[Subject]: ...
    def set_status(self, subject_id: str, status: SubjectStatus, *,
                   at: datetime) -> tuple[Subject, list[str]]: ...
    def delete_subject(self, subject_id: str, *, subject_ref: str,
                       hooks: Sequence[ErasureHook] = ()) -> bool: ...
    def export_rows(self, subject_id: str, *, subject_ref: str,
                    hooks: Sequence[ExportHook]) -> dict[str, Any]: ...
    def iter_templates(self, model_pack: str) -> Iterator[tuple[str, bytes]]: ...
    def template_packs(self) -> set[str]: ...
    def rewrite_templates(self, transform: Callable[[str, str, bytes], bytes | None]) -> int: ...
    def add_grant(self, grant: Grant) -> None: ...
    def get_grant(self, grant_id: str) -> Grant | None: ...
    def list_grants(self, subject_id: str | None = None) -> list[Grant]: ...
    def grants_for(self, subject_ids: Iterable[str]) -> dict[str, list[Grant]]: ...
    def revoke_grant(self, grant_id: str, at: datetime) -> tuple[Grant, bool]: ...
    def consume_use(self, grant_id: str) -> bool: ...
    def epoch(self) -> int: ...
    def changes_since(self, seq: int) -> list[tuple[int, str, str | None]]: ...
    def subject_templates(self, subject_id: str, model_pack: str) -> list[bytes]: ...
    def template_count(self) -> int: ...
    def ping(self) -> None: ...
    def integrity_problem(self) -> str | None: ...
    def close(self) -> None: ...


def _subject_from_row(row: Any, template_count: int) -> Subject:
    owner = None
    if row.owner_app:
        owner = Requester(app_id=row.owner_app, user_id=row.owner_user)
    return Subject(
        subject_id=row.subject_id, display_name=row.display_name, status=row.status,
        owner=owner, aliases=list(row.aliases or []), model_pack=row.model_pack,
        template_count=template_count, guardian=bool(row.guardian),
        created_at=aware(row.created_at),
    )


def _grant_from_row(row: Any) -> Grant:
    return Grant(
        grant_id=row.grant_id, subject_id=row.subject_id, app_id=row.app_id,
        user_id=row.user_id, operations=list(row.operations), content=list(row.content),
        purpose=row.purpose, not_before=aware(row.not_before),
        expires_at=aware(row.expires_at), max_uses=row.max_uses, uses=row.uses,
        revoked_at=aware(row.revoked_at), created_at=aware(row.created_at),
        consent=ConsentRecord.model_validate(row.consent) if row.consent else None,
    )


class SqlConsentStore:
    """SQLAlchemy Core over SQLite (WAL) or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the schema is made by gate.db.migrate.ensure_schema

    # -- plumbing ---------------------------------------------------------------------
    def _tx(self) -> Any:
        return _Tx(self.engine)

    def _read(self) -> Any:
        return _Tx(self.engine, write=False)

    @staticmethod
    def _record(conn: Connection, kind: str, subject_id: str | None) -> None:
        append_change(conn, kind, subject_id)

    # -- subjects ---------------------------------------------------------------------
    def add_subject(self, subject: Subject, ciphertexts: list[bytes], key_id: str) -> None:
        now = utcnow()
        with self._tx() as conn:
            conn.execute(insert(db.subjects).values(
                subject_id=subject.subject_id, display_name=subject.display_name,
                status=subject.status,
                owner_app=subject.owner.app_id if subject.owner else None,
                owner_user=subject.owner.user_id if subject.owner else None,
                aliases=list(subject.aliases), guardian=subject.guardian,
                model_pack=subject.model_pack, created_at=subject.created_at, updated_at=now,
            ))
            conn.execute(insert(db.templates), [
                {"subject_id": subject.subject_id, "model_pack": subject.model_pack,
                 "key_id": key_id, "ciphertext": blob, "created_at": now}
                for blob in ciphertexts
            ])
            self._record(conn, "subject_add", subject.subject_id)

    def _count_templates(self, conn: Connection, subject_id: str) -> int:
        return int(conn.execute(
            select(func.count()).select_from(db.templates)
            .where(db.templates.c.subject_id == subject_id)
        ).scalar_one())

    def get_subject(self, subject_id: str) -> Subject | None:
        with self._read() as conn:
            row = conn.execute(
                select(db.subjects).where(db.subjects.c.subject_id == subject_id)
            ).first()
            if row is None:
                return None
            return _subject_from_row(row, self._count_templates(conn, subject_id))

    def list_subjects(self) -> list[Subject]:
        with self._read() as conn:
            counts = dict(conn.execute(
                select(db.templates.c.subject_id, func.count()).group_by(db.templates.c.subject_id)
            ).all())
            rows = conn.execute(select(db.subjects).order_by(db.subjects.c.created_at)).all()
            return [_subject_from_row(r, int(counts.get(r.subject_id, 0))) for r in rows]

    def set_status(self, subject_id: str, status: SubjectStatus, *,
                   at: datetime) -> tuple[Subject, list[str]]:
        """Set the status. ``protected`` ("never generate me") also revokes every active
        grant of the person in the same transaction; returns the subject and the ids of
        the grants it revoked."""
        g = db.grants.c
        with self._tx() as conn:
            n = conn.execute(update(db.subjects).where(db.subjects.c.subject_id == subject_id)
                             .values(status=status, updated_at=at)).rowcount
            if not n:
                raise NotFound("no such subject")
            revoked: list[str] = []
            if status == "protected":
                revoked = [r[0] for r in conn.execute(select(g.grant_id).where(
                    g.subject_id == subject_id, g.revoked_at.is_(None)))]
                if revoked:
                    conn.execute(update(db.grants).where(g.grant_id.in_(revoked))
                                 .values(revoked_at=at))
            self._record(conn, "consent", subject_id)
        subject = self.get_subject(subject_id)
        assert subject is not None
        return subject, revoked

    def delete_subject(self, subject_id: str, *, subject_ref: str,
                       hooks: Sequence[ErasureHook] = ()) -> bool:
        with self._tx() as conn:
            grant_ids = tuple(r[0] for r in conn.execute(
                select(db.grants.c.grant_id).where(db.grants.c.subject_id == subject_id)))
            person = Person(subject_id, subject_ref, grant_ids)
            for hook in hooks:
                hook(conn, person)
            conn.execute(delete(db.grants).where(db.grants.c.subject_id == subject_id))
            conn.execute(delete(db.templates).where(db.templates.c.subject_id == subject_id))
            n = conn.execute(delete(db.subjects).where(db.subjects.c.subject_id == subject_id))
            # Keep the feed rows (so SQLite never reuses their seq) but drop the id from
            # them; the erasure itself is announced by a digest, never by the id.
            conn.execute(update(db.changes).where(db.changes.c.subject_id == subject_id)
                         .values(subject_id=None))
            self._record(conn, "subject_delete", erasure_digest(subject_id))
            return bool(n.rowcount)

    def export_rows(self, subject_id: str, *, subject_ref: str,
                    hooks: Sequence[ExportHook]) -> dict[str, Any]:
        """What every module keeps about the person (one read transaction)."""
        out: dict[str, Any] = {}
        with self._read() as conn:
            grant_ids = tuple(r[0] for r in conn.execute(
                select(db.grants.c.grant_id).where(db.grants.c.subject_id == subject_id)))
            person = Person(subject_id, subject_ref, grant_ids)
            for hook in hooks:
                out.update(hook(conn, person))
        return out

    def iter_templates(self, model_pack: str) -> Iterator[tuple[str, bytes]]:
        with self._read() as conn:
            rows = conn.execute(
                select(db.templates.c.subject_id, db.templates.c.ciphertext)
                .where(db.templates.c.model_pack == model_pack)
                .order_by(db.templates.c.template_id)
            ).all()
        for row in rows:
            yield row.subject_id, bytes(row.ciphertext)

    def template_packs(self) -> set[str]:
        with self._read() as conn:
            return {r[0] for r in conn.execute(select(db.templates.c.model_pack).distinct())}

    def rewrite_templates(self, transform: Callable[[str, str, bytes], bytes | None]) -> int:
        """Replace each template by ``transform(subject_id, pack, blob)`` (None: keep), in
        one transaction. Used for key rotation."""
        t = db.templates.c
        changed = 0
        with self._tx() as conn:
            rows = conn.execute(select(t.template_id, t.subject_id, t.model_pack, t.ciphertext)
                                .order_by(t.template_id)).all()
            for row in rows:
                new = transform(row.subject_id, row.model_pack, bytes(row.ciphertext))
                if new is not None:
                    conn.execute(update(db.templates).where(t.template_id == row.template_id)
                                 .values(ciphertext=new, key_id=new[:16].decode("ascii")))
                    changed += 1
        return changed

    # -- grants -----------------------------------------------------------------------
    def add_grant(self, grant: Grant) -> None:
        with self._tx() as conn:
            exists = conn.execute(select(db.subjects.c.subject_id)
                                  .where(db.subjects.c.subject_id == grant.subject_id)).first()
            if exists is None:
                raise NotFound("no such subject")
            row = grant.model_dump(exclude={"uses", "token", "consent"})
            consent = None if grant.consent is None else grant.consent.model_dump(mode="json")
            conn.execute(insert(db.grants).values(**row, uses=0, consent=consent))
            self._record(conn, "consent", grant.subject_id)

    def get_grant(self, grant_id: str) -> Grant | None:
        with self._read() as conn:
            row = conn.execute(select(db.grants).where(db.grants.c.grant_id == grant_id)).first()
            return _grant_from_row(row) if row else None

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        query = select(db.grants).order_by(db.grants.c.created_at)
        if subject_id is not None:
            query = query.where(db.grants.c.subject_id == subject_id)
        with self._read() as conn:
            return [_grant_from_row(r) for r in conn.execute(query).all()]

    def grants_for(self, subject_ids: Iterable[str]) -> dict[str, list[Grant]]:
        ids = sorted(set(subject_ids))
        out: dict[str, list[Grant]] = {s: [] for s in ids}
        if not ids:
            return out
        with self._read() as conn:
            for row in conn.execute(select(db.grants).where(db.grants.c.subject_id.in_(ids))):
                out[row.subject_id].append(_grant_from_row(row))
        return out

    def revoke_grant(self, grant_id: str, at: datetime) -> tuple[Grant, bool]:
        """Revoke; returns the grant and whether this call revoked it (False: it was
        revoked already)."""
        with self._tx() as conn:
            row = conn.execute(select(db.grants).where(db.grants.c.grant_id == grant_id)).first()
            if row is None:
                raise NotFound("no such grant")
            changed = row.revoked_at is None
            if changed:
                conn.execute(update(db.grants).where(db.grants.c.grant_id == grant_id)
                             .values(revoked_at=at))
                self._record(conn, "consent", row.subject_id)
        grant = self.get_grant(grant_id)
        assert grant is not None
        return grant, changed

    def consume_use(self, grant_id: str) -> bool:
        """Count one use; False when the grant is revoked or has no uses left (atomic)."""
        g = db.grants.c
        with self._tx() as conn:
            n = conn.execute(
                update(db.grants)
                .where(g.grant_id == grant_id, g.revoked_at.is_(None),
                       (g.max_uses.is_(None)) | (g.uses < g.max_uses))
                .values(uses=g.uses + 1)
            ).rowcount
            return bool(n)

    def epoch(self) -> int:
        """The last change-feed sequence number (0 before any change)."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(db.changes.c.seq))).scalar() or 0)

    def changes_since(self, seq: int) -> list[tuple[int, str, str | None]]:
        c = db.changes.c
        with self._read() as conn:
            rows = conn.execute(select(c.seq, c.kind, c.subject_id).where(c.seq > seq)
                                .order_by(c.seq)).all()
        return [(int(r.seq), str(r.kind), r.subject_id) for r in rows]

    def subject_templates(self, subject_id: str, model_pack: str) -> list[bytes]:
        t = db.templates.c
        with self._read() as conn:
            rows = conn.execute(select(t.ciphertext).where(
                t.subject_id == subject_id, t.model_pack == model_pack).order_by(t.template_id))
            return [bytes(r[0]) for r in rows]

    def template_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(db.templates))
                       .scalar_one())

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(select(1))

    def integrity_problem(self) -> str | None:
        """None when the database is sound; else a short, safe description.

        SQLite: ``PRAGMA quick_check`` on a fresh read-only connection (every page is read
        from the file, not from a pooled connection's cache: corruption anywhere in the
        file is found); PostgreSQL checks its own pages, so a query that works suffices.
        """
        from gate.db import sqlite_path

        if self.engine.dialect.name != "sqlite":
            try:
                self.ping()
            except StorageError:
                return "the database cannot be reached"
            return None
        path = sqlite_path(str(self.engine.url))
        if path is None:
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                rows = conn.execute("PRAGMA quick_check(1)").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return f"the database file cannot be read ({type(exc).__name__})"
        if rows and rows[0][0] == "ok":
            return None
        return "the database file is corrupt (PRAGMA quick_check failed)"

    def close(self) -> None:
        self.engine.dispose()


class _Tx:
    """A transaction whose database errors become ``StorageError`` (safe message)."""

    def __init__(self, engine: Engine, write: bool = True) -> None:
        self._engine = engine
        self._write = write
        self._cm: Any = None

    def __enter__(self) -> Connection:
        try:
            self._cm = self._engine.begin()
            return self._cm.__enter__()  # type: ignore[no-any-return]
        except SQLAlchemyError as exc:
            raise StorageError("the consent database is unavailable") from exc

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._cm.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as err:
            raise StorageError("the consent database write failed") from err
        if isinstance(exc, SQLAlchemyError):
            raise StorageError("the consent database is unavailable") from exc


class MemoryConsentStore:
    """In-memory fake with the same behaviour, for fast unit tests."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._subjects: dict[str, Subject] = {}
        self._templates: list[tuple[str, str, bytes]] = []
        self._grants: dict[str, Grant] = {}
        self._changes: list[tuple[int, str, str | None]] = []

    def _record(self, kind: str, subject_id: str | None) -> None:
        self._changes.append((len(self._changes) + 1, kind, subject_id))

    def add_subject(self, subject: Subject, ciphertexts: list[bytes], key_id: str) -> None:
        with self._lock:
            self._subjects[subject.subject_id] = subject
            self._templates += [(subject.subject_id, subject.model_pack, c) for c in ciphertexts]
            self._record("subject_add", subject.subject_id)

    def get_subject(self, subject_id: str) -> Subject | None:
        return self._subjects.get(subject_id)

    def list_subjects(self) -> list[Subject]:
        return list(self._subjects.values())

    def set_status(self, subject_id: str, status: SubjectStatus, *,
                   at: datetime) -> tuple[Subject, list[str]]:
        with self._lock:
            if subject_id not in self._subjects:
                raise NotFound("no such subject")
            s = self._subjects[subject_id].model_copy(update={"status": status})
            self._subjects[subject_id] = s
            revoked = []
            if status == "protected":
                for gid, g in list(self._grants.items()):
                    if g.subject_id == subject_id and g.revoked_at is None:
                        self._grants[gid] = g.model_copy(update={"revoked_at": at})
                        revoked.append(gid)
            self._record("consent", subject_id)
            return s, revoked

    def delete_subject(self, subject_id: str, *, subject_ref: str,
                       hooks: Sequence[ErasureHook] = ()) -> bool:
        """Hooks act on SQL tables, which this fake has none of: they are not run."""
        with self._lock:
            found = self._subjects.pop(subject_id, None) is not None
            self._templates = [t for t in self._templates if t[0] != subject_id]
            self._grants = {k: g for k, g in self._grants.items() if g.subject_id != subject_id}
            self._changes = [(q, k, None if s == subject_id else s) for q, k, s in self._changes]
            self._record("subject_delete", erasure_digest(subject_id))
            return found

    def export_rows(self, subject_id: str, *, subject_ref: str,
                    hooks: Sequence[ExportHook]) -> dict[str, Any]:
        return {}

    def iter_templates(self, model_pack: str) -> Iterator[tuple[str, bytes]]:
        return iter([(s, c) for s, p, c in list(self._templates) if p == model_pack])

    def template_packs(self) -> set[str]:
        return {p for _, p, _ in self._templates}

    def rewrite_templates(self, transform: Callable[[str, str, bytes], bytes | None]) -> int:
        with self._lock:
            out, changed = [], 0
            for s, p, c in self._templates:
                new = transform(s, p, c)
                changed += new is not None
                out.append((s, p, c if new is None else new))
            self._templates = out
            return changed

    def add_grant(self, grant: Grant) -> None:
        with self._lock:
            if grant.subject_id not in self._subjects:
                raise NotFound("no such subject")
            self._grants[grant.grant_id] = grant
            self._record("consent", grant.subject_id)

    def get_grant(self, grant_id: str) -> Grant | None:
        return self._grants.get(grant_id)

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        return [g for g in self._grants.values() if subject_id in (None, g.subject_id)]

    def grants_for(self, subject_ids: Iterable[str]) -> dict[str, list[Grant]]:
        return {s: self.list_grants(s) for s in set(subject_ids)}

    def revoke_grant(self, grant_id: str, at: datetime) -> tuple[Grant, bool]:
        with self._lock:
            grant = self._grants.get(grant_id)
            if grant is None:
                raise NotFound("no such grant")
            changed = grant.revoked_at is None
            if changed:
                grant = grant.model_copy(update={"revoked_at": at})
                self._grants[grant_id] = grant
                self._record("consent", grant.subject_id)
            return grant, changed

    def consume_use(self, grant_id: str) -> bool:
        with self._lock:
            g = self._grants.get(grant_id)
            if g is None or g.revoked_at is not None:
                return False
            if g.max_uses is not None and g.uses >= g.max_uses:
                return False
            self._grants[grant_id] = g.model_copy(update={"uses": g.uses + 1})
            return True

    def epoch(self) -> int:
        return len(self._changes)

    def changes_since(self, seq: int) -> list[tuple[int, str, str | None]]:
        return self._changes[seq:]

    def subject_templates(self, subject_id: str, model_pack: str) -> list[bytes]:
        return [c for s, p, c in self._templates if s == subject_id and p == model_pack]

    def template_count(self) -> int:
        return len(self._templates)

    def ping(self) -> None:
        return None

    def integrity_problem(self) -> str | None:
        return None

    def close(self) -> None:
        return None
