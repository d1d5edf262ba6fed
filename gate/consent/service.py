"""``ConsentService``: the consent lifecycle around one ``FaceGate``.

Signed grants and the revocation feed, consent requests (from a ``needs_consent``
decision to a grant scoped exactly to it), self-enrolment with liveness, the subject
portal (one-time sign-in links, sessions, revoke, protect, export, erase) and the steps
retention runs. Every route of ``gate.consent.http`` and every ``gate consent`` command
calls one method here; the decision itself stays in ``FaceGate.check``.

Secrets (link and session tokens) are random 256-bit values shown once and stored only as
sha256 hashes. Messages of the errors raised here never contain tokens, names or pixels.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gate import db
from gate.audit.chain import subject_ref
from gate.consent import tables as t
from gate.consent.liveness import (
    FaceSample,
    LivenessConfig,
    LivenessResult,
    Pose,
    analyse_picture,
    check_liveness,
    new_challenge,
)
from gate.consent.requests import (
    ConsentRequest,
    WebhookSender,
    plain_request,
    request_from_row,
    webhook_body,
)
from gate.consent.retention import ActivityLog
from gate.consent.tokens import DEFAULT_TOKEN_TTL_S, SigningKeyring, grant_claims
from gate.engine import FaceGate
from gate.errors import ConsentError, InvalidRequest, NotFound
from gate.types import CONTENT_CATEGORIES, OPERATIONS, Grant, Subject, SubjectStatus

log = logging.getLogger("gate.consent")

SessionKind = Literal["portal", "request", "enrol"]


# -- errors -----------------------------------------------------------------------------
class LinkInvalid(ConsentError):
    """The link is unknown, used already, or expired (one message for all three)."""

    code = "link_invalid"


class SessionInvalid(ConsentError):
    code = "session_invalid"


class CsrfFailed(ConsentError):
    code = "csrf_failed"


class LivenessFailed(ConsentError):
    code = "liveness_failed"


class IdentityMismatch(ConsentError):
    """The selfie does not match the face the request (or the subject) is about."""

    code = "identity_mismatch"


class RequestClosed(ConsentError):
    """The consent request was already answered or expired."""

    code = "request_closed"


class SelfEnrolmentDisabled(ConsentError):
    code = "self_enrolment_disabled"


class ConsentConfig(BaseSettings):
    """Knobs of the consent lifecycle (env prefix ``GATE_CONSENT_``)."""

    model_config = SettingsConfigDict(env_prefix="GATE_CONSENT_", extra="forbid", frozen=True)

    #: Base URL people reach the portal at (links are ``{public_url}/portal/...``).
    public_url: str = "http://127.0.0.1:8080"
    #: Ed25519 keyring; default ``signing.jwk`` beside the template key file.
    signing_key_file: Path | None = None
    token_ttl_s: int = Field(default=DEFAULT_TOKEN_TTL_S, ge=60)
    request_ttl_s: int = Field(default=7 * 86400, ge=60)
    portal_link_ttl_s: int = Field(default=15 * 60, ge=30)
    session_ttl_s: int = Field(default=30 * 60, ge=30)
    challenge_ttl_s: int = Field(default=120, ge=10)
    #: Cookies carry ``Secure`` (turn off only for plain-HTTP development).
    secure_cookies: bool = True
    #: Anyone may enrol themselves through ``/portal/enrol.html`` (liveness-checked).
    self_enrolment: bool = False
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1, le=10)
    #: The used-up state of counted grants reaches the revocation feed within this.
    revocation_resync_s: float = Field(default=5.0, gt=0)
    liveness_front_max: float = 0.08
    liveness_turn_min: float = 0.16
    liveness_same_person_min: float = 0.30

    def liveness(self) -> LivenessConfig:
        return LivenessConfig(front_max=self.liveness_front_max,
                              turn_min=self.liveness_turn_min,
                              same_person_min=self.liveness_same_person_min)


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


@dataclass(frozen=True, slots=True)
class RevocationFeedPage:
    epoch: int
    revoked: list[dict[str, Any]]
    more: bool


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _must(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def secret_hash(token: str, purpose: str) -> str:
    return hashlib.sha256(f"{purpose}\x00{token}".encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """Derived from the (HttpOnly) session token: page scripts get it from the server."""
    digest = hashlib.sha256(f"csrf\x00{session_token}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else -1.0


class ConsentService:
    """The consent lifecycle API (see module doc)."""

    def __init__(self, gate: FaceGate, config: ConsentConfig | None = None, *,
                 clock: Callable[[], datetime] | None = None,
                 sender: WebhookSender | None = None) -> None:
        self.gate = gate
        self.config = config or ConsentConfig()
        self.clock = clock or (lambda: datetime.now(UTC))
        engine: Engine | None = getattr(gate.parts.store, "engine", None)
        self.engine = engine or db.make_engine(gate.settings.resolved_database_url())
        db.metadata.create_all(self.engine, tables=list(t.TABLES))
        key_file = self.config.signing_key_file or \
            gate.settings.resolved_key_file().parent / "signing.jwk"
        self.keyring = SigningKeyring(key_file)
        self.sender = sender or WebhookSender(timeout_s=self.config.webhook_timeout_s,
                                              attempts=self.config.webhook_attempts)
        self.activity = ActivityLog(gate, self.engine)
        self._rev_lock = threading.Lock()
        self._rev_seen: tuple[int, float] = (-1, 0.0)

    def now(self) -> datetime:
        return _must(self.clock())

    def close(self) -> None:
        self.sender.close()

    def _audit(self, kind: str, subject_ids: Iterable[str], detail: str) -> None:
        key = self.gate.parts.audit_key
        self.gate.parts.audit.append({"kind": kind, "detail": detail, "subject_refs": sorted(
            subject_ref(key, s) for s in subject_ids)})

    # -- signed grants --------------------------------------------------------------------
    def grant(self, subject_id: str, *, app_id: str, operations: Iterable[str],
              content: Iterable[str] = ("general",), user_id: str | None = None,
              purpose: str | None = None, expires_at: datetime | None = None,
              not_before: datetime | None = None, max_uses: int | None = None) -> Grant:
        """``FaceGate.grant`` and the grant's signed token (``Grant.token``)."""
        grant = self.gate.grant(subject_id, app_id=app_id, operations=operations,
                                content=content, user_id=user_id, purpose=purpose,
                                expires_at=expires_at, not_before=not_before,
                                max_uses=max_uses)
        return self._with_token(grant)

    def token_for(self, grant_id: str, app_id: str | None = None) -> Grant:
        """A fresh token for an existing, active grant (of ``app_id`` when given)."""
        grant = self.gate.parts.store.get_grant(grant_id)
        if grant is None or (app_id is not None and grant.app_id != app_id):
            raise NotFound("no such grant")
        if not grant.is_active(self.now()):
            raise ConsentError("the grant is revoked, expired or used up")
        return self._with_token(grant)

    def _with_token(self, grant: Grant) -> Grant:
        claims = grant_claims(grant, now=self.now(), max_ttl_s=self.config.token_ttl_s)
        token = self.keyring.sign(claims)
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        c = t.consent_tokens.c
        with self.engine.begin() as conn:
            row = conn.execute(select(c.expires_at).where(c.grant_id == grant.grant_id)).first()
            if row is None:
                conn.execute(insert(t.consent_tokens).values(
                    grant_id=grant.grant_id, app_id=grant.app_id, kid=self.keyring.active_kid,
                    issued_at=self.now(), expires_at=expires))
            elif _must(row[0]) < expires:
                conn.execute(update(t.consent_tokens).where(c.grant_id == grant.grant_id)
                             .values(expires_at=expires, kid=self.keyring.active_kid))
        return grant.model_copy(update={"token": token})

    def revoke(self, grant_id: str) -> Grant:
        grant = self.gate.revoke(grant_id)
        self.sync_revocations(force=True)
        return grant

    def jwks(self) -> dict[str, Any]:
        return self.keyring.jwks()

    def rotate_signing_key(self) -> str:
        return self.keyring.rotate()

    def sync_revocations(self, *, force: bool = False) -> int:
        """Add newly revoked / erased / used-up grants with tokens to the feed.

        Runs when the consent change feed moved (revocations, erasures) and at least every
        ``revocation_resync_s`` (used-up grants change no feed row).
        """
        epoch, now_m = self.gate.parts.store.epoch(), _monotonic()
        with self._rev_lock:
            seen_epoch, seen_at = self._rev_seen
            if not force and epoch == seen_epoch and \
                    now_m - seen_at < self.config.revocation_resync_s:
                return 0
            added = self._sync_revocations()
            self._rev_seen = (epoch, now_m)
            return added

    def _sync_revocations(self) -> int:
        tok, g, r = t.consent_tokens.c, db.grants.c, t.consent_revocations.c
        now = self.now()
        query = (
            select(tok.grant_id, tok.app_id, tok.expires_at, g.grant_id.label("live"),
                   g.revoked_at)
            .select_from(t.consent_tokens
                         .outerjoin(db.grants, g.grant_id == tok.grant_id)
                         .outerjoin(t.consent_revocations, r.grant_id == tok.grant_id))
            .where(r.grant_id.is_(None), tok.expires_at > now,
                   or_(g.grant_id.is_(None), g.revoked_at.is_not(None),
                       and_(g.max_uses.is_not(None), g.uses >= g.max_uses))))
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    rows = conn.execute(query).all()
                    if rows:
                        conn.execute(insert(t.consent_revocations), [{
                            "grant_id": row.grant_id, "app_id": row.app_id,
                            "reason": "erased" if row.live is None else
                            "revoked" if row.revoked_at is not None else "used_up",
                            "at": now, "token_expires_at": row.expires_at} for row in rows])
                    return len(rows)
            except IntegrityError:
                continue  # another process listed some of them first; look again
        return 0

    def revocations(self, app_id: str, since_epoch: int = 0,
                    limit: int = 5000) -> RevocationFeedPage:
        """Grant ids of ``app_id`` revoked after ``since_epoch`` (the SDK's feed)."""
        self.sync_revocations()
        r = t.consent_revocations.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(r.epoch, r.grant_id, r.reason)
                                .where(r.app_id == app_id, r.epoch > since_epoch)
                                .order_by(r.epoch).limit(limit + 1)).all()
            head = int(conn.execute(select(func.max(r.epoch))).scalar() or 0)
        more = len(rows) > limit
        rows = rows[:limit]
        epoch = int(rows[-1].epoch) if more else max(head, since_epoch)
        return RevocationFeedPage(epoch=epoch, more=more, revoked=[
            {"grant_id": x.grant_id, "epoch": int(x.epoch), "reason": x.reason} for x in rows])

    def prune_revocations(self, now: datetime) -> int:
        """Drop entries whose tokens have expired (an expired token fails anyway); the
        newest entry stays so the epoch never goes back."""
        r = t.consent_revocations.c
        with self.engine.begin() as conn:
            head = conn.execute(select(func.max(r.epoch))).scalar()
            if head is None:
                return 0
            return int(conn.execute(delete(t.consent_revocations).where(
                r.token_expires_at < now, r.epoch < head)).rowcount)

    # -- one-time links and sessions ------------------------------------------------------
    def _new_link(self, kind: str, target: str, expires_at: datetime) -> str:
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_links).values(
                link_hash=secret_hash(token, "link"), kind=kind, target=target,
                created_at=self.now(), expires_at=expires_at))
        return token

    def _use_link(self, token: str, kind: str) -> str:
        """Mark the link used (atomically, once) and return its target."""
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            raise LinkInvalid("this link is not valid (unknown, used or expired)")
        h, now, c = secret_hash(token, "link"), self.now(), t.consent_links.c
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_links).where(
                c.link_hash == h, c.kind == kind, c.used_at.is_(None), c.expires_at > now)
                .values(used_at=now)).rowcount
            row = conn.execute(select(c.target).where(c.link_hash == h)).first()
        if n != 1 or row is None:
            raise LinkInvalid("this link is not valid (unknown, used or expired)")
        return str(row[0])

    def _new_session(self, kind: SessionKind, target: str, *, ttl_s: int | None = None,
                     verified: str | None = None) -> NewSession:
        token = secrets.token_urlsafe(32)
        expires = self.now() + timedelta(seconds=ttl_s or self.config.session_ttl_s)
        h = secret_hash(token, "session")
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_sessions).values(
                session_hash=h, kind=kind, target=target, verified_subject_id=verified,
                created_at=self.now(), expires_at=expires))
        return NewSession(token, csrf_token(token), Session(h, kind, target, verified, expires))

    def session(self, token: str | None, kind: SessionKind) -> Session:
        """The live session of this cookie value, or ``SessionInvalid``."""
        if not token or len(token) > 100:
            raise SessionInvalid("no valid session; open your link again")
        c = t.consent_sessions.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.consent_sessions).where(
                c.session_hash == secret_hash(token, "session"), c.kind == kind)).first()
        if row is None or _must(row.expires_at) <= self.now():
            raise SessionInvalid("no valid session; open your link again")
        return Session(row.session_hash, row.kind, row.target, row.verified_subject_id,
                       _must(row.expires_at))

    @staticmethod
    def check_csrf(session_token: str, header: str | None) -> None:
        if not header or not hmac.compare_digest(csrf_token(session_token), header):
            raise CsrfFailed("the request lacks this session's CSRF token")

    def end_session(self, session: Session) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.consent_sessions)
                         .where(t.consent_sessions.c.session_hash == session.session_hash))

    def delete_expired_secrets(self, now: datetime) -> tuple[int, int]:
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

    # -- liveness challenges --------------------------------------------------------------
    def start_challenge(self, session: Session) -> dict[str, Any]:
        poses = new_challenge()
        challenge_id = f"ch_{uuid.uuid4().hex[:20]}"
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_challenges).values(
                challenge_id=challenge_id, session_hash=session.session_hash,
                poses=list(poses), created_at=self.now(),
                expires_at=self.now() + timedelta(seconds=self.config.challenge_ttl_s)))
        return {"challenge_id": challenge_id, "poses": list(poses),
                "expires_in_s": self.config.challenge_ttl_s}

    def _answer_challenge(self, session: Session, challenge_id: str,
                          frames: Sequence[bytes]) -> LivenessResult:
        c, now = t.consent_challenges.c, self.now()
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_challenges).where(
                c.challenge_id == challenge_id, c.session_hash == session.session_hash,
                c.used_at.is_(None), c.expires_at > now).values(used_at=now)).rowcount
            row = conn.execute(select(c.poses).where(c.challenge_id == challenge_id)).first()
        if n != 1 or row is None:
            raise LivenessFailed("the challenge is unknown, answered already or expired; "
                                 "start again")
        poses: list[Pose] = list(row[0])
        result = check_liveness(self.gate, frames, poses, self.config.liveness())
        if not result.passed:
            raise LivenessFailed("liveness check failed: " + "; ".join(result.reasons))
        return result

    def _enrol_from_burst(self, frames: Sequence[bytes], result: LivenessResult,
                          display_name: str | None, guardian: bool,
                          status: SubjectStatus) -> Subject:
        if not display_name or not display_name.strip():
            raise InvalidRequest("a name is needed to enrol", field="display_name")
        frontal = [frames[i] for i in result.frontal_indices]
        return self.gate.enroll(frontal, display_name, status=status, guardian=guardian)

    def _enrolled_match(self, reference: np.ndarray, *, to_act_as: bool = False) -> str | None:
        """The enrolled subject ``reference`` matches. ``to_act_as``: the person will act as
        that subject (grant consent), so the stricter allow threshold applies."""
        threshold = self._prove_threshold() if to_act_as else self.gate.settings.match_threshold
        hits = self.gate.parts.index.search(reference[None, :].astype(np.float32), k=1)
        if hits and hits[0] and hits[0][0].similarity >= threshold:
            return str(hits[0][0].subject_id)
        return None

    def _matches_subject(self, subject_id: str, reference: np.ndarray) -> bool:
        pack = self.gate.parts.embedder.pack_id
        blobs = self.gate.parts.store.subject_templates(subject_id, pack)
        vectors = [self.gate.parts.cipher.decrypt(b, subject_id=subject_id, pack_id=pack)
                   for b in blobs]
        best = max((_cosine(reference, v) for v in vectors), default=-1.0)
        return best >= self._prove_threshold()

    # -- consent requests -----------------------------------------------------------------
    def create_request(self, app_id: str, *, image: bytes, operation: str,
                       content: Sequence[str] = ("general",), bbox: Sequence[float] | None = None,
                       user_id: str | None = None, purpose: str | None = None,
                       decision_request_id: str | None = None, face_ref: str | None = None,
                       expires_in_s: int | None = None, grant_ttl_s: int | None = None,
                       max_uses: int | None = None) -> tuple[ConsentRequest, str]:
        """A pending request about the face in ``image`` (at ``bbox``) and its one-time
        link for the person. Returns ``(request, link_url)``; the link is shown once."""
        if operation not in OPERATIONS:
            raise InvalidRequest("unknown operation", field="operation")
        cats = list(dict.fromkeys(content)) or ["general"]
        if any(c not in CONTENT_CATEGORIES for c in cats):
            raise InvalidRequest("unknown content category", field="content")
        if max_uses is not None and max_uses < 1:
            raise InvalidRequest("max_uses must be at least 1", field="max_uses")
        face = self._request_face(image, bbox)
        subject_id = self._enrolled_match(face.vector)
        if subject_id is not None:
            subject = self.gate.parts.store.get_subject(subject_id)
            if subject is not None and subject.status == "protected":
                raise ConsentError("this person does not accept consent requests")
        now = self.now()
        ttl = min(expires_in_s or self.config.request_ttl_s, self.config.request_ttl_s)
        request_id = f"creq_{uuid.uuid4().hex[:20]}"
        pack = self.gate.parts.embedder.pack_id
        template = None if subject_id else self.gate.parts.cipher.encrypt(
            face.vector, subject_id=f"consent-request:{request_id}", pack_id=pack)
        row = {"request_id": request_id, "app_id": app_id, "user_id": user_id,
               "operation": operation, "content": cats, "purpose": purpose,
               "subject_id": subject_id, "decision_request_id": decision_request_id,
               "face_ref": face_ref, "image_sha256": hashlib.sha256(image).hexdigest(),
               "template": template, "model_pack": pack, "grant_ttl_s": grant_ttl_s,
               "max_uses": max_uses, "state": "pending", "created_at": now,
               "expires_at": now + timedelta(seconds=ttl)}
        with self.engine.begin() as conn:
            conn.execute(insert(t.consent_requests).values(**row))
        token = self._new_link("request", request_id, now + timedelta(seconds=ttl))
        self._audit("consent_request", [subject_id] if subject_id else [], request_id)
        link = f"{self.config.public_url.rstrip('/')}/portal/request.html#t={token}"
        return self._load_request(request_id), link

    def _request_face(self, image: bytes, bbox: Sequence[float] | None) -> FaceSample:
        from gate.vision.detect import box_iou

        faces, _, _ = analyse_picture(self.gate, image, what="image")
        if bbox is not None:
            if len(bbox) != 4:
                raise InvalidRequest("bbox must be [x_min, y_min, x_max, y_max]", field="bbox")
            box = tuple(float(v) for v in bbox)
            faces = [f for f in faces if box_iou(f.bbox_px, box) >= 0.5]
            faces = sorted(faces, key=lambda f: -box_iou(f.bbox_px, box))[:1]
        if len(faces) != 1:
            raise InvalidRequest("the image must show exactly one face at bbox (give the "
                                 "face's bbox from the decision)", field="bbox")
        return faces[0]

    def _load_request(self, request_id: str, app_id: str | None = None,
                      token: str | None = None) -> ConsentRequest:
        c = t.consent_requests.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.consent_requests)
                               .where(c.request_id == request_id)).first()
        if row is None or (app_id is not None and row.app_id != app_id):
            raise NotFound("no such consent request")
        return request_from_row(row, _aware, token)

    def get_request(self, app_id: str, request_id: str) -> ConsentRequest:
        """The app's poll: state, and once granted the grant id and a signed token."""
        request = self._load_request(request_id, app_id)
        if request.state == "pending" and request.expires_at <= self.now():
            self.expire_requests(self.now(), only=request_id)
            request = self._load_request(request_id, app_id)
        if request.state == "granted" and request.grant_id:
            grant = self.gate.parts.store.get_grant(request.grant_id)
            if grant is not None and grant.is_active(self.now()):
                token = self._with_token(grant).token
                request = request.model_copy(update={"grant_token": token})
        return request

    def open_request_link(self, token: str) -> NewSession:
        """Exchange a consent-request link for a short session (the link dies)."""
        request_id = self._use_link(token, "request")
        request = self._load_request(request_id)
        if request.state != "pending" or request.expires_at <= self.now():
            raise RequestClosed("this consent request is closed")
        ttl = min(self.config.session_ttl_s,
                  int((request.expires_at - self.now()).total_seconds()))
        return self._new_session("request", request_id, ttl_s=max(ttl, 1))

    def request_view(self, session: Session) -> dict[str, Any]:
        request = self._load_request(session.target)
        view = dict(plain_request(request))
        view["verified"] = session.verified_subject_id is not None
        return view

    def prove_for_request(self, session: Session, challenge_id: str, frames: Sequence[bytes],
                          display_name: str | None = None, guardian: bool = False) -> bool:
        """Liveness burst, matched to the request's face; enrols the person if needed."""
        request = self._pending(session.target)
        result = self._answer_challenge(session, challenge_id, frames)
        assert result.reference is not None
        if request.subject_id is not None:
            if not self._matches_subject(request.subject_id, result.reference):
                raise IdentityMismatch("you do not match the person this request is about")
            subject_id = request.subject_id
        else:
            if not self._matches_request_face(request.request_id, result.reference):
                raise IdentityMismatch("you do not match the person this request is about")
            subject_id = self._enrolled_match(result.reference, to_act_as=True) or \
                self._enrol_from_burst(frames, result, display_name, guardian,
                                       "consenting").subject_id
        with self.engine.begin() as conn:
            conn.execute(update(t.consent_sessions)
                         .where(t.consent_sessions.c.session_hash == session.session_hash)
                         .values(verified_subject_id=subject_id))
        return True

    def _matches_request_face(self, request_id: str, reference: np.ndarray) -> bool:
        c = t.consent_requests.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c.template, c.model_pack)
                               .where(c.request_id == request_id)).first()
        if row is None or row.template is None:
            return False
        vector = self.gate.parts.cipher.decrypt(bytes(row.template),
                                                subject_id=f"consent-request:{request_id}",
                                                pack_id=row.model_pack)
        return _cosine(reference, vector) >= self._prove_threshold()

    def _prove_threshold(self) -> float:
        """Similarity a live person needs to prove they are a subject (a permissive act)."""
        return self.gate.settings.permissive_threshold

    def _pending(self, request_id: str) -> ConsentRequest:
        request = self._load_request(request_id)
        if request.state != "pending" or request.expires_at <= self.now():
            raise RequestClosed("this consent request is closed")
        return request

    def decide(self, session: Session, accept: bool) -> ConsentRequest:
        """The person's answer. Granting records a grant scoped exactly to the request."""
        request = self._pending(session.target)
        subject_id = session.verified_subject_id
        if subject_id is None:
            raise SessionInvalid("prove who you are first")
        grant = None
        if accept:
            expires = None if request.grant_ttl_s is None else \
                self.now() + timedelta(seconds=request.grant_ttl_s)
            grant = self.gate.grant(subject_id, app_id=request.app_id,
                                    operations=[request.operation], content=request.content,
                                    user_id=request.user_id, purpose=request.purpose,
                                    expires_at=expires, max_uses=request.max_uses)
        state = "granted" if accept else "refused"
        if not self._resolve(request.request_id, state, subject_id,
                             grant.grant_id if grant else None):
            if grant is not None:
                self.gate.revoke(grant.grant_id)
            raise RequestClosed("this consent request is closed")
        self.end_session(session)
        self._audit("consent_request_" + state, [subject_id], request.request_id)
        resolved = self._load_request(request.request_id)
        self._notify(resolved)
        return resolved

    def _resolve(self, request_id: str, state: str, subject_id: str | None,
                 grant_id: str | None) -> bool:
        c = t.consent_requests.c
        values: dict[str, Any] = {"state": state, "template": None,
                                  "resolved_at": self.now(), "grant_id": grant_id}
        if subject_id is not None:
            values["subject_id"] = subject_id
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_requests)
                             .where(c.request_id == request_id, c.state == "pending")
                             .values(**values)).rowcount
        return n == 1

    def expire_requests(self, now: datetime, only: str | None = None) -> int:
        """Expire pending requests past their expiry (deleting their templates)."""
        c = t.consent_requests.c
        where = [c.state == "pending", c.expires_at <= now]
        if only is not None:
            where.append(c.request_id == only)
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(c.request_id).where(*where))]
        count = 0
        for request_id in ids:
            if self._resolve(request_id, "expired", None, None):
                count += 1
                self._notify(self._load_request(request_id))
        return count

    def set_webhook(self, app_id: str, url: str) -> str:
        """Register (or replace) ``app_id``'s webhook URL; returns the new signing secret."""
        if not url.startswith(("https://", "http://")) or len(url) > 2000:
            raise InvalidRequest("the webhook URL must be http(s)", field="url")
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(delete(t.consent_webhooks).where(t.consent_webhooks.c.app_id == app_id))
            conn.execute(insert(t.consent_webhooks).values(
                app_id=app_id, url=url, secret=secret, enabled=True, created_at=self.now()))
        return secret

    def _notify(self, request: ConsentRequest) -> None:
        w = t.consent_webhooks.c
        with self.engine.connect() as conn:
            row = conn.execute(select(w.url, w.secret).where(
                w.app_id == request.app_id, w.enabled.is_(True))).first()
        if row is not None:
            event = f"consent_request.{request.state}"
            self.sender.submit(row.url, row.secret, event, webhook_body(event, request))

    # -- self-enrolment --------------------------------------------------------------------
    def start_enrollment(self) -> tuple[NewSession, dict[str, Any]]:
        if not self.config.self_enrolment:
            raise SelfEnrolmentDisabled("self-enrolment is not enabled on this gate")
        new = self._new_session("enrol", "-", ttl_s=self.config.challenge_ttl_s * 2)
        return new, self.start_challenge(new.session)

    def complete_enrollment(self, session: Session, challenge_id: str,
                            frames: Sequence[bytes], display_name: str, *,
                            guardian: bool = False,
                            status: SubjectStatus = "protected") -> tuple[Subject, NewSession]:
        """Liveness-checked self-enrolment; returns the subject and a portal session."""
        if not self.config.self_enrolment:
            raise SelfEnrolmentDisabled("self-enrolment is not enabled on this gate")
        result = self._answer_challenge(session, challenge_id, frames)
        assert result.reference is not None
        if self._enrolled_match(result.reference) is not None:
            raise ConsentError("you are enrolled already; use a sign-in link to your portal")
        subject = self._enrol_from_burst(frames, result, display_name, guardian, status)
        self.end_session(session)
        return subject, self._new_session("portal", subject.subject_id)

    # -- portal ---------------------------------------------------------------------------
    def portal_link(self, subject_id: str) -> str:
        """A one-time sign-in URL for the subject's portal (deliver it out of band)."""
        self.gate.get_subject(subject_id)
        token = self._new_link("portal", subject_id,
                               self.now() + timedelta(seconds=self.config.portal_link_ttl_s))
        return f"{self.config.public_url.rstrip('/')}/portal/#t={token}"

    def open_portal_link(self, token: str) -> NewSession:
        subject_id = self._use_link(token, "portal")
        self.gate.get_subject(subject_id)
        self.activity.touch(subject_id, self.now())
        return self._new_session("portal", subject_id)

    def portal_overview(self, subject_id: str) -> dict[str, Any]:
        """Everything the subject's portal shows: who may use their face, how, and the
        decisions that used each grant."""
        subject = self.gate.get_subject(subject_id)
        now = self.now()
        grants = sorted(self.gate.list_grants(subject_id), key=lambda g: g.created_at,
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
        }

    def portal_revoke(self, subject_id: str, grant_id: str) -> Grant:
        grant = self.gate.parts.store.get_grant(grant_id)
        if grant is None or grant.subject_id != subject_id:
            raise NotFound("no such grant")
        return self.revoke(grant_id)

    def set_status(self, subject_id: str, status: SubjectStatus) -> Subject:
        return self.gate.set_status(subject_id, status)

    def export(self, subject_id: str) -> dict[str, Any]:
        """The subject's data as JSON (GDPR Art. 15/20). Never templates."""
        overview = self.portal_overview(subject_id)
        c = t.consent_requests.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.consent_requests).where(c.subject_id == subject_id)
                                .order_by(c.created_at)).all()
        seen = self.activity.last_seen(subject_id)
        subject = self.gate.get_subject(subject_id)
        return {
            "exported_at": self.now().isoformat(),
            "subject": {**overview["subject"], "aliases": subject.aliases,
                        "model_pack": subject.model_pack},
            "face_templates": (f"{subject.template_count} encrypted templates are stored; "
                               "they are never exported"),
            "grants": overview["grants"],
            "decisions_using_grants": overview["decisions"],
            "consent_requests": [request_from_row(r, _aware).model_dump(
                mode="json", exclude={"grant_token"}) for r in rows],
            "last_interaction": seen.isoformat() if seen else None,
        }

    def erase_subject(self, subject_id: str) -> None:
        """Erase the subject (``FaceGate.erase``) and every row of ours about them."""
        grant_ids = [g.grant_id for g in self.gate.list_grants(subject_id)]
        self.gate.erase(subject_id)
        self.activity.forget(subject_id, grant_ids)
        with self.engine.begin() as conn:
            self._forget_rows(conn, [subject_id])
        self.sync_revocations(force=True)

    @staticmethod
    def _forget_rows(conn: Any, subject_ids: list[str]) -> None:
        s, lk, rq = t.consent_sessions.c, t.consent_links.c, t.consent_requests.c
        conn.execute(delete(t.consent_sessions).where(
            or_(s.target.in_(subject_ids), s.verified_subject_id.in_(subject_ids))))
        conn.execute(delete(t.consent_links).where(lk.kind == "portal",
                                                   lk.target.in_(subject_ids)))
        conn.execute(update(t.consent_requests).where(rq.subject_id.in_(subject_ids))
                     .values(subject_id=None, template=None))

    def clean_orphans(self) -> int:
        """Rows of ours about subjects erased elsewhere (e.g. ``DELETE /v1/subjects``)."""
        live = {s.subject_id for s in self.gate.list_subjects()}
        rq, ss = t.consent_requests.c, t.consent_sessions.c
        with self.engine.connect() as conn:
            named = {r[0] for r in conn.execute(select(rq.subject_id).where(
                rq.subject_id.is_not(None)).distinct())}
            named |= {r[0] for r in conn.execute(select(ss.verified_subject_id).where(
                ss.verified_subject_id.is_not(None)).distinct())}
            named |= {r[0] for r in conn.execute(select(ss.target).where(
                ss.kind == "portal").distinct())}
        gone = sorted(named - live)
        live_grants = {g.grant_id for g in self.gate.list_grants()}
        u = t.consent_grant_uses.c
        with self.engine.begin() as conn:
            if gone:
                self._forget_rows(conn, gone)
            used = {r[0] for r in conn.execute(select(u.grant_id).distinct())}
            dead = sorted(used - live_grants)
            if dead:
                conn.execute(delete(t.consent_grant_uses).where(u.grant_id.in_(dead)))
        return len(gone) + len(dead)


def _monotonic() -> float:
    import time

    return time.monotonic()
