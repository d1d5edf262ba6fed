"""AUTOMATIC1111 / Forge web UI API: request mapping, outputs and error style (pure).

Shapes (the web UI's ``/docs`` schema: ``StableDiffusionTxt2ImgProcessingAPI`` and
``StableDiffusionImg2ImgProcessingAPI``, generated from ``StableDiffusionProcessing*`` in
``modules/processing.py`` plus the extra keys of ``modules/api/models.py``; Forge adds
``distilled_cfg_scale``, ``hr_cfg``, ``hr_distilled_cfg``, ``hr_additional_modules``):
``POST /sdapi/v1/txt2img`` and ``POST /sdapi/v1/img2img``. Responses:
``{"images": [base64...], "parameters": {...}, "info": "..."}``. Validation errors are
FastAPI's 422 ``{"detail": [...]}``; other errors ``{"error", "detail", "body", "errors"}``.

**The proxy knows every field it forwards**: ``TXT2IMG_FIELDS`` / ``IMG2IMG_FIELDS`` list
each top-level field with its type; any other field is refused (422, ``extra fields not
permitted``). **Every string in the body that reads as an image is an image** and is
checked (``gate.proxy.media``): ``init_images`` (role ``init``), ``mask`` and
``latent_mask`` (``mask``), ``firstpass_image`` (``init``: hires fix starts from it), and
anything anywhere else, e.g. ``override_settings``, ``script_args``, any extension's
``alwayson_scripts`` arguments at any depth (``reference``). The body is forwarded
re-serialised, each inline image re-encoded from the bytes that were checked.

Face swaps arrive through always-on scripts: ReActor (``args[0]`` the source image,
``args[1]`` enabled, ``args[22]`` the source kind: 0 image, 1 stored face model, 2 folder)
and roop (``args[0]`` source, ``args[1]`` enabled) -> ``face_swap`` with the source as role
``source`` and the init images as ``target``. ControlNet units whose module transfers an
identity (IP-Adapter FaceID, InstantID, PuLID) are face swaps too.

Refused (422 ``unverifiable_face_source``): what names pixels the gate cannot see — a URL
(the web UI and extensions fetch them), a file path (absolute, or naming a media file), a
stored face model or folder, a ControlNet batch directory. The prompt fields (``prompt``,
``negative_prompt``, ``hr_prompt``, ``hr_negative_prompt``, ``infotext``, ``styles``) are
text: the first four and ``infotext`` (whose parameters the web UI applies) are screened.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from gate.proxy import media
from gate.proxy.body import dump_json
from gate.proxy.types import (
    BadUpstream,
    Forward,
    GateFields,
    Malformed,
    Unverifiable,
    unknown_field,
)
from gate.types import ImageInput

TXT2IMG, IMG2IMG = "/sdapi/v1/txt2img", "/sdapi/v1/img2img"
_IDENTITY_MODULES = re.compile(r"face_?id|instant_?id|pulid|ip-adapter_face", re.IGNORECASE)
_SWAP_SCRIPTS = ("reactor", "roop")
_MAX_IMAGES, _MAX_TEXT = 16, 20_000

Kind = Literal["text", "texts", "str", "int", "number", "bool", "list", "dict", "image",
               "images"]
_COMMON: Final[dict[str, Kind]] = {
    "prompt": "text", "negative_prompt": "text", "styles": "texts", "seed": "int",
    "subseed": "int", "subseed_strength": "number", "seed_resize_from_h": "int",
    "seed_resize_from_w": "int", "sampler_name": "str", "scheduler": "str",
    "batch_size": "int", "n_iter": "int", "steps": "int", "cfg_scale": "number",
    "distilled_cfg_scale": "number", "width": "int", "height": "int",
    "restore_faces": "bool", "tiling": "bool", "do_not_save_samples": "bool",
    "do_not_save_grid": "bool", "eta": "number", "denoising_strength": "number",
    "s_min_uncond": "number", "s_churn": "number", "s_tmax": "number", "s_tmin": "number",
    "s_noise": "number", "override_settings": "dict",
    "override_settings_restore_afterwards": "bool", "refiner_checkpoint": "str",
    "refiner_switch_at": "number", "disable_extra_networks": "bool",
    "firstpass_image": "image", "comments": "dict", "sampler_index": "str",
    "script_name": "str", "script_args": "list", "send_images": "bool",
    "save_images": "bool", "alwayson_scripts": "dict", "force_task_id": "str",
    "infotext": "text"}
#: ``StableDiffusionTxt2ImgProcessingAPI`` (every field optional).
TXT2IMG_FIELDS: Final[dict[str, Kind]] = {
    **_COMMON, "enable_hr": "bool", "firstphase_width": "int", "firstphase_height": "int",
    "hr_scale": "number", "hr_upscaler": "str", "hr_second_pass_steps": "int",
    "hr_resize_x": "int", "hr_resize_y": "int", "hr_checkpoint_name": "str",
    "hr_sampler_name": "str", "hr_scheduler": "str", "hr_prompt": "text",
    "hr_negative_prompt": "text", "hr_cfg": "number", "hr_distilled_cfg": "number",
    "hr_additional_modules": "list"}
#: ``StableDiffusionImg2ImgProcessingAPI`` (``init_images`` required here).
IMG2IMG_FIELDS: Final[dict[str, Kind]] = {
    **_COMMON, "init_images": "images", "resize_mode": "int", "image_cfg_scale": "number",
    "mask": "image", "mask_blur_x": "int", "mask_blur_y": "int", "mask_blur": "int",
    "mask_round": "bool", "inpainting_fill": "int", "inpaint_full_res": "bool",
    "inpaint_full_res_padding": "int", "inpainting_mask_invert": "int",
    "initial_noise_multiplier": "number", "latent_mask": "image",
    "include_init_images": "bool"}
_POSITIVE: Final = ("prompt", "hr_prompt", "infotext")
_NEGATIVE: Final = ("negative_prompt", "hr_negative_prompt")
#: Top-level image fields and their roles (``init`` becomes ``target`` in a swap).
_IMAGE_ROLES: Final = {"init_images": "init", "firstpass_image": "init", "mask": "mask",
                       "latent_mask": "mask"}
_NUMBER = re.compile(r"\s*-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?\s*")
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


def _invalid(loc: str, message: str) -> Malformed:
    return Malformed(message, param=loc, status=422)


def map_request(path: str, body: Any) -> tuple[GateFields, Forward]:
    """``txt2img`` / ``img2img`` (``inpaint`` with a mask, ``face_swap`` with a swap script)."""
    if not isinstance(body, dict):
        raise _invalid("body", "the request body must be a JSON object")
    allowed = IMG2IMG_FIELDS if path == IMG2IMG else TXT2IMG_FIELDS
    _check_fields(body, allowed)
    if path == IMG2IMG and (not isinstance(body.get("init_images"), list) or
                            not body["init_images"]):
        raise _invalid("init_images", "init_images must be a non-empty list")
    found = media.scan(body, text=lambda p: allowed.get(str(p[0])) in ("text", "texts"),
                       status=422)
    if found.urls:
        raise Unverifiable("image URLs are not accepted through the consent gate (the web UI "
                           "or an extension would fetch them); send images as base64",
                           param=media.where(found.urls[0]))
    if found.files:
        raise Unverifiable("a file path names pixels the consent gate cannot see; send "
                           "images as base64", param=media.where(found.files[0]))
    images = {i.path: i.data for i in found.images}
    _require_images(body, images)
    scripts = body.get("alwayson_scripts") or {}
    sources = _swap_sources(scripts, images)
    roles: dict[tuple[str, bytes], None] = {}
    for where, data in images.items():
        role = _IMAGE_ROLES.get(str(where[0]), "reference") if len(where) <= 2 else "reference"
        if where in sources:
            role = "source"
        elif sources and role == "init":
            role = "target"
        roles[(role, data)] = None
    if len(roles) > _MAX_IMAGES:
        raise _invalid("body", f"more than {_MAX_IMAGES} images in one request")
    kinds = {r for r, _ in roles}
    operation = "face_swap" if "source" in kinds else "inpaint" if "mask" in kinds else \
        "img2img" if "init" in kinds else "txt2img"
    fields = GateFields(operation=operation, prompt=_text(body, _POSITIVE),
                        negative_prompt=_text(body, _NEGATIVE),
                        images=tuple(ImageInput(role=r, data=d) for r, d in roles))
    return fields, Forward(path, dump_json(found.doc), "application/json")


def _check_fields(body: Mapping[str, Any], allowed: Mapping[str, Kind]) -> None:
    for name, value in body.items():
        kind = allowed.get(name)
        if kind is None:
            raise unknown_field(name, status=422)
        if value is not None and not _of_kind(kind, value):
            raise _invalid(name, f"{name} must be {_KIND_NAMES[kind]}")


_KIND_NAMES: Final[dict[Kind, str]] = {
    "text": "a string", "texts": "a list of strings", "str": "a string",
    "int": "an integer", "number": "a number", "bool": "a boolean", "list": "a list",
    "dict": "an object", "image": "a base64-encoded image",
    "images": "a list of base64-encoded images"}


def _of_kind(kind: Kind, value: Any) -> bool:
    """The web UI's (pydantic, lax) types: numbers may come as numeric strings."""
    if kind in ("text", "str", "image"):
        return isinstance(value, str)
    if kind in ("texts", "images"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "bool":
        return isinstance(value, bool) or value in (0, 1) or (
            isinstance(value, str) and value.lower() in ("true", "false", "0", "1"))
    if kind in ("int", "number"):
        if isinstance(value, str):
            return _NUMBER.fullmatch(value) is not None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return kind == "number" or float(value).is_integer()
    return isinstance(value, list if kind == "list" else dict)


def _require_images(body: Mapping[str, Any], images: Mapping[media.Path, bytes]) -> None:
    """Every value of an image field is an image the gate read (an empty optional one is
    allowed: the web UI ignores it)."""
    for name in _IMAGE_ROLES:
        values = body.get(name)
        items = list(enumerate(values)) if isinstance(values, list) else [(None, values)]
        for i, value in items:
            where = (name,) if i is None else (name, i)
            if where not in images and (i is not None or value not in (None, "")):
                raise _invalid(media.where(where), "must be a base64-encoded image")


def _swap_sources(scripts: Any, images: Mapping[media.Path, bytes]) -> set[media.Path]:
    """Paths of the images that are face-swap sources (ReActor, roop, identity units)."""
    sources: set[media.Path] = set()
    if not isinstance(scripts, dict):
        return sources
    for key, script in scripts.items():
        args = script.get("args") if isinstance(script, dict) else None
        if not isinstance(args, list):
            continue
        name = str(key).lower()
        if name in _SWAP_SCRIPTS:
            source = _swap_source(key, name, args, images)
            if source is not None:
                sources.add(source)
        elif "controlnet" in name:  # "controlnet", Forge's "controlnet integrated"
            for i, unit in enumerate(args):
                _check_unit(unit, f"alwayson_scripts.{key}.args.{i}")
                if _unit_enabled(unit) and _IDENTITY_MODULES.search(
                        str(unit.get("module", "")) + " " + str(unit.get("model", ""))):
                    prefix = ("alwayson_scripts", key, "args", i)
                    sources |= {p for p in images if p[:4] == prefix}
    return sources


def _swap_source(key: str, name: str, args: list[Any],
                 images: Mapping[media.Path, bytes]) -> media.Path | None:
    enabled = args[1] if len(args) > 1 else True
    if enabled is False:
        return None
    if name == "reactor" and len(args) > 22 and args[22] not in (0, "0", None):
        raise Unverifiable("a ReActor face model or source folder cannot be checked by the "
                           "consent gate; send the source face as an image",
                           param=f"alwayson_scripts.{key}.args.22")
    if not args or args[0] in (None, ""):
        raise Unverifiable(f"{name} is enabled without a source image",
                           param=f"alwayson_scripts.{key}.args.0")
    where = ("alwayson_scripts", key, "args", 0)
    if where not in images:
        raise _invalid(media.where(where), "is not a base64-encoded image")
    return where


def _check_unit(unit: Any, where: str) -> None:
    """A ControlNet unit in batch mode reads images from a server directory: refused."""
    if isinstance(unit, dict) and (str(unit.get("input_mode", "")).lower() == "batch"
                                   or isinstance(unit.get("batch_images"), str)):
        raise Unverifiable("a ControlNet batch directory cannot be checked by the consent "
                           "gate; send the images as base64", param=where)


def _unit_enabled(unit: Any) -> bool:
    return isinstance(unit, dict) and unit.get("enabled", True) is not False


def _text(body: Mapping[str, Any], names: tuple[str, ...]) -> str:
    text = "\n".join(dict.fromkeys(v for n in names if isinstance(v := body.get(n), str) and v))
    if len(text) > _MAX_TEXT:
        raise _invalid(names[0], f"the prompt text is longer than {_MAX_TEXT} characters")
    return text


def _decode_output(value: str) -> bytes:
    try:
        return base64.b64decode("".join(_DATA_URL.sub("", value, count=1).split()),
                                validate=True)
    except (binascii.Error, ValueError):
        raise BadUpstream("an upstream image is not valid base64") from None


# --------------------------------------------------------------------------- responses


def outputs(doc: Any) -> list[bytes]:
    """The generated images of an upstream answer (``BadUpstream`` when malformed)."""
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadUpstream("the upstream answer has no 'images' list")
    return [_decode_output(img) for img in images]


def with_images(doc: dict[str, Any], images: list[bytes]) -> dict[str, Any]:
    return {**doc, "images": [base64.b64encode(i).decode("ascii") for i in images]}


# --------------------------------------------------------------------------- errors

#: Malformed bodies answer FastAPI's 422 validation shape (an unknown field as pydantic's
#: ``extra fields not permitted``); the others the web UI's ``handle_exception`` shape.
_VALIDATION: Final = {"invalid_request": "value_error", "unknown_parameter": "value_error.extra",
                      "unexpected_image": "value_error", "ambiguous_image": "value_error"}


def error_body(status: int, code: str, message: str, param: str | None,
               decision: dict[str, Any] | None) -> dict[str, Any]:
    if status == 422 and code in _VALIDATION:
        loc = ["body", *(param.split(".") if param else [])]
        return {"detail": [{"loc": loc, "msg": message, "type": _VALIDATION[code]}]}
    body: dict[str, Any] = {"error": "ConsentGateError" if decision is not None else
                            "HTTPException", "detail": message, "body": "", "errors": message,
                            "code": code}
    if decision is not None:
        body["decision"] = decision
    return body
