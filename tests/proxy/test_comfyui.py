"""ComfyUI through the proxy: uploads, workflow graphs, history and screened /view."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gate.engine import FaceGate
from gate.marking.labels import png_chunks
from gate.proxy import comfyui
from gate.proxy.types import Malformed, Unverifiable
from tests.proxy import workflows as wf
from tests.proxy.conftest import (
    CONSENTING,
    OTHER_STRANGER,
    PROTECTED,
    STRANGER,
    People,
    ProxyFactory,
    Upstream,
)


def _upload(proxy: Any, data: bytes, name: str, **headers: str) -> Any:
    return proxy.post("/upload/image", files={"image": (name, data, "image/png")},
                      data={"overwrite": "true"}, headers=headers)


def _plan(graph: dict[str, Any]) -> comfyui.Plan:
    return comfyui.map_prompt({"prompt": graph, "client_id": "c1"})[0]


def test_img2img_end_to_end_upload_prompt_history_view(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = _upload(proxy, STRANGER, "me.png")
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "me.png", "subfolder": "", "type": "input"}
    r = proxy.post("/prompt", json={"prompt": wf.img2img("me.png"), "client_id": "c1"})
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    assert r.headers["x-gate-verdict"] == "allow"
    history = proxy.get(f"/history/{prompt_id}").json()
    image = history[prompt_id]["outputs"]["9"]["images"][0]
    r = proxy.get("/view", params=image)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    texts = [c for k, c in png_chunks(r.content) if k == b"tEXt"]
    assert any(b"AIGC" in t for t in texts)
    assert r.headers["x-gate-request-id"]


def test_view_forwards_only_the_checked_file(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    comfyui_upstream.state.files[("output", "", "unchecked.png")] = PROTECTED
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    proxy.post("/prompt", json={"prompt": wf.txt2img()})
    r = proxy.get("/view?filename=unchecked.png&filename=ComfyUI_00001_.png&type=output"
                  "&preview=webp;90")
    assert r.status_code == 200, r.text
    sent = comfyui_upstream.state.received[-1]["raw_query"]
    assert "unchecked" not in sent and sent.count("filename=") == 1


def test_view_without_history_call_finds_the_checked_prompt(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = proxy.post("/api/prompt", json={"prompt": wf.txt2img()})
    assert r.status_code == 200, r.text
    r = proxy.get("/api/view", params={"filename": "ComfyUI_00001_.png", "type": "output"})
    assert r.status_code == 200, r.text


def test_outputs_of_unchecked_prompts_are_refused(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    comfyui_upstream.state.files[("output", "", "elsewhere.png")] = STRANGER
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = proxy.get("/view", params={"filename": "elsewhere.png", "type": "output"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "not_checked"
    assert proxy.get("/history/not-a-prompt").json() == {}
    r = proxy.get("/view", params={"filename": "me.png", "type": "input"})
    assert r.status_code == 403


def test_a_protected_output_is_withheld(make_proxy: ProxyFactory, comfyui_upstream: Upstream,
                                        people: People) -> None:
    comfyui_upstream.state.output = PROTECTED
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    prompt_id = proxy.post("/prompt", json={"prompt": wf.txt2img("portrait")}).json()[
        "prompt_id"]
    image = proxy.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["9"]["images"][0]
    r = proxy.get("/view", params=image)
    assert r.status_code == 403
    assert r.json()["decision"]["stage"] == "output"
    assert r.json()["error"]["type"] == "consent_denied"


def test_uploading_a_protected_person_is_refused(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = _upload(proxy, PROTECTED, "them.png")
    assert r.status_code == 403 and r.json()["decision"]["verdict"] == "deny"
    assert comfyui_upstream.state.received == []


def test_reactor_swap_needs_consent_and_passes_with_a_grant(
        fake_gate: FaceGate, make_proxy: ProxyFactory, comfyui_upstream: Upstream,
        people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    _upload(proxy, STRANGER, "target.png")
    _upload(proxy, CONSENTING, "source.png")
    r = proxy.post("/prompt", json={"prompt": wf.reactor("target.png", "source.png")})
    assert r.status_code == 403
    decision = r.json()["decision"]
    assert decision["consent_needed"][0]["operation"] == "face_swap"
    assert {f["role"] for f in decision["faces"]} == {"source", "target"}
    fake_gate.grant(people.consenting, app_id="studio", operations=["face_swap"])
    _upload(proxy, OTHER_STRANGER, "scene.png")  # a target nobody else is in
    r = proxy.post("/prompt", json={"prompt": wf.reactor("source.png", "source.png")})
    assert r.status_code == 200, r.text


def test_an_image_changed_behind_the_gate_is_refused(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    _upload(proxy, STRANGER, "me.png")
    comfyui_upstream.state.files[("input", "", "me.png")] = PROTECTED  # overwritten directly
    r = proxy.post("/prompt", json={"prompt": wf.img2img("me.png")})
    assert r.status_code == 409 and r.json()["error"]["type"] == "image_changed"


def test_files_not_uploaded_through_the_gate_are_still_checked(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    comfyui_upstream.state.files[("input", "", "old.png")] = PROTECTED
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = proxy.post("/prompt", json={"prompt": wf.img2img("old.png [input]")})
    assert r.status_code == 403 and r.json()["decision"]["verdict"] == "deny"
    r = proxy.post("/prompt", json={"prompt": wf.img2img("missing.png")})
    assert r.status_code == 400 and r.json()["error"]["type"] == "image_not_found"


def test_apps_cannot_see_each_others_outputs(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, key_store: Any,
        people: People) -> None:
    studio = {"X-Gate-Key": key_store.create("studio", ["check"]).token}
    other = {"X-Gate-Key": key_store.create("other", ["check"]).token}
    proxy = make_proxy("comfyui", comfyui_upstream.url, key_store=key_store)
    assert proxy.post("/prompt", json={"prompt": wf.txt2img()}).status_code == 401
    prompt_id = proxy.post("/prompt", json={"prompt": wf.txt2img()}, headers=studio).json()[
        "prompt_id"]
    assert proxy.get(f"/history/{prompt_id}", headers=other).json() == {}
    image = {"filename": "ComfyUI_00001_.png", "type": "output"}
    assert proxy.get("/view", params=image, headers=other).status_code == 403
    assert proxy.get("/view", params=image, headers=studio).status_code == 200


def test_malformed_prompts_get_comfyui_errors(make_proxy: ProxyFactory,
                                              comfyui_upstream: Upstream) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    bodies: list[dict[str, Any]] = [{"client_id": "x"}, {"prompt": []},
                                    {"prompt": {"1": {"inputs": {}}}}]
    for body in bodies:
        r = proxy.post("/prompt", json=body)
        assert r.status_code == 400, body
        assert set(r.json()["error"]) == {"type", "message", "details", "extra_info"}
        assert r.json()["node_errors"] == {}
    r = proxy.post("/prompt", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = proxy.post("/upload/image", data={"type": "input"})
    assert r.status_code == 400
    r = proxy.get("/view", params={"filename": "../secret.png"})
    assert r.status_code == 400
    assert proxy.get("/queue").status_code == 404  # other users' prompts: not proxied
    assert proxy.get("/object_info").status_code == 200
    assert comfyui_upstream.state.paths() == ["/object_info"]


# --------------------------------------------------------------------------- the mapping


def test_workflow_operations_and_roles() -> None:
    plan = _plan(wf.txt2img("a castle"))
    assert (plan.operation, plan.prompt, plan.negative_prompt) == ("txt2img", "a castle",
                                                                   "bad hands")
    assert plan.refs == ()
    plan = _plan(wf.img2img("sub/me.png [input]"))
    assert plan.operation == "img2img"
    assert plan.refs == (("init", comfyui.ImageRef("me.png", "sub", "input")),)
    plan = _plan(wf.inpaint("me.png", "mask.png"))
    assert plan.operation == "inpaint"
    assert sorted(r for r, _ in plan.refs) == ["init", "mask"]
    plan = _plan(wf.reactor("t.png", "s.png"))
    assert plan.operation == "face_swap"
    assert {(r, ref.filename) for r, ref in plan.refs} == {("target", "t.png"),
                                                          ("source", "s.png")}
    for graph in (wf.faceid("f.png"), wf.pulid("f.png")):
        plan = _plan(graph)
        assert plan.operation == "face_swap" and plan.refs[0][0] == "source"
    plan = _plan(wf.instantid("f.png", "pose.png"))
    assert {(r, ref.filename) for r, ref in plan.refs} == {("source", "f.png"),
                                                          ("reference", "pose.png")}
    assert "landscape" in plan.prompt and plan.negative_prompt == "bad hands"


def test_workflow_text_from_any_encoder_is_screened() -> None:
    graph = wf.txt2img("a castle")
    graph["60"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "hidden text",
                                                                   "text_l": "more"}}
    plan = _plan(graph)
    assert "hidden text" in plan.prompt and "more" in plan.prompt


def test_unverifiable_and_malformed_workflows() -> None:
    graph = wf.reactor("t.png", "s.png")
    del graph["22"]["inputs"]["source_image"]
    graph["22"]["inputs"]["face_model"] = ["70", 0]
    graph["70"] = {"class_type": "ReActorLoadFaceModel", "inputs": {"face_model": "x.safetensors"}}
    with pytest.raises(Unverifiable):
        _plan(graph)
    graph = wf.txt2img()
    graph["80"] = {"class_type": "LoadImageFromUrl", "inputs": {"url": "http://10.0.0.1/x.png"}}
    with pytest.raises(Unverifiable):
        _plan(graph)
    with pytest.raises(Malformed):
        _plan(wf.img2img("../../etc/passwd"))
    graph = wf.img2img("x.png")
    graph["10"]["inputs"]["image"] = ["90", 0]  # a file name the gate cannot see
    graph["90"] = {"class_type": "PrimitiveString", "inputs": {"value": "x.png"}}
    with pytest.raises(Unverifiable):
        _plan(graph)
    graph = wf.txt2img()
    graph["91"] = {"class_type": "VHS_LoadImagesPath", "inputs": {"directory": "/data"}}
    with pytest.raises(Unverifiable):
        _plan(graph)


# --------------------------------------------------------------------------- allow-lists


def test_a_prompt_as_the_ui_sends_it_is_forwarded_re_serialised(
        make_proxy: ProxyFactory, comfyui_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    _upload(proxy, STRANGER, "me.png")
    graph = wf.img2img("me.png")
    graph["6"]["_meta"] = {"title": "CLIP Text Encode (Prompt) https://example.com"}
    graph["6"]["inputs"]["text"] = "a poster for https://example.com"
    workflow = {"nodes": [{"id": 10, "type": "LoadImage", "widgets_values": ["me.png",
                                                                            "image"]}]}
    body = {"prompt": graph, "client_id": "c1", "prompt_id": "p-1", "front": False,
            "number": 3, "extra_data": {"extra_pnginfo": {"workflow": workflow}},
            "partial_execution_targets": ["9"]}
    r = proxy.post("/prompt", json=body)
    assert r.status_code == 200, r.text
    assert comfyui_upstream.state.received[-1]["json"] == body


def test_unknown_keys_get_comfyui_errors(make_proxy: ProxyFactory,
                                         comfyui_upstream: Upstream) -> None:
    proxy = make_proxy("comfyui", comfyui_upstream.url)
    r = proxy.post("/prompt", json={"prompt": wf.txt2img(), "extra": 1})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "unknown_parameter"
    assert r.json()["error"]["extra_info"]["field"] == "extra"
    graph = wf.txt2img()
    graph["3"]["is_changed"] = True
    r = proxy.post("/prompt", json={"prompt": graph})
    assert r.json()["error"]["extra_info"]["field"] == "prompt.3.is_changed"
    r = proxy.post("/prompt", json={"prompt": wf.txt2img(), "client_id": 5})
    assert r.status_code == 400 and r.json()["error"]["extra_info"]["field"] == "client_id"
    r = proxy.post("/upload/image", files={"image": ("a.png", STRANGER, "image/png")},
                   data={"overwrite": "true", "extra": "1"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "unknown_parameter"
    r = proxy.post("/upload/image", files={"image": ("a.png", STRANGER, "image/png")},
                   data={"type": "elsewhere"})
    assert r.status_code == 400
    assert comfyui_upstream.state.received == []


def test_media_loaders_are_refused_unless_everything_they_load_is_inline() -> None:
    inline = "data:image/png;base64," + base64.b64encode(STRANGER).decode()
    graph = wf.txt2img()
    graph["90"] = {"class_type": "ETN_LoadImageBase64", "inputs": {"image": inline}}
    assert _plan(graph).inline == (("reference", STRANGER),)
    for node in ({"class_type": "ETN_LoadImageBase64", "inputs": {"image": inline,
                                                                   "directory": "faces"}},
                 {"class_type": "ImageLoader", "inputs": {"name": "pat"}},
                 {"class_type": "LoadLatent", "inputs": {"latent": "pat"}},
                 {"class_type": "Image Load", "inputs": {"image_path": "pat"}},
                 {"class_type": "IPAdapterLoadEmbeds", "inputs": {"embeds": "pat.ipadpt"}},
                 {"class_type": "ReActorLoadFaceModel", "inputs": {"face_model": "pat"}}):
        graph["90"] = node
        with pytest.raises(Unverifiable):
            _plan(graph)
    graph["90"] = {"class_type": "ImageOnlyCheckpointLoader",
                   "inputs": {"ckpt_name": "svd_xt.safetensors"}}
    assert _plan(graph).operation == "txt2img"
