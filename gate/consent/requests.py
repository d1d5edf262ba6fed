"""Consent requests: a ``needs_consent`` decision turned into a question to the person.

A request names exactly what is asked (operation, content, purpose, app, user, how long
the grant would last and how often it may be used). It holds no pixels: when the face
matched an enrolled person, only their subject id; otherwise the face's template,
encrypted with the gate's ``TemplateCipher`` (bound to the request id) and deleted the
moment the request is granted, refused or expires. States: ``pending`` -> ``granted`` |
``refused`` | ``expired``.

Apps learn the outcome by polling ``GET /v1/consent-requests/{id}`` or from a webhook:
``POST`` of a JSON body with ``X-Gate-Signature: t=<unix seconds>,v1=<hex>`` where
``v1 = HMAC-SHA256(secret, f"{t}." + body)``; ``verify_webhook`` checks it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from gate.clock import aware
from gate.consent import tables as t
from gate.consent.config import ConsentConfig
from gate.consent.lifecycle import SubjectLifecycle
from gate.consent.links import Links, NewSession, Session, SessionInvalid
from gate.consent.proof import IdentityMismatch, Proof
from gate.consent.store import Person
from gate.errors import ConsentError, InvalidRequest, NotFound
from gate.pipeline import AnalysedFace
from gate.types import CONTENT_CATEGORIES, OPERATIONS, ConsentRecord

log = logging.getLogger("gate.consent")

RequestState = Literal["pending", "granted", "refused", "expired"]
SIGNATURE_HEADER = "X-Gate-Signature"
EVENT_HEADER = "X-Gate-Event"
DEFAULT_TOLERANCE_S = 300


class ConsentRequest(BaseModel):
    """The app's view of a consent request (no template, no link)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    state: RequestState
    app_id: str
    user_id: str | None = None
    operation: str
    content: list[str]
    purpose: str | None = None
    subject_id: str | None = None  # the enrolled person asked, once known
    decision_request_id: str | None = None
    face_ref: str | None = None
    grant_ttl_s: int | None = None  # how long the grant would last once given
    max_uses: int | None = None
    grant_id: str | None = None
    #: The signed grant (compact JWS), only in the app's poll answer once granted.
    grant_token: str | None = None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None = None


class WebhookSignatureInvalid(ConsentError):
    code = "webhook_signature_invalid"


# -- plain language ---------------------------------------------------------------------
_OPERATIONS = {
    "txt2img": "generating new pictures that show you",
    "img2img": "making new pictures from a picture of you",
    "inpaint": "editing parts of a picture of you",
    "face_swap": "putting your face onto someone else's body or into other pictures",
    "face_restore": "restoring or enhancing your face in a picture",
    "avatar_train": "training an AI model (an avatar) on your face",
    "video_face_swap": "putting your face into videos",
    "edit": "editing pictures of you",
    "nudify": "making nude pictures of you",
}
_CONTENT = {
    "general": "ordinary pictures (nothing sexual, violent or political)",
    "sexual": "SEXUAL or NUDE pictures",
    "violent": "VIOLENT pictures",
    "political": "POLITICAL pictures",
}


def _duration(seconds: int) -> str:
    days = seconds / 86400
    if days >= 2:
        return f"{round(days)} days"
    hours = seconds / 3600
    return f"{round(hours)} hours" if hours >= 2 else f"{max(1, round(seconds / 60))} minutes"


def describe_scope(*, app_id: str, operation: str, content: Sequence[str],
                   user_id: str | None, purpose: str | None, grant_ttl_s: int | None,
                   max_uses: int | None) -> list[str]:
    """The scope of a grant in plain sentences, for the person deciding."""
    lines = [f"The app “{app_id}” asks to use your face for "
             f"{_OPERATIONS.get(operation, operation)}."]
    kinds = " and ".join(_CONTENT.get(c, c) for c in content)
    lines.append(f"Kind of pictures: {kinds}.")
    lines.append(f"Only for the app's user “{user_id}”." if user_id
                 else "For any user of that app.")
    lines.append(f"Purpose: {purpose}." if purpose else "For any purpose the app has.")
    lines.append(f"For {_duration(grant_ttl_s)} after you agree." if grant_ttl_s
                 else "With no end date.")
    lines.append(f"At most {max_uses} uses." if max_uses else "With no limit on uses.")
    lines.append("You can revoke it at any time in your consent portal; it stops at once.")
    return lines


# -- webhook signatures -----------------------------------------------------------------
def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_webhook(secret: str, body: bytes, header: str, *, now: float | None = None,
                   tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
    """Raise ``WebhookSignatureInvalid`` unless ``header`` signs ``body`` recently."""
    fields: dict[str, list[str]] = {}
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError, IndexError):
        raise WebhookSignatureInvalid("the webhook signature header is malformed") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureInvalid("the webhook timestamp is outside the tolerance")
    expected = sign_webhook(secret, body, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, v) for v in fields.get("v1", [])):
        raise WebhookSignatureInvalid("the webhook signature does not match")


def webhook_body(event: str, request: ConsentRequest) -> bytes:
    payload = {"event": event, "request": request.model_dump(
        mode="json", exclude={"grant_token"})}
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class WebhookSender:
    """Delivers signed webhooks from one background thread, retrying with backoff.

    Delivery is at least once; the app must treat the request id + state as idempotent.
    A failed delivery is logged (without body or secret); polling still works.
    """

    def __init__(self, *, timeout_s: float = 5.0, attempts: int = 3,
                 backoff_s: float = 0.5, client: Any = None) -> None:
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._client = client
        self._queue: queue.Queue[tuple[str, str, str, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    def submit(self, url: str, secret: str, event: str, body: bytes) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gate-webhooks",
                                                daemon=True)
                self._thread.start()
        self._queue.put((url, secret, event, body))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted webhook was delivered or given up on."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=self.timeout_s * self.attempts + 5)
            self._thread = None

    def _run(self) -> None:
        import httpx

        client = self._client or httpx.Client(timeout=self.timeout_s, follow_redirects=False)
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(client, *item)
            finally:
                self._queue.task_done()

    def _deliver(self, client: Any, url: str, secret: str, event: str, body: bytes) -> None:
        for attempt in range(self.attempts):
            headers = {"Content-Type": "application/json", EVENT_HEADER: event,
                       SIGNATURE_HEADER: sign_webhook(secret, body, int(time.time()))}
            try:
                response = client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    return
            except Exception as exc:  # noqa: BLE001 - any network fault: retry, then give up
                log.warning("webhook delivery failed", extra={"fault": type(exc).__name__})
            time.sleep(self.backoff_s * (2 ** attempt))
        self.failed += 1
        log.warning("webhook given up", extra={"event": event})


def request_from_row(row: Any, aware: Callable[[Any], Any],
                     token: str | None = None) -> ConsentRequest:
    return ConsentRequest(
        request_id=row.request_id, state=row.state, app_id=row.app_id, user_id=row.user_id,
        operation=row.operation, content=list(row.content), purpose=row.purpose,
        subject_id=row.subject_id, decision_request_id=row.decision_request_id,
        face_ref=row.face_ref, grant_ttl_s=row.grant_ttl_s, max_uses=row.max_uses,
        grant_id=row.grant_id, grant_token=token, created_at=aware(row.created_at),
        expires_at=aware(row.expires_at), resolved_at=aware(row.resolved_at))


def plain_request(request: ConsentRequest) -> Mapping[str, Any]:
    """What the person sees: the scope in sentences, and when the question expires."""
    return {"request_id": request.request_id, "state": request.state,
            "app_id": request.app_id, "expires_at": request.expires_at.isoformat(),
            "scope": describe_scope(app_id=request.app_id, operation=request.operation,
                                    content=request.content, user_id=request.user_id,
                                    purpose=request.purpose, grant_ttl_s=request.grant_ttl_s,
                                    max_uses=request.max_uses),
            "needs_name": request.subject_id is None}


# -- the flow ----------------------------------------------------------------------------
class RequestClosed(ConsentError):
    """The consent request was already answered or expired."""

    code = "request_closed"


class ConsentRequests:
    """From a ``needs_consent`` decision to a grant scoped exactly to it (module doc)."""

    def __init__(self, engine: Engine, lifecycle: SubjectLifecycle, links: Links,
                 proof: Proof, config: ConsentConfig, clock: Callable[[], datetime],
                 sender: WebhookSender) -> None:
        self.engine = engine
        self.lifecycle = lifecycle
        self.links = links
        self.proof = proof
        self.config = config
        self.clock = clock
        self.sender = sender

    def create(self, app_id: str, *, image: bytes, operation: str,
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
        face = self._face(image, bbox)
        subject_id = self.proof.enrolled_match(face.vector)
        if subject_id is not None:
            subject = self.lifecycle.store.get_subject(subject_id)
            if subject is not None and subject.status == "protected":
                raise ConsentError("this person does not accept consent requests")
        now = self.clock()
        ttl = min(expires_in_s or self.config.request_ttl_s, self.config.request_ttl_s)
        request_id = f"creq_{uuid.uuid4().hex[:20]}"
        pack = self.lifecycle.faces.pack_id
        template = None if subject_id else self.lifecycle.index.cipher.encrypt(
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
        token = self.links.new_link("request", request_id, now + timedelta(seconds=ttl))
        self.lifecycle._audit("consent_request", [subject_id] if subject_id else [],
                              request_id)
        link = f"{self.config.public_url.rstrip('/')}/portal/request.html#t={token}"
        return self.load(request_id), link

    def _face(self, image: bytes, bbox: Sequence[float] | None) -> AnalysedFace:
        from gate.vision.detect import box_iou

        faces = list(self.lifecycle.faces.analyse_still(image, what="image").faces)
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

    def load(self, request_id: str, app_id: str | None = None,
             token: str | None = None) -> ConsentRequest:
        c = t.consent_requests.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.consent_requests)
                               .where(c.request_id == request_id)).first()
        if row is None or (app_id is not None and row.app_id != app_id):
            raise NotFound("no such consent request")
        return request_from_row(row, aware, token)

    def get(self, app_id: str, request_id: str) -> ConsentRequest:
        """The app's poll: state, and once granted the grant id and a signed token."""
        request = self.load(request_id, app_id)
        if request.state == "pending" and request.expires_at <= self.clock():
            self.expire(self.clock(), only=request_id)
            request = self.load(request_id, app_id)
        if request.state == "granted" and request.grant_id:
            grant = self.lifecycle.store.get_grant(request.grant_id)
            if grant is not None and grant.is_active(self.clock()) and \
                    self.lifecycle.tokens is not None:
                token = self.lifecycle.tokens.issue(grant).token
                request = request.model_copy(update={"grant_token": token})
        return request

    def open_link(self, token: str) -> NewSession:
        """Exchange a consent-request link for a short session (the link dies)."""
        request_id = self.links.use_link(token, "request")
        request = self.load(request_id)
        if request.state != "pending" or request.expires_at <= self.clock():
            raise RequestClosed("this consent request is closed")
        ttl = min(self.config.session_ttl_s,
                  int((request.expires_at - self.clock()).total_seconds()))
        return self.links.new_session("request", request_id, ttl_s=max(ttl, 1))

    def view(self, session: Session) -> dict[str, Any]:
        view = dict(plain_request(self.load(session.target)))
        view["verified"] = session.verified_subject_id is not None
        return view

    def prove(self, session: Session, challenge_id: str, frames: Sequence[bytes],
              display_name: str | None = None, guardian: bool = False) -> bool:
        """Liveness burst, matched to the request's face; enrols the person if needed."""
        request = self._pending(session.target)
        result = self.proof.answer_challenge(session, challenge_id, frames)
        assert result.reference is not None
        if request.subject_id is not None:
            if not self.proof.matches_subject(request.subject_id, result.reference):
                raise IdentityMismatch("you do not match the person this request is about")
            subject_id = request.subject_id
        else:
            if not self._matches_request_face(request.request_id, result.reference):
                raise IdentityMismatch("you do not match the person this request is about")
            subject_id = self.proof.enrolled_match(result.reference, to_act_as=True) or \
                self.proof.enrol_from_burst(frames, result, display_name, guardian=guardian,
                                            status="consenting").subject_id
        self.links.mark_verified(session, subject_id)
        return True

    def _matches_request_face(self, request_id: str, reference: np.ndarray) -> bool:
        c = t.consent_requests.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c.template, c.model_pack)
                               .where(c.request_id == request_id)).first()
        if row is None or row.template is None:
            return False
        vector = self.lifecycle.index.cipher.decrypt(
            bytes(row.template), subject_id=f"consent-request:{request_id}",
            pack_id=row.model_pack)
        return self.proof.matches_vector(vector, reference)

    def _pending(self, request_id: str) -> ConsentRequest:
        request = self.load(request_id)
        if request.state != "pending" or request.expires_at <= self.clock():
            raise RequestClosed("this consent request is closed")
        return request

    def decide(self, session: Session, accept: bool) -> ConsentRequest:
        """The person's answer. Granting records a grant scoped exactly to the request;
        the consent act itself (a separate, explicit answer after a liveness proof, in
        the portal) is recorded with the grant."""
        request = self._pending(session.target)
        subject_id = session.verified_subject_id
        if subject_id is None:
            raise SessionInvalid("prove who you are first")
        grant = None
        if accept:
            now = self.clock()
            expires = None if request.grant_ttl_s is None else \
                now + timedelta(seconds=request.grant_ttl_s)
            grant = self.lifecycle.grant(
                subject_id, app_id=request.app_id, operations=[request.operation],
                content=request.content, user_id=request.user_id, purpose=request.purpose,
                expires_at=expires, max_uses=request.max_uses,
                consent=ConsentRecord(formalities=["explicit_consent", "separate_consent"],
                                      collected_by="portal", signed_at=now))
        state = "granted" if accept else "refused"
        if not self._resolve(request.request_id, state, subject_id,
                             grant.grant_id if grant else None):
            if grant is not None:
                self.lifecycle.revoke(grant.grant_id)
            raise RequestClosed("this consent request is closed")
        self.links.end_session(session)
        self.lifecycle._audit("consent_request_" + state, [subject_id], request.request_id)
        resolved = self.load(request.request_id)
        self._notify(resolved)
        return resolved

    def _resolve(self, request_id: str, state: str, subject_id: str | None,
                 grant_id: str | None) -> bool:
        c = t.consent_requests.c
        values: dict[str, Any] = {"state": state, "template": None,
                                  "resolved_at": self.clock(), "grant_id": grant_id}
        if subject_id is not None:
            values["subject_id"] = subject_id
        with self.engine.begin() as conn:
            n = conn.execute(update(t.consent_requests)
                             .where(c.request_id == request_id, c.state == "pending")
                             .values(**values)).rowcount
        return n == 1

    def expire(self, now: datetime, only: str | None = None) -> int:
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
                self._notify(self.load(request_id))
        return count

    def set_webhook(self, app_id: str, url: str) -> str:
        """Register (or replace) ``app_id``'s webhook URL; returns the new signing secret."""
        if not url.startswith(("https://", "http://")) or len(url) > 2000:
            raise InvalidRequest("the webhook URL must be http(s)", field="url")
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(delete(t.consent_webhooks).where(t.consent_webhooks.c.app_id == app_id))
            conn.execute(insert(t.consent_webhooks).values(
                app_id=app_id, url=url, secret=secret, enabled=True, created_at=self.clock()))
        return secret

    def _notify(self, request: ConsentRequest) -> None:
        w = t.consent_webhooks.c
        with self.engine.connect() as conn:
            row = conn.execute(select(w.url, w.secret).where(
                w.app_id == request.app_id, w.enabled.is_(True))).first()
        if row is not None:
            event = f"consent_request.{request.state}"
            self.sender.submit(row.url, row.secret, event, webhook_body(event, request))


def forget(conn: Connection, person: Person) -> None:
    """Erasure hook: consent requests about the person are deleted (with any template)."""
    conn.execute(delete(t.consent_requests)
                 .where(t.consent_requests.c.subject_id == person.subject_id))


def export(conn: Connection, person: Person) -> dict[str, Any]:
    """Export hook: the consent requests the person was asked (never templates)."""
    c = t.consent_requests.c
    rows = conn.execute(select(t.consent_requests).where(c.subject_id == person.subject_id)
                        .order_by(c.created_at)).all()
    return {"consent_requests": [request_from_row(r, aware).model_dump(
        mode="json", exclude={"grant_token"}) for r in rows]}
