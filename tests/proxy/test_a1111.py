"""AUTOMATIC1111 / Forge through the proxy: txt2img, img2img, inpaint, ReActor / roop /
ControlNet face swaps, output screening, FastAPI-style errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gate.engine import FaceGate
from gate.marking.labels import png_chunks
from gate.proxy import a1111
from gate.proxy.types import Unverifiable
from tests.proxy.conftest import (
    CONSENTING,
    PROTECTED,
    STRANGER,
    People,
    ProxyFactory,
    Upstream,
)

BASIC = {"Authorization": "Basic dXNlcjpwYXNz"}  # --api-auth user:pass


def b64(data: bytes, data_url: bool = False) -> str:
    text = base64.b64encode(data).decode("ascii")
    return f"data:image/png;base64,{text}" if data_url else text


def reactor(source: bytes | None, *, enabled: bool = True, select_source: int = 0) -> dict[
        str, Any]:
    args: list[Any] = [b64(source) if source else None, enabled, "0", "0",
                       "inswapper_128.onnx", "CodeFormer", 1, True, "None", 1, 1, False, True,
                       1, 0, 0, False, 0.5, False, False, "CPU", True, select_source,
                       "face.safetensors", None, None, True, True, 0.6, 2]
    return {"reactor": {"args": args}}


def test_txt2img_outputs_are_labelled_and_basic_auth_passes(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "a red bicycle", "negative_prompt": "blur",
                                         "steps": 20, "batch_size": 2}, headers=BASIC)
    assert r.status_code == 200, r.text
    assert a1111_upstream.state.received[0]["headers"]["authorization"] == BASIC[
        "Authorization"]
    images = r.json()["images"]
    assert len(images) == 2
    kinds = [k for k, _ in png_chunks(base64.b64decode(images[0]))]
    assert b"tEXt" in kinds and b"iTXt" in kinds
    assert r.json()["info"]  # the rest of the answer is kept


def test_txt2img_output_of_a_protected_person_is_withheld(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    a1111_upstream.state.output = PROTECTED
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "portrait photo"})
    assert r.status_code == 403
    body = r.json()
    assert body["error"] == "ConsentGateError" and body["decision"]["stage"] == "output"
    assert "images" not in body


def test_img2img_of_an_unknown_face_is_allowed_but_inpaint_needs_consent(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.IMG2IMG, json={"prompt": "oil painting", "denoising_strength": 0.4,
                                         "init_images": [b64(STRANGER, data_url=True)]})
    assert r.status_code == 200, r.text
    wrapped = "\n".join(b64(STRANGER)[i:i + 76] for i in range(0, len(b64(STRANGER)), 76))
    r = proxy.post(a1111.IMG2IMG, json={"init_images": [wrapped]})  # MIME-wrapped base64
    assert r.status_code == 200, r.text
    r = proxy.post(a1111.IMG2IMG, json={"prompt": "new shirt", "init_images": [b64(STRANGER)],
                                         "mask": b64(CONSENTING)})
    assert r.status_code == 403
    decision = r.json()["decision"]
    assert decision["consent_needed"][0]["operation"] == "inpaint"
    assert sorted(f["role"] for f in decision["faces"]) == ["init", "mask"]


def test_reactor_swap_of_a_protected_face_is_denied(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.IMG2IMG, json={"prompt": "", "init_images": [b64(STRANGER)],
                                         "alwayson_scripts": reactor(PROTECTED)})
    assert r.status_code == 403
    decision = r.json()["decision"]
    assert decision["verdict"] == "deny"
    assert {f["role"] for f in decision["faces"]} == {"source", "target"}
    assert a1111_upstream.state.received == []


def test_reactor_swap_with_a_grant_is_forwarded(
        fake_gate: FaceGate, make_proxy: ProxyFactory, a1111_upstream: Upstream,
        people: People) -> None:
    fake_gate.grant(people.consenting, app_id="studio", operations=["face_swap"])
    a1111_upstream.state.output = CONSENTING
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "astronaut portrait",
                                         "alwayson_scripts": reactor(CONSENTING)})
    assert r.status_code == 200, r.text
    sent = a1111_upstream.state.received[0]["json"]
    assert sent["alwayson_scripts"]["reactor"]["args"][0] == b64(CONSENTING)  # untouched


def test_disabled_reactor_is_not_a_swap(make_proxy: ProxyFactory, a1111_upstream: Upstream,
                                       people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "a cat",
                                         "alwayson_scripts": reactor(None, enabled=False)})
    assert r.status_code == 200, r.text


def test_roop_and_controlnet_faceid_are_swaps(make_proxy: ProxyFactory,
                                              a1111_upstream: Upstream,
                                              people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "alwayson_scripts": {
        "roop": {"args": [b64(STRANGER), True, "0"]}}})
    assert r.status_code == 403
    assert r.json()["decision"]["consent_needed"][0]["operation"] == "face_swap"
    unit = {"enabled": True, "module": "ip-adapter_face_id_plus",
            "model": "ip-adapter-faceid-plusv2_sd15", "image": {"image": b64(STRANGER),
                                                                 "mask": None}}
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "alwayson_scripts": {
        "ControlNet": {"args": [unit]}}})
    assert r.status_code == 403
    assert r.json()["decision"]["faces"][0]["role"] == "source"


def test_images_in_other_scripts_are_checked_as_references(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    canny = {"enabled": True, "module": "canny", "model": "control_canny",
             "image": b64(PROTECTED)}
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "alwayson_scripts": {
        "controlnet": {"args": [canny]}}})
    assert r.status_code == 403
    assert r.json()["decision"]["faces"][0]["role"] == "reference"
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "alwayson_scripts": {
        "some extension": {"args": [{"nested": [b64(PROTECTED, data_url=True)]}]}}})
    assert r.status_code == 403


def test_unverifiable_face_sources_are_refused(make_proxy: ProxyFactory,
                                               a1111_upstream: Upstream) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x",
                                         "alwayson_scripts": reactor(None, select_source=1)})
    assert r.status_code == 422
    assert r.json()["code"] == "unverifiable_face_source"
    r = proxy.post(a1111.IMG2IMG, json={"init_images": ["https://example.com/face.png"]})
    assert r.status_code == 422
    assert a1111_upstream.state.received == []


def test_malformed_bodies_get_fastapi_validation_errors(make_proxy: ProxyFactory,
                                                        a1111_upstream: Upstream) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"
    r = proxy.post(a1111.IMG2IMG, json={"prompt": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"]
    r = proxy.post(a1111.IMG2IMG, json={"init_images": ["%%%"]})
    assert r.status_code == 422
    r = proxy.post(a1111.TXT2IMG, json={"prompt": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    r = proxy.post("/sdapi/v1/extra-single-image", json={})
    assert r.status_code in (404, 405) and "detail" in r.json()
    assert a1111_upstream.state.received == []


def test_listings_pass_through_but_not_other_routes(make_proxy: ProxyFactory,
                                                    a1111_upstream: Upstream) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    assert proxy.get("/sdapi/v1/sd-models").json()[0]["title"].startswith("v1-5")
    assert proxy.get("/sdapi/v1/progress").status_code == 404


def test_script_args_with_urls_are_refused() -> None:
    with pytest.raises(Unverifiable):
        a1111.map_request(a1111.TXT2IMG, {"prompt": "x", "alwayson_scripts": {
            "x": {"args": ["https://example.com/a.jpg"]}}})


def test_a_single_use_grant_covers_its_own_output(
        fake_gate: FaceGate, make_proxy: ProxyFactory, a1111_upstream: Upstream,
        people: People) -> None:
    fake_gate.grant(people.consenting, app_id="studio", operations=["face_swap"], max_uses=1)
    a1111_upstream.state.output = CONSENTING
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "portrait",
                                         "alwayson_scripts": reactor(CONSENTING)})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- allow-lists

#: A txt2img request using the web UI's documented fields (and Forge's).
FULL_TXT2IMG: dict[str, Any] = {
    "prompt": "a red bicycle", "negative_prompt": "blur", "styles": ["Photo"], "seed": 1,
    "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
    "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 1, "n_iter": 1,
    "steps": 20, "cfg_scale": 7, "distilled_cfg_scale": 3.5, "width": 512, "height": 512,
    "restore_faces": False, "tiling": False, "do_not_save_samples": True,
    "do_not_save_grid": True, "eta": 0, "denoising_strength": 0.7, "s_min_uncond": 0,
    "s_churn": 0, "s_tmax": None, "s_tmin": 0, "s_noise": 1,
    "override_settings": {"sd_model_checkpoint": "sdxl/juggernaut.safetensors [7440042bbd]",
                          "CLIP_stop_at_last_layers": 2},
    "override_settings_restore_afterwards": True, "refiner_checkpoint": None,
    "refiner_switch_at": 0.8, "disable_extra_networks": False, "firstpass_image": None,
    "comments": {}, "enable_hr": True, "firstphase_width": 0, "firstphase_height": 0,
    "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0,
    "hr_resize_y": 0, "hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": None,
    "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "", "hr_cfg": 7,
    "hr_distilled_cfg": 3.5, "hr_additional_modules": ["Use same choices"],
    "force_task_id": "task(1)", "sampler_index": "Euler", "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
    "infotext": None}


def test_every_documented_field_is_forwarded_re_serialised(
        make_proxy: ProxyFactory, a1111_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json=FULL_TXT2IMG)
    assert r.status_code == 200, r.text
    assert a1111_upstream.state.received[0]["json"] == FULL_TXT2IMG
    wrapped = "\n".join(b64(STRANGER)[i:i + 76] for i in range(0, len(b64(STRANGER)), 76))
    r = proxy.post(a1111.IMG2IMG, json={
        "init_images": [wrapped], "resize_mode": 0, "image_cfg_scale": 1.5, "mask": "",
        "mask_blur_x": 4, "mask_blur_y": 4, "mask_blur": 4, "mask_round": True,
        "inpainting_fill": 1, "inpaint_full_res": 0, "inpaint_full_res_padding": 32,
        "inpainting_mask_invert": 0, "initial_noise_multiplier": 1.0, "latent_mask": None,
        "include_init_images": False, "steps": "20"})
    assert r.status_code == 200, r.text
    assert a1111_upstream.state.received[1]["json"]["init_images"] == [b64(STRANGER)]


def test_unknown_fields_get_fastapi_extra_field_errors(
        make_proxy: ProxyFactory, a1111_upstream: Upstream) -> None:
    proxy = make_proxy("a1111", a1111_upstream.url)
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "init_images": [b64(STRANGER)]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "init_images"]
    assert r.json()["detail"][0]["type"] == "value_error.extra"
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "steps": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"]
    r = proxy.post(a1111.TXT2IMG, json={"prompt": "x", "override_settings": {
        "outdir_samples": "/srv/out"}})
    assert r.status_code == 422 and r.json()["code"] == "unverifiable_face_source"
    assert a1111_upstream.state.received == []
