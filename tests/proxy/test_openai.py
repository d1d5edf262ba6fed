"""OpenAI Images API through the proxy: allow, deny, needs_consent, output screening,
labels, URL outputs, errors in OpenAI's style, Authorization pass-through, body limit."""

from __future__ import annotations

import base64
import json
from typing import Any

from gate.engine import FaceGate
from gate.marking.labels import png_chunks
from gate.proxy.settings import ProxySettings
from tests.proxy.conftest import (
    CONSENTING,
    PROTECTED,
    STRANGER,
    UPSTREAM_AUTH,
    People,
    ProxyFactory,
    Upstream,
)

GEN = "/v1/images/generations"
EDITS = "/v1/images/edits"
AUTH = {"Authorization": UPSTREAM_AUTH}


def _openai_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return r.json()  # type: ignore[no-any-return]


def _texts(png: bytes) -> dict[bytes, bytes]:
    return {c[8:-4].split(b"\x00", 1)[0]: c[8:-4].split(b"\x00", 1)[1]
            for k, c in png_chunks(png) if k in (b"tEXt", b"iTXt")}


def test_generation_allowed_is_screened_labelled_and_passes_authorization(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, json={"prompt": "a lighthouse at dusk", "n": 2,
                              "response_format": "b64_json"},
                   headers={**AUTH, "X-Gate-User": "u1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["echo"]["authorization"] == UPSTREAM_AUTH  # untouched
    sent = openai_upstream.state.received[0]
    assert sent["headers"]["authorization"] == UPSTREAM_AUTH
    assert not any(h.startswith("x-gate-") for h in sent["headers"])
    assert r.headers["x-gate-verdict"] == "allow"
    assert "label_ai_content" in r.headers["x-gate-obligations"]
    assert len(body["data"]) == 2
    png = base64.b64decode(body["data"][0]["b64_json"])
    texts = _texts(png)
    aigc = json.loads(texts[b"AIGC"])
    assert aigc["Label"] == "1" and aigc["ContentProducer"] == "consent-gate"
    assert aigc["ProduceID"] == r.headers["x-gate-request-id"]
    assert b"trainedAlgorithmicMedia" in texts[b"XML:com.adobe.xmp"]
    assert json.loads(texts[b"consent-gate"])["request_id"] == aigc["ProduceID"]


def test_output_showing_a_protected_person_is_withheld(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    openai_upstream.state.output = PROTECTED
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, json={"prompt": "a person on a beach"}, headers=AUTH)
    body = _openai_error(r, 403)
    assert body["error"]["code"] == "consent_denied"
    assert body["decision"]["verdict"] == "deny" and body["decision"]["stage"] == "output"
    assert body["decision"]["faces"][0]["subject_id"] == people.protected
    assert "b64_json" not in r.text and "data" not in body


def test_prompt_naming_a_protected_person_is_not_forwarded(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, json={"prompt": "Pat Protected dancing"}, headers=AUTH)
    body = _openai_error(r, 403)
    assert body["decision"]["stage"] == "input"
    assert body["decision"]["verdict"] in ("deny", "needs_consent")
    assert openai_upstream.state.received == []


def test_edit_of_an_unknown_face_needs_consent(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(EDITS, data={"prompt": "add a hat", "model": "gpt-image-1"},
                   files={"image": ("me.png", STRANGER, "image/png")}, headers=AUTH)
    body = _openai_error(r, 403)
    assert body["error"]["code"] == "consent_required"
    decision = body["decision"]
    assert decision["verdict"] == "needs_consent"
    assert decision["consent_needed"][0]["operation"] == "edit"
    assert decision["faces"][0]["role"] == "init"
    assert openai_upstream.state.received == []


def test_edit_with_a_grant_is_forwarded_with_all_images(
        fake_gate: FaceGate, make_proxy: ProxyFactory, openai_upstream: Upstream,
        people: People) -> None:
    grant = fake_gate.grant(people.consenting, app_id="studio", operations=["edit"])
    openai_upstream.state.output = CONSENTING
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(EDITS, data={"prompt": "add a hat", "response_format": "url"},
                   files=[("image[]", ("a.png", CONSENTING, "image/png")),
                          ("image[]", ("b.png", CONSENTING, "image/png"))], headers=AUTH)
    assert r.status_code == 200, r.text
    sent = openai_upstream.state.received[0]
    assert [f[0] for f in sent["files"]] == ["image[]", "image[]"]
    assert sent["fields"]["response_format"] == "b64_json"  # we must see the bytes
    png = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert grant.grant_id in _texts(png)[b"consent-gate"].decode()
    assert "url" not in r.json()["data"][0]


def test_edit_with_a_mask_is_an_inpaint(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(EDITS, data={"prompt": "replace the sky"},
                   files={"image": ("a.png", STRANGER, "image/png"),
                          "mask": ("m.png", CONSENTING, "image/png")}, headers=AUTH)
    decision = _openai_error(r, 403)["decision"]
    assert decision["consent_needed"][0]["operation"] == "inpaint"
    assert sorted(f["role"] for f in decision["faces"]) == ["init", "mask"]


def test_variation_of_an_unknown_face_is_img2img_and_allowed(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post("/v1/images/variations", data={"n": "1"},
                   files={"image": ("a.png", STRANGER, "image/png")}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert openai_upstream.state.received[0]["path"] == "/v1/images/variations"


def test_variation_of_a_protected_person_is_denied(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post("/v1/images/variations",
                   files={"image": ("a.png", PROTECTED, "image/png")}, headers=AUTH)
    assert _openai_error(r, 403)["decision"]["verdict"] == "deny"


def test_malformed_requests_get_openai_errors(
        make_proxy: ProxyFactory, openai_upstream: Upstream) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, content=b"{not json", headers={"content-type": "application/json"})
    assert _openai_error(r, 400)["error"]["type"] == "invalid_request_error"
    r = proxy.post(GEN, json={"n": 1})
    assert _openai_error(r, 400)["error"]["param"] == "prompt"
    r = proxy.post(GEN, json={"prompt": 5})
    assert _openai_error(r, 400)["error"]["param"] == "prompt"
    r = proxy.post(GEN, json={"prompt": "x", "stream": True, "partial_images": 2})
    assert _openai_error(r, 400)["error"]["param"] == "stream"
    r = proxy.post(EDITS, data={"prompt": "x"})
    assert r.status_code == 400
    r = proxy.post(EDITS, data={"prompt": "x"}, files={"mask": ("m.png", STRANGER)})
    assert _openai_error(r, 400)["error"]["param"] == "image"
    r = proxy.post(EDITS, files={"image": ("a.png", STRANGER, "image/png")})
    assert _openai_error(r, 400)["error"]["param"] == "prompt"
    r = proxy.post(EDITS, files={"image": ("a.png", b"not an image", "image/png")},
                   data={"prompt": "x"})
    # the sidecar's status for the same error (one table): 415 for a format it refuses
    assert _openai_error(r, 415)["error"]["code"] == "unsupported_media_type"
    # A repeated field or key could be read differently upstream than here: refused.
    r = proxy.post(EDITS, data={"prompt": ["a hat", "Pat Protected"]},
                   files={"image": ("a.png", STRANGER, "image/png")})
    assert _openai_error(r, 400)["error"]["param"] == "prompt"
    r = proxy.post(GEN, content=b'{"prompt": "a boat", "prompt": "Pat Protected"}',
                   headers={"content-type": "application/json"})
    assert _openai_error(r, 400)["error"]["param"] == "prompt"
    r = proxy.get("/v1/chat/completions")
    assert _openai_error(r, 404)["error"]["code"] == "not_found"
    assert openai_upstream.state.received == []


def test_url_outputs_are_fetched_only_from_the_upstream_host(
        make_proxy: ProxyFactory, openai_upstream: Upstream, a1111_upstream: Upstream,
        people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    openai_upstream.state.answer_url = f"{openai_upstream.url}/files/out.png"
    r = proxy.post(GEN, json={"prompt": "a boat", "model": "dall-e-3"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert "b64_json" in r.json()["data"][0]
    assert openai_upstream.state.paths() == [GEN, "/files/out.png"]
    # An image URL on any other host (here another local server) is never fetched.
    openai_upstream.state.answer_url = f"{a1111_upstream.url}/private/out.png"
    r = proxy.post(GEN, json={"prompt": "a boat", "model": "dall-e-3"}, headers=AUTH)
    assert _openai_error(r, 502)["error"]["code"] == "image_url_refused"
    assert a1111_upstream.state.received == []


def test_upstream_errors_pass_through(make_proxy: ProxyFactory,
                                      openai_upstream: Upstream) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, json={"prompt": "upstream-error"}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "content_policy_violation"


def test_body_limit_is_enforced_before_buffering(
        make_proxy: ProxyFactory, openai_upstream: Upstream) -> None:
    proxy = make_proxy("openai", openai_upstream.url,
                       settings=ProxySettings(max_body_bytes=4096))
    big = json.dumps({"prompt": "x" * 10_000}).encode()
    r = proxy.post(GEN, content=big, headers={"content-type": "application/json"})
    assert _openai_error(r, 413)["error"]["code"] == "body_too_large"

    def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 1000

    r = proxy.post(GEN, content=chunks(), headers={"content-type": "application/json"})
    assert _openai_error(r, 413)["error"]["code"] == "body_too_large"
    assert openai_upstream.state.received == []


def test_gate_keys_identify_the_app(fake_gate: FaceGate, make_proxy: ProxyFactory,
                                    openai_upstream: Upstream, key_store: Any,
                                    people: People) -> None:
    studio = key_store.create("studio", ["check"]).token
    ops = key_store.create("ops", ["admin"]).token
    fake_gate.grant(people.consenting, app_id="studio", operations=["edit"])
    proxy = make_proxy("openai", openai_upstream.url, key_store=key_store)
    files = {"image": ("a.png", CONSENTING, "image/png")}
    r = proxy.post(EDITS, data={"prompt": "hat"}, files=files)
    assert _openai_error(r, 401)["error"]["type"] == "authentication_error"
    r = proxy.post(EDITS, data={"prompt": "hat"}, files=files, headers={"X-Gate-Key": "gk_x"})
    assert r.status_code == 401
    r = proxy.post(EDITS, data={"prompt": "hat"}, files=files, headers={"X-Gate-Key": ops})
    assert _openai_error(r, 403)["error"]["code"] == "forbidden"
    openai_upstream.state.output = CONSENTING
    r = proxy.post(EDITS, data={"prompt": "hat"}, files=files,
                   headers={"X-Gate-Key": studio, **AUTH})
    assert r.status_code == 200, r.text
    assert openai_upstream.state.received[0]["headers"]["authorization"] == UPSTREAM_AUTH
    assert "x-gate-key" not in openai_upstream.state.received[0]["headers"]
    other = key_store.create("other", ["check"]).token  # the grant is studio's only
    r = proxy.post(EDITS, data={"prompt": "hat"}, files=files, headers={"X-Gate-Key": other})
    assert _openai_error(r, 403)["decision"]["verdict"] == "needs_consent"


def test_model_listing_passes_through(make_proxy: ProxyFactory,
                                      openai_upstream: Upstream) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.get("/v1/models", headers=AUTH)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "dall-e-2"


# --------------------------------------------------------------------------- allow-lists

GPT_IMAGE_OPTIONS = {"background": "opaque", "output_compression": 80, "output_format": "png",
                     "partial_images": 0, "quality": "high", "stream": False, "n": 1,
                     "size": "1024x1024", "model": "gpt-image-1", "user": "u1"}


def test_every_documented_field_is_forwarded(
        fake_gate: FaceGate, make_proxy: ProxyFactory, openai_upstream: Upstream,
        people: People) -> None:
    """The real API shapes pass: generations, multipart edits, JSON edits, variations."""
    fake_gate.grant(people.consenting, app_id="studio", operations=["edit", "inpaint"])
    proxy = make_proxy("openai", openai_upstream.url)
    doc = {"prompt": "a boat", **GPT_IMAGE_OPTIONS, "moderation": "low", "style": "vivid",
           "response_format": "b64_json"}
    openai_upstream.state.output = STRANGER
    r = proxy.post(GEN, json=doc, headers=AUTH)
    assert r.status_code == 200, r.text
    assert openai_upstream.state.received[-1]["json"] == doc
    openai_upstream.state.output = CONSENTING
    form = {k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in GPT_IMAGE_OPTIONS.items()}
    r = proxy.post(EDITS, data={"prompt": "add a hat", "input_fidelity": "high",
                                "response_format": "b64_json", **form},
                   files=[("image[]", ("a.png", CONSENTING, "image/png")),
                          ("mask", ("m.png", CONSENTING, "image/png"))], headers=AUTH)
    assert r.status_code == 200, r.text
    sent = openai_upstream.state.received[-1]
    assert sent["fields"] == {"prompt": "add a hat", "input_fidelity": "high",
                              "response_format": "b64_json", **form}
    assert [f[0] for f in sent["files"]] == ["image[]", "mask"]
    image = "data:image/png;base64," + base64.b64encode(CONSENTING).decode()
    r = proxy.post(EDITS, json={"prompt": "add a hat", "images": [{"image_url": image}],
                                "mask": {"image_url": image}, "input_fidelity": "low",
                                "moderation": "auto", **GPT_IMAGE_OPTIONS}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert openai_upstream.state.received[-1]["json"]["images"] == [{"image_url": image}]
    openai_upstream.state.output = STRANGER
    r = proxy.post("/v1/images/variations", files={"image": ("a.png", STRANGER, "image/png")},
                   data={"model": "dall-e-2", "n": "1", "size": "256x256",
                         "response_format": "b64_json", "user": "u1"}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_unknown_fields_and_images_outside_image_fields_are_refused(
        make_proxy: ProxyFactory, openai_upstream: Upstream, people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    image = ("a.png", STRANGER, "image/png")
    r = proxy.post(GEN, json={"prompt": "a boat", "seed": 3})
    error = _openai_error(r, 400)["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "unknown_parameter", "seed")
    r = proxy.post(EDITS, data={"prompt": "x"}, files=[("image", image), ("extra", image)])
    assert _openai_error(r, 400)["error"]["code"] == "unknown_parameter"
    r = proxy.post(EDITS, data={"prompt": "x"}, files=[("image", image), ("user", image)])
    assert _openai_error(r, 400)["error"]["param"] == "user"  # a file in a text field
    r = proxy.post(EDITS, data={"prompt": "x", "n": "two"}, files=[("image", image)])
    assert _openai_error(r, 400)["error"]["param"] == "n"
    r = proxy.post(GEN, json={"prompt": "x", "quality": base64.b64encode(STRANGER).decode()})
    assert _openai_error(r, 400)["error"]["code"] in ("unexpected_image", "invalid_request")
    r = proxy.post(GEN, json={"prompt": "x", "user": "https://faces.example/pat"})
    assert _openai_error(r, 422)["error"]["code"] == "unverifiable_face_source"
    r = proxy.post(EDITS, json={"prompt": "x", "images": [{"file_id": "file-1"}]})
    assert _openai_error(r, 422)["error"]["param"] == "images.0.file_id"
    r = proxy.post(EDITS, json={"prompt": "x", "images": [{"image_url": "not an image"}]})
    assert _openai_error(r, 400)["error"]["param"] == "images.0.image_url"
    r = proxy.post(EDITS, json={"prompt": "x", "images": []})
    assert _openai_error(r, 400)["error"]["param"] == "images"
    r = proxy.post(EDITS, json={"prompt": "x", "response_format": "url",
                                "images": [{"image_url": "data:image/png;base64,AAAA"}]})
    assert _openai_error(r, 400)["error"]["code"] == "unknown_parameter"
    assert openai_upstream.state.received == []


def test_a_prompt_may_mention_a_url(make_proxy: ProxyFactory, openai_upstream: Upstream,
                                    people: People) -> None:
    proxy = make_proxy("openai", openai_upstream.url)
    r = proxy.post(GEN, json={"prompt": "a poster for https://example.com"})
    assert r.status_code == 200, r.text
