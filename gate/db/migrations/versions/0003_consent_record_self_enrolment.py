"""grants record how consent was given; API keys name jurisdictions; app self-enrolments

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("consent", sa.JSON(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("jurisdictions", sa.JSON(), nullable=True))
    op.create_table(
        "self_enrolments",
        sa.Column("enrolment_id", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("enrolment_id"),
    )
    op.create_index("ix_self_enrolments_app", "self_enrolments", ["app_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_self_enrolments_app", table_name="self_enrolments")
    op.drop_table("self_enrolments")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("jurisdictions")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("consent")
