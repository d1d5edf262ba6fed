"""The audit log: an append-only hash chain of decisions and consent changes.

``hash = sha256(prev_hash || canonical_json(event))``, starting from 64 zeros. Events hold
no pixels, no embeddings and no names: subjects appear as keyed hashes (``subject_refs``),
images as sha256 digests. ``verify`` detects any edit, deletion, insertion or reordering.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gate import db
from gate.clock import utcnow
from gate.errors import AuditError
from gate.types import AuditVerification

GENESIS = "0" * 64


def canonical_json(event: Mapping[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def subject_ref(key: bytes, subject_id: str) -> str:
    """A non-identifying, keyed reference to a subject (survives erasure of the subject)."""
    return hmac.new(key, subject_id.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: str
    event: dict[str, Any]
    prev_hash: str
    hash: str


@runtime_checkable
class AuditSink(Protocol):
    def append(self, event: Mapping[str, Any]) -> AuditRecord: ...
    def query(self, since_seq: int = 0, limit: int = 100) -> list[AuditRecord]: ...
    def verify(self) -> AuditVerification: ...
    def for_request(self, request_id: str, limit: int = 100) -> list[AuditRecord]: ...
    def around(self, seq: int) -> list[AuditRecord]: ...


def _verify_records(rows: Sequence[tuple[int, str, str, str]]) -> AuditVerification:
    """Walk ``(seq, body, prev_hash, hash)`` rows in seq order."""
    prev = GENESIS
    expected_seq = 1
    for seq, body, prev_hash, digest in rows:
        if seq != expected_seq:
            return AuditVerification(ok=False, events=len(rows), first_bad_seq=expected_seq,
                                     problem="missing or reordered event")
        if prev_hash != prev:
            return AuditVerification(ok=False, events=len(rows), first_bad_seq=seq,
                                     problem="broken link to the previous event")
        if chain_hash(prev_hash, body) != digest:
            return AuditVerification(ok=False, events=len(rows), first_bad_seq=seq,
                                     problem="event content does not match its hash")
        try:
            json.loads(body)
        except ValueError:
            return AuditVerification(ok=False, events=len(rows), first_bad_seq=seq,
                                     problem="torn or unreadable event")
        prev = digest
        expected_seq += 1
    return AuditVerification(ok=True, events=len(rows))


class SqlAuditSink:
    """Hash-chained table; appends are serialised by the database transaction.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the head is read. PostgreSQL:
    a transaction-scoped advisory lock serialises concurrent replicas.
    """

    _PG_LOCK = 0x6761_7465  # "gate"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"

    def append(self, event: Mapping[str, Any]) -> AuditRecord:
        at = utcnow().isoformat()
        try:
            with self.engine.begin() as conn:
                if self._pg:
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({self._PG_LOCK})")
                head = conn.execute(
                    select(db.audit_events.c.seq, db.audit_events.c.hash)
                    .order_by(db.audit_events.c.seq.desc()).limit(1)
                ).first()
                seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
                body = canonical_json({"seq": seq, "at": at, **event})
                digest = chain_hash(prev, body)
                request_id = event.get("request_id")
                conn.execute(insert(db.audit_events).values(
                    seq=seq, at=at, body=body, prev_hash=prev, hash=digest,
                    request_id=request_id if isinstance(request_id, str) else None))
        except SQLAlchemyError as exc:
            raise AuditError("the audit log could not be written") from exc
        return AuditRecord(seq, at, json.loads(body), prev, digest)

    def query(self, since_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        t = db.audit_events.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(db.audit_events).where(t.seq > since_seq)
                                    .order_by(t.seq).limit(limit)).all()
        except SQLAlchemyError as exc:
            raise AuditError("the audit log could not be read") from exc
        return [AuditRecord(r.seq, r.at, json.loads(r.body), r.prev_hash, r.hash) for r in rows]

    def for_request(self, request_id: str, limit: int = 100) -> list[AuditRecord]:
        """The events about one request id, in order."""
        return self._select(db.audit_events.c.request_id == request_id, limit)

    def around(self, seq: int) -> list[AuditRecord]:
        """The event ``seq`` and its neighbours (a chain segment to verify)."""
        t = db.audit_events.c
        return self._select((t.seq >= seq - 1) & (t.seq <= seq + 1), 3)

    def _select(self, where: Any, limit: int) -> list[AuditRecord]:
        t = db.audit_events.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(db.audit_events).where(where).order_by(t.seq)
                                    .limit(limit)).all()
        except SQLAlchemyError as exc:
            raise AuditError("the audit log could not be read") from exc
        return [AuditRecord(r.seq, r.at, json.loads(r.body), r.prev_hash, r.hash) for r in rows]

    def verify(self) -> AuditVerification:
        t = db.audit_events.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(t.seq, t.body, t.prev_hash, t.hash)
                                    .order_by(t.seq)).all()
        except SQLAlchemyError as exc:
            raise AuditError("the audit log could not be read") from exc
        return _verify_records([(r[0], r[1], r[2], r[3]) for r in rows])


class MemoryAuditSink:
    """A list-backed chain for tests (same hashing, same verification)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: list[tuple[int, str, str, str]] = []

    def append(self, event: Mapping[str, Any]) -> AuditRecord:
        at = utcnow().isoformat()
        with self._lock:
            seq = len(self.rows) + 1
            prev = self.rows[-1][3] if self.rows else GENESIS
            body = canonical_json({"seq": seq, "at": at, **event})
            digest = chain_hash(prev, body)
            self.rows.append((seq, body, prev, digest))
        return AuditRecord(seq, at, json.loads(body), prev, digest)

    def query(self, since_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        return [AuditRecord(s, json.loads(b)["at"], json.loads(b), p, h)
                for s, b, p, h in self.rows if s > since_seq][:limit]

    def verify(self) -> AuditVerification:
        return _verify_records(self.rows)

    def for_request(self, request_id: str, limit: int = 100) -> list[AuditRecord]:
        return [r for r in self.query(0, len(self.rows))
                if r.event.get("request_id") == request_id][:limit]

    def around(self, seq: int) -> list[AuditRecord]:
        return [r for r in self.query(0, len(self.rows)) if seq - 1 <= r.seq <= seq + 1]


def segment_verifies(records: Sequence[AuditRecord], seq: int) -> bool:
    """Does event ``seq`` hash to its stored hash, and link to its neighbours in
    ``records`` (the previous event's hash is its ``prev_hash``, the next one's
    ``prev_hash`` is its hash)?"""
    by_seq = {r.seq: r for r in records}
    event = by_seq.get(seq)
    if event is None or chain_hash(event.prev_hash, canonical_json(event.event)) != event.hash:
        return False
    before, after = by_seq.get(seq - 1), by_seq.get(seq + 1)
    if seq > 1 and (before is None or before.hash != event.prev_hash):
        return False
    if seq == 1 and event.prev_hash != GENESIS:
        return False
    return after is None or after.prev_hash == event.hash
