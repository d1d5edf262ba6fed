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
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from gate.errors import ConsentError

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


def request_from_row(row: Any, aware: Any, token: str | None = None) -> ConsentRequest:
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
