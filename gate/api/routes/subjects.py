"""``/v1/subjects``: enrol, read, change status, erase. Scope ``admin``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from gate.api.auth import AdminKey, require
from gate.api.bodies import read_enroll
from gate.api.routes import AUTH, body_doc, errors
from gate.api.schemas import RECORD_ID, StatusBody
from gate.api.services import blocking, services
from gate.types import Requester, Subject

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
SubjectId = Annotated[str, Path(pattern=RECORD_ID)]


@router.post("", status_code=201, response_model=Subject,
             responses=errors(400, 413, 415, 422, *AUTH),
             openapi_extra=body_doc("EnrollBody", "EnrollForm"))
async def enroll(request: Request, key: AdminKey) -> Subject:
    """Enrol a person from photos that each show exactly one face.

    With ``owner_user_id`` the subject is that user's own face in the key's app."""
    svc = services(request)
    fields, images = await read_enroll(request)
    owner = Requester(app_id=key.app_id, user_id=fields.owner_user_id) \
        if fields.owner_user_id else None
    return await svc.images(svc.gate.lifecycle.enroll, images,
                            display_name=fields.display_name, status=fields.status,
                            owner=owner, aliases=fields.aliases, guardian=fields.guardian)


@router.get("", response_model=list[Subject], responses=errors(*AUTH),
            dependencies=[Depends(require("admin"))])
async def list_subjects(request: Request) -> list[Subject]:
    """Every enrolled subject (no templates)."""
    return await blocking(services(request).gate.lifecycle.list_subjects)


@router.get("/{subject_id}", response_model=Subject, responses=errors(404, 422, *AUTH),
            dependencies=[Depends(require("admin"))])
async def get_subject(request: Request, subject_id: SubjectId) -> Subject:
    return await blocking(services(request).gate.lifecycle.get_subject, subject_id)


@router.post("/{subject_id}/status", response_model=Subject,
             responses=errors(400, 404, 422, *AUTH), dependencies=[Depends(require("admin"))])
async def set_status(request: Request, subject_id: SubjectId, body: StatusBody) -> Subject:
    """Set ``protected`` (opt-out: never generate me) or ``consenting``."""
    return await blocking(services(request).gate.lifecycle.set_status, subject_id,
                          body.status)


@router.delete("/{subject_id}", status_code=204, response_class=Response,
               responses=errors(404, 422, *AUTH), dependencies=[Depends(require("admin"))])
async def erase(request: Request, subject_id: SubjectId) -> Response:
    """Erase the subject everywhere before answering: every row about them (templates,
    grants, consent requests, portal links and sessions, activity), index entries and
    caches; their grant tokens are listed in the revocation feed. The audit log keeps
    only keyed, non-identifying references."""
    await blocking(services(request).gate.lifecycle.erase, subject_id)
    return Response(status_code=204)
