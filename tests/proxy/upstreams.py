"""Fake image APIs that are real HTTP servers on 127.0.0.1 (uvicorn in a thread).

Each speaks its API's documented request and response shapes, records what it received
(headers included, so tests can see that ``Authorization`` passed through untouched) and
answers ``state.output`` as the generated image.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class State:
    """What a fake upstream answers, and what it has received."""

    output: bytes = b""
    answer_url: str | None = None  # OpenAI: answer this URL instead of b64_json
    received: list[dict[str, Any]] = field(default_factory=list)
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # ComfyUI
    history: dict[str, Any] = field(default_factory=dict)

    def reset(self, output: bytes) -> None:
        self.output, self.answer_url = output, None
        self.received.clear()
        self.files.clear()
        self.history.clear()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _record(state: State, request: Request) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": request.url.path, "method": request.method,
                             "headers": dict(request.headers),
                             "query": dict(request.query_params),
                             "raw_query": request.url.query, "raw": await request.body()}
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        entry["json"] = json.loads(await request.body())
    elif kind.startswith("multipart/form-data"):
        form = await request.form()
        entry["fields"] = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        entry["files"] = [(k, v.filename, await v.read()) for k, v in form.multi_items()
                          if isinstance(v, UploadFile)]
        await form.close()
    state.received.append(entry)
    return entry


# --------------------------------------------------------------------------- OpenAI


def openai_app(state: State) -> Starlette:
    async def images(request: Request) -> Response:
        entry = await _record(state, request)
        params = entry.get("json") or entry.get("fields") or {}
        if params.get("prompt") == "upstream-error":
            return JSONResponse({"error": {"message": "Your request was rejected.",
                                           "type": "invalid_request_error", "param": None,
                                           "code": "content_policy_violation"}}, 400)
        n = int(params.get("n") or 1)
        if state.answer_url is not None or params.get("response_format") == "url":
            item = {"url": state.answer_url or f"{request.base_url}files/out.png"}
        else:
            item = {"b64_json": _b64(state.output)}
        return JSONResponse({"created": 1_700_000_000, "data": [item] * n,
                             "echo": {"authorization": request.headers.get("authorization")}})

    async def file(request: Request) -> Response:
        await _record(state, request)
        return Response(state.output, media_type="image/png")

    async def models(request: Request) -> Response:
        await _record(state, request)
        return JSONResponse({"object": "list", "data": [{"id": "dall-e-2"}]})

    return Starlette(routes=[
        Route("/v1/images/generations", images, methods=["POST"]),
        Route("/v1/images/edits", images, methods=["POST"]),
        Route("/v1/images/variations", images, methods=["POST"]),
        Route("/files/out.png", file),
        Route("/v1/models", models),
    ])


# --------------------------------------------------------------------------- AUTOMATIC1111


def a1111_app(state: State) -> Starlette:
    async def generate(request: Request) -> Response:
        entry = await _record(state, request)
        body = entry.get("json") or {}
        batch = int(body.get("batch_size") or 1)
        return JSONResponse({"images": [_b64(state.output)] * batch,
                             "parameters": {"prompt": body.get("prompt", "")},
                             "info": json.dumps({"seed": 1})})

    async def sd_models(request: Request) -> Response:
        await _record(state, request)
        return JSONResponse([{"title": "v1-5-pruned-emaonly.safetensors"}])

    return Starlette(routes=[
        Route("/sdapi/v1/txt2img", generate, methods=["POST"]),
        Route("/sdapi/v1/img2img", generate, methods=["POST"]),
        Route("/sdapi/v1/sd-models", sd_models),
    ])


# --------------------------------------------------------------------------- ComfyUI


def comfyui_app(state: State) -> Starlette:
    async def upload(request: Request) -> Response:
        entry = await _record(state, request)
        files = [(filename, data) for name, filename, data in entry["files"] if name == "image"]
        if not files:
            return Response(status_code=400)
        fields = entry["fields"]
        name, data = files[0]
        kind = fields.get("type") or "input"
        subfolder = fields.get("subfolder", "")
        state.files[(kind, subfolder, name)] = data
        return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})

    async def prompt(request: Request) -> Response:
        entry = await _record(state, request)
        body = entry.get("json") or {}
        if "prompt" not in body:
            return JSONResponse({"error": "no prompt", "node_errors": []}, 400)
        prompt_id = str(uuid.uuid4())
        filename = f"ComfyUI_{len(state.history) + 1:05d}_.png"
        state.files[("output", "", filename)] = state.output
        state.history[prompt_id] = {
            "prompt": [len(state.history), prompt_id, body["prompt"], {}, ["9"]],
            "outputs": {"9": {"images": [{"filename": filename, "subfolder": "",
                                          "type": "output"}]}},
            "status": {"status_str": "success", "completed": True, "messages": []}}
        return JSONResponse({"prompt_id": prompt_id, "number": len(state.history),
                             "node_errors": {}})

    async def history(request: Request) -> Response:
        await _record(state, request)
        prompt_id = request.path_params["prompt_id"]
        entry = state.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry else {})

    async def view(request: Request) -> Response:
        await _record(state, request)
        q = request.query_params
        data = state.files.get((q.get("type") or "output", q.get("subfolder", ""),
                                q.get("filename", "")))
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    async def object_info(request: Request) -> Response:
        await _record(state, request)
        return JSONResponse({"KSampler": {"name": "KSampler"}})

    return Starlette(routes=[
        Route("/upload/image", upload, methods=["POST"]),
        Route("/prompt", prompt, methods=["POST"]),
        Route("/history/{prompt_id}", history),
        Route("/view", view),
        Route("/object_info", object_info),
    ])


# --------------------------------------------------------------------------- serving


class Served:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
