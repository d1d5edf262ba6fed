"""Tables of incident response: issued marks, the known-image blocklist, takedown reports,
attempts on enrolled people's faces and the notifications about them.

Defined on ``gate.db.metadata`` (made by migration 0005). What names a person: reports
(``subject_id``, ``contact``), attempts and notifications (``subject_id``); their erasure
hooks are in ``gate.incident.attempts``, ``.reports`` and ``.notify`` (registered in
``gate.consent.hooks``). Marks and blocklist entries hold no person: a
request id, a PDQ hash of an image.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Index, Integer, String, Table, Text

from gate.db import metadata

_TS = DateTime(timezone=True)

#: Every invisible mark the gate embedded: its keyed 64-bit digest (hex), the request it
#: names, the key that made it, and the digest's five bit bands (indexed: a digest within
#: 4 bits of a query shares a band with it exactly).
marks = Table(
    "marks",
    metadata,
    Column("mark_id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(16), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("band0", Integer, nullable=False),
    Column("band1", Integer, nullable=False),
    Column("band2", Integer, nullable=False),
    Column("band3", Integer, nullable=False),
    Column("band4", Integer, nullable=False),
    Column("created_at", _TS, nullable=False),
    Index("ix_marks_band0", "band0"),
    Index("ix_marks_band1", "band1"),
    Index("ix_marks_band2", "band2"),
    Index("ix_marks_band3", "band3"),
    Index("ix_marks_band4", "band4"),
    Index("ix_marks_request", "request_id"),
)

#: Known images (PDQ hashes) no input or output may match (``core.known_image``).
blocklist = Table(
    "blocklist",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("pdq", String(64), nullable=False),
    Column("quality", Integer),
    Column("source", String(16), nullable=False),  # report | import | operator
    Column("list_name", String(128)),
    Column("report_id", String(64)),
    #: A report's hashes block at once, provisionally, until an operator decides.
    Column("provisional", Boolean, nullable=False),
    Column("meta", JSON),
    Column("added_at", _TS, nullable=False),
    Index("ix_blocklist_report", "report_id"),
)

#: Takedown reports (TAKE IT DOWN Act: 48 hours from a valid request, configurable).
reports = Table(
    "reports",
    metadata,
    Column("report_id", String(64), primary_key=True),
    Column("reason", String(16), nullable=False),  # ncii | impersonation | minor | other
    Column("status", String(16), nullable=False),  # open | actioned | rejected
    Column("subject_id", String(64)),
    Column("contact", Text),
    Column("image_sha256", String(64)),
    Column("hashes", JSON, nullable=False),  # usable PDQ hashes (hex)
    Column("trace", JSON),  # what trace found at intake
    Column("created_at", _TS, nullable=False),
    Column("deadline", _TS, nullable=False),
    Column("resolved_at", _TS),
    Column("resolution", Text),
    Column("resolved_by", String(128)),
    Index("ix_reports_status", "status", "deadline"),
    Index("ix_reports_subject", "subject_id"),
)

#: Checks refused, or sent for consent, because of an enrolled person's face: what the
#: person sees in the portal (never the image).
attempts = Table(
    "attempts",
    metadata,
    Column("attempt_id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(64), nullable=False),
    Column("request_id", String(64)),
    Column("app_id", String(128)),
    Column("operation", String(32)),
    Column("verdict", String(16), nullable=False),
    Column("at", _TS, nullable=False),
    Column("notified", Boolean, nullable=False),
    Index("ix_attempts_subject", "subject_id", "at"),
    Index("ix_attempts_pending", "notified"),
)

#: Signed webhook notifications about attempts (aggregated per person), with retries.
notifications = Table(
    "notifications",
    metadata,
    Column("notification_id", String(64), primary_key=True),
    Column("subject_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | sent | dead
    Column("tries", Integer, nullable=False),
    Column("next_at", _TS, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("last_error", String(200)),
    Index("ix_notifications_due", "state", "next_at"),
    Index("ix_notifications_subject", "subject_id"),
)

TABLES = (marks, blocklist, reports, attempts, notifications)
