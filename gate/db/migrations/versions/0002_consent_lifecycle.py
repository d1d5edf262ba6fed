"""consent lifecycle: tables of gate/consent/tables.py

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "consent_tokens",
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index("ix_consent_tokens_app", "consent_tokens", ["app_id"])
    op.create_table(
        "consent_revocations",
        sa.Column("epoch", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("token_expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("epoch"),
        sa.UniqueConstraint("grant_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_consent_revocations_app", "consent_revocations", ["app_id", "epoch"])
    op.create_table(
        "consent_requests",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(200), nullable=True),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("decision_request_id", sa.String(64), nullable=True),
        sa.Column("face_ref", sa.String(32), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("template", sa.LargeBinary(), nullable=True),
        sa.Column("model_pack", sa.String(128), nullable=True),
        sa.Column("grant_ttl_s", sa.Integer(), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_consent_requests_state", "consent_requests", ["state", "expires_at"])
    op.create_index("ix_consent_requests_subject", "consent_requests", ["subject_id"])
    op.create_table(
        "consent_links",
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("link_hash"),
    )
    op.create_index("ix_consent_links_expiry", "consent_links", ["expires_at"])
    op.create_table(
        "consent_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("verified_subject_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("session_hash"),
    )
    op.create_index("ix_consent_sessions_expiry", "consent_sessions", ["expires_at"])
    op.create_table(
        "consent_challenges",
        sa.Column("challenge_id", sa.String(64), nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("poses", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("challenge_id"),
    )
    op.create_table(
        "consent_webhooks",
        sa.Column("app_id", sa.String(128), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("app_id"),
    )
    op.create_table(
        "consent_activity",
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("subject_ref"),
    )
    op.create_table(
        "consent_grant_uses",
        sa.Column("use_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("app_id", sa.String(128), nullable=True),
        sa.Column("operation", sa.String(32), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("use_id"),
    )
    op.create_index("ix_consent_grant_uses_grant", "consent_grant_uses", ["grant_id"])
    op.create_table(
        "consent_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


_INDEXES = {
    "consent_tokens": ["ix_consent_tokens_app"],
    "consent_revocations": ["ix_consent_revocations_app"],
    "consent_requests": ["ix_consent_requests_state", "ix_consent_requests_subject"],
    "consent_links": ["ix_consent_links_expiry"],
    "consent_sessions": ["ix_consent_sessions_expiry"],
    "consent_grant_uses": ["ix_consent_grant_uses_grant"],
}


def downgrade() -> None:
    for table in ("consent_meta", "consent_grant_uses", "consent_activity", "consent_webhooks",
                  "consent_challenges", "consent_sessions", "consent_links", "consent_requests",
                  "consent_revocations", "consent_tokens"):
        for index in _INDEXES.get(table, []):
            op.drop_index(index, table_name=table)
        op.drop_table(table)
