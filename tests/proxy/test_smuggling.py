"""Smuggling attempts against every proxy mode (issue 19, item 1).

An attacker sends something harmless where the gate looks and a protected person's face
(or a URL or file path the upstream would load one from) where it might not: another file
field, a text field, a nested JSON value, a data URL, a multipart trick, a ComfyUI node.
Each attempt below is one request to a proxy in front of a *recording* fake upstream.
Whatever the attempt, the upstream must never receive the face: the proxy either
**checks** it (the engine sees it and denies: 403 with the decision) or **refuses** the
request before forwarding anything (a 4xx in the upstream API's error style).

``PROTECTED`` is a protected person for the fake detector/embedder (its pixels are the
person); the real-model cases at the end smuggle a real photo of a protected person.
This table is the probe table of ``docs/threat-model.md``; rerun it with
``.venv/bin/pytest -q tests/proxy/test_smuggling.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from PIL import Image

from gate.engine import FaceGate
from gate.proxy.app import create_proxy_app
from tests.conftest import noise_png
from tests.proxy import workflows as wf
from tests.proxy.conftest import (
    CONSENTING,
    PROTECTED,
    STRANGER,
    People,
    ProxyFactory,
    TestClient,
    Upstream,
)
from tests.proxy.upstreams import State

EDITS, GEN, VAR = "/v1/images/edits", "/v1/images/generations", "/v1/images/variations"
TXT2IMG, IMG2IMG = "/sdapi/v1/txt2img", "/sdapi/v1/img2img"
FACE_URL = "https://faces.example/pat"
BOUNDARY = "smuggle-7d1c"

Send = Callable[[TestClient], httpx.Response]
Outcome = Literal["checked", "refused"]


# --------------------------------------------------------------------------- encodings


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{b64(data)}"


def junk_b64(data: bytes) -> str:
    """Base64 with a character outside the alphabet every 40 characters: a strict decoder
    fails, a lenient one (Python's default, the web UI's) drops them and gets the image."""
    text = b64(data)
    return "*".join(text[i:i + 40] for i in range(0, len(text), 40))


def urlsafe_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def as_ppm(png: bytes) -> bytes:
    """The same pixels as a PPM: a format Pillow opens that few magic-byte lists know."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="PPM")
    return out.getvalue()


PROTECTED_PPM = as_ppm(PROTECTED)


def form(*parts: tuple[list[str], bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body written by hand, headers exactly as given."""
    out = b""
    for headers, body in parts:
        head = "".join(f"{h}\r\n" for h in headers)
        out += f"--{BOUNDARY}\r\n{head}\r\n".encode() + body + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def file_part(name: str, data: bytes, filename: str = "a.png") -> tuple[list[str], bytes]:
    return ([f'Content-Disposition: form-data; name="{name}"; filename="{filename}"',
             "Content-Type: image/png"], data)


def text_part(name: str, value: str) -> tuple[list[str], bytes]:
    return [f'Content-Disposition: form-data; name="{name}"'], value.encode()


def nested_multipart(name: str, data: bytes) -> tuple[list[str], bytes]:
    inner = (b"--inner\r\nContent-Disposition: file; filename=\"pat.png\"\r\n"
             b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--inner--")
    return ([f'Content-Disposition: form-data; name="{name}"',
             "Content-Type: multipart/mixed; boundary=inner"], inner)


# --------------------------------------------------------------------------- what the upstream saw


def _lenient(text: str) -> list[bytes]:
    """Every way a lenient decoder could read ``text`` as base64 (standard, URL-safe)."""
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    out = []
    for alphabet in (r"[^A-Za-z0-9+/]", r"[^A-Za-z0-9_-]"):
        kept = re.sub(alphabet, "", payload)
        kept += "=" * (-len(kept) % 4)
        with contextlib.suppress(binascii.Error, ValueError):
            out.append(base64.b64decode(kept, altchars=b"-_" if "_" in alphabet else None))
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def saw(state: State, needle: bytes) -> bool:
    """Did any request the upstream received carry ``needle`` (raw, or base64 inside)?"""
    for entry in state.received:
        if needle in entry["raw"]:
            return True
        texts = list(_strings(entry.get("json"))) + list(_strings(entry.get("fields")))
        if any(needle in decoded for t in texts for decoded in _lenient(t)):
            return True
    return False


# --------------------------------------------------------------------------- the attempts


@dataclass(frozen=True)
class Attempt:
    id: str
    mode: Literal["openai", "a1111", "comfyui"]
    send: Send
    after: Outcome
    needle: bytes = PROTECTED


def _post_form(path: str, *parts: tuple[list[str], bytes]) -> Send:
    body, headers = form(*parts)
    return lambda proxy: proxy.post(path, content=body, headers=headers)


def _post_json(path: str, doc: Any) -> Send:
    return lambda proxy: proxy.post(path, json=doc)


def _edit(*extra: tuple[list[str], bytes]) -> Send:
    """An edit of a consenting person (granted) plus ``extra`` parts."""
    return _post_form(EDITS, text_part("prompt", "add a hat"), file_part("image", CONSENTING),
                      *extra)


def _comfy_graph(node: dict[str, Any], *, feeds: str = "pixels") -> dict[str, Any]:
    """The basic workflow, with ``node`` (id 90) feeding an img2img VAEEncode."""
    graph = wf.txt2img()
    graph["90"] = node
    if feeds == "pixels":
        graph["91"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["90", 0],
                                                              "vae": ["4", 2]}}
        graph["3"]["inputs"]["latent_image"] = ["91", 0]
    elif feeds == "latent":
        graph["3"]["inputs"]["latent_image"] = ["90", 0]
    return graph


def _comfy(graph: dict[str, Any], **extra: Any) -> Send:
    return _post_json("/prompt", {"prompt": graph, "client_id": "c1", **extra})


def _controlnet(unit: dict[str, Any]) -> dict[str, Any]:
    return {"controlnet": {"args": [{"enabled": True, "module": "canny",
                                     "model": "control_v11p_sd15_canny", **unit}]}}


OPENAI = [
    Attempt("openai-edit-file-image[0]", "openai", _edit(file_part("image[0]", PROTECTED)),
            "refused"),
    Attempt("openai-edit-file-images", "openai", _edit(file_part("images", PROTECTED)),
            "refused"),
    Attempt("openai-edit-file-reference_image", "openai",
            _edit(file_part("reference_image", PROTECTED)), "refused"),
    Attempt("openai-edit-file-mask[]", "openai", _edit(file_part("mask[]", PROTECTED)),
            "refused"),
    Attempt("openai-edit-file-in-text-field-user", "openai",
            _edit(file_part("user", PROTECTED)), "refused"),
    Attempt("openai-edit-text-base64", "openai",
            _edit(text_part("reference", b64(PROTECTED))), "refused"),
    Attempt("openai-edit-text-data-url", "openai",
            _edit(text_part("image_url", data_url(PROTECTED))), "refused"),
    Attempt("openai-edit-text-http-url", "openai",
            _edit(text_part("image_url", FACE_URL)), "refused", FACE_URL.encode()),
    Attempt("openai-edit-known-text-field-base64", "openai",
            _edit(text_part("quality", b64(PROTECTED))), "refused"),
    Attempt("openai-edit-second-content-disposition-after", "openai", _edit((
        ['Content-Disposition: form-data; name="image"; filename="a.png"',
         'Content-Disposition: form-data; name="note"; filename="pat.png"'], PROTECTED)),
        "refused"),
    Attempt("openai-edit-second-content-disposition-before", "openai", _edit((
        ['Content-Disposition: form-data; name="note"; filename="pat.png"',
         'Content-Disposition: form-data; name="image"; filename="a.png"'], PROTECTED)),
        "refused"),
    Attempt("openai-edit-name-star", "openai", _edit((
        ["Content-Disposition: form-data; name=\"note\"; name*=UTF-8''image; "
         'filename="pat.png"'], PROTECTED)), "refused"),
    Attempt("openai-edit-filename-star", "openai", _edit((
        ["Content-Disposition: form-data; name=\"image[]\"; filename*=UTF-8''pat.png",
         "Content-Type: image/png"], PROTECTED)), "refused"),
    Attempt("openai-edit-content-transfer-encoding", "openai", _edit((
        ['Content-Disposition: form-data; name="image[]"; filename="pat.png"',
         "Content-Transfer-Encoding: base64"], b64(PROTECTED).encode())), "refused"),
    Attempt("openai-edit-nested-multipart", "openai",
            _edit(nested_multipart("image[]", PROTECTED)), "refused"),
    Attempt("openai-variation-file-image[]", "openai", _post_form(
        VAR, file_part("image", STRANGER), file_part("image[]", PROTECTED)), "refused"),
    Attempt("openai-variation-text-data-url", "openai", _post_form(
        VAR, file_part("image", STRANGER), text_part("image_url", data_url(PROTECTED))),
        "refused"),
    Attempt("openai-generation-json-image-data-url", "openai", _post_json(
        GEN, {"prompt": "a boat", "image": data_url(PROTECTED)}), "refused"),
    Attempt("openai-generation-json-images-image_url", "openai", _post_json(
        GEN, {"prompt": "a boat", "images": [{"image_url": data_url(PROTECTED)}]}),
        "refused"),
    Attempt("openai-generation-json-http-url", "openai", _post_json(
        GEN, {"prompt": "a boat", "image_url": FACE_URL}), "refused", FACE_URL.encode()),
    Attempt("openai-generation-json-nested-base64", "openai", _post_json(
        GEN, {"prompt": "a boat", "metadata": {"ref": {"b64_json": b64(PROTECTED)}}}),
        "refused"),
    Attempt("openai-generation-json-known-field-data-url", "openai", _post_json(
        GEN, {"prompt": "a boat", "style": data_url(PROTECTED)}), "refused"),
    Attempt("openai-edit-json-images-data-url", "openai", _post_json(
        EDITS, {"prompt": "add a hat", "model": "gpt-image-1",
                "images": [{"image_url": data_url(CONSENTING)},
                           {"image_url": data_url(PROTECTED)}]}), "checked"),
    Attempt("openai-edit-json-mask-data-url", "openai", _post_json(
        EDITS, {"prompt": "add a hat", "images": [{"image_url": data_url(CONSENTING)}],
                "mask": {"image_url": data_url(PROTECTED)}}), "checked"),
    Attempt("openai-edit-json-http-url", "openai", _post_json(
        EDITS, {"prompt": "add a hat", "images": [{"image_url": FACE_URL}]}), "refused",
        FACE_URL.encode()),
    Attempt("openai-edit-json-file-id", "openai", _post_json(
        EDITS, {"prompt": "add a hat", "images": [{"file_id": "file-pat"}]}), "refused",
        b"file-pat"),
]

A1111 = [
    Attempt("a1111-txt2img-firstpass_image", "a1111", _post_json(
        TXT2IMG, {"prompt": "a portrait", "enable_hr": True,
                  "firstpass_image": b64(PROTECTED)}), "checked"),
    Attempt("a1111-img2img-latent_mask", "a1111", _post_json(
        IMG2IMG, {"prompt": "x", "init_images": [b64(STRANGER)],
                  "latent_mask": b64(PROTECTED)}), "checked"),
    Attempt("a1111-override_settings-base64", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "override_settings": {"face": b64(PROTECTED)}}), "checked"),
    Attempt("a1111-unknown-field-base64", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "reference_image": b64(PROTECTED)}), "refused"),
    Attempt("a1111-script_args-nested-8-deep", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "script_name": "some script",
                  "script_args": [[[[[[[[b64(PROTECTED)]]]]]]]]}), "checked"),
    Attempt("a1111-alwayson-junk-in-base64", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": {
            "my extension": {"args": [junk_b64(PROTECTED)]}}}), "checked"),
    Attempt("a1111-alwayson-urlsafe-base64", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": {
            "my extension": {"args": [urlsafe_b64(PROTECTED)]}}}), "refused"),
    Attempt("a1111-alwayson-ppm-base64", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": {
            "my extension": {"args": [b64(PROTECTED_PPM)]}}}), "refused", PROTECTED_PPM),
    Attempt("a1111-alwayson-url-without-extension", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": {
            "my extension": {"args": [FACE_URL]}}}), "refused", FACE_URL.encode()),
    Attempt("a1111-controlnet-image-url", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": _controlnet({"image": FACE_URL})}),
        "refused", FACE_URL.encode()),
    Attempt("a1111-controlnet-batch-directory", "a1111", _post_json(
        TXT2IMG, {"prompt": "x", "alwayson_scripts": _controlnet(
            {"input_mode": "batch", "batch_images": "/srv/faces/pat"})}), "refused",
        b"/srv/faces/pat"),
    Attempt("a1111-init_images-url", "a1111", _post_json(
        IMG2IMG, {"prompt": "x", "init_images": [FACE_URL]}), "refused", FACE_URL.encode()),
    Attempt("a1111-init_images-data-url-other-media-type", "a1111", _post_json(
        IMG2IMG, {"prompt": "x", "init_images": [data_url(PROTECTED, "application/x-face")]}),
        "checked"),
    Attempt("a1111-hr_prompt-names-protected", "a1111", _post_json(
        TXT2IMG, {"prompt": "a boat", "enable_hr": True, "hr_prompt": "Pat Protected"}),
        "checked", b"Pat Protected"),
    Attempt("a1111-infotext-names-protected", "a1111", _post_json(
        TXT2IMG, {"prompt": "a boat", "infotext": "Pat Protected\nSteps: 20"}), "checked",
        b"Pat Protected"),
]

COMFYUI = [
    Attempt("comfyui-inline-base64-custom-node", "comfyui", _comfy(_comfy_graph(
        {"class_type": "Base64Decode", "inputs": {"data": b64(PROTECTED)}})), "checked"),
    Attempt("comfyui-inline-data-url-custom-node", "comfyui", _comfy(_comfy_graph(
        {"class_type": "FaceSource", "inputs": {"source": data_url(PROTECTED)}})),
        "checked"),
    Attempt("comfyui-inline-junk-base64", "comfyui", _comfy(_comfy_graph(
        {"class_type": "Base64ToImage", "inputs": {"b64": junk_b64(PROTECTED)}})), "checked"),
    Attempt("comfyui-inline-ppm", "comfyui", _comfy(_comfy_graph(
        {"class_type": "DecodeData", "inputs": {"data": b64(PROTECTED_PPM)}})), "refused",
        PROTECTED_PPM),
    Attempt("comfyui-inline-nested-in-input-object", "comfyui", _comfy(_comfy_graph(
        {"class_type": "BatchFromConfig", "inputs": {"config": {"a": [[b64(PROTECTED)]]}}})),
        "checked"),
    Attempt("comfyui-url-in-custom-node", "comfyui", _comfy(_comfy_graph(
        {"class_type": "WebFetch", "inputs": {"url": FACE_URL}})), "refused",
        FACE_URL.encode()),
    Attempt("comfyui-url-through-primitive", "comfyui", _comfy({
        **_comfy_graph({"class_type": "ImageFromURL", "inputs": {"url": ["92", 0]}}),
        "92": {"class_type": "PrimitiveString", "inputs": {"value": FACE_URL}}}),
        "refused", FACE_URL.encode()),
    Attempt("comfyui-load-latent-file", "comfyui", _comfy(_comfy_graph(
        {"class_type": "LoadLatent", "inputs": {"latent": "pat.latent"}}, feeds="latent")),
        "refused", b"pat.latent"),
    Attempt("comfyui-media-path-in-custom-node", "comfyui", _comfy(_comfy_graph(
        {"class_type": "FaceSource", "inputs": {"path": "/srv/faces/pat.jpg"}})), "refused",
        b"/srv/faces/pat.jpg"),
    Attempt("comfyui-top-level-unknown-key", "comfyui", _comfy(
        wf.txt2img(), reference=b64(PROTECTED)), "refused"),
    Attempt("comfyui-extra_data-base64", "comfyui", _comfy(
        wf.txt2img(), extra_data={"extra_pnginfo": {"workflow": {
            "nodes": [{"widgets_values": [b64(PROTECTED)]}]}}}), "checked"),
    Attempt("comfyui-node-unknown-key", "comfyui", _comfy(
        {**wf.txt2img(), "3": {**wf.txt2img()["3"], "image": b64(PROTECTED)}}), "refused"),
    Attempt("comfyui-text-past-20000-characters", "comfyui", _comfy(
        {**wf.txt2img(), "6": {"class_type": "CLIPTextEncode", "inputs": {
            "clip": ["4", 1], "text": "a castle " * 2300 + "Pat Protected"}}}),
        "refused", b"Pat Protected"),
    Attempt("comfyui-upload-extra-file-part", "comfyui", _post_form(
        "/upload/image", file_part("image", STRANGER, "me.png"),
        file_part("image2", PROTECTED, "pat.png")), "refused"),
    Attempt("comfyui-upload-text-field-base64", "comfyui", _post_form(
        "/upload/image", file_part("image", STRANGER, "me.png"),
        text_part("subfolder", b64(PROTECTED))), "refused"),
    Attempt("comfyui-upload-second-content-disposition", "comfyui", _post_form(
        "/upload/image", file_part("image", STRANGER, "me.png"),
        (['Content-Disposition: form-data; name="note"; filename="pat.png"',
          'Content-Disposition: form-data; name="image"; filename="pat.png"'], PROTECTED)),
        "refused"),
]

ATTEMPTS = OPENAI + A1111 + COMFYUI


@pytest.fixture
def granted(fake_gate: FaceGate, people: People) -> People:
    """The harmless parts of each attempt are allowed: the consenting person has granted
    every image operation to the app."""
    fake_gate.grant(people.consenting, app_id="studio",
                    operations=["edit", "inpaint", "img2img", "face_swap"])
    return people


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.id for a in ATTEMPTS])
def test_no_face_reaches_the_upstream_unchecked(
        attempt: Attempt, make_proxy: ProxyFactory, granted: People,
        request: pytest.FixtureRequest) -> None:
    upstream: Upstream = request.getfixturevalue(f"{attempt.mode}_upstream")
    upstream.state.output = CONSENTING if attempt.mode == "openai" else STRANGER
    proxy = make_proxy(attempt.mode, upstream.url)
    r = attempt.send(proxy)
    assert not saw(upstream.state, attempt.needle), f"PASSED THROUGH ({r.status_code})"
    if attempt.after == "checked":
        assert r.status_code == 403, r.text
        assert r.json()["decision"]["verdict"] == "deny", r.text
    else:
        assert r.status_code in (400, 409, 413, 415, 422), r.text
        assert "decision" not in r.json()


def test_the_table_covers_every_mode_and_channel() -> None:
    """Each mode is probed through files, text, JSON, data URLs, URLs and its own tricks."""
    ids = " ".join(a.id for a in ATTEMPTS)
    for word in ("file", "text", "json", "data-url", "url", "content-disposition",
                 "nested", "base64", "upload", "latent", "primitive"):
        assert word in ids, word
    assert {a.mode for a in ATTEMPTS} == {"openai", "a1111", "comfyui"}


# --------------------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def real_gate(tmp_path_factory: pytest.TempPathFactory,
              faces_dir: Path) -> Iterator[tuple[FaceGate, list[bytes]]]:
    """The real models; the first photo of a real person enrolled as protected, the others
    smuggled."""
    photos = [p.read_bytes() for p in sorted((faces_dir / "natural_small" /
                                              "mindy_kaling").iterdir())]
    gate = FaceGate.open(tmp_path_factory.mktemp("real-smuggling"))
    gate.enroll(photos[:1], "Mindy", status="protected")
    yield gate, photos[1:]
    gate.close()


#: No face for the real detector: the harmless image of each attempt.
NO_FACE = noise_png(5, 256)


def _real_attempts(face: bytes) -> list[tuple[str, str, Send, Outcome]]:
    graph = _comfy_graph({"class_type": "FaceSource", "inputs": {"source": data_url(face,
                                                                                  "image/jpeg")}})
    return [
        ("a1111-firstpass_image", "a1111", _post_json(
            TXT2IMG, {"prompt": "a portrait", "enable_hr": True,
                      "firstpass_image": b64(face)}), "checked"),
        ("a1111-nested-script-args", "a1111", _post_json(
            TXT2IMG, {"prompt": "a portrait", "alwayson_scripts": {
                "my extension": {"args": [[[[[[[[{"img": b64(face)}]]]]]]]]}}}), "checked"),
        ("comfyui-custom-node-data-url", "comfyui", _comfy(graph), "checked"),
        ("openai-json-edit-images", "openai", _post_json(
            EDITS, {"prompt": "add a hat", "images": [{"image_url": data_url(NO_FACE)},
                                                      {"image_url": data_url(face)}]}),
         "checked"),
        ("openai-edit-file-image[0]", "openai", _post_form(
            EDITS, text_part("prompt", "add a hat"), file_part("image", NO_FACE),
            file_part("image[0]", face, "face.jpg")), "refused"),
    ]


@pytest.mark.real
@pytest.mark.parametrize("case", range(5), ids=[a[0] for a in _real_attempts(b"")])
def test_a_real_protected_face_smuggled_is_denied_and_never_forwarded(
        case: int, real_gate: tuple[FaceGate, list[bytes]],
        request: pytest.FixtureRequest) -> None:
    gate, photos = real_gate
    name, mode, send, after = _real_attempts(photos[0])[case]
    upstream: Upstream = request.getfixturevalue(f"{mode}_upstream")
    upstream.state.output = NO_FACE
    app = create_proxy_app(gate, mode=mode,  # type: ignore[arg-type]
                           upstream=upstream.url, app_id="studio")
    with TestClient(app) as proxy:
        r = send(proxy)
    assert not saw(upstream.state, photos[0]), f"{name}: PASSED THROUGH ({r.status_code})"
    if after == "checked":
        assert r.status_code == 403, r.text
        decision = r.json()["decision"]
        assert decision["verdict"] == "deny"
        assert "core.protected_subject" in [x["rule_id"] for x in decision["reasons"]]
    else:
        assert r.status_code in (400, 422), r.text


@pytest.mark.real
def test_real_cases_are_harmless_without_the_face(
        real_gate: tuple[FaceGate, list[bytes]], openai_upstream: Upstream) -> None:
    """The harmless half of the OpenAI JSON edit is allowed on its own, so a deny above
    comes from the smuggled face."""
    gate, _ = real_gate
    openai_upstream.state.output = NO_FACE
    app = create_proxy_app(gate, mode="openai", upstream=openai_upstream.url,
                           app_id="studio")
    with TestClient(app) as proxy:
        r = proxy.post(EDITS, json={"prompt": "add a hat",
                                    "images": [{"image_url": data_url(NO_FACE)}]})
    assert r.status_code == 200, r.text

