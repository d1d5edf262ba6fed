"""incident response: marks, blocklist, reports, attempts, notifications; audit events
name their request id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))
        batch.create_index("ix_audit_events_request", ["request_id"])
    op.create_table(
        "marks",
        sa.Column("mark_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        *(sa.Column(f"band{i}", sa.Integer(), nullable=False) for i in range(5)),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("mark_id"),
    )
    for i in range(5):
        op.create_index(f"ix_marks_band{i}", "marks", [f"band{i}"])
    op.create_index("ix_marks_request", "marks", ["request_id"])
    op.create_table(
        "blocklist",
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("list_name", sa.String(128), nullable=True),
        sa.Column("report_id", sa.String(64), nullable=True),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("added_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_index("ix_blocklist_report", "blocklist", ["report_id"])
    op.create_table(
        "reports",
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("contact", sa.Text(), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("hashes", sa.JSON(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("deadline", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("report_id"),
    )
    op.create_index("ix_reports_status", "reports", ["status", "deadline"])
    op.create_index("ix_reports_subject", "reports", ["subject_id"])
    op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("app_id", sa.String(128), nullable=True),
        sa.Column("operation", sa.String(32), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id"),
    )
    op.create_index("ix_attempts_subject", "attempts", ["subject_id", "at"])
    op.create_index("ix_attempts_pending", "attempts", ["notified"])
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("next_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("notification_id"),
    )
    op.create_index("ix_notifications_due", "notifications", ["state", "next_at"])
    op.create_index("ix_notifications_subject", "notifications", ["subject_id"])


def downgrade() -> None:
    for table in ("notifications", "attempts", "reports", "blocklist", "marks"):
        op.drop_table(table)
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_request")
        batch.drop_column("request_id")
