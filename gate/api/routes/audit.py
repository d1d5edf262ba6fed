"""``/v1/audit``: read and verify the hash-chained audit log. Scope ``admin``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from gate.api.auth import require
from gate.api.routes import AUTH, errors
from gate.api.schemas import MAX_INT, RECORD_ID, AuditEvent, AuditPage
from gate.api.services import blocking, services
from gate.types import AuditVerification

router = APIRouter(prefix="/v1/audit", tags=["audit"],
                   dependencies=[Depends(require("admin"))])


@router.get("", response_model=AuditPage, responses=errors(422, *AUTH))
async def audit_events(request: Request, since: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage:
    """Events after sequence number ``since`` (no pixels, embeddings or names)."""
    svc = services(request)
    rows = await blocking(svc.gate.audit_events, since, limit)
    events = [AuditEvent.model_validate(r) for r in rows]
    return AuditPage(events=events, next_since=events[-1].seq if events else since)


@router.post("/verify", response_model=AuditVerification, responses=errors(*AUTH))
async def verify(request: Request) -> AuditVerification:
    """Walk the whole hash chain; ``ok`` is false at the first edited/missing event."""
    svc = services(request)
    return await blocking(svc.gate.verify_audit)


@router.get("/requests/{request_id}", response_model=AuditPage, responses=errors(422, *AUTH))
async def request_events(request: Request, request_id: Annotated[
        str, Path(pattern=RECORD_ID)]) -> AuditPage:
    """Every event about one request id (its input decision, output screenings)."""
    svc = services(request)
    rows = await blocking(svc.gate.audit_events_of, request_id)
    events = [AuditEvent.model_validate(r) for r in rows]
    return AuditPage(events=events, next_since=events[-1].seq if events else 0)
