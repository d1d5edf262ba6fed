"""ComfyUI routes: ``/upload/image``, ``/prompt``, ``/history/{id}``, ``/view`` (and ``/api/...``).

Uploads are pre-screened and remembered by name and sha256. A prompt's images are read
back from the upstream (the only host the proxy fetches from), compared with what was
uploaded through the gate, and checked with the workflow's operation. ``/view`` serves an
output only when it belongs to a prompt the gate checked for the same app, after
``check_output`` and the obligations. The ``/ws`` websocket is not proxied: its live
previews would bypass output screening (clients poll ``/history``).
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gate.proxy import comfyui
from gate.proxy.body import parse_json, parse_multipart, read_body
from gate.proxy.guard import Caller
from gate.proxy.ledger import PromptRecord
from gate.proxy.services import Services, gate_headers, passthrough, services
from gate.proxy.types import GateFields, ProxyError
from gate.types import Decision, ImageInput

router = APIRouter()
#: Read-only routes passed through (no images, nothing of other users' prompts).
LISTINGS = ("/object_info", "/object_info/{node_class}", "/system_stats", "/embeddings",
            "/models", "/models/{folder}")


@router.post("/upload/image")
@router.post("/api/upload/image")
async def upload_image(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    fields, forward = comfyui.map_upload(parse_multipart(raw, content_type))
    decision = await svc.guard.check(caller, fields, prescreen=True)
    answer = await svc.upstream.send(forward, request.headers)
    if answer.ok:
        svc.ledger.remember_upload(caller.requester.app_id, comfyui.upload_ref(answer.json()),
                                   fields.images[0].sha256)
    return passthrough(answer, gate_headers(decision))


@router.post("/prompt")
@router.post("/api/prompt")
async def prompt(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    plan, forward = comfyui.map_prompt(parse_json(raw))
    fields = await _resolve(svc, request, caller, plan)
    decision = await svc.guard.check(caller, fields)
    answer = await svc.upstream.send(forward, request.headers)
    if answer.ok:
        doc = answer.json()
        svc.ledger.remember_prompt(str(doc.get("prompt_id")), _record(caller, fields, decision))
    return passthrough(answer, gate_headers(decision))


@router.get("/history/{prompt_id}")
@router.get("/api/history/{prompt_id}")
async def history(request: Request, prompt_id: str) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    if svc.ledger.prompt(caller.requester.app_id, prompt_id) is None:
        return JSONResponse({})  # as upstream answers for an unknown prompt
    doc = await _history(svc, request, prompt_id)
    return JSONResponse({prompt_id: doc[prompt_id]} if prompt_id in doc else {})


@router.get("/view")
@router.get("/api/view")
async def view(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    ref = comfyui.query_ref(request.query_params)
    # Only the validated file reference (and the two rendering options) go upstream, so a
    # repeated query parameter cannot name another file than the one checked here.
    query = [*ref.params(), *((k, v) for k in ("preview", "channel")
                              if (v := request.query_params.get(k)))]
    if ref.type == "input":  # the app's own upload, screened when it came in
        if svc.ledger.upload_sha256(caller.requester.app_id, ref) is None:
            raise ProxyError(403, "not_checked", "this image was not uploaded through the "
                             "consent gate by this app")
        return passthrough(await svc.upstream.get(comfyui.VIEW, query, request.headers))
    found = svc.ledger.output_of(caller.requester.app_id, ref) or \
        await _find_output(svc, request, caller.requester.app_id, ref)
    if found is None:
        raise ProxyError(403, "not_checked", "this image does not come from a prompt the "
                         "consent gate checked for this app")
    answer = await svc.upstream.get(comfyui.VIEW, query, request.headers)
    if not answer.ok:
        return passthrough(answer)
    return await _release(svc, caller, found[1], answer.content)


async def listing(request: Request) -> Response:
    svc = services(request)
    await svc.auth.caller(request)
    return passthrough(await svc.upstream.get(
        request.url.path, list(request.query_params.multi_items()), request.headers))


for _path in LISTINGS:
    router.add_api_route(_path, listing, methods=["GET"])
    router.add_api_route("/api" + _path, listing, methods=["GET"])


# --------------------------------------------------------------------------- helpers


async def _resolve(svc: Services, request: Request, caller: Caller,
                   plan: comfyui.Plan) -> GateFields:
    """The plan's images: read back from the upstream, checked against the uploads."""
    images = []
    for role, ref in plan.refs:
        answer = await svc.upstream.get(comfyui.VIEW, ref.params(), request.headers)
        if not answer.ok:
            raise ProxyError(400, "image_not_found", "a LoadImage file is not on the server",
                             param="prompt")
        known = svc.ledger.upload_sha256(caller.requester.app_id, ref)
        if known is not None and known != hashlib.sha256(answer.content).hexdigest():
            raise ProxyError(409, "image_changed", "an uploaded image changed on the server "
                             "after the consent gate screened it", param="prompt")
        images.append(ImageInput(role=role, data=answer.content))
    images += [ImageInput(role=r, data=d) for r, d in plan.inline]
    return GateFields(plan.operation, tuple(images), plan.prompt, plan.negative_prompt)


async def _history(svc: Services, request: Request, prompt_id: str) -> dict[str, object]:
    answer = await svc.upstream.get(f"/history/{prompt_id}", [], request.headers)
    if not answer.ok:
        raise HTTPException(answer.status)
    doc = answer.json()
    for pid, refs in comfyui.history_outputs(doc).items():
        if pid == prompt_id:
            svc.ledger.remember_outputs(pid, refs)
    return doc if isinstance(doc, dict) else {}


async def _find_output(svc: Services, request: Request, app_id: str,
                       ref: comfyui.ImageRef) -> tuple[str, PromptRecord] | None:
    """Look the file up in the history of this app's recent prompts (bounded)."""
    for prompt_id in svc.ledger.recent_prompts(app_id, limit=8):
        await _history(svc, request, prompt_id)
        found = svc.ledger.output_of(app_id, ref)
        if found is not None:
            return found
    return None


async def _release(svc: Services, caller: Caller, record: PromptRecord,
                   image: bytes) -> Response:
    """Screen one output of a checked prompt as that prompt's requester, then label it."""
    decision, fields = _replay(record)
    owner = Caller(caller.requester.model_copy(update={"user_id": record.user_id}),
                   caller.request_id)
    released = await svc.guard.release(owner, decision, fields, [image],
                                       grant_ids=record.grant_ids)
    return Response(released[0].data, media_type=released[0].media_type,
                    headers=gate_headers(decision, released))


def _record(caller: Caller, fields: GateFields, decision: Decision) -> PromptRecord:
    return PromptRecord(
        app_id=caller.requester.app_id, user_id=caller.requester.user_id,
        request_id=decision.request_id, operation=fields.operation, prompt=fields.prompt,
        content=tuple(decision.content), obligations=tuple(decision.obligations),
        grant_ids=tuple(f.grant_id for f in decision.faces if f.grant_id),
        policy_version=decision.policy_version)


def _replay(record: PromptRecord) -> tuple[Decision, GateFields]:
    """The allowed input decision's context, for screening an output of that prompt."""
    decision = Decision(verdict="allow", request_id=record.request_id,
                        policy_version=record.policy_version, reasons=[], faces=[],
                        obligations=list(record.obligations),
                        content=list(record.content))
    return decision, GateFields(record.operation, prompt=record.prompt)
