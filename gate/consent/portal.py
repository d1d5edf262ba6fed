"""What a person does in the consent portal, and the ways into it.

- **Sign-in**: a one-time link (``link``, delivered out of band by the operator) becomes
  a browser session; the person sees who may use their face, how, and the decisions that
  used each grant; revokes grants, switches to ``protected``, exports or erases their data
  (each through ``SubjectLifecycle``, the same rules as every other door).
- **Self-enrolment** (``GATE_CONSENT_SELF_ENROLMENT=true``): anyone can enrol themselves
  with a liveness-checked burst, usually as ``protected`` ("never generate me").
- **An app's self-enrolment** of its own user (``invite_self``): an app with a ``check``
  key asks the gate for a one-time link bound to (its app, its user id); the person opens
  it and proves with liveness that the face is theirs; the gate enrols it with that
  owner, so the app's requests for that user read the face as ``self``. The app never
  needs an operator key, and cannot bind a face the person did not present live.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from gate.clock import aware
from gate.consent import tables as t
from gate.consent.config import ConsentConfig
from gate.consent.lifecycle import SubjectLifecycle
from gate.consent.links import Links, NewSession, Session
from gate.consent.proof import Proof
from gate.consent.retention import ActivityLog
from gate.consent.store import Person
from gate.errors import ConsentError, NotFound
from gate.incident.attempts import Attempts
from gate.types import Grant, Requester, Subject, SubjectStatus


class SelfEnrolmentDisabled(ConsentError):
    code = "self_enrolment_disabled"


class AlreadyEnrolled(ConsentError):
    code = "already_enrolled"


@dataclass(frozen=True, slots=True)
class SelfEnrolment:
    """An app's invitation to one of its users (the app's view; no link)."""

    enrolment_id: str
    app_id: str
    user_id: str
    state: str  # pending | enrolled | expired
    subject_id: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None


class Portal:
    """See the module doc."""

    def __init__(self, engine: Engine, lifecycle: SubjectLifecycle, links: Links,
                 proof: Proof, activity: ActivityLog, config: ConsentConfig,
                 clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.lifecycle = lifecycle
        self.links = links
        self.proof = proof
        self.activity = activity
        self.config = config
        self.clock = clock

    # -- sign-in ------------------------------------------------------------------------
    def link(self, subject_id: str) -> str:
        """A one-time sign-in URL for the subject's portal (deliver it out of band)."""
        self.lifecycle.get_subject(subject_id)
        token = self.links.new_link(
            "portal", subject_id, self.clock() + timedelta(seconds=self.config.portal_link_ttl_s))
        return f"{self.config.public_url.rstrip('/')}/portal/#t={token}"

    def open_link(self, token: str) -> NewSession:
        subject_id = self.links.use_link(token, "portal")
        self.lifecycle.get_subject(subject_id)
        self.activity.touch(subject_id, self.clock())
        return self.links.new_session("portal", subject_id)

    # -- the person's own data ----------------------------------------------------------
    def overview(self, subject_id: str) -> dict[str, Any]:
        """Everything the portal shows: who may use their face, how, the decisions that
        used each grant, and the attempts refused (or sent for consent) because of it."""
        subject = self.lifecycle.get_subject(subject_id)
        now = self.clock()
        grants = sorted(self.lifecycle.list_grants(subject_id), key=lambda g: g.created_at,
                        reverse=True)
        self.activity.catch_up()
        uses = self.activity.uses_of([g.grant_id for g in grants])
        return {
            "subject": {"subject_id": subject.subject_id, "display_name": subject.display_name,
                        "status": subject.status, "guardian": subject.guardian,
                        "created_at": subject.created_at.isoformat(),
                        "template_count": subject.template_count},
            "grants": [{**g.model_dump(mode="json", exclude={"token"}),
                        "active": g.is_active(now),
                        "uses_left": None if g.max_uses is None else max(0, g.max_uses - g.uses)}
                       for g in grants],
            "decisions": uses,
            # refused / consent-asking checks because of their face (never the image)
            "attempts": [a.as_json() for a in Attempts(self.engine).of(subject_id, 100)],
        }

    def revoke(self, subject_id: str, grant_id: str) -> Grant:
        grant = self.lifecycle.store.get_grant(grant_id)
        if grant is None or grant.subject_id != subject_id:
            raise NotFound("no such grant")
        return self.lifecycle.revoke(grant_id)

    def set_status(self, subject_id: str, status: SubjectStatus) -> Subject:
        return self.lifecycle.set_status(subject_id, status)

    def export(self, subject_id: str) -> dict[str, Any]:
        self.activity.catch_up()
        return self.lifecycle.export(subject_id)

    def erase(self, subject_id: str) -> None:
        self.lifecycle.erase(subject_id)

    # -- self-enrolment in the portal -------------------------------------------------------
    def start_enrollment(self) -> tuple[NewSession, dict[str, Any]]:
        if not self.config.self_enrolment:
            raise SelfEnrolmentDisabled("self-enrolment is not enabled on this gate")
        new = self.links.new_session("enrol", "-", ttl_s=self.config.challenge_ttl_s * 2)
        return new, self.links.start_challenge(new.session)

    def complete_enrollment(self, session: Session, challenge_id: str,
                            frames: Sequence[bytes], display_name: str, *,
                            guardian: bool = False,
                            status: SubjectStatus = "protected") -> tuple[Subject, NewSession]:
        """Liveness-checked self-enrolment; returns the subject and a portal session."""
        if not self.config.self_enrolment:
            raise SelfEnrolmentDisabled("self-enrolment is not enabled on this gate")
        result = self.proof.answer_challenge(session, challenge_id, frames)
        assert result.reference is not None
        if self.proof.enrolled_match(result.reference) is not None:
            raise AlreadyEnrolled("you are enrolled already; use a sign-in link to your "
                                  "portal")
        subject = self.proof.enrol_from_burst(frames, result, display_name, guardian=guardian,
                                              status=status)
        self.links.end_session(session)
        return subject, self.links.new_session("portal", subject.subject_id)

    # -- an app's self-enrolment of its own user ------------------------------------------------
    def invite_self(self, app_id: str, user_id: str) -> tuple[SelfEnrolment, str]:
        """A one-time link for the app's user to enrol their own face (module doc)."""
        if not user_id or len(user_id) > 256:
            raise ConsentError("a self-enrolment needs the app's user id (1-256 characters)")
        now = self.clock()
        expires = now + timedelta(seconds=self.config.self_enrolment_ttl_s)
        enrolment_id = f"senr_{uuid.uuid4().hex[:20]}"
        with self.engine.begin() as conn:
            conn.execute(insert(t.self_enrolments).values(
                enrolment_id=enrolment_id, app_id=app_id, user_id=user_id, state="pending",
                created_at=now, expires_at=expires))
        token = self.links.new_link("self", enrolment_id, expires)
        link = f"{self.config.public_url.rstrip('/')}/portal/self.html#t={token}"
        return self.self_enrolment(enrolment_id, app_id), link

    def self_enrolment(self, enrolment_id: str, app_id: str | None = None) -> SelfEnrolment:
        c = t.self_enrolments.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.self_enrolments)
                               .where(c.enrolment_id == enrolment_id)).first()
        if row is None or (app_id is not None and row.app_id != app_id):
            raise NotFound("no such self-enrolment")
        state = row.state
        if state == "pending" and aware(row.expires_at) <= self.clock():
            state = "expired"
        return SelfEnrolment(row.enrolment_id, row.app_id, row.user_id, state, row.subject_id,
                             aware(row.created_at), aware(row.expires_at),
                             aware(row.resolved_at) if row.resolved_at else None)

    def open_self_link(self, token: str) -> tuple[NewSession, dict[str, Any]]:
        enrolment_id = self.links.use_link(token, "self")
        enrolment = self.self_enrolment(enrolment_id)
        if enrolment.state != "pending":
            raise ConsentError("this self-enrolment link is closed")
        new = self.links.new_session("self", enrolment_id,
                                     ttl_s=self.config.challenge_ttl_s * 2)
        return new, {"app_id": enrolment.app_id, **self.links.start_challenge(new.session)}

    def complete_self(self, session: Session, challenge_id: str, frames: Sequence[bytes],
                      display_name: str) -> Subject:
        """Enrol the live person as the app user's own face (status ``consenting``: only
        their own app user may use it without a grant)."""
        enrolment = self.self_enrolment(session.target)
        if enrolment.state != "pending":
            raise ConsentError("this self-enrolment link is closed")
        result = self.proof.answer_challenge(session, challenge_id, frames)
        assert result.reference is not None
        if self.proof.enrolled_match(result.reference) is not None:
            raise AlreadyEnrolled("this face is enrolled already; ask the operator to "
                                  "link it to your account")
        owner = Requester(app_id=enrolment.app_id, user_id=enrolment.user_id)
        subject = self.proof.enrol_from_burst(frames, result, display_name,
                                              status="consenting", owner=owner)
        c = t.self_enrolments.c
        with self.engine.begin() as conn:
            conn.execute(update(t.self_enrolments).where(
                c.enrolment_id == enrolment.enrolment_id, c.state == "pending")
                .values(state="enrolled", subject_id=subject.subject_id,
                        resolved_at=self.clock()))
        self.links.end_session(session)
        return subject


def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: the self-enrolment that produced the subject (it names the app's user
    id for that person) is deleted."""
    conn.execute(delete(t.self_enrolments)
                 .where(t.self_enrolments.c.subject_id == person.subject_id))
