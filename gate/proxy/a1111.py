"""AUTOMATIC1111 / Forge web UI API: request mapping, outputs and error style (pure).

Shapes (the web UI's ``/docs`` schema, ``StableDiffusionTxt2ImgProcessingAPI`` and
``StableDiffusionImg2ImgProcessingAPI``): ``POST /sdapi/v1/txt2img`` and
``POST /sdapi/v1/img2img`` with ``prompt``, ``negative_prompt``, ``init_images`` (base64,
possibly ``data:image/...;base64,`` prefixed), ``mask``, ``denoising_strength``,
``script_args`` and ``alwayson_scripts`` ``{name: {"args": [...]}}``. Responses:
``{"images": [base64...], "parameters": {...}, "info": "..."}``. Validation errors are
FastAPI's 422 ``{"detail": [...]}``; other errors ``{"error", "detail", "body", "errors"}``.

Face swaps arrive through always-on scripts: ReActor (``args[0]`` the source image,
``args[1]`` enabled, ``args[22]`` the source kind: 0 image, 1 stored face model, 2 folder)
and roop (``args[0]`` source, ``args[1]`` enabled) -> ``face_swap`` with the source as role
``source`` and the init images as ``target``. ControlNet units whose module transfers an
identity (IP-Adapter FaceID, InstantID, PuLID) are face swaps too; other ControlNet images
and images found in any other script's arguments are checked as ``reference`` images.
A face source the gate cannot see (a stored face model, a folder, an image URL) is refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from gate.proxy.body import DATA_URL, inline_image
from gate.proxy.types import (
    BadUpstream,
    Forward,
    GateFields,
    Malformed,
    ProxyError,
    Unverifiable,
)
from gate.types import ImageInput

TXT2IMG, IMG2IMG = "/sdapi/v1/txt2img", "/sdapi/v1/img2img"
_IDENTITY_MODULES = re.compile(r"face_?id|instant_?id|pulid|ip-adapter_face", re.IGNORECASE)
_SWAP_SCRIPTS = ("reactor", "roop")
_MIN_INLINE_IMAGE_CHARS = 64


def _invalid(loc: str, message: str) -> Malformed:
    return Malformed(message, param=loc, status=422)


def map_request(path: str, body: Any, raw: bytes) -> tuple[GateFields, Forward]:
    """``txt2img`` / ``img2img`` (``inpaint`` with a mask, ``face_swap`` with a swap script)."""
    if not isinstance(body, dict):
        raise _invalid("body", "the request body must be a JSON object")
    prompt = _text(body, "prompt")
    negative = _text(body, "negative_prompt")
    init: list[bytes] = []
    mask: bytes | None = None
    if path == IMG2IMG:
        values = body.get("init_images")
        if not isinstance(values, list) or not values:
            raise _invalid("init_images", "init_images must be a non-empty list")
        init = [decode_image(v, f"init_images.{i}") for i, v in enumerate(values)]
        if body.get("mask") not in (None, ""):
            mask = decode_image(body["mask"], "mask")
    scripts = body.get("alwayson_scripts") or {}
    if not isinstance(scripts, dict):
        raise _invalid("alwayson_scripts", "alwayson_scripts must be an object")
    sources, references = _script_images({str(k).lower(): v for k, v in scripts.items()})
    references += [img for img in _inline_images(body.get("script_args"))]
    if sources:
        operation = "face_swap"
        roles = [("source", s) for s in sources] + [("target", i) for i in init]
    else:
        operation = "inpaint" if mask is not None else ("img2img" if init else "txt2img")
        roles = [("init", i) for i in init]
    if mask is not None:
        roles.append(("mask", mask))
    roles += [("reference", r) for r in references]
    if len(roles) > 16:
        raise _invalid("body", "more than 16 images in one request")
    fields = GateFields(operation=operation, prompt=prompt, negative_prompt=negative,
                        images=tuple(ImageInput(role=r, data=d) for r, d in roles))
    return fields, Forward(path, raw, "application/json")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(name, f"{name} must be a string")
    return value


def decode_image(value: Any, loc: str) -> bytes:
    """Base64 (optionally a data URL) to bytes; URLs are refused (the gate fetches none)."""
    if not isinstance(value, str) or not value:
        raise _invalid(loc, "must be a base64-encoded image")
    if value.startswith(("http://", "https://")):
        raise Unverifiable("image URLs are not accepted through the consent gate; send the "
                           "image as base64", param=loc)
    try:
        # Whitespace is dropped, as the web UI's own (lenient) decoder drops it.
        return base64.b64decode("".join(DATA_URL.sub("", value, count=1).split()),
                                validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(loc, "is not valid base64") from None


def _script_images(scripts: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """(face-swap sources, reference images) found in the always-on scripts."""
    sources: list[bytes] = []
    references: list[bytes] = []
    for name, script in scripts.items():
        args = script.get("args") if isinstance(script, dict) else None
        if not isinstance(args, list):
            continue
        if name in _SWAP_SCRIPTS:
            source = _swap_source(name, args)
            if source is not None:
                sources.append(source)
        elif name == "controlnet":
            for unit in args:
                found = list(_inline_images(_unit_images(unit)))
                if _unit_enabled(unit) and _IDENTITY_MODULES.search(
                        str(unit.get("module", "")) + " " + str(unit.get("model", ""))):
                    sources += found
                else:
                    references += found
        else:
            references += list(_inline_images(args))
    return sources, references


def _swap_source(name: str, args: list[Any]) -> bytes | None:
    enabled = args[1] if len(args) > 1 else True
    if enabled is False:
        return None
    if name == "reactor" and len(args) > 22 and args[22] not in (0, "0", None):
        raise Unverifiable("a ReActor face model or source folder cannot be checked by the "
                           "consent gate; send the source face as an image",
                           param=f"alwayson_scripts.{name}.args.22")
    if not args or args[0] in (None, ""):
        raise Unverifiable(f"{name} is enabled without a source image",
                           param=f"alwayson_scripts.{name}.args.0")
    return decode_image(args[0], f"alwayson_scripts.{name}.args.0")


def _unit_enabled(unit: Any) -> bool:
    return isinstance(unit, dict) and unit.get("enabled", True) is not False


def _unit_images(unit: Any) -> Any:
    if not isinstance(unit, dict):
        return unit
    return [unit.get(k) for k in ("image", "input_image", "mask", "mask_image")]


def _inline_images(value: Any, depth: int = 0) -> Iterator[bytes]:
    """Images given inline anywhere in a script's arguments (base64 or data URLs)."""
    if depth > 6 or value is None:
        return
    if isinstance(value, str):
        if value.startswith(("http://", "https://")) and _looks_like_image_url(value):
            raise Unverifiable("image URLs are not accepted through the consent gate")
        if len(value) >= _MIN_INLINE_IMAGE_CHARS:
            data = inline_image(value)
            if data is not None:
                yield data
    elif isinstance(value, dict):
        for item in value.values():
            yield from _inline_images(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _inline_images(item, depth + 1)


def _looks_like_image_url(value: str) -> bool:
    return bool(re.search(r"\.(png|jpe?g|webp|gif|bmp)(\?|$)", value, re.IGNORECASE))


# --------------------------------------------------------------------------- responses


def outputs(doc: Any) -> list[bytes]:
    """The generated images of an upstream answer (``BadUpstream`` when malformed)."""
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadUpstream("the upstream answer has no 'images' list")
    try:
        return [decode_image(img, f"images.{i}") for i, img in enumerate(images)]
    except ProxyError:
        raise BadUpstream("an upstream image is not valid base64") from None


def with_images(doc: dict[str, Any], images: list[bytes]) -> dict[str, Any]:
    return {**doc, "images": [base64.b64encode(i).decode("ascii") for i in images]}


# --------------------------------------------------------------------------- errors


def error_body(status: int, code: str, message: str, param: str | None,
               decision: dict[str, Any] | None) -> dict[str, Any]:
    if status == 422 and code == "invalid_request":
        loc = ["body", *(param.split(".") if param else [])]
        return {"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}
    body: dict[str, Any] = {"error": "ConsentGateError" if decision is not None else
                            "HTTPException", "detail": message, "body": "", "errors": message,
                            "code": code}
    if decision is not None:
        body["decision"] = decision
    return body
