"""OpenAI Images API routes: ``/v1/images/generations``, ``/edits``, ``/variations``.

``/edits`` takes multipart (files) or JSON (``images`` as data URLs), as the API does.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gate.proxy import openai
from gate.proxy.body import media_type, parse_json, parse_multipart, read_body
from gate.proxy.guard import Caller
from gate.proxy.services import Services, gated_json, passthrough, services
from gate.proxy.types import Forward, GateFields

router = APIRouter()


@router.post(openai.GENERATIONS)
async def generations(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    body = parse_json(await read_body(request, svc.settings.max_body_bytes))
    return await _generate(svc, request, caller, *openai.map_generation(body))


@router.post(openai.EDITS)
async def edits(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    content_type = request.headers.get("content-type")
    if media_type(content_type) == "application/json":
        return await _generate(svc, request, caller, *openai.map_edit_json(parse_json(body)))
    parts = parse_multipart(body, content_type)
    return await _generate(svc, request, caller, *openai.map_edit(parts))


@router.post(openai.VARIATIONS)
async def variations(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    parts = parse_multipart(body, request.headers.get("content-type"))
    return await _generate(svc, request, caller, *openai.map_variation(parts))


@router.get("/v1/models")
@router.get("/v1/models/{model}")
async def models(request: Request) -> Response:
    svc = services(request)
    await svc.auth.caller(request)
    return passthrough(await svc.upstream.get(request.url.path, [], request.headers))


async def _generate(svc: Services, request: Request, caller: Caller, fields: GateFields,
                    forward: Forward) -> Response:
    decision = await svc.guard.check(caller, fields)
    answer = await svc.upstream.send(forward, request.headers)
    if not answer.ok:
        return passthrough(answer)
    doc = answer.json()
    images = [openai.decode_b64(o.b64) if o.b64 is not None else
              await svc.upstream.fetch_image(o.url or "", request.headers)
              for o in openai.outputs(doc)]
    released = await svc.guard.release(caller, decision, fields, images)
    return gated_json(openai.with_images(doc, [r.data for r in released]), decision, released)
