"""``POST /v1/check`` and ``POST /v1/check-output``: scope ``check``."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gate.api.auth import CheckKey
from gate.api.bodies import read_check, read_check_output
from gate.api.routes import AUTH, body_doc, errors
from gate.api.schemas import CheckOutputResult
from gate.api.services import services
from gate.types import Decision, Requester

router = APIRouter(prefix="/v1", tags=["check"])
_ERRORS = errors(400, 413, 415, 422, *AUTH)


@router.post("/check", response_model=Decision, responses=_ERRORS,
             openapi_extra=body_doc("CheckBody", "CheckForm"))
async def check(request: Request, key: CheckKey) -> Decision:
    """Decide allow / needs_consent / deny for a generation request with images.

    The requester's app is the API key's app; a body ``app_id`` is refused (422). Any
    internal failure or timeout is a ``deny`` (rule ``core.fail_closed``), never an allow.
    """
    svc = services(request)
    gate_request = await read_check(request, key.app_id, key.jurisdictions)
    decision = await svc.gate.check_async(gate_request)
    svc.metrics.observe_decision("check", decision)
    return decision


@router.post("/check-output", response_model=CheckOutputResult, responses=_ERRORS,
             openapi_extra=body_doc("CheckOutputBody", "CheckOutputForm"))
async def check_output(request: Request, key: CheckKey) -> JSONResponse:
    """Screen a generated image (the answer can only tighten the input decision).

    With ``label: true`` an allowed output comes back marked and labelled too
    (``labelled_image_b64``): the invisible mark ``/v1/trace`` reads, the implicit AI
    labels, and what the obligations ask (visible label, C2PA manifest)."""
    svc = services(request)
    fields, image = await read_check_output(request)
    decision = await svc.gate.check_output_async(
        image, request_id=fields.request_id, jurisdictions=key.jurisdictions,
        requester=Requester(app_id=key.app_id, user_id=fields.user_id),
        operation=fields.operation, content=fields.content, prompt=fields.prompt)
    svc.metrics.observe_decision("check_output", decision)
    body = decision.model_dump(mode="json")
    if fields.label:  # the two fields appear only when asked for (older clients)
        body.update(labelled_image_b64=None, labelled_media_type=None)
        if decision.allowed:
            labelled = await svc.images(svc.gate.label, image,
                                        request_id=decision.request_id, app_id=key.app_id)
            body.update(labelled_image_b64=base64.b64encode(labelled.data).decode("ascii"),
                        labelled_media_type=labelled.media_type)
    return JSONResponse(body)
