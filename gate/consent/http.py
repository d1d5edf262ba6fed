"""HTTP routes of the consent lifecycle and the subject portal (``router``).

Handlers only translate: each calls one ``ConsentService`` method. The service is
``request.app.state.consent``; when absent it is built once around the app's gate
(``app.state.gate`` or the sidecar's ``app.state.services.gate``).

- App routes (API key, ``check`` scope; the app is the key's): ``POST /v1/consent-requests``,
  ``GET /v1/consent-requests/{id}``, ``GET /v1/revocations``, ``GET /v1/grants/{id}/token``.
- Operator route (``admin`` scope): ``POST /v1/subjects/{id}/portal-link``.
- Public: ``GET /.well-known/jwks.json``; the portal pages under ``/portal/``.
- Person routes under ``/portal/api/``: authenticated by one-time links exchanged for an
  HttpOnly, SameSite=Strict cookie; every POST needs the ``X-Gate-Portal: 1`` header and,
  once a session exists, its CSRF token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from gate.api.auth import AdminKey, CheckKey
from gate.api.errors import Forbidden, NotReady, Unauthorized
from gate.api.routes import AUTH, errors
from gate.consent.requests import ConsentRequest
from gate.consent.service import (
    ConsentService,
    CsrfFailed,
    NewSession,
    Session,
    SessionInvalid,
    SessionKind,
    csrf_token,
)
from gate.errors import InvalidRequest
from gate.types import Grant

router = APIRouter()
PORTAL_DIR = Path(__file__).resolve().parent / "portal"
PORTAL_FILES = {"index.html", "request.html", "enrol.html", "portal.js", "request.js",
                "enrol.js", "common.js", "style.css"}
COOKIES: dict[SessionKind, str] = {"portal": "gate_portal", "request": "gate_consent",
                                   "enrol": "gate_enrol"}
MAX_FRAME_BYTES = 8 * 1024 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "media-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}
_build_lock = threading.Lock()


# -- plumbing ---------------------------------------------------------------------------
def consent(request: Request) -> ConsentService:
    state = request.app.state
    svc = getattr(state, "consent", None)
    if isinstance(svc, ConsentService):
        return svc
    with _build_lock:
        svc = getattr(state, "consent", None)
        if isinstance(svc, ConsentService):
            return svc
        gate = getattr(state, "gate", None) or getattr(getattr(state, "services", None),
                                                        "gate", None)
        if gate is None:
            raise NotReady("the gate is starting")
        svc = ConsentService(gate)
        state.consent = svc
        return svc


def _secure(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value


def _set_cookie(response: Response, svc: ConsentService, new: NewSession) -> None:
    response.set_cookie(COOKIES[new.session.kind], new.token, httponly=True,
                        samesite="strict", secure=svc.config.secure_cookies, path="/portal",
                        max_age=svc.config.session_ttl_s)


def _clear_cookie(response: Response, kind: SessionKind) -> None:
    response.delete_cookie(COOKIES[kind], path="/portal", httponly=True, samesite="strict")


def _session(request: Request, kind: SessionKind, *, post: bool = True
             ) -> tuple[ConsentService, Session]:
    """The caller's session of ``kind``; POSTs must carry the portal header and CSRF."""
    svc = consent(request)
    if post and request.headers.get("x-gate-portal") != "1":
        raise Forbidden("portal requests need the X-Gate-Portal header")
    token = request.cookies.get(COOKIES[kind])
    try:
        session = svc.session(token, kind)
        if post:
            svc.check_csrf(token or "", request.headers.get("x-csrf-token"))
    except SessionInvalid as exc:
        raise Unauthorized(exc.message) from None
    except CsrfFailed as exc:
        raise Forbidden(exc.message) from None
    return svc, session


def _portal_post(request: Request) -> ConsentService:
    if request.headers.get("x-gate-portal") != "1":
        raise Forbidden("portal requests need the X-Gate-Portal header")
    return consent(request)


def _frames(files: list[UploadFile]) -> list[bytes]:
    out = []
    for f in files[:32]:
        data = f.file.read(MAX_FRAME_BYTES + 1)
        if len(data) > MAX_FRAME_BYTES:
            raise InvalidRequest("a frame is too large", field="frames")
        out.append(data)
    return out


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=20, max_length=100)


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["protected", "consenting"]


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accept: bool


class ConsentRequestBody(BaseModel):
    """A consent request for one face of a ``needs_consent`` decision."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image holding the face, base64.", repr=False,
                       max_length=30_000_000)
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4,
                                     description="The face's bbox from the decision.")
    operation: str = Field(max_length=32)
    content: list[str] = Field(default_factory=lambda: ["general"], max_length=8)
    purpose: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=256)
    decision_request_id: str | None = Field(default=None, max_length=64)
    face_ref: str | None = Field(default=None, max_length=32)
    expires_in_s: int | None = Field(default=None, ge=60)
    grant_ttl_s: int | None = Field(default=None, ge=60)
    max_uses: int | None = Field(default=None, ge=1)


class ConsentRequestCreated(BaseModel):
    request: ConsentRequest
    link: str = Field(description="One-time link for the person; shown once.")


class RevocationsAnswer(BaseModel):
    epoch: int
    revoked: list[dict[str, Any]]
    more: bool


# -- app and operator routes ------------------------------------------------------------
@router.post("/v1/consent-requests", status_code=201, response_model=ConsentRequestCreated,
             tags=["consent"], responses=errors(400, 404, 413, 415, 422, *AUTH))
def create_consent_request(request: Request, body: ConsentRequestBody,
                           key: CheckKey) -> ConsentRequestCreated:
    """Ask the person in a ``needs_consent`` decision; forward ``link`` to them."""
    try:
        image = base64.b64decode(body.image, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("image must be base64", field="image") from None
    fields = body.model_dump(exclude={"image"})
    created, link = consent(request).create_request(key.app_id, image=image, **fields)
    return ConsentRequestCreated(request=created, link=link)


@router.get("/v1/consent-requests/{request_id}", response_model=ConsentRequest,
            tags=["consent"], responses=errors(404, 422, *AUTH))
def get_consent_request(request: Request, key: CheckKey, request_id: Annotated[
        str, PathParam(min_length=1, max_length=64)]) -> ConsentRequest:
    """Poll a request: ``pending``, ``granted`` (with ``grant_token``), ``refused``, ``expired``."""
    return consent(request).get_request(key.app_id, request_id)


@router.get("/v1/revocations", response_model=RevocationsAnswer, tags=["consent"],
            responses=errors(422, *AUTH))
def revocations(request: Request, key: CheckKey,
                since_epoch: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
                limit: Annotated[int, Query(ge=1, le=5000)] = 5000) -> RevocationsAnswer:
    """This app's grants revoked (or erased, or used up) after ``since_epoch``."""
    page = consent(request).revocations(key.app_id, since_epoch, limit)
    return RevocationsAnswer(epoch=page.epoch, revoked=page.revoked, more=page.more)


@router.get("/v1/grants/{grant_id}/token", response_model=Grant, tags=["consent"],
            responses=errors(404, 422, *AUTH))
def grant_token(request: Request, key: CheckKey, grant_id: Annotated[
        str, PathParam(min_length=1, max_length=64)]) -> Grant:
    """A fresh signed token for one of this app's active grants."""
    return consent(request).token_for(grant_id, app_id=key.app_id)


@router.post("/v1/subjects/{subject_id}/portal-link", tags=["consent"],
             responses=errors(404, 422, *AUTH))
def portal_link(request: Request, key: AdminKey, subject_id: Annotated[
        str, PathParam(min_length=1, max_length=64)]) -> dict[str, str]:
    """A one-time portal sign-in link for the subject (deliver it to them privately)."""
    return {"url": consent(request).portal_link(subject_id)}


@router.get("/.well-known/jwks.json", tags=["consent"])
def jwks(request: Request) -> JSONResponse:
    """Public keys that verify grant tokens."""
    return JSONResponse(consent(request).jwks(),
                        headers={"Cache-Control": "public, max-age=300"})


# -- portal pages -----------------------------------------------------------------------
@router.get("/portal", include_in_schema=False)
def portal_root() -> RedirectResponse:
    return RedirectResponse("/portal/", status_code=308)


@router.get("/portal/", include_in_schema=False)
def portal_index() -> FileResponse:
    return portal_file("index.html")


@router.get("/portal/{name}", include_in_schema=False)
def portal_file(name: str) -> FileResponse:
    if name not in PORTAL_FILES:
        raise HTTPException(404, "no such page")
    response = FileResponse(PORTAL_DIR / name)
    _secure(response)
    return response


# -- portal API: the subject's own data -------------------------------------------------
@router.post("/portal/api/session", include_in_schema=False)
def portal_session(request: Request, response: Response, body: LinkBody) -> dict[str, str]:
    svc = _portal_post(request)
    new = svc.open_portal_link(body.token)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf}


@router.get("/portal/api/me", include_in_schema=False)
def portal_me(request: Request, response: Response) -> dict[str, Any]:
    svc, session = _session(request, "portal", post=False)
    _secure(response)
    return {**svc.portal_overview(session.target),
            "csrf": csrf_token(request.cookies.get(COOKIES["portal"], ""))}


@router.post("/portal/api/grants/{grant_id}/revoke", include_in_schema=False)
def portal_revoke(request: Request, response: Response,
                  grant_id: Annotated[str, PathParam(max_length=64)]) -> dict[str, Any]:
    svc, session = _session(request, "portal")
    _secure(response)
    return svc.portal_revoke(session.target, grant_id).model_dump(mode="json",
                                                                  exclude={"token"})


@router.post("/portal/api/status", include_in_schema=False)
def portal_status(request: Request, response: Response, body: StatusBody) -> dict[str, str]:
    svc, session = _session(request, "portal")
    _secure(response)
    return {"status": svc.set_status(session.target, body.status).status}


@router.get("/portal/api/export", include_in_schema=False)
def portal_export(request: Request) -> JSONResponse:
    svc, session = _session(request, "portal", post=False)
    response = JSONResponse(svc.export(session.target), headers={
        "Content-Disposition": 'attachment; filename="my-consent-data.json"'})
    _secure(response)
    return response


@router.post("/portal/api/erase", include_in_schema=False)
def portal_erase(request: Request, response: Response) -> dict[str, bool]:
    svc, session = _session(request, "portal")
    svc.erase_subject(session.target)
    _clear_cookie(response, "portal")
    _secure(response)
    return {"erased": True}


@router.post("/portal/api/logout", include_in_schema=False)
def portal_logout(request: Request, response: Response) -> dict[str, bool]:
    svc, session = _session(request, "portal")
    svc.end_session(session)
    _clear_cookie(response, "portal")
    return {"signed_out": True}


# -- portal API: answering a consent request --------------------------------------------
@router.post("/portal/api/request/session", include_in_schema=False)
def request_session(request: Request, response: Response, body: LinkBody) -> dict[str, Any]:
    svc = _portal_post(request)
    new = svc.open_request_link(body.token)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf, **svc.request_view(new.session)}


@router.get("/portal/api/request", include_in_schema=False)
def request_view(request: Request, response: Response) -> dict[str, Any]:
    svc, session = _session(request, "request", post=False)
    _secure(response)
    return {**svc.request_view(session),
            "csrf": csrf_token(request.cookies.get(COOKIES["request"], ""))}


@router.post("/portal/api/request/challenge", include_in_schema=False)
def request_challenge(request: Request, response: Response) -> dict[str, Any]:
    svc, session = _session(request, "request")
    _secure(response)
    return svc.start_challenge(session)


@router.post("/portal/api/request/proof", include_in_schema=False)
def request_proof(request: Request, response: Response,
                  challenge_id: Annotated[str, Form(max_length=64)],
                  frames: Annotated[list[UploadFile], File()],
                  display_name: Annotated[str | None, Form(max_length=200)] = None,
                  guardian: Annotated[bool, Form()] = False) -> dict[str, bool]:
    svc, session = _session(request, "request")
    _secure(response)
    ok = svc.prove_for_request(session, challenge_id, _frames(frames), display_name, guardian)
    return {"verified": ok}


@router.post("/portal/api/request/decision", include_in_schema=False)
def request_decision(request: Request, response: Response,
                     body: DecisionBody) -> dict[str, Any]:
    svc, session = _session(request, "request")
    resolved = svc.decide(session, body.accept)
    _clear_cookie(response, "request")
    _secure(response)
    return {"state": resolved.state}


# -- portal API: self-enrolment ---------------------------------------------------------
@router.post("/portal/api/enrol/start", include_in_schema=False)
def enrol_start(request: Request, response: Response) -> dict[str, Any]:
    svc = _portal_post(request)
    new, challenge = svc.start_enrollment()
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf, **challenge}


@router.post("/portal/api/enrol", include_in_schema=False)
def enrol(request: Request, response: Response,
          challenge_id: Annotated[str, Form(max_length=64)],
          frames: Annotated[list[UploadFile], File()],
          display_name: Annotated[str, Form(min_length=1, max_length=200)],
          guardian: Annotated[bool, Form()] = False,
          status: Annotated[Literal["protected", "consenting"], Form()] = "protected",
          ) -> dict[str, Any]:
    svc, session = _session(request, "enrol")
    subject, portal = svc.complete_enrollment(session, challenge_id, _frames(frames),
                                              display_name, guardian=guardian, status=status)
    _clear_cookie(response, "enrol")
    _set_cookie(response, svc, portal)
    _secure(response)
    return {"subject_id": subject.subject_id, "status": subject.status, "csrf": portal.csrf}
