"""Takedown reports on a legal clock.

The US TAKE IT DOWN Act (2025) gives covered platforms 48 hours from a valid request to
remove non-consensual intimate imagery; the deadline of a report is that, or the shortest
``takedown`` window of the jurisdiction packs in force, or ``GATE_TAKEDOWN_HOURS``.

On intake, at once and in one transaction: the report row, the image's usable PDQ hashes
in the blocklist (``provisional``: the image is denied everywhere from the next check),
and an audit event. The trace result is attached to the report. The image itself is
never stored: only its PDQ hashes and its SHA-256.

An operator moves an open report to ``actioned`` (the blocklist entries become
permanent) or ``rejected`` (its provisional entries are removed), with a reason; both are
audited (the reason's SHA-256 goes into the hash chain, the text into the report).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine, Row

from gate.audit.chain import AuditSink
from gate.clock import aware, utcnow
from gate.consent.store import Person
from gate.errors import InvalidRequest, NotFound
from gate.incident import tables as t
from gate.incident.blocklist import Blocklist, record_change
from gate.incident.trace import Trace

ReportReason = Literal["ncii", "impersonation", "minor", "other"]
ReportStatus = Literal["open", "actioned", "rejected"]
REASONS: tuple[str, ...] = ("ncii", "impersonation", "minor", "other")
DEFAULT_TAKEDOWN_HOURS = 48


class ReportConflict(InvalidRequest):
    """The report was already resolved."""

    code = "report_resolved"


class Report(BaseModel):
    """A takedown report (never the image: its hashes are in the blocklist)."""

    model_config = ConfigDict(frozen=True)

    report_id: str
    reason: ReportReason
    status: ReportStatus
    created_at: datetime
    deadline: datetime = Field(description="When the report must be acted on.")
    overdue: bool = Field(description="Still open after its deadline.")
    subject_id: str | None = None
    hashes: int = Field(description="PDQ hashes of the image now in the blocklist.")
    trace: Trace | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    resolved_by: str | None = None


class Reports:
    """The ``reports`` table (see module doc)."""

    def __init__(self, engine: Engine, blocklist: Blocklist, audit: AuditSink, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.blocklist = blocklist
        self.audit = audit
        self.clock = clock

    def open(self, *, reason: str, hashes: Sequence[str], image_sha256: str | None,
             takedown_hours: int, subject_id: str | None = None,
             contact: str | None = None) -> Report:
        """Record a report and block its hashes provisionally (one transaction)."""
        if reason not in REASONS:
            raise InvalidRequest(f"reason must be one of {', '.join(REASONS)}")
        if not hashes:
            raise InvalidRequest("the report has no usable image hash")
        if contact is not None and len(contact) > 500:
            raise InvalidRequest("contact is longer than 500 characters")
        now = self.clock()
        report_id = f"rpt_{uuid.uuid4().hex[:20]}"
        deadline = now + timedelta(hours=takedown_hours)
        with self.engine.begin() as conn:
            conn.execute(insert(t.reports).values(
                report_id=report_id, reason=reason, status="open", subject_id=subject_id,
                contact=contact, image_sha256=image_sha256, hashes=list(hashes),
                created_at=now, deadline=deadline))
            conn.execute(insert(t.blocklist), [
                {"entry_id": f"blk_{uuid.uuid4().hex[:20]}", "pdq": h, "quality": None,
                 "source": "report", "list_name": None, "report_id": report_id,
                 "provisional": True, "meta": {"reason": reason}, "added_at": now}
                for h in dict.fromkeys(hashes)])
            record_change(conn)
        self.blocklist.reload()
        self.audit.append({"kind": "report", "report_id": report_id, "reason": reason,
                           "status": "open", "hashes": len(hashes),
                           "deadline": deadline.isoformat()})
        return self.get(report_id)

    def attach_trace(self, report_id: str, trace: Trace) -> Report:
        with self.engine.begin() as conn:
            conn.execute(update(t.reports).where(t.reports.c.report_id == report_id)
                         .values(trace=trace.model_dump(mode="json")))
        return self.get(report_id)

    def get(self, report_id: str) -> Report:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.reports)
                               .where(t.reports.c.report_id == report_id)).first()
        if row is None:
            raise NotFound("no such report")
        return self._report(row)

    def list(self, *, status: str | None = None, overdue: bool = False,
             limit: int = 100, offset: int = 0) -> list[Report]:
        """Reports, the nearest deadline first (open ones before resolved ones)."""
        r = t.reports.c
        query = select(t.reports)
        if overdue:
            query = query.where(r.status == "open", r.deadline < self.clock())
        elif status is not None:
            query = query.where(r.status == status)
        query = query.order_by((r.status != "open"), r.deadline, r.report_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [self._report(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """``open`` and ``overdue`` (for the metrics gauges)."""
        r = t.reports.c
        now = self.clock()
        with self.engine.connect() as conn:
            open_ = conn.execute(select(func.count()).where(r.status == "open")).scalar_one()
            late = conn.execute(select(func.count()).where(
                r.status == "open", r.deadline < now)).scalar_one()
        return {"open": int(open_), "overdue": int(late)}

    def resolve(self, report_id: str, status: str, reason: str, *, by: str) -> Report:
        """``actioned`` or ``rejected``, with a reason (audited)."""
        if status not in ("actioned", "rejected"):
            raise InvalidRequest("status must be 'actioned' or 'rejected'")
        reason = reason.strip()
        if not reason or len(reason) > 2000:
            raise InvalidRequest("a resolution needs a reason (1 to 2000 characters)")
        now = self.clock()
        r, b = t.reports.c, t.blocklist.c
        with self.engine.begin() as conn:
            done = conn.execute(update(t.reports).where(
                r.report_id == report_id, r.status == "open").values(
                status=status, resolved_at=now, resolution=reason, resolved_by=by)).rowcount
            if not done:
                exists = conn.execute(select(r.status)
                                      .where(r.report_id == report_id)).first()
                if exists is None:
                    raise NotFound("no such report")
                raise ReportConflict(f"the report is already {exists[0]}")
            if status == "actioned":
                conn.execute(update(t.blocklist).where(b.report_id == report_id)
                             .values(provisional=False))
            else:
                conn.execute(t.blocklist.delete().where(
                    b.report_id == report_id, b.provisional.is_(True)))
            record_change(conn)
        self.blocklist.reload()
        report = self.get(report_id)
        self.audit.append({
            "kind": "report_resolved", "report_id": report_id, "status": status,
            "resolved_by": by,
            "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
            "seconds_to_action": round((now - report.created_at).total_seconds(), 1),
            "within_deadline": now <= report.deadline})
        return report

    def _report(self, row: Row[Any]) -> Report:
        deadline = aware(row.deadline)
        return Report(
            report_id=row.report_id, reason=row.reason, status=row.status,
            created_at=aware(row.created_at), deadline=deadline,
            overdue=row.status == "open" and self.clock() > deadline,
            subject_id=row.subject_id, hashes=len(row.hashes or []),
            trace=Trace.model_validate(row.trace) if row.trace else None,
            resolved_at=aware(row.resolved_at), resolution=row.resolution,
            resolved_by=row.resolved_by)


def forget(conn: Any, person: Person) -> None:
    """Erasure hook: a report keeps its hashes (the image stays blocked) but no longer
    names the person or their contact."""
    conn.execute(update(t.reports).where(t.reports.c.subject_id == person.subject_id)
                 .values(subject_id=None, contact=None))


def export(conn: Any, person: Person) -> dict[str, Any]:
    r = t.reports.c
    rows = conn.execute(select(r.report_id, r.reason, r.status, r.created_at, r.deadline)
                        .where(r.subject_id == person.subject_id)).all()
    return {"reports": [{"report_id": x.report_id, "reason": x.reason, "status": x.status,
                         "created_at": aware(x.created_at).isoformat(),
                         "deadline": aware(x.deadline).isoformat()} for x in rows]}
