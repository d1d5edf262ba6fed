"""OpenAI Images API: request mapping, output access and error style (pure functions).

Shapes (OpenAI API reference, "Images": ``CreateImageRequest``, ``CreateImageEditRequest``,
``EditImageBodyJsonParam``, ``CreateImageVariationRequest``):

* ``POST /v1/images/generations``, JSON: ``prompt`` and the options below;
* ``POST /v1/images/edits``, multipart: ``image`` or repeated ``image[]`` files, an
  optional ``mask`` file, ``prompt`` and options; or JSON (GPT image models):
  ``images: [{"image_url"} | {"file_id"}]``, optional ``mask: {"image_url"} | {"file_id"}``,
  ``prompt`` and options;
* ``POST /v1/images/variations``, multipart: one ``image`` file and options.

Responses: ``{"created", "data": [{"b64_json"} | {"url"}, ...]}``. Errors:
``{"error": {"message", "type", "param", "code"}}``.

**The proxy knows every field it forwards.** Each route has an allow-list of fields with
their types (``GENERATION_FIELDS``, ``EDIT_FORM_FIELDS``, ``EDIT_JSON_FIELDS``,
``VARIATION_FIELDS``); any other field is refused (400 ``unknown_parameter``), never
dropped or passed through. Files are accepted only under the route's image fields; every
other value is a short typed option or the prompt, and a value that holds an image (base64,
a data URL) or a URL is refused. In JSON edits, ``image_url`` must be a ``data:`` URL of an
image (checked, and forwarded re-encoded from the checked bytes); a remote URL or a
``file_id`` names pixels the gate cannot see and is refused (422
``unverifiable_face_source``). Bodies are forwarded re-encoded from what was parsed.

A client's ``response_format=url`` is forwarded as ``b64_json``: the proxy must see the
bytes to screen and label them, and a URL the client fetched itself would bypass both.
Every output is answered inline as ``b64_json``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gate.proxy import media
from gate.proxy.body import dump_json, encode_multipart
from gate.proxy.types import (
    BadUpstream,
    Forward,
    GateFields,
    Malformed,
    Part,
    Unverifiable,
    unknown_field,
)
from gate.types import ImageInput

GENERATIONS, EDITS, VARIATIONS = ("/v1/images/generations", "/v1/images/edits",
                                  "/v1/images/variations")

Kind = Literal["text", "option", "integer", "boolean"]
_COMMON: Final[dict[str, Kind]] = {
    "model": "option", "n": "integer", "size": "option", "response_format": "option",
    "user": "option"}
_GPT_IMAGE: Final[dict[str, Kind]] = {
    "background": "option", "output_compression": "integer", "output_format": "option",
    "partial_images": "integer", "quality": "option", "stream": "boolean"}
#: ``CreateImageRequest`` (JSON).
GENERATION_FIELDS: Final[dict[str, Kind]] = {
    "prompt": "text", **_COMMON, **_GPT_IMAGE, "moderation": "option", "style": "option"}
#: ``CreateImageEditRequest`` (multipart), besides the files ``image``, ``image[]``, ``mask``.
EDIT_FORM_FIELDS: Final[dict[str, Kind]] = {
    "prompt": "text", **_COMMON, **_GPT_IMAGE, "input_fidelity": "option"}
EDIT_FILES: Final = ("image", "image[]", "mask")
#: ``EditImageBodyJsonParam`` (JSON), besides ``images`` and ``mask``.
EDIT_JSON_FIELDS: Final[dict[str, Kind]] = {
    "prompt": "text", "model": "option", "n": "integer", "size": "option", "user": "option",
    **_GPT_IMAGE, "input_fidelity": "option", "moderation": "option"}
#: ``CreateImageVariationRequest`` (multipart), besides the file ``image``.
VARIATION_FIELDS: Final[dict[str, Kind]] = dict(_COMMON)
VARIATION_FILES: Final = ("image",)

_MAX_PROMPT, _MAX_OPTION, _MAX_IMAGES = 20_000, 256, 16
_FILE_TYPES: Final = re.compile(r"(image/[A-Za-z0-9.+-]+|application/octet-stream)\s*",
                                re.IGNORECASE)
_TEXT_TYPES: Final = re.compile(r"text/plain\s*(;\s*charset=\"?(utf-8|us-ascii)\"?\s*)?",
                                re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Output:
    """One generated image of a response: inline base64 or a URL to fetch."""

    index: int
    b64: str | None
    url: str | None


# --------------------------------------------------------------------------- requests


def map_generation(body: Any) -> tuple[GateFields, Forward]:
    """``POST /v1/images/generations`` -> txt2img (the prompt is screened)."""
    doc = _options(body, GENERATION_FIELDS)
    if doc.get("response_format") == "url":
        doc["response_format"] = "b64_json"
    fields = GateFields(operation="txt2img", prompt=doc["prompt"],
                        user_id=doc.get("user") or None)
    return fields, Forward(GENERATIONS, dump_json(doc), "application/json")


def map_edit_json(body: Any) -> tuple[GateFields, Forward]:
    """``POST /v1/images/edits`` with a JSON body: ``images`` (and ``mask``) by reference;
    only ``data:`` URLs can be checked."""
    if not isinstance(body, dict):
        raise Malformed("the request body must be a JSON object")
    refs = {k: body[k] for k in ("images", "mask") if k in body}
    doc = _options({k: v for k, v in body.items() if k not in refs}, EDIT_JSON_FIELDS)
    images = refs.get("images")
    if not isinstance(images, list) or not images:
        raise Malformed("Missing required parameter: 'images'.", param="images")
    if len(images) > _MAX_IMAGES:
        raise Malformed(f"give at most {_MAX_IMAGES} images", param="images")
    init = [_image_ref(ref, f"images.{i}") for i, ref in enumerate(images)]
    masks = [] if refs.get("mask") is None else [_image_ref(refs["mask"], "mask")]
    roles = [("init", d) for d, _ in init] + [("mask", d) for d, _ in masks]
    doc["images"] = [{"image_url": url} for _, url in init]
    if masks:
        doc["mask"] = {"image_url": masks[0][1]}
    fields = GateFields(operation="inpaint" if masks else "edit", prompt=doc["prompt"],
                        images=tuple(ImageInput(role=r, data=d) for r, d in roles),
                        user_id=doc.get("user") or None)
    return fields, Forward(EDITS, dump_json(doc), "application/json")


def map_edit(parts: Sequence[Part]) -> tuple[GateFields, Forward]:
    """``POST /v1/images/edits`` (multipart) -> ``edit``, or ``inpaint`` with a mask."""
    files, text = _form(parts, EDIT_FILES, EDIT_FORM_FIELDS)
    images = [p for p in files if p.name in ("image", "image[]")]
    if not images or any(not p.data for p in images):
        raise Malformed("Missing required parameter: 'image'.", param="image")
    if len(images) > _MAX_IMAGES:
        raise Malformed(f"give at most {_MAX_IMAGES} images", param="image")
    masks = [p for p in files if p.name == "mask"]
    if len(masks) > 1 or any(not p.data for p in masks):
        raise Malformed("Give at most one non-empty 'mask'.", param="mask")
    inputs = [ImageInput(role="init", data=p.data) for p in images] + \
             [ImageInput(role="mask", data=p.data) for p in masks]
    fields = GateFields(operation="inpaint" if masks else "edit", images=tuple(inputs),
                        prompt=text["prompt"], user_id=text.get("user") or None)
    return fields, _multipart_forward(EDITS, parts, text)


def map_variation(parts: Sequence[Part]) -> tuple[GateFields, Forward]:
    """``POST /v1/images/variations`` -> img2img of the one ``image``."""
    files, text = _form(parts, VARIATION_FILES, VARIATION_FIELDS, prompt=False)
    if len(files) != 1 or not files[0].data:
        raise Malformed("Missing required parameter: 'image'.", param="image")
    fields = GateFields(operation="img2img",
                        images=(ImageInput(role="init", data=files[0].data),),
                        user_id=text.get("user") or None)
    return fields, _multipart_forward(VARIATIONS, parts, text)


def _options(body: Any, allowed: Mapping[str, Kind], *, prompt: bool = True) -> dict[str, Any]:
    """The body's fields, each known and of its type; values are checked for images and
    URLs (refused); the prompt is required when ``prompt``."""
    if not isinstance(body, dict):
        raise Malformed("the request body must be a JSON object")
    for name, value in body.items():
        if name not in allowed:
            raise unknown_field(name)
        if value is not None or allowed[name] == "text":
            _check_type(name, allowed[name], value)
    if prompt and "prompt" not in body:
        raise Malformed("Missing required parameter: 'prompt'.", param="prompt")
    _no_stream(body.get("stream"))
    return dict(_no_media(body).doc)


def _form(parts: Sequence[Part], file_fields: tuple[str, ...], allowed: Mapping[str, Kind],
          *, prompt: bool = True) -> tuple[list[Part], dict[str, Any]]:
    """(the files, the text fields by name): files only under ``file_fields``, text fields
    only from ``allowed``, each once, UTF-8, of its type."""
    files: list[Part] = []
    text: dict[str, Any] = {}
    for part in parts:
        if part.name in file_fields:
            if part.content_type and not _FILE_TYPES.fullmatch(part.content_type):
                raise Malformed(f"'{part.name}' must be an image file", param=part.name)
            files.append(part)
        elif part.name not in allowed:
            raise unknown_field(part.name)
        elif part.is_file or (part.content_type and
                              not _TEXT_TYPES.fullmatch(part.content_type)):
            raise Malformed(f"'{part.name}' must be a text field, not a file",
                            param=part.name)
        elif part.name in text:
            raise Malformed(f"the field '{part.name}' is repeated", param=part.name)
        else:
            try:
                text[part.name] = _form_value(allowed[part.name], part.data.decode("utf-8"))
            except UnicodeDecodeError:
                raise Malformed(f"'{part.name}' is not UTF-8 text", param=part.name) from None
    return files, _options(text, allowed, prompt=prompt)


def _form_value(kind: Kind, text: str) -> Any:
    """A form field's text as the JSON value of its kind (``n=2`` -> 2)."""
    if kind == "integer" and re.fullmatch(r"-?[0-9]{1,9}", text):
        return int(text)
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _check_type(name: str, kind: Kind, value: Any) -> None:
    if kind == "text":
        if value is None or value == "":
            raise Malformed(f"Missing required parameter: '{name}'.", param=name)
        if not isinstance(value, str):
            raise Malformed(f"Invalid type for '{name}': expected a string.", param=name)
        if len(value) > _MAX_PROMPT:
            raise Malformed(f"'{name}' is too long.", param=name)
    elif kind == "option" and (not isinstance(value, str) or len(value) > _MAX_OPTION):
        raise Malformed(f"Invalid '{name}': expected a string of at most {_MAX_OPTION} "
                        "characters.", param=name)
    elif kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        raise Malformed(f"Invalid type for '{name}': expected an integer.", param=name)
    elif kind == "boolean" and not isinstance(value, bool):
        raise Malformed(f"Invalid type for '{name}': expected a boolean.", param=name)


def _no_media(doc: Mapping[str, Any]) -> media.Scan:
    """Option values never hold an image or a URL (the prompt may name a URL: it is
    text, never fetched)."""
    found = media.scan(dict(doc), text=lambda path: path == ("prompt",))
    if found.images:
        name = media.where(found.images[0].path)
        raise Malformed(f"'{name}' holds an image; images are accepted only as the route's "
                        "image files", param=name, code="unexpected_image")
    if found.urls:
        name = media.where(found.urls[0])
        raise Unverifiable(f"'{name}' holds a URL; the consent gate fetches none and cannot "
                           "see what it points to", param=name)
    return found


def _image_ref(ref: Any, where: str) -> tuple[bytes, str]:
    """A JSON edit's ``{"image_url": "data:..."}``: (the checked bytes, the canonical data
    URL forwarded). A remote URL or a ``file_id`` is refused: the gate cannot see it."""
    if not isinstance(ref, dict) or len(ref) != 1 or not {"image_url", "file_id"} >= set(ref):
        raise Malformed("give each image as {\"image_url\": \"data:image/...;base64,...\"}",
                        param=where)
    if "file_id" in ref:
        raise Unverifiable("an uploaded file_id cannot be checked by the consent gate; send "
                           "the image as a data URL", param=f"{where}.file_id")
    url = ref["image_url"]
    if not isinstance(url, str):
        raise Malformed("image_url must be a string", param=f"{where}.image_url")
    found = media.inline_media(url, strict=True)
    if found is None or url.lstrip()[:5].lower() != "data:":
        if media.is_url(url):
            raise Unverifiable("image URLs are not accepted through the consent gate (it "
                               "fetches none); send the image as a data URL",
                               param=f"{where}.image_url")
        raise Malformed("image_url must be a data URL of an image", param=f"{where}.image_url")
    return found


def _multipart_forward(path: str, parts: Sequence[Part], text: Mapping[str, Any]) -> Forward:
    """The allowed parts only, re-encoded: files as parsed, text fields from the values
    checked (``response_format=url`` becomes ``b64_json``)."""
    out = []
    for part in parts:
        if part.name in text:
            value = text[part.name]
            if part.name == "response_format" and value == "url":
                value = "b64_json"
            rendered = str(value).lower() if isinstance(value, bool) else str(value)
            out.append(Part(part.name, rendered.encode("utf-8")))
        else:
            out.append(part)
    content, content_type = encode_multipart(out)
    return Forward(path, content, content_type)


def _no_stream(value: Any) -> None:
    """Streamed partial images would reach the client before they could be screened."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        raise Malformed("streaming is not available through the consent gate; send "
                        "stream=false", param="stream")


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
          415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_body(status: int, code: str, message: str, param: str | None,
               decision: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {
        "message": message, "type": _TYPES.get(status, "server_error"), "param": param,
        "code": code}}
    if decision is not None:
        body["decision"] = decision
    return body
