"""Reading request bodies: JSON (base64 images) or multipart (image files).

Routes call these instead of declaring body parameters, because one endpoint accepts two
media types. Errors: 415 for any other media type, 400 for malformed JSON, 422 (naming the
field) for invalid or unknown fields and bad base64.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from gate.api.errors import UnsupportedBody
from gate.api.schemas import (
    CheckBody,
    CheckFields,
    CheckOutputBody,
    CheckOutputFields,
    EnrollBody,
    EnrollFields,
    LabelOutputBody,
    LabelOutputFields,
    ReportBody,
    ReportFields,
    TraceBody,
    TraceFields,
    _Body,
)
from gate.errors import InvalidRequest
from gate.types import GateRequest, ImageInput, Requester

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=_Body)

#: Multipart file fields of /v1/check: one per input role (each may repeat).
CHECK_FILE_FIELDS = {
    "target": "Image(s) whose face is changed or used (e.g. face_swap target).",
    "source": "Image(s) whose face is put into the target.",
    "reference": "Reference image(s) of a person.",
    "init": "Init image(s) of img2img / inpaint.",
    "mask": "Inpainting mask(s).",
    "training": "Training image(s) of avatar_train.",
}
OUTPUT_FILE_FIELDS = {"image": "The generated image."}
ENROLL_FILE_FIELDS = {"image": "A photo showing exactly one face (repeat for more)."}
TRACE_FILE_FIELDS = {"image": "The image to trace."}
REPORT_FILE_FIELDS = {"image": "The reported image (hashed and traced, then discarded)."}
_MAX_FORM_PARTS = 64


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _validate(model: type[M], data: Any, *, json: bool = False) -> M:
    try:
        return model.model_validate_json(data) if json else model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


def b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("is not valid base64", field=field) from None


async def _json(request: Request, model: type[M]) -> M:
    return _validate(model, await request.body(), json=True)


async def _form(request: Request, model: type[F], file_fields: set[str]
                ) -> tuple[F, list[tuple[str, bytes]]]:
    form = await request.form(max_files=_MAX_FORM_PARTS, max_fields=_MAX_FORM_PARTS)
    try:
        files: list[tuple[str, bytes]] = []
        plain: dict[str, list[str]] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise InvalidRequest(
                        f"unexpected file field; files go in {sorted(file_fields)}", field=name)
                files.append((name, await value.read()))
            else:
                plain.setdefault(name, []).append(value)
    finally:
        await form.close()
    if "request" in plain:
        if len(plain) > 1 or len(plain["request"]) > 1:
            raise InvalidRequest("give one 'request' JSON field or plain fields, not both",
                                 field="request")
        return _validate(model, plain["request"][0], json=True), files
    data: dict[str, Any] = {}
    for name, values in plain.items():
        if name in model.list_fields:
            data[name] = [v.strip() for item in values for v in item.split(",") if v.strip()]
        else:
            data[name] = values[0] if len(values) == 1 else values
    return _validate(model, data), files


async def _read(request: Request, json_model: type[M], form_model: type[F],
                file_fields: set[str]) -> tuple[M | F, list[tuple[str, bytes]]]:
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        return await _json(request, json_model), []
    if kind == "multipart/form-data":
        return await _form(request, form_model, file_fields)
    raise UnsupportedBody("send application/json or multipart/form-data")


def _gate_request(data: dict[str, Any], app_id: str, request_id: str,
                  jurisdictions: Sequence[str] = ()) -> GateRequest:
    user_id = data.pop("user_id", None)
    data["request_id"] = data.get("request_id") or request_id
    data["jurisdictions"] = list(jurisdictions)
    try:
        return GateRequest.model_validate(
            {**data, "requester": Requester(app_id=app_id, user_id=user_id)})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


async def read_check(request: Request, app_id: str,
                     jurisdictions: Sequence[str] = ()) -> GateRequest:
    """The GateRequest of ``POST /v1/check``; the requester's app (and the jurisdiction
    packs it adds) are the key's."""
    body, files = await _read(request, CheckBody, CheckFields, set(CHECK_FILE_FIELDS))
    if isinstance(body, CheckBody):
        images = [ImageInput(role=img.role, data=b64(img.data_b64, f"images.{i}.data_b64"))
                  for i, img in enumerate(body.images)]
    else:
        images = [ImageInput(role=role, data=data) for role, data in files]
    data = body.model_dump(exclude={"images"})
    return _gate_request({**data, "images": images}, app_id, request.state.request_id,
                         jurisdictions)


async def read_check_output(request: Request) -> tuple[CheckOutputFields, bytes]:
    body, files = await _read(request, CheckOutputBody, CheckOutputFields,
                              set(OUTPUT_FILE_FIELDS))
    if isinstance(body, CheckOutputBody):
        return body, b64(body.image_b64, "image_b64")
    if len(files) != 1:
        raise InvalidRequest("send exactly one generated image", field="image")
    return body, files[0][1]


async def read_enroll(request: Request) -> tuple[EnrollFields, list[bytes]]:
    body, files = await _read(request, EnrollBody, EnrollFields, set(ENROLL_FILE_FIELDS))
    if isinstance(body, EnrollBody):
        return body, [b64(s, f"images_b64.{i}") for i, s in enumerate(body.images_b64)]
    if not files:
        raise InvalidRequest("send at least one photo", field="image")
    return body, [data for _, data in files]


async def _one_image(request: Request, json_model: type[M], form_model: type[F],
                     files_doc: dict[str, str], *, optional: bool = False
                     ) -> tuple[M | F, bytes | None]:
    body, files = await _read(request, json_model, form_model, set(files_doc))
    if files:
        if len(files) != 1:
            raise InvalidRequest("send exactly one image", field="image")
        return body, files[0][1]
    encoded = getattr(body, "image_b64", None)
    if encoded:
        return body, b64(encoded, "image_b64")
    if optional:
        return body, None
    raise InvalidRequest("send exactly one image", field="image")


async def read_trace(request: Request) -> bytes:
    _, image = await _one_image(request, TraceBody, TraceFields, TRACE_FILE_FIELDS)
    assert image is not None
    return image


async def read_label_output(request: Request) -> tuple[LabelOutputFields, bytes]:
    body, image = await _one_image(request, LabelOutputBody, LabelOutputFields,
                                   OUTPUT_FILE_FIELDS)
    assert image is not None
    return body, image


async def read_report(request: Request) -> tuple[ReportFields, bytes | None]:
    body, image = await _one_image(request, ReportBody, ReportFields, REPORT_FILE_FIELDS,
                                   optional=True)
    if image is None and not body.pdq:
        raise InvalidRequest("send the image or its PDQ hash", field="image")
    return body, image
