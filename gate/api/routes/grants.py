"""``/v1/grants``: record, revoke and list consent grants. Scope ``admin``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from gate.api.auth import require
from gate.api.routes import AUTH, errors
from gate.api.schemas import RECORD_ID, GrantBody
from gate.api.services import blocking, services
from gate.types import Grant

router = APIRouter(prefix="/v1/grants", tags=["grants"],
                   dependencies=[Depends(require("admin"))])


@router.post("", status_code=201, response_model=Grant,
             responses=errors(400, 404, 413, 415, 422, *AUTH))
async def grant(request: Request, body: GrantBody) -> Grant:
    """Record a subject's consent for a grantee app (durable before it answers); the
    answer carries the grant's signed token (compact JWS, verifiable with the JWKS)."""
    fields = body.model_dump(exclude={"subject_id"})
    return await blocking(services(request).gate.lifecycle.grant, body.subject_id, **fields)


@router.delete("/{grant_id}", response_model=Grant, responses=errors(404, 409, 422, *AUTH))
async def revoke(request: Request,
                 grant_id: Annotated[str, Path(pattern=RECORD_ID)]) -> Grant:
    """Revoke at once: every replica refuses the grant from its next decision on."""
    return await blocking(services(request).gate.lifecycle.revoke, grant_id)


@router.get("", response_model=list[Grant], responses=errors(422, *AUTH))
async def list_grants(request: Request, subject_id: Annotated[
        str | None, Query(pattern=RECORD_ID)] = None) -> list[Grant]:
    return await blocking(services(request).gate.lifecycle.list_grants, subject_id)
