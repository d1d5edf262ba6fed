"""One-time links, browser sessions, CSRF tokens and liveness challenges.

A link (portal sign-in, consent request, app self-enrolment) is a random 256-bit token
shown once; only its sha256 is stored, and using it marks it used atomically, once. A link
is exchanged for a short browser session (HttpOnly cookie; the CSRF token is derived from
it, so page scripts get it from the server). Liveness challenges ("turn left, then right")
belong to a session and are answered at most once. Messages never contain tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from gate.clock import aware
from gate.consent import tables as t
from gate.consent.config import ConsentConfig
from gate.consent.liveness import Pose, new_challenge
from gate.consent.store import Person
from gate.errors import ConsentError

SessionKind = Literal["portal", "request", "enrol", "self"]
LinkKind = Literal["portal", "request", "self"]


class LinkInvalid(ConsentError):
    """The link is unknown, used already, or expired (one message for all three)."""

    code = "link_invalid"


class SessionInvalid(ConsentError):
    code = "session_invalid"


class CsrfFailed(ConsentError):
    code = "csrf_failed"


class LivenessFailed(ConsentError):
    code = "liveness_failed"


@dataclass(frozen=True, slots=True)
class Session:
    """A browser session (from a link or self-enrolment). Holds no secret."""

    session_hash: str
    kind: SessionKind
    target: str
    verified_subject_id: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str  # goes into the HttpOnly cookie, never stored
    csrf: str
    session: Session


def secret_hash(token: str, purpose: str) -> str:
    return hashlib.sha256(f"{purpose}\x00{token}".encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """Derived from the (HttpOnly) session token: page scripts get it from the server."""
    digest = hashlib.sha256(f"csrf\x00{session_token}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Links:
    """Links, sessions and challenges on the consent tables (see module doc)."""

    def __init__(self, engine: Engine, config: ConsentConfig,
                 clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock

    # -- links ------------------------------------------------------------------------------
    def new_link(self, kind: LinkKind, target: str, expires_at: datetime) -> str:
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_links).values(
                link_hash=secret_hash(token, "link"), kind=kind, target=target,
                created_at=self.clock(), expires_at=expires_at))
        return token

    def use_link(self, token: str, kind: LinkKind) -> str:
        """Mark the link used (atomically, once) and return its target."""
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            raise LinkInvalid("this link is not valid (unknown, used or expired)")
        h, now, c = secret_hash(token, "link"), self.clock(), t.consent_links.c
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_links).where(
                c.link_hash == h, c.kind == kind, c.used_at.is_(None), c.expires_at > now)
                .values(used_at=now)).rowcount
            row = conn.execute(select(c.target).where(c.link_hash == h)).first()
        if n != 1 or row is None:
            raise LinkInvalid("this link is not valid (unknown, used or expired)")
        return str(row[0])

    # -- sessions ---------------------------------------------------------------------------
    def new_session(self, kind: SessionKind, target: str, *, ttl_s: int | None = None,
                    verified: str | None = None) -> NewSession:
        token = secrets.token_urlsafe(32)
        expires = self.clock() + timedelta(seconds=ttl_s or self.config.session_ttl_s)
        h = secret_hash(token, "session")
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_sessions).values(
                session_hash=h, kind=kind, target=target, verified_subject_id=verified,
                created_at=self.clock(), expires_at=expires))
        return NewSession(token, csrf_token(token), Session(h, kind, target, verified, expires))

    def session(self, token: str | None, kind: SessionKind) -> Session:
        """The live session of this cookie value, or ``SessionInvalid``."""
        if not token or len(token) > 100:
            raise SessionInvalid("no valid session; open your link again")
        c = t.consent_sessions.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.consent_sessions).where(
                c.session_hash == secret_hash(token, "session"), c.kind == kind)).first()
        if row is None or aware(row.expires_at) <= self.clock():
            raise SessionInvalid("no valid session; open your link again")
        return Session(row.session_hash, row.kind, row.target, row.verified_subject_id,
                       aware(row.expires_at))

    def mark_verified(self, session: Session, subject_id: str) -> None:
        """The person proved (with liveness) to be ``subject_id``."""
        with self.engine.begin() as conn:
            conn.execute(update(t.consent_sessions)
                         .where(t.consent_sessions.c.session_hash == session.session_hash)
                         .values(verified_subject_id=subject_id))

    @staticmethod
    def check_csrf(session_token: str, header: str | None) -> None:
        if not header or not hmac.compare_digest(csrf_token(session_token), header):
            raise CsrfFailed("the request lacks this session's CSRF token")

    def end_session(self, session: Session) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.consent_sessions)
                         .where(t.consent_sessions.c.session_hash == session.session_hash))

    def delete_expired(self, now: datetime) -> tuple[int, int]:
        """Drop expired or used links, expired sessions and challenges."""
        lk, ss, ch = t.consent_links.c, t.consent_sessions.c, t.consent_challenges.c
        with self.engine.begin() as conn:
            links = conn.execute(delete(t.consent_links).where(
                or_(lk.expires_at <= now, lk.used_at.is_not(None)))).rowcount
            sessions = conn.execute(delete(t.consent_sessions)
                                    .where(ss.expires_at <= now)).rowcount
            conn.execute(delete(t.consent_challenges).where(
                or_(ch.expires_at <= now, ch.used_at.is_not(None))))
        return int(links), int(sessions)

    # -- liveness challenges -----------------------------------------------------------------
    def start_challenge(self, session: Session) -> dict[str, Any]:
        poses = new_challenge()
        challenge_id = f"ch_{uuid.uuid4().hex[:20]}"
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_challenges).values(
                challenge_id=challenge_id, session_hash=session.session_hash,
                poses=list(poses), created_at=now,
                expires_at=now + timedelta(seconds=self.config.challenge_ttl_s)))
        return {"challenge_id": challenge_id, "poses": list(poses),
                "expires_in_s": self.config.challenge_ttl_s}

    def take_challenge(self, session: Session, challenge_id: str) -> list[Pose]:
        """The challenge's poses; it can be answered only once, before it expires."""
        c, now = t.consent_challenges.c, self.clock()
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_challenges).where(
                c.challenge_id == challenge_id, c.session_hash == session.session_hash,
                c.used_at.is_(None), c.expires_at > now).values(used_at=now)).rowcount
            row = conn.execute(select(c.poses).where(c.challenge_id == challenge_id)).first()
        if n != 1 or row is None:
            raise LivenessFailed("the challenge is unknown, answered already or expired; "
                                 "start again")
        return list(row[0])


def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: sessions about or verified as the person, their portal links."""
    s, lk = t.consent_sessions.c, t.consent_links.c
    conn.execute(delete(t.consent_sessions).where(
        or_(s.target == person.subject_id, s.verified_subject_id == person.subject_id)))
    conn.execute(delete(t.consent_links).where(lk.kind == "portal",
                                               lk.target == person.subject_id))
