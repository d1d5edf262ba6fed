"""Tables of the consent lifecycle (tokens, revocations, requests, links, sessions...).

Defined on ``gate.db.metadata`` so ``create_schema`` and Alembic see them. Nothing here
holds pixels. The only biometric column is ``consent_requests.template``: the encrypted
template of the face a request is about (when that person is not enrolled), deleted as
soon as the request is resolved or expires. Secrets (link and session tokens) are stored
only as sha256 hashes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from gate.db import metadata

_TS = DateTime(timezone=True)

#: Every signed grant token issued: lets the revocation list name the grants an app may
#: hold a token for (including grants deleted by erasure). No subject id is kept.
consent_tokens = Table(
    "consent_tokens",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("app_id", String(128), nullable=False),
    Column("kid", String(64), nullable=False),
    Column("issued_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Index("ix_consent_tokens_app", "app_id"),
)

#: The revocation feed read by SDKs: ``epoch`` only grows (AUTOINCREMENT on SQLite, a
#: sequence on PostgreSQL), so "everything after epoch N" never misses a row.
consent_revocations = Table(
    "consent_revocations",
    metadata,
    Column("epoch", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", String(64), nullable=False, unique=True),
    Column("app_id", String(128), nullable=False),
    Column("reason", String(16), nullable=False),  # revoked | erased | used_up
    Column("at", _TS, nullable=False),
    Column("token_expires_at", _TS, nullable=False),
    Index("ix_consent_revocations_app", "app_id", "epoch"),
    sqlite_autoincrement=True,
)

#: Consent requests made from ``needs_consent`` decisions.
consent_requests = Table(
    "consent_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("app_id", String(128), nullable=False),
    Column("user_id", String(256)),
    Column("operation", String(32), nullable=False),
    Column("content", JSON, nullable=False),
    Column("purpose", String(200)),
    Column("subject_id", String(64)),  # known when the face matched an enrolled person
    Column("decision_request_id", String(64)),
    Column("face_ref", String(32)),
    Column("image_sha256", String(64)),
    #: Encrypted (TemplateCipher) template of the requested face; NULL once resolved.
    Column("template", LargeBinary),
    Column("model_pack", String(128)),
    Column("grant_ttl_s", Integer),
    Column("max_uses", Integer),
    Column("state", String(16), nullable=False),  # pending | granted | refused | expired
    Column("grant_id", String(64)),
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Column("resolved_at", _TS),
    #: Consent formalities the jurisdictions require of the answer (JSON list).
    Column("formalities", JSON),
    Index("ix_consent_requests_state", "state", "expires_at"),
    Index("ix_consent_requests_subject", "subject_id"),
)

#: One-time links (portal sign-in, consent requests): only the token's hash is stored.
consent_links = Table(
    "consent_links",
    metadata,
    Column("link_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # portal | request
    Column("target", String(64), nullable=False),  # subject_id or request_id
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Column("used_at", _TS),
    Index("ix_consent_links_expiry", "expires_at"),
)

#: Browser sessions made by exchanging a link (or by self-enrolment).
consent_sessions = Table(
    "consent_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # portal | request | enrol
    Column("target", String(64), nullable=False),  # subject_id, request_id or "-"
    #: Set once the person proved, with liveness, to be the person the target is about.
    Column("verified_subject_id", String(64)),
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Index("ix_consent_sessions_expiry", "expires_at"),
)

#: Liveness challenges (the poses asked for, in order); each is answered at most once.
consent_challenges = Table(
    "consent_challenges",
    metadata,
    Column("challenge_id", String(64), primary_key=True),
    Column("session_hash", String(64), nullable=False),
    Column("poses", JSON, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Column("used_at", _TS),
)

#: Where an app receives consent-request webhooks, and the secret that signs them.
consent_webhooks = Table(
    "consent_webhooks",
    metadata,
    Column("app_id", String(128), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", _TS, nullable=False),
)

#: Last interaction per subject (keyed hash ``subject_ref``, as in the audit log).
consent_activity = Table(
    "consent_activity",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("last_seen_at", _TS, nullable=False),
)

#: Decisions that used a grant (from the audit log), for the subject portal.
consent_grant_uses = Table(
    "consent_grant_uses",
    metadata,
    Column("use_id", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", String(64), nullable=False),
    Column("audit_seq", Integer, nullable=False),
    Column("at", String(40), nullable=False),
    Column("app_id", String(128)),
    Column("operation", String(32)),
    Column("verdict", String(16), nullable=False),
    Index("ix_consent_grant_uses_grant", "grant_id"),
)

#: An app's invitation to one of its users to enrol their own face (liveness-checked), so
#: the app can recognise that user's face as ``self`` without an operator key.
self_enrolments = Table(
    "self_enrolments",
    metadata,
    Column("enrolment_id", String(64), primary_key=True),
    Column("app_id", String(128), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("state", String(16), nullable=False),  # pending | enrolled | expired
    Column("subject_id", String(64)),
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Column("resolved_at", _TS),
    Index("ix_self_enrolments_app", "app_id", "user_id"),
)

#: Small key/value state of the consent lifecycle (audit cursor, ...).
consent_meta = Table(
    "consent_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

TABLES = (consent_tokens, consent_revocations, consent_requests, consent_links,
          consent_sessions, consent_challenges, consent_webhooks, consent_activity,
          consent_grant_uses, self_enrolments, consent_meta)
