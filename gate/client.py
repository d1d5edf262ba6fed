"""``GateClient``: the sidecar over HTTP with the same method names and result types as
``FaceGate``, so an app can swap the embedded engine for the sidecar without code changes.

    client = GateClient("http://127.0.0.1:8080", api_key="gk_...")
    decision = client.check(GateRequest(...))   # -> Decision

The requesting app is the API key's app: ``request.requester.app_id`` is not sent (the
server refuses a body ``app_id``); ``user_id`` is. Errors come back as the same
``GateError`` subclasses (chosen by the error ``code``); errors of the HTTP layer itself
(401, 403, 429, 413, timeouts, an unreachable server) raise ``HttpError``. A caller must
treat every exception from ``check`` as "not allowed".
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import httpx

from gate.errors import GateError
from gate.incident.reports import Report
from gate.incident.trace import Trace
from gate.types import AuditVerification, Decision, GateRequest, Grant, Requester, Subject


class HttpError(GateError):
    """An error of the HTTP layer (auth, scope, limits, timeout, transport)."""

    code = "http_error"

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class GateUnreachable(HttpError):
    """The sidecar could not be reached or did not answer in time."""


def _error_classes() -> dict[str, type[GateError]]:
    found: dict[str, type[GateError]] = {}
    pending: list[type[GateError]] = [GateError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == "gate.errors":
            found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def _decision(body: Any) -> Decision:
    """A decision from the server, ignoring fields a newer server adds."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k in Decision.model_fields}
    return Decision.model_validate(body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class GateClient:
    """HTTP client of the consent-gate sidecar (thread-safe, keeps connections open)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._errors = _error_classes()

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._raw(method, path, **kwargs)
        return response.json() if response.content else None

    def _raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Like ``_call``, for answers that are not JSON (labelled images)."""
        try:
            response = self._http.request(method, path, headers=self._headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise GateUnreachable("the gate did not answer in time", code="gate_timeout",
                                  status=0) from exc
        except httpx.TransportError as exc:
            raise GateUnreachable("the gate could not be reached", code="gate_unreachable",
                                  status=0) from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> GateError:
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{response.status_code}", response.reason_phrase
        cls = self._errors.get(code)
        if cls is not None:
            return cls(message)
        return HttpError(message, code=code, status=response.status_code)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> GateClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- decisions ------------------------------------------------------------------------
    def check(self, request: GateRequest) -> Decision:
        body = {
            "operation": request.operation, "prompt": request.prompt,
            "negative_prompt": request.negative_prompt, "content": list(request.content),
            "purpose": request.purpose, "user_id": request.requester.user_id,
            "request_id": request.request_id,
            "images": [{"role": i.role, "data_b64": _b64(i.data)} for i in request.images],
        }
        return _decision(self._call("POST", "/v1/check", json=body))

    def check_output(self, image: bytes, *, request_id: str, requester: Requester,
                     operation: str = "txt2img", content: Sequence[str] = ("general",),
                     prompt: str = "") -> Decision:
        body = {"image_b64": _b64(image), "request_id": request_id, "operation": operation,
                "content": list(content), "prompt": prompt, "user_id": requester.user_id}
        return _decision(self._call("POST", "/v1/check-output", json=body))

    # -- incident response ----------------------------------------------------------------
    def label_output(self, image: bytes, *, request_id: str) -> bytes:
        """The output of an allowed request, marked and labelled (``/v1/label-output``)."""
        return self._raw("POST", "/v1/label-output",
                         json={"request_id": request_id, "image_b64": _b64(image)}).content

    def trace(self, image: bytes) -> Trace:
        """Where did this image come from (``/v1/trace``, an operator key)."""
        return Trace.model_validate(self._call("POST", "/v1/trace",
                                               json={"image_b64": _b64(image)}))

    def report(self, image: bytes | None = None, pdq: str | Sequence[str] | None = None,
               reason: str = "ncii", subject_id: str | None = None,
               contact: str | None = None) -> Report:
        """A takedown report (``/v1/reports``): blocked at once, trace attached."""
        body: dict[str, Any] = {"reason": reason, "subject_id": subject_id,
                                "contact": contact}
        if image is not None:
            body["image_b64"] = _b64(image)
        if pdq:
            body["pdq"] = [pdq] if isinstance(pdq, str) else list(pdq)
        return Report.model_validate(self._call("POST", "/v1/reports", json=body))

    # -- subjects ---------------------------------------------------------------------------
    def enroll(self, images: Sequence[bytes], display_name: str, status: str = "protected",
               owner: Requester | None = None, aliases: Sequence[str] = (),
               guardian: bool = False) -> Subject:
        """Enrol; ``owner`` makes the subject a user's own face in the *key's* app."""
        body = {"images_b64": [_b64(i) for i in images], "display_name": display_name,
                "status": status, "aliases": list(aliases), "guardian": guardian,
                "owner_user_id": owner.user_id if owner else None}
        return Subject.model_validate(self._call("POST", "/v1/subjects", json=body))

    def get_subject(self, subject_id: str) -> Subject:
        return Subject.model_validate(self._call("GET", f"/v1/subjects/{subject_id}"))

    def list_subjects(self) -> list[Subject]:
        return [Subject.model_validate(s) for s in self._call("GET", "/v1/subjects")]

    def set_status(self, subject_id: str, status: str) -> Subject:
        return Subject.model_validate(self._call(
            "POST", f"/v1/subjects/{subject_id}/status", json={"status": status}))

    def erase(self, subject_id: str) -> bool:
        self._call("DELETE", f"/v1/subjects/{subject_id}")
        return True

    # -- grants -----------------------------------------------------------------------------
    def grant(self, subject_id: str, *, app_id: str, operations: Iterable[str],
              content: Iterable[str] = ("general",), user_id: str | None = None,
              purpose: str | None = None, expires_at: datetime | None = None,
              not_before: datetime | None = None, max_uses: int | None = None) -> Grant:
        body = {"subject_id": subject_id, "app_id": app_id, "operations": list(operations),
                "content": list(content), "user_id": user_id, "purpose": purpose,
                "expires_at": _iso(expires_at), "not_before": _iso(not_before),
                "max_uses": max_uses}
        return Grant.model_validate(self._call("POST", "/v1/grants", json=body))

    def revoke(self, grant_id: str) -> Grant:
        return Grant.model_validate(self._call("DELETE", f"/v1/grants/{grant_id}"))

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        params = {"subject_id": subject_id} if subject_id else None
        return [Grant.model_validate(g) for g in self._call("GET", "/v1/grants", params=params)]

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> AuditVerification:
        return AuditVerification.model_validate(self._call("POST", "/v1/audit/verify"))

    def audit_events(self, since_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        page = self._call("GET", "/v1/audit", params={"since": since_seq, "limit": limit})
        return list(page["events"])

    # -- health -----------------------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """The readiness checks; raises ``HttpError`` (503 ``not_ready``) when not ready."""
        return dict(self._call("GET", "/readyz")["checks"])
