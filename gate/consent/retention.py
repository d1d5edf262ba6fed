"""Retention: destroy biometric data when it is no longer needed.

BIPA (740 ILCS 14/15(a)) requires destroying biometric identifiers when the purpose of
collecting them is satisfied or within 3 years of the person's last interaction, whichever
comes first; GDPR Art. 17 requires erasure without undue delay once asked (the portal's
erase button) or once the data is no longer necessary. ``run_retention`` erases every
subject whose last interaction is older than ``max_idle_days`` (default 3 years), expires
stale consent requests (deleting their encrypted templates), one-time links, sessions and
challenges, prunes revocation entries whose tokens expired, and drops rows of this
package that point to erased subjects.

Last interaction = the newest of: enrolment, and any audit event naming the subject
(a check that matched them, a grant, a revocation, a status change) or a portal sign-in.
``ActivityLog`` follows the audit log incrementally (cursor in ``consent_meta``) and keeps,
per keyed subject reference, the time last seen, and per grant the decisions that used it.
Erasure deletes both at once (``forget``, an erasure hook), not at the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from gate.audit.chain import AuditSink
from gate.clock import aware, parse_utc, utcnow
from gate.consent import tables as t
from gate.consent.store import Person

if TYPE_CHECKING:
    from gate.consent.service import ConsentService

log = logging.getLogger("gate.consent")

DEFAULT_MAX_IDLE_DAYS = 3 * 365
_CURSOR = "audit_seq"
_PAGE = 1000


class ActivityLog:
    """What the audit log says about subjects' activity and grants' uses."""

    def __init__(self, engine: Engine, audit: AuditSink, ref: Callable[[str], str]) -> None:
        self.engine = engine
        self.audit = audit
        self.ref = ref

    def _cursor(self, conn: Connection) -> int | None:
        row = conn.execute(select(t.consent_meta.c.value)
                           .where(t.consent_meta.c.key == _CURSOR)).first()
        return None if row is None else int(row[0])

    def catch_up(self, max_events: int = 1_000_000) -> int:
        """Index audit events appended since the last call; returns how many."""
        done = 0
        while done < max_events:
            with self.engine.connect() as conn:
                cursor = self._cursor(conn)
            if cursor is None:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(insert(t.consent_meta).values(key=_CURSOR, value="0"))
                except IntegrityError:
                    pass  # another process created it
                continue
            events = [{"seq": r.seq, "at": r.at, "event": r.event}
                      for r in self.audit.query(cursor, _PAGE)]
            if not events:
                break
            if not self._apply(cursor, events):
                continue  # another process indexed this page; read the cursor again
            done += len(events)
        return done

    def _apply(self, cursor: int, events: list[dict[str, Any]]) -> bool:
        last = max(int(e["seq"]) for e in events)
        seen: dict[str, datetime] = {}
        uses: list[dict[str, Any]] = []
        for e in events:
            at, body = parse_utc(e["at"]), e["event"]
            if at is None:
                continue
            for ref in body.get("subject_refs") or []:
                if ref not in seen or at > seen[ref]:
                    seen[ref] = at
            if body.get("kind") == "check":
                uses += [{"grant_id": g, "audit_seq": int(e["seq"]), "at": e["at"],
                          "app_id": body.get("app_id"), "operation": body.get("operation"),
                          "verdict": str(body.get("verdict"))}
                         for g in body.get("grant_ids") or []]
        m = t.consent_meta.c
        with self.engine.begin() as conn:
            # compare-and-set first: a concurrent indexer waits here, then finds 0 rows
            moved = conn.execute(update(t.consent_meta)
                                 .where(m.key == _CURSOR, m.value == str(cursor))
                                 .values(value=str(last))).rowcount
            if moved != 1:
                return False
            for ref, at in seen.items():
                self._touch(conn, ref, at)
            if uses:
                conn.execute(insert(t.consent_grant_uses), uses)
        return True

    @staticmethod
    def _touch(conn: Connection, ref: str, at: datetime) -> None:
        a = t.consent_activity.c
        row = conn.execute(select(a.last_seen_at).where(a.subject_ref == ref)).first()
        if row is None:
            conn.execute(insert(t.consent_activity).values(subject_ref=ref, last_seen_at=at))
        elif aware(row[0]) < at:
            conn.execute(update(t.consent_activity).where(a.subject_ref == ref)
                         .values(last_seen_at=at))

    def touch(self, subject_id: str, at: datetime) -> None:
        """Record an interaction that is not in the audit log (a portal sign-in)."""
        with self.engine.begin() as conn:
            self._touch(conn, self.ref(subject_id), aware(at))

    def last_seen(self, subject_id: str) -> datetime | None:
        a = t.consent_activity.c
        with self.engine.connect() as conn:
            row = conn.execute(select(a.last_seen_at)
                               .where(a.subject_ref == self.ref(subject_id))).first()
        return None if row is None else aware(row[0])

    def uses_of(self, grant_ids: list[str], limit: int = 200) -> list[dict[str, Any]]:
        u = t.consent_grant_uses.c
        if not grant_ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(u.grant_id, u.audit_seq, u.at, u.app_id, u.operation,
                                       u.verdict).where(u.grant_id.in_(grant_ids))
                                .order_by(u.audit_seq.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]



def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: the person's last-seen time and the decisions that used their grants."""
    conn.execute(delete(t.consent_activity)
                 .where(t.consent_activity.c.subject_ref == person.subject_ref))
    if person.grant_ids:
        conn.execute(delete(t.consent_grant_uses)
                     .where(t.consent_grant_uses.c.grant_id.in_(person.grant_ids)))


def export(conn: Connection, person: Person) -> dict[str, Any]:
    """Export hook: the last interaction, and the decisions that used the person's grants."""
    a, u = t.consent_activity.c, t.consent_grant_uses.c
    row = conn.execute(select(a.last_seen_at).where(a.subject_ref == person.subject_ref)).first()
    uses = [] if not person.grant_ids else [dict(r._mapping) for r in conn.execute(
        select(u.grant_id, u.audit_seq, u.at, u.app_id, u.operation, u.verdict)
        .where(u.grant_id.in_(person.grant_ids)).order_by(u.audit_seq.desc()).limit(1000))]
    return {"last_interaction": aware(row[0]).isoformat() if row else None,
            "decisions_using_grants": uses}


@dataclass(frozen=True, slots=True)
class RetentionReport:
    erased_subjects: int
    expired_requests: int
    deleted_links: int
    deleted_sessions: int
    pruned_revocations: int
    dry_run: bool = False
    #: Subjects that would be / were erased (ids; shown to the operator only).
    subject_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def idle_subjects(svc: ConsentService, now: datetime, max_idle_days: int) -> list[str]:
    """Subjects whose last interaction is older than ``max_idle_days`` before ``now``."""
    svc.activity.catch_up()
    cutoff = aware(now) - timedelta(days=max_idle_days)
    out = []
    for subject in svc.lifecycle.list_subjects():
        seen = svc.activity.last_seen(subject.subject_id)
        created = aware(subject.created_at)
        last = max(created, seen) if seen else created
        if last < cutoff:
            out.append(subject.subject_id)
    return out


def run_retention(svc: ConsentService, now: datetime | None = None,
                  max_idle_days: int = DEFAULT_MAX_IDLE_DAYS, *,
                  dry_run: bool = False) -> RetentionReport:
    """Erase idle subjects and expire stale consent state (see module doc)."""
    if max_idle_days < 1:
        raise ValueError("max_idle_days must be at least 1")
    when = aware(now or utcnow())
    idle = idle_subjects(svc, when, max_idle_days)
    if dry_run:
        return RetentionReport(len(idle), 0, 0, 0, 0, True, tuple(idle))
    for subject_id in idle:
        svc.lifecycle.erase(subject_id)
    expired = svc.requests.expire(when)
    links, sessions = svc.links.delete_expired(when)
    tokens = svc.lifecycle.tokens
    pruned = tokens.prune(when) if tokens is not None else 0
    report = RetentionReport(len(idle), expired, links, sessions, pruned, False, tuple(idle))
    svc.lifecycle.audit.append({"kind": "retention", "subject_refs": [],
                                "detail": f"erased={len(idle)} expired_requests={expired}"})
    log.info("retention run", extra={"erased": len(idle), "expired_requests": expired})
    return report
