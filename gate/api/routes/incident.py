"""Incident response: trace, label outputs, takedown reports, the blocklist.

``POST /v1/label-output`` (scope ``check``) marks and labels an allowed request's output.
``POST /v1/reports`` takes a takedown report from an app (scope ``check``) or an operator
(``admin``). Everything else is the operator's (scope ``admin``): ``POST /v1/trace``,
the reports queue and its resolutions, and the blocklist (import / export in the hash-list
formats trust-and-safety teams exchange).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse

from gate.api.auth import AdminKey, CheckKey, require
from gate.api.bodies import read_label_output, read_report, read_trace
from gate.api.errors import NotReady
from gate.api.keys import ApiKey
from gate.api.routes import AUTH, errors
from gate.api.schemas import (
    RECORD_ID,
    BlocklistEntry,
    BlocklistPage,
    ImportResult,
    ResolveBody,
)
from gate.api.services import Services, blocking, services
from gate.errors import NotFound
from gate.incident.desk import IncidentDesk
from gate.incident.hashlists import HashListFormat, read_hash_list, write_hash_list
from gate.incident.reports import Report
from gate.incident.trace import Trace

router = APIRouter(prefix="/v1", tags=["incident"])
ReportKey = Annotated[ApiKey, Depends(require("check", "admin"))]
_IMAGE_ERRORS = errors(400, 413, 415, 422, *AUTH)
_ONE_IMAGE = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"], "additionalProperties": False,
        "properties": {"image": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": {"$ref": "#/components/schemas/TraceBody"}}}}}
_FORMATS = {"te-file": "text/plain", "te-csv": "text/csv", "te-simple": "text/csv"}


def _desk(svc: Services) -> IncidentDesk:
    if svc.gate.incident is None:
        raise NotReady("incident response needs an SQL consent store")
    return svc.gate.incident


@router.post("/trace", response_model=Trace, responses=_IMAGE_ERRORS,
             openapi_extra=_ONE_IMAGE)
async def trace(request: Request, key: AdminKey) -> Trace:
    """Where did this image come from? The request and its audit record (chain segment
    verified), from the image's C2PA manifest or invisible mark; ``found: false`` for an
    unmarked image, never somebody else's record."""
    svc = services(request)
    image = await read_trace(request)
    return await svc.images(svc.gate.trace, image)


@router.post("/label-output", response_class=Response, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}},
          "description": "The labelled image."}, **_IMAGE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/LabelOutputBody"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/LabelOutputForm"}},
    }}})
async def label_output(request: Request, key: CheckKey) -> Response:
    """Mark and label the generated image of an allowed request: an invisible mark that
    ``/v1/trace`` reads, the implicit AI labels (GB 45438, IPTC), and what the decision's
    obligations ask (a visible label, a C2PA manifest). 422 for a request id this gate
    did not allow."""
    svc = services(request)
    fields, image = await read_label_output(request)
    labelled = await svc.images(svc.gate.label, image, request_id=fields.request_id,
                                locale=fields.locale, app_id=key.app_id)
    return Response(labelled.data, media_type=labelled.media_type, headers={
        "X-Gate-Request-Id": fields.request_id,
        "X-Gate-Watermarked": "true" if labelled.digest is not None else "false",
        "X-Gate-Visible-Label": "true" if labelled.visible else "false",
        "X-Gate-C2PA": "true" if labelled.c2pa else "false"})


# -- reports --------------------------------------------------------------------------------
@router.post("/reports", response_model=Report, status_code=201,
             responses=errors(400, 404, 413, 415, 422, *AUTH),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ReportBody"}},
                 "multipart/form-data": {"schema": {
                     "$ref": "#/components/schemas/ReportForm"}}}}})
async def report(request: Request, key: ReportKey) -> Report:
    """A takedown report. At once: the image's PDQ hashes join the blocklist
    (provisionally: every later input or output matching them is denied,
    ``core.known_image``), a trace runs and is attached, and the deadline is set (48 hours
    by default). The image is not kept."""
    svc = services(request)
    fields, image = await read_report(request)
    result = await svc.images(svc.gate.report, image=image, pdq=fields.pdq or None,
                              reason=fields.reason, subject_id=fields.subject_id,
                              contact=fields.contact)
    svc.metrics.observe_reports(await blocking(_desk(svc).reports.counts))
    return result


@router.get("/reports", response_model=list[Report], responses=errors(422, *AUTH))
async def list_reports(
        request: Request, key: AdminKey,
        status: Literal["open", "actioned", "rejected"] | None = None,
        overdue: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[Report]:
    """The queue: open reports first, nearest deadline first; ``overdue=true`` lists the
    open ones past their deadline."""
    desk = _desk(services(request))
    return await blocking(desk.reports.list, status=status, overdue=overdue, limit=limit,
                          offset=offset)


@router.get("/reports/{report_id}", response_model=Report, responses=errors(404, *AUTH))
async def get_report(request: Request, key: AdminKey,
                     report_id: Annotated[str, Path(pattern=RECORD_ID)]) -> Report:
    return await blocking(_desk(services(request)).reports.get, report_id)


@router.post("/reports/{report_id}/resolve", response_model=Report,
             responses=errors(404, 409, 422, *AUTH))
async def resolve_report(request: Request, key: AdminKey,
                         report_id: Annotated[str, Path(pattern=RECORD_ID)],
                         body: ResolveBody) -> Report:
    """``actioned`` (its blocklist entries become permanent) or ``rejected`` (its
    provisional entries are removed), with a reason; audited. 409 when already resolved."""
    svc = services(request)
    desk = _desk(svc)
    result = await blocking(desk.reports.resolve, report_id, body.status, body.reason,
                            by=f"key:{key.key_id}")
    if result.resolved_at is not None:
        svc.metrics.report_action.labels(result.status).observe(
            (result.resolved_at - result.created_at).total_seconds())
    svc.metrics.observe_reports(await blocking(desk.reports.counts))
    return result


# -- blocklist ------------------------------------------------------------------------------
@router.get("/blocklist", response_model=BlocklistPage, responses=errors(422, *AUTH))
async def blocklist(request: Request, key: AdminKey,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> BlocklistPage:
    desk = _desk(services(request))
    rows = await blocking(desk.blocklist.entries, limit, offset)
    return BlocklistPage(entries=[BlocklistEntry.model_validate(r) for r in rows],
                         total=len(desk.blocklist))


@router.post("/blocklist/import", response_model=ImportResult,
             responses=errors(400, 413, 422, *AUTH),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/plain": {"schema": {"type": "string"}},
                 "text/csv": {"schema": {"type": "string"}}}}})
async def import_list(request: Request, key: AdminKey, name: Annotated[
        str, Query(min_length=1, max_length=128)],
        format: HashListFormat | None = None) -> ImportResult:
    """Add a hash list (ThreatExchange / HMA formats: ``te-file``, ``te-csv``,
    ``te-simple``; sniffed when ``format`` is not given) under the list ``name``."""
    desk = _desk(services(request))
    parsed = read_hash_list(await request.body(), format, collab=name)
    added = await blocking(desk.blocklist.add_entries, parsed.entries, list_name=name)
    return ImportResult(added=added)


@router.get("/blocklist/export", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}},
                                         "text/csv": {"schema": {"type": "string"}}},
                             "description": "The hash list."}, **errors(422, *AUTH)})
async def export_list(request: Request, key: AdminKey,
                      format: HashListFormat = "te-csv") -> PlainTextResponse:
    """The confirmed (not provisional) entries, in a format other platforms import."""
    desk = _desk(services(request))
    entries = await blocking(desk.blocklist.export)
    return PlainTextResponse(write_hash_list(entries, format), media_type=_FORMATS[format])


@router.delete("/blocklist/{entry_id}", status_code=204, responses=errors(404, *AUTH))
async def remove_entry(request: Request, key: AdminKey,
                       entry_id: Annotated[str, Path(pattern=RECORD_ID)]) -> Response:
    desk = _desk(services(request))
    if not await blocking(desk.blocklist.remove, entry_id):
        raise NotFound("no such blocklist entry")
    return Response(status_code=204)
