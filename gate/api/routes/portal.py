"""The consent portal: its pages and the person's own API (``/portal/...``).

People are authenticated by one-time links exchanged for an HttpOnly, SameSite=Strict
cookie; every POST needs the ``X-Gate-Portal: 1`` header and, once a session exists, its
CSRF token in ``X-CSRF-Token``. Handlers only translate: each calls one method of the
consent parts (``ConsentService.portal`` / ``.requests`` / ``.links``). Liveness bursts
run on the engine's bounded workers like every other image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from gate.api.errors import Forbidden, Unauthorized
from gate.api.services import blocking, services
from gate.consent.links import (
    CsrfFailed,
    NewSession,
    Session,
    SessionInvalid,
    SessionKind,
    csrf_token,
)
from gate.consent.service import ConsentService
from gate.errors import InvalidRequest

router = APIRouter(include_in_schema=False)
PORTAL_DIR = Path(__file__).resolve().parent.parent / "portal"
PORTAL_FILES = {"index.html", "request.html", "enrol.html", "self.html", "portal.js",
                "request.js", "enrol.js", "self.js", "common.js", "style.css"}
COOKIES: dict[SessionKind, str] = {"portal": "gate_portal", "request": "gate_consent",
                                   "enrol": "gate_enrol", "self": "gate_self"}
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_FRAMES = 32
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


# -- plumbing ---------------------------------------------------------------------------
def _secure(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value


def _set_cookie(response: Response, svc: ConsentService, new: NewSession) -> None:
    response.set_cookie(COOKIES[new.session.kind], new.token, httponly=True,
                        samesite="strict", secure=svc.config.secure_cookies, path="/portal",
                        max_age=svc.config.session_ttl_s)


def _clear_cookie(response: Response, kind: SessionKind) -> None:
    response.delete_cookie(COOKIES[kind], path="/portal", httponly=True, samesite="strict")


def _portal_post(request: Request) -> ConsentService:
    if request.headers.get("x-gate-portal") != "1":
        raise Forbidden("portal requests need the X-Gate-Portal header")
    return services(request).consent


async def _session(request: Request, kind: SessionKind, *, post: bool = True
                   ) -> tuple[ConsentService, Session]:
    """The caller's session of ``kind``; POSTs must carry the portal header and CSRF."""
    svc = _portal_post(request) if post else services(request).consent
    token = request.cookies.get(COOKIES[kind])
    try:
        session = await blocking(svc.links.session, token, kind)
        if post:
            svc.links.check_csrf(token or "", request.headers.get("x-csrf-token"))
    except SessionInvalid as exc:
        raise Unauthorized(exc.message) from None
    except CsrfFailed as exc:
        raise Forbidden(exc.message) from None
    return svc, session


async def _frames(files: list[UploadFile]) -> list[bytes]:
    if len(files) > MAX_FRAMES:
        raise InvalidRequest(f"send at most {MAX_FRAMES} frames", field="frames")
    out = []
    for f in files:
        data = await f.read(MAX_FRAME_BYTES + 1)
        if len(data) > MAX_FRAME_BYTES:
            raise InvalidRequest("a frame is too large", field="frames")
        out.append(data)
    return out


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=20, max_length=100)
    locale: Literal["en", "zh"] = "en"


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["protected", "consenting"]


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accept: bool
    #: The language the consent text was shown in, and its sha256 (what was agreed to).
    locale: Literal["en", "zh"] = "en"
    text_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: The person's typed name, where a written release is required.
    signature: str | None = Field(default=None, max_length=200)


Locale = Annotated[Literal["en", "zh"], Query()]


# -- pages ------------------------------------------------------------------------------
@router.get("/portal")
async def portal_root() -> RedirectResponse:
    return RedirectResponse("/portal/", status_code=308)


@router.get("/portal/")
async def portal_index() -> FileResponse:
    return await portal_file("index.html")


@router.get("/portal/{name}")
async def portal_file(name: str) -> FileResponse:
    if name not in PORTAL_FILES:
        raise HTTPException(404, "no such page")
    response = FileResponse(PORTAL_DIR / name)
    _secure(response)
    return response


# -- the person's own data --------------------------------------------------------------
@router.post("/portal/api/session")
async def portal_session(request: Request, response: Response,
                         body: LinkBody) -> dict[str, str]:
    svc = _portal_post(request)
    new = await blocking(svc.portal.open_link, body.token)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf}


@router.get("/portal/api/me")
async def portal_me(request: Request, response: Response) -> dict[str, Any]:
    svc, session = await _session(request, "portal", post=False)
    _secure(response)
    return {**await blocking(svc.portal.overview, session.target),
            "csrf": csrf_token(request.cookies.get(COOKIES["portal"], ""))}


@router.post("/portal/api/grants/{grant_id}/revoke")
async def portal_revoke(request: Request, response: Response,
                        grant_id: Annotated[str, PathParam(max_length=64)]) -> dict[str, Any]:
    svc, session = await _session(request, "portal")
    _secure(response)
    grant = await blocking(svc.portal.revoke, session.target, grant_id)
    return grant.model_dump(mode="json", exclude={"token"})


@router.post("/portal/api/status")
async def portal_status(request: Request, response: Response,
                        body: StatusBody) -> dict[str, str]:
    svc, session = await _session(request, "portal")
    _secure(response)
    return {"status": (await blocking(svc.portal.set_status, session.target,
                                      body.status)).status}


@router.get("/portal/api/export")
async def portal_export(request: Request) -> JSONResponse:
    svc, session = await _session(request, "portal", post=False)
    response = JSONResponse(await blocking(svc.portal.export, session.target), headers={
        "Content-Disposition": 'attachment; filename="my-consent-data.json"'})
    _secure(response)
    return response


@router.post("/portal/api/report")
async def portal_report(
        request: Request, response: Response, image: Annotated[UploadFile, File()],
        reason: Annotated[Literal["ncii", "impersonation", "minor", "other"], Form()] = "ncii",
        ) -> dict[str, Any]:
    """The person reports an image of themselves. No browser PDQ is available, so the
    server hashes the image in memory and discards it: only its PDQ hashes are kept (they
    block it at once); the deadline is the takedown clock's."""
    _, session = await _session(request, "portal")
    [data] = await _frames([image])
    report = await services(request).images(services(request).gate.report, image=data,
                                             reason=reason, subject_id=session.target)
    _secure(response)
    return {"report_id": report.report_id, "status": report.status,
            "deadline": report.deadline.isoformat(), "hashes": report.hashes,
            "traced_here": bool(report.trace and report.trace.found)}


@router.post("/portal/api/erase")
async def portal_erase(request: Request, response: Response) -> dict[str, bool]:
    svc, session = await _session(request, "portal")
    await blocking(svc.portal.erase, session.target)
    _clear_cookie(response, "portal")
    _secure(response)
    return {"erased": True}


@router.post("/portal/api/logout")
async def portal_logout(request: Request, response: Response) -> dict[str, bool]:
    svc, session = await _session(request, "portal")
    await blocking(svc.links.end_session, session)
    _clear_cookie(response, "portal")
    return {"signed_out": True}


# -- answering a consent request --------------------------------------------------------
@router.post("/portal/api/request/session")
async def request_session(request: Request, response: Response,
                          body: LinkBody) -> dict[str, Any]:
    svc = _portal_post(request)
    new = await blocking(svc.requests.open_link, body.token)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf, **await blocking(svc.requests.view, new.session, body.locale)}


@router.get("/portal/api/request")
async def request_view(request: Request, response: Response,
                       locale: Locale = "en") -> dict[str, Any]:
    svc, session = await _session(request, "request", post=False)
    _secure(response)
    return {**await blocking(svc.requests.view, session, locale),
            "csrf": csrf_token(request.cookies.get(COOKIES["request"], ""))}


@router.post("/portal/api/request/challenge")
async def request_challenge(request: Request, response: Response) -> dict[str, Any]:
    svc, session = await _session(request, "request")
    _secure(response)
    return await blocking(svc.links.start_challenge, session)


@router.post("/portal/api/request/proof")
async def request_proof(request: Request, response: Response,
                        challenge_id: Annotated[str, Form(max_length=64)],
                        frames: Annotated[list[UploadFile], File()],
                        display_name: Annotated[str | None, Form(max_length=200)] = None,
                        guardian: Annotated[bool, Form()] = False) -> dict[str, bool]:
    svc, session = await _session(request, "request")
    _secure(response)
    burst = await _frames(frames)
    ok = await services(request).images(svc.requests.prove, session, challenge_id, burst,
                                        display_name, guardian)
    return {"verified": ok}


@router.post("/portal/api/request/decision")
async def request_decision(request: Request, response: Response,
                           body: DecisionBody) -> dict[str, Any]:
    svc, session = await _session(request, "request")
    resolved = await blocking(svc.requests.decide, session, body.accept, locale=body.locale,
                              signature=body.signature, text_sha256=body.text_sha256)
    _clear_cookie(response, "request")
    _secure(response)
    return {"state": resolved.state}


# -- self-enrolment ---------------------------------------------------------------------
@router.post("/portal/api/enrol/start")
async def enrol_start(request: Request, response: Response) -> dict[str, Any]:
    svc = _portal_post(request)
    new, challenge = await blocking(svc.portal.start_enrollment)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf, **challenge}


@router.post("/portal/api/enrol")
async def enrol(request: Request, response: Response,
                challenge_id: Annotated[str, Form(max_length=64)],
                frames: Annotated[list[UploadFile], File()],
                display_name: Annotated[str, Form(min_length=1, max_length=200)],
                guardian: Annotated[bool, Form()] = False,
                status: Annotated[Literal["protected", "consenting"], Form()] = "protected",
                ) -> dict[str, Any]:
    svc, session = await _session(request, "enrol")
    burst = await _frames(frames)
    subject, portal = await services(request).images(
        svc.portal.complete_enrollment, session, challenge_id, burst, display_name,
        guardian=guardian, status=status)
    _clear_cookie(response, "enrol")
    _set_cookie(response, svc, portal)
    _secure(response)
    return {"subject_id": subject.subject_id, "status": subject.status, "csrf": portal.csrf}


# -- an app's self-enrolment of its own user ---------------------------------------------
@router.post("/portal/api/self/session")
async def self_session(request: Request, response: Response,
                       body: LinkBody) -> dict[str, Any]:
    svc = _portal_post(request)
    new, challenge = await blocking(svc.portal.open_self_link, body.token)
    _set_cookie(response, svc, new)
    _secure(response)
    return {"csrf": new.csrf, **challenge}


@router.post("/portal/api/self")
async def self_enrol(request: Request, response: Response,
                     challenge_id: Annotated[str, Form(max_length=64)],
                     frames: Annotated[list[UploadFile], File()],
                     display_name: Annotated[str, Form(min_length=1, max_length=200)],
                     ) -> dict[str, Any]:
    svc, session = await _session(request, "self")
    burst = await _frames(frames)
    subject = await services(request).images(svc.portal.complete_self, session, challenge_id,
                                             burst, display_name)
    _clear_cookie(response, "self")
    _secure(response)
    return {"subject_id": subject.subject_id, "enrolled": True}
