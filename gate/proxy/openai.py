"""OpenAI Images API: request mapping, output access and error style (pure functions).

Shapes (OpenAI API reference, "Images"): ``POST /v1/images/generations`` (JSON: ``prompt``,
``model``, ``n``, ``size``, ``response_format``, ``user``...), ``POST /v1/images/edits``
(multipart: ``image`` or repeated ``image[]``, optional ``mask``, ``prompt``, ``model``,
``n``, ``size``, ``response_format``, ``user``) and ``POST /v1/images/variations``
(multipart: ``image``, ``model``, ``n``, ``size``, ``response_format``, ``user``).
Responses: ``{"created", "data": [{"b64_json"} | {"url"}, ...]}``. Errors:
``{"error": {"message", "type", "param", "code"}}``.

A client's ``response_format=url`` is forwarded as ``b64_json``: the proxy must see the
bytes to screen and label them, and a URL the client fetched itself would bypass both.
Every output is answered inline as ``b64_json``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gate.proxy.body import encode_multipart
from gate.proxy.types import BadUpstream, Forward, GateFields, Malformed, Part
from gate.types import ImageInput

GENERATIONS, EDITS, VARIATIONS = ("/v1/images/generations", "/v1/images/edits",
                                  "/v1/images/variations")
_IMAGE_FIELDS = ("image", "image[]")


@dataclass(frozen=True, slots=True)
class Output:
    """One generated image of a response: inline base64 or a URL to fetch."""

    index: int
    b64: str | None
    url: str | None


# --------------------------------------------------------------------------- requests


def map_generation(body: Any) -> tuple[GateFields, Forward]:
    """``POST /v1/images/generations`` -> txt2img (the prompt is screened)."""
    if not isinstance(body, dict):
        raise Malformed("the request body must be a JSON object")
    prompt = _required_text(body.get("prompt"), "prompt")
    user = _optional_text(body.get("user"), "user")
    _no_stream(body.get("stream"))
    forwarded = dict(body)
    if forwarded.get("response_format") == "url":
        forwarded["response_format"] = "b64_json"
    fields = GateFields(operation="txt2img", prompt=prompt, user_id=user)
    return fields, Forward(GENERATIONS, json.dumps(forwarded).encode(), "application/json")


def map_edit(parts: Sequence[Part]) -> tuple[GateFields, Forward]:
    """``POST /v1/images/edits`` -> ``edit``, or ``inpaint`` when a mask is given."""
    images = [p for p in parts if p.name in _IMAGE_FIELDS]
    if not images or any(not p.data for p in images):
        raise Malformed("Missing required parameter: 'image'.", param="image")
    masks = [p for p in parts if p.name == "mask"]
    if len(masks) > 1 or any(not p.data for p in masks):
        raise Malformed("Give at most one non-empty 'mask'.", param="mask")
    text = _texts(parts)
    prompt = _required_text(text.get("prompt"), "prompt")
    _no_stream(text.get("stream"))
    inputs = [ImageInput(role="init", data=p.data) for p in images] + \
             [ImageInput(role="mask", data=p.data) for p in masks]
    fields = GateFields(operation="inpaint" if masks else "edit", images=tuple(inputs),
                        prompt=prompt, user_id=_optional_text(text.get("user"), "user"))
    return fields, _multipart_forward(EDITS, parts)


def map_variation(parts: Sequence[Part]) -> tuple[GateFields, Forward]:
    """``POST /v1/images/variations`` -> img2img of the one ``image``."""
    images = [p for p in parts if p.name == "image"]
    if len(images) != 1 or not images[0].data:
        raise Malformed("Missing required parameter: 'image'.", param="image")
    text = _texts(parts)
    fields = GateFields(operation="img2img",
                        images=(ImageInput(role="init", data=images[0].data),),
                        user_id=_optional_text(text.get("user"), "user"))
    return fields, _multipart_forward(VARIATIONS, parts)


def _multipart_forward(path: str, parts: Sequence[Part]) -> Forward:
    rewritten = [Part(p.name, b"b64_json", p.filename, p.content_type)
                 if p.name == "response_format" and not p.is_file and p.text() == "url" else p
                 for p in parts]
    content, content_type = encode_multipart(rewritten)
    return Forward(path, content, content_type)


def _no_stream(value: Any) -> None:
    """Streamed partial images would reach the client before they could be screened."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        raise Malformed("streaming is not available through the consent gate; send "
                        "stream=false", param="stream")


def _texts(parts: Sequence[Part]) -> dict[str, str]:
    """The text fields; a repeated one is refused (the upstream might read another copy
    than the one screened here)."""
    out: dict[str, str] = {}
    for p in parts:
        if not p.is_file and p.name not in _IMAGE_FIELDS and p.name != "mask":
            if p.name in out:
                raise Malformed(f"the field '{p.name}' is repeated", param=p.name)
            out[p.name] = p.text()
    return out


def _required_text(value: Any, name: str) -> str:
    if value is None or value == "":
        raise Malformed(f"Missing required parameter: '{name}'.", param=name)
    if not isinstance(value, str):
        raise Malformed(f"Invalid type for '{name}': expected a string.", param=name)
    if len(value) > 20_000:
        raise Malformed(f"'{name}' is too long.", param=name)
    return value


def _optional_text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise Malformed(f"Invalid '{name}': expected a string of at most 256 characters.",
                        param=name)
    return value


# --------------------------------------------------------------------------- responses


def outputs(doc: Any) -> list[Output]:
    """The generated images of a response; ``Malformed`` when the shape is not the API's."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise BadUpstream("the upstream answer has no 'data' list")
    out = []
    for i, item in enumerate(data):
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(b64, str) and not isinstance(url, str):
            raise BadUpstream(f"upstream image {i} has neither 'b64_json' nor 'url'")
        out.append(Output(i, b64 if isinstance(b64, str) else None,
                          url if isinstance(url, str) and not isinstance(b64, str) else None))
    return out


def decode_b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadUpstream("an upstream image is not valid base64") from None


def with_images(doc: dict[str, Any], images: Sequence[bytes]) -> dict[str, Any]:
    """The response with each image replaced by ``images[i]`` as ``b64_json``."""
    data = []
    for item, image in zip(doc["data"], images, strict=True):
        kept = {k: v for k, v in item.items() if k not in ("b64_json", "url")}
        data.append({**kept, "b64_json": base64.b64encode(image).decode("ascii")})
    return {**doc, "data": data}


# --------------------------------------------------------------------------- errors

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_body(status: int, code: str, message: str, param: str | None,
               decision: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {
        "message": message, "type": _TYPES.get(status, "server_error"), "param": param,
        "code": code}}
    if decision is not None:
        body["decision"] = decision
    return body
