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
from gate.types import CONTENT_CATEGORIES, OPERATIONS, ConsentRecord, Formality, Grant

#: (operation, content, jurisdictions) -> the formalities consent must meet there.
FormalityRule = Callable[[str, Sequence[str], Sequence[str]], frozenset[str]]

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
    #: How consent must be given where the app runs (jurisdiction packs).
    formalities: list[str] = []
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None = None


class WebhookSignatureInvalid(ConsentError):
    code = "webhook_signature_invalid"


# -- plain language (EN and ZH) ----------------------------------------------------------
Locale = Literal["en", "zh"]
LOCALES: tuple[str, ...] = ("en", "zh")

_OPERATIONS: dict[str, dict[str, str]] = {
    "en": {
        "txt2img": "generating new pictures that show you",
        "img2img": "making new pictures from a picture of you",
        "inpaint": "editing parts of a picture of you",
        "face_swap": "putting your face onto someone else's body or into other pictures",
        "face_restore": "restoring or enhancing your face in a picture",
        "avatar_train": "training an AI model (an avatar) on your face",
        "video_face_swap": "putting your face into videos",
        "edit": "editing pictures of you",
        "nudify": "making nude pictures of you",
    },
    "zh": {
        "txt2img": "生成含有您形象的新图片",
        "img2img": "根据您的照片生成新图片",
        "inpaint": "修改您照片中的部分内容",
        "face_swap": "把您的脸换到他人身体上或其他图片中（换脸）",
        "face_restore": "修复或增强照片中您的面部",
        "avatar_train": "用您的面部训练 AI 模型（数字分身）",
        "video_face_swap": "把您的脸换到视频中",
        "edit": "编辑您的照片",
        "nudify": "生成您的裸体图片",
    },
}
_CONTENT: dict[str, dict[str, str]] = {
    "en": {"general": "ordinary pictures (nothing sexual, violent or political)",
           "sexual": "SEXUAL or NUDE pictures", "violent": "VIOLENT pictures",
           "political": "POLITICAL pictures"},
    "zh": {"general": "普通图片（不含色情、暴力或政治内容）", "sexual": "色情或裸露图片",
           "violent": "暴力图片", "political": "政治图片"},
}
_LINES: dict[str, dict[str, str]] = {
    "en": {
        "asks": "The app “{app}” asks to use your face for {what}.",
        "kinds": "Kind of pictures: {kinds}.", "and": " and ",
        "user": "Only for the app's user “{user}”.", "any_user": "For any user of that app.",
        "purpose": "Purpose: {purpose}.", "any_purpose": "For any purpose the app has.",
        "for": "For {duration} after you agree.", "forever": "With no end date.",
        "uses": "At most {uses} uses.", "no_limit": "With no limit on uses.",
        "revoke": "You can revoke it at any time in your consent portal; it stops at once.",
        "days": "{n} days", "hours": "{n} hours", "minutes": "{n} minutes",
        "statement": "I agree, separately from any other terms, that my face may be used "
                     "as described above. I was told what will be done and for how long, "
                     "and that I can revoke this consent at any time.",
        "release": "This is a written release of my biometric data (face template) for "
                   "the use above, signed by typing my name.",
        "guardian": "I give this consent as the parent or guardian of the person shown.",
    },
    "zh": {
        "asks": "应用“{app}”请求使用您的面部用于：{what}。",
        "kinds": "图片类型：{kinds}。", "and": "及",
        "user": "仅限该应用的用户“{user}”。", "any_user": "适用于该应用的任何用户。",
        "purpose": "目的：{purpose}。", "any_purpose": "用于该应用的任何目的。",
        "for": "同意后有效期：{duration}。", "forever": "无截止日期。",
        "uses": "最多使用 {uses} 次。", "no_limit": "不限使用次数。",
        "revoke": "您可以随时在同意门户撤回，撤回立即生效。",
        "days": "{n} 天", "hours": "{n} 小时", "minutes": "{n} 分钟",
        "statement": "我单独同意（不与任何其他条款捆绑）按上述方式使用我的面部。我已被告知"
                     "将进行的处理及期限，并知悉可随时撤回本同意。",
        "release": "本声明为我对上述用途授权使用我的生物识别信息（面部模板）的书面同意，"
                   "以输入我的姓名作为签署。",
        "guardian": "我以被展示者的父母或监护人身份作出本同意。",
    },
}


def _locale(locale: str | None) -> Locale:
    language = (locale or "en").replace("_", "-").split("-")[0].lower()
    return "zh" if language == "zh" else "en"


def _duration(seconds: int, locale: Locale = "en") -> str:
    words = _LINES[locale]
    days = seconds / 86400
    if days >= 2:
        return words["days"].format(n=round(days))
    hours = seconds / 3600
    if hours >= 2:
        return words["hours"].format(n=round(hours))
    return words["minutes"].format(n=max(1, round(seconds / 60)))


def describe_scope(*, app_id: str, operation: str, content: Sequence[str],
                   user_id: str | None, purpose: str | None, grant_ttl_s: int | None,
                   max_uses: int | None, locale: str | None = "en") -> list[str]:
    """The scope of a grant in plain sentences, for the person deciding (EN or ZH)."""
    lang = _locale(locale)
    w = _LINES[lang]
    what = _OPERATIONS[lang].get(operation, operation)
    kinds = w["and"].join(_CONTENT[lang].get(c, c) for c in content)
    return [
        w["asks"].format(app=app_id, what=what),
        w["kinds"].format(kinds=kinds),
        w["user"].format(user=user_id) if user_id else w["any_user"],
        w["purpose"].format(purpose=purpose) if purpose else w["any_purpose"],
        w["for"].format(duration=_duration(grant_ttl_s, lang)) if grant_ttl_s
        else w["forever"],
        w["uses"].format(uses=max_uses) if max_uses else w["no_limit"],
        w["revoke"],
    ]


def consent_text(request: ConsentRequest, locale: str | None = "en", *,
                 guardian: bool = False) -> str:
    """The exact text a person agrees to: the scope, the consent statement and, where a
    jurisdiction asks for one, the written release. Its sha256 is recorded with the
    grant, so what was shown can be proven later."""
    lang = _locale(locale)
    w = _LINES[lang]
    lines = describe_scope(app_id=request.app_id, operation=request.operation,
                           content=request.content, user_id=request.user_id,
                           purpose=request.purpose, grant_ttl_s=request.grant_ttl_s,
                           max_uses=request.max_uses, locale=lang)
    lines.append(w["statement"])
    if "written_release" in request.formalities:
        lines.append(w["release"])
    if guardian:
        lines.append(w["guardian"])
    return "\n".join(lines)


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
        expires_at=aware(row.expires_at), resolved_at=aware(row.resolved_at),
        formalities=list(row.formalities or []))


def plain_request(request: ConsentRequest, locale: str | None = "en") -> Mapping[str, Any]:
    """What the person sees: the scope in sentences (their language), the exact consent
    text with its sha256, what the answer must include, and when the question expires."""
    lang = _locale(locale)
    text = consent_text(request, lang)
    return {"request_id": request.request_id, "state": request.state,
            "app_id": request.app_id, "expires_at": request.expires_at.isoformat(),
            "locale": lang, "locales": list(LOCALES),
            "scope": describe_scope(app_id=request.app_id, operation=request.operation,
                                    content=request.content, user_id=request.user_id,
                                    purpose=request.purpose, grant_ttl_s=request.grant_ttl_s,
                                    max_uses=request.max_uses, locale=lang),
            "consent_text": text,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "formalities": list(request.formalities),
            "signature_required": "written_release" in request.formalities,
            "needs_name": request.subject_id is None}


# -- the flow ----------------------------------------------------------------------------
class RequestClosed(ConsentError):
    """The consent request was already answered or expired."""

    code = "request_closed"


class ConsentRequests:
    """From a ``needs_consent`` decision to a grant scoped exactly to it (module doc)."""

    def __init__(self, engine: Engine, lifecycle: SubjectLifecycle, links: Links,
                 proof: Proof, config: ConsentConfig, clock: Callable[[], datetime],
                 sender: WebhookSender,
                 formalities: FormalityRule | None = None) -> None:
        self.engine = engine
        #: The consent formalities an operation and content need under some jurisdictions.
        self.formalities: FormalityRule = formalities or (lambda *_: frozenset())
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
               max_uses: int | None = None, jurisdictions: Sequence[str] = ()
               ) -> tuple[ConsentRequest, str]:
        """A pending request about the face in ``image`` (at ``bbox``) and its one-time
        link for the person. Returns ``(request, link_url)``; the link is shown once.
        ``jurisdictions`` (the app's packs) decide the formalities the answer needs."""
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
               "expires_at": now + timedelta(seconds=ttl),
               "formalities": sorted(self.formalities(operation, cats, jurisdictions))}
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

    def view(self, session: Session, locale: str | None = "en") -> dict[str, Any]:
        view = dict(plain_request(self.load(session.target), locale))
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

    def decide(self, session: Session, accept: bool, *, locale: str | None = "en",
               signature: str | None = None, text_sha256: str | None = None
               ) -> ConsentRequest:
        """The person's answer. Granting records a grant scoped exactly to the request,
        with how the consent was given: a separate, explicit and informed act in the
        portal after a liveness proof; a written release when the person signs the exact
        text shown (its sha256 must be the one they saw); a guardian's consent for a
        subject enrolled by a guardian."""
        request = self._pending(session.target)
        subject_id = session.verified_subject_id
        if subject_id is None:
            raise SessionInvalid("prove who you are first")
        grant = None
        if accept:
            grant = self._grant(request, subject_id, locale, signature, text_sha256)
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

    def _grant(self, request: ConsentRequest, subject_id: str, locale: str | None,
               signature: str | None, text_sha256: str | None) -> Grant:
        now = self.clock()
        subject = self.lifecycle.get_subject(subject_id)
        text = consent_text(request, locale, guardian=subject.guardian)
        shown = hashlib.sha256(text.encode("utf-8")).hexdigest()
        formalities: list[Formality] = ["explicit_consent", "separate_consent",
                                        "informed_consent"]
        if subject.guardian:
            formalities.append("guardian_consent")
        signed = bool(signature and signature.strip())
        if "written_release" in request.formalities:
            if not signed or text_sha256 != shown:
                raise InvalidRequest("this consent must be signed: type your name under "
                                     "the text shown", field="signature")
            formalities.append("written_release")
        expires = None if request.grant_ttl_s is None else \
            now + timedelta(seconds=request.grant_ttl_s)
        return self.lifecycle.grant(
            subject_id, app_id=request.app_id, operations=[request.operation],
            content=request.content, user_id=request.user_id, purpose=request.purpose,
            expires_at=expires, max_uses=request.max_uses,
            consent=ConsentRecord(formalities=formalities, collected_by="portal",
                                  signed_at=now, text_sha256=shown, locale=_locale(locale)))

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
