"""AUTOMATIC1111 / Forge routes: ``/sdapi/v1/txt2img`` and ``/sdapi/v1/img2img``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from gate.proxy import a1111
from gate.proxy.body import parse_json, read_body
from gate.proxy.services import gated_json, passthrough, services

router = APIRouter()
#: Read-only listings passed through (they carry no images).
LISTINGS = ("sd-models", "samplers", "schedulers", "upscalers", "sd-vae", "loras",
            "embeddings", "face-restorers", "scripts")


@router.post(a1111.TXT2IMG)
@router.post(a1111.IMG2IMG)
async def generate(request: Request) -> Response:
    svc = services(request)
    caller = await svc.auth.caller(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    fields, forward = a1111.map_request(request.url.path, parse_json(raw, status=422))
    decision = await svc.guard.check(caller, fields)
    answer = await svc.upstream.send(forward, request.headers)
    if not answer.ok:
        return passthrough(answer)
    doc = answer.json()
    released = await svc.guard.release(caller, decision, fields, a1111.outputs(doc))
    return gated_json(a1111.with_images(doc, [r.data for r in released]), decision, released)


@router.get("/sdapi/v1/{listing}")
async def listing(request: Request, listing: str) -> Response:
    svc = services(request)
    await svc.auth.caller(request)
    if listing not in LISTINGS:
        raise HTTPException(404)
    return passthrough(await svc.upstream.get(request.url.path, [], request.headers))
