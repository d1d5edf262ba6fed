"""Consent routes for apps and operators; each handler calls one consent method.

- App routes (``check`` scope; the app is always the key's): ``POST /v1/consent-requests``,
  ``GET /v1/consent-requests/{id}``, ``GET /v1/revocations``, ``GET /v1/grants/{id}/token``,
  ``POST /v1/self-enrolments`` and ``GET /v1/self-enrolments/{id}`` (an app's user enrols
  their own face with a liveness check, without an operator key).
- Operator route (``admin``): ``POST /v1/subjects/{id}/portal-link``.
- Public: ``GET /.well-known/jwks.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gate.api.auth import AdminKey, CheckKey
from gate.api.bodies import b64
from gate.api.routes import AUTH, errors
from gate.api.services import blocking, services
from gate.consent.requests import ConsentRequest
from gate.types import Grant

router = APIRouter(tags=["consent"])
RecordId = Annotated[str, PathParam(min_length=1, max_length=64)]


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
    expires_in_s: int | None = Field(default=None, ge=60, le=2**31 - 1)
    grant_ttl_s: int | None = Field(default=None, ge=60, le=2**31 - 1)
    max_uses: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ConsentRequestCreated(BaseModel):
    request: ConsentRequest
    link: str = Field(description="One-time link for the person; shown once.")


class Revoked(BaseModel):
    grant_id: str
    epoch: int = Field(description="The feed position of this entry.")
    reason: Literal["revoked", "erased", "used_up"]


class RevocationsAnswer(BaseModel):
    epoch: int = Field(description="Pass as since_epoch next time.")
    revoked: list[Revoked]
    more: bool = Field(description="Another page follows: ask again from epoch.")


class PortalLink(BaseModel):
    url: str = Field(description="One-time sign-in link; deliver it privately.")


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]


class SelfEnrolmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256,
                         description="The app's own user who will enrol their face.")


class SelfEnrolmentView(BaseModel):
    enrolment_id: str
    app_id: str
    user_id: str
    state: str = Field(description="pending, enrolled or expired")
    subject_id: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None


class SelfEnrolmentCreated(BaseModel):
    enrolment: SelfEnrolmentView
    link: str = Field(description="One-time link for the user; shown once.")


@router.post("/v1/consent-requests", status_code=201, response_model=ConsentRequestCreated,
             responses=errors(400, 404, 413, 415, 422, *AUTH))
async def create_consent_request(request: Request, body: ConsentRequestBody,
                                 key: CheckKey) -> ConsentRequestCreated:
    """Ask the person in a ``needs_consent`` decision; forward ``link`` to them."""
    svc = services(request)
    fields = body.model_dump(exclude={"image"})
    created, link = await svc.images(svc.consent.requests.create, key.app_id,
                                     image=b64(body.image, "image"),
                                     jurisdictions=key.jurisdictions, **fields)
    return ConsentRequestCreated(request=created, link=link)


@router.get("/v1/consent-requests/{request_id}", response_model=ConsentRequest,
            responses=errors(404, 422, *AUTH))
async def get_consent_request(request: Request, key: CheckKey,
                              request_id: RecordId) -> ConsentRequest:
    """Poll a request: ``pending``, ``granted`` (with ``grant_token``), ``refused``, ``expired``."""
    return await blocking(services(request).consent.requests.get, key.app_id, request_id)


@router.get("/v1/revocations", response_model=RevocationsAnswer,
            responses=errors(422, *AUTH))
async def revocations(request: Request, key: CheckKey,
                      since_epoch: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
                      limit: Annotated[int, Query(ge=1, le=5000)] = 5000) -> RevocationsAnswer:
    """This app's grants revoked (by the person, by switching to protected, by erasure, or
    used up) after ``since_epoch``."""
    page = await blocking(services(request).consent.revocations, key.app_id, since_epoch,
                          limit)
    return RevocationsAnswer(epoch=page.epoch, more=page.more,
                             revoked=[Revoked.model_validate(r) for r in page.revoked])


@router.get("/v1/grants/{grant_id}/token", response_model=Grant,
            responses=errors(404, 422, *AUTH))
async def grant_token(request: Request, key: CheckKey, grant_id: RecordId) -> Grant:
    """A fresh signed token for one of this app's active grants."""
    return await blocking(services(request).gate.lifecycle.token_for, grant_id, key.app_id)


@router.post("/v1/self-enrolments", status_code=201, response_model=SelfEnrolmentCreated,
             responses=errors(400, 415, 422, *AUTH))
async def create_self_enrolment(request: Request, body: SelfEnrolmentBody,
                                key: CheckKey) -> SelfEnrolmentCreated:
    """Invite one of this app's users to enrol their own face (a liveness check in the
    portal). Once enrolled, this app's requests for that user read the face as ``self``."""
    enrolment, link = await blocking(services(request).consent.portal.invite_self,
                                     key.app_id, body.user_id)
    return SelfEnrolmentCreated(
        enrolment=SelfEnrolmentView.model_validate(enrolment, from_attributes=True),
        link=link)


@router.get("/v1/self-enrolments/{enrolment_id}", response_model=SelfEnrolmentView,
            responses=errors(404, 422, *AUTH))
async def get_self_enrolment(request: Request, key: CheckKey,
                             enrolment_id: RecordId) -> SelfEnrolmentView:
    enrolment = await blocking(services(request).consent.portal.self_enrolment,
                               enrolment_id, key.app_id)
    return SelfEnrolmentView.model_validate(enrolment, from_attributes=True)


@router.post("/v1/subjects/{subject_id}/portal-link", response_model=PortalLink,
             responses=errors(404, 422, *AUTH))
async def portal_link(request: Request, key: AdminKey, subject_id: RecordId) -> PortalLink:
    """A one-time portal sign-in link for the subject (deliver it to them privately)."""
    return PortalLink(url=await blocking(services(request).consent.portal.link, subject_id))


@router.get("/.well-known/jwks.json", response_model=Jwks,
            responses={200: {"model": Jwks, "description": "The public signing keys."}})
async def jwks(request: Request) -> JSONResponse:
    """Public keys that verify grant tokens."""
    return JSONResponse(services(request).consent.jwks(),
                        headers={"Cache-Control": "public, max-age=300"})
