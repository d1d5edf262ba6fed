"""Attempts on an enrolled person's face: what the person sees (portal, notifications).

A check that was refused (``deny``) or sent for consent (``needs_consent``) *because of an
enrolled person's face* (a protected subject, or a consenting one without a covering
grant) records one row per person: when, which app, which operation, what was decided.
Never the image, the prompt or the requester's user id.

Recording happens after the decision is made and audited, in its own transaction; it
changes nothing about the decision or its timing seen by the requester, and a failure to
record is logged, not raised (the decision stands). Notifications about attempts are
aggregated per person and sent later (``gate.incident.notify``): the requester cannot
learn from the answer whether anyone was told.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from gate.clock import aware, utcnow
from gate.consent.store import Person
from gate.incident import tables as t
from gate.types import Decision


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as the person sees it."""

    at: datetime
    app_id: str | None
    operation: str | None
    verdict: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "app_id": self.app_id,
                "operation": self.operation, "verdict": self.verdict}


def subjects_attempted(decision: Decision) -> list[str]:
    """The enrolled people a refused / consent-needing decision was about (see module)."""
    if decision.verdict not in ("deny", "needs_consent"):
        return []
    return list(dict.fromkeys(
        f.subject_id for f in decision.faces
        if f.subject_id and f.identity != "self" and f.grant_id is None))


class Attempts:
    """The ``attempts`` table (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, decision: Decision, *, app_id: str | None, operation: str,
               at: datetime | None = None) -> int:
        subjects = subjects_attempted(decision)
        if not subjects:
            return 0
        when = at or utcnow()
        with self.engine.begin() as conn:
            conn.execute(insert(t.attempts), [
                {"subject_id": s, "request_id": decision.request_id, "app_id": app_id,
                 "operation": operation, "verdict": decision.verdict, "at": when,
                 "notified": False} for s in subjects])
        return len(subjects)

    def of(self, subject_id: str, limit: int = 100) -> list[Attempt]:
        """The person's newest attempts first."""
        a = t.attempts.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(a.at, a.app_id, a.operation, a.verdict)
                                .where(a.subject_id == subject_id)
                                .order_by(a.at.desc(), a.attempt_id.desc())
                                .limit(limit)).all()
        return [Attempt(aware(r.at), r.app_id, r.operation, r.verdict) for r in rows]


def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: the person's attempts."""
    conn.execute(delete(t.attempts).where(t.attempts.c.subject_id == person.subject_id))


def export(conn: Connection, person: Person) -> dict[str, Any]:
    """Export hook: the attempts on the person's face (newest 1000)."""
    a = t.attempts.c
    rows = conn.execute(select(a.at, a.app_id, a.operation, a.verdict)
                        .where(a.subject_id == person.subject_id)
                        .order_by(a.at.desc()).limit(1000)).all()
    return {"attempts": [Attempt(aware(r.at), r.app_id, r.operation, r.verdict).as_json()
                         for r in rows]}


def as_json(attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
    return [a.as_json() for a in attempts]
