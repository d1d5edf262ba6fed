"""POST /v1/check and /v1/check-output: JSON and multipart, app from the key, errors."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from gate.types import Decision
from tests.api.conftest import Keys, b64, bearer, make_client
from tests.conftest import noise_png

BOB, STRANGER = noise_png(2), noise_png(4)


def enrol_with_grant(client: Any, keys: Keys, app_id: str = "studio") -> tuple[str, str]:
    sub = client.post("/v1/subjects", headers=bearer(keys.admin), json={
        "images_b64": [b64(BOB)], "display_name": "Bob", "status": "consenting"}).json()
    grant = client.post("/v1/grants", headers=bearer(keys.admin), json={
        "subject_id": sub["subject_id"], "app_id": app_id, "operations": ["face_swap"]}).json()
    return sub["subject_id"], grant["grant_id"]


def swap(image: bytes = BOB, **extra: Any) -> dict[str, Any]:
    return {"operation": "face_swap", "user_id": "u1",
            "images": [{"role": "target", "data_b64": b64(image)}], **extra}


def test_json_check_allows_a_consented_face(client: Any, keys: Keys) -> None:
    _, grant_id = enrol_with_grant(client, keys)
    r = client.post("/v1/check", headers=bearer(keys.studio), json=swap())
    assert r.status_code == 200
    d = Decision.model_validate(r.json())
    assert d.verdict == "allow"
    assert d.faces[0].grant_id == grant_id
    assert d.request_id == r.headers["x-request-id"]


def test_multipart_with_plain_fields(client: Any, keys: Keys) -> None:
    enrol_with_grant(client, keys)
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    files=[("target", ("bob.png", BOB, "image/png"))],
                    data={"operation": "face_swap", "user_id": "u1", "content": "general"})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "allow"
    assert r.json()["faces"][0]["role"] == "target"


def test_multipart_with_a_request_json_field(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    files=[("source", ("a.png", STRANGER, "image/png")),
                           ("target", ("b.png", BOB, "image/png"))],
                    data={"request": '{"operation": "face_swap", "request_id": "mine-1"}'})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "mine-1"
    assert [f["role"] for f in body["faces"]] == ["source", "target"]
    assert body["verdict"] != "allow"


def test_multipart_refuses_request_json_and_plain_fields_together(client: Any,
                                                                  keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    data={"request": '{"operation": "txt2img"}', "prompt": "x"},
                    files=[("target", ("b.png", BOB, "image/png"))])
    assert r.status_code == 422
    assert "request" in r.json()["error"]["message"]


def test_multipart_refuses_unknown_file_fields(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio), data={"operation": "img2img"},
                    files=[("selfie", ("b.png", BOB, "image/png"))])
    assert r.status_code == 422
    assert "selfie" in r.json()["error"]["message"]


def test_app_id_in_body_is_refused(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio), json=swap(app_id="other"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
    assert "app_id" in r.json()["error"]["message"]
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    data={"operation": "img2img", "app_id": "other"},
                    files=[("init", ("b.png", BOB, "image/png"))])
    assert r.status_code == 422
    assert "app_id" in r.json()["error"]["message"]


def test_form_without_multipart_is_415(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio), data={"operation": "txt2img"})
    assert r.status_code == 415


def test_grant_for_another_app_does_not_cover_this_key(client: Any, keys: Keys) -> None:
    enrol_with_grant(client, keys, app_id="studio")
    assert client.post("/v1/check", headers=bearer(keys.studio),
                       json=swap()).json()["verdict"] == "allow"
    other = client.post("/v1/check", headers=bearer(keys.other), json=swap()).json()
    assert other["verdict"] != "allow"
    assert other["faces"][0]["identity"] == "protected"


def test_decisions_are_audited_under_the_keys_app(client: Any, keys: Keys) -> None:
    client.post("/v1/check", headers=bearer(keys.studio), json=swap(request_id="by-studio"))
    client.post("/v1/check", headers=bearer(keys.other), json=swap(request_id="by-other"))
    events = client.get("/v1/audit", headers=bearer(keys.admin)).json()["events"]
    apps = {e["event"]["request_id"]: e["event"]["app_id"] for e in events
            if e["event"]["kind"] == "check"}
    assert apps == {"by-studio": "studio", "by-other": "other"}


def test_bad_base64_names_the_field(client: Any, keys: Keys) -> None:
    body = swap()
    body["images"][0]["data_b64"] = "not base64!!"
    r = client.post("/v1/check", headers=bearer(keys.studio), json=body)
    assert r.status_code == 422
    assert "images.0.data_b64" in r.json()["error"]["message"]


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"plain text, not an image", 415, "unsupported_media_type"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported_media_type"),
    (b"\x89PNG\r\n\x1a\n" + b"0" * 64, 422, "invalid_image"),
])
def test_bad_images(client: Any, keys: Keys, data: bytes, status: int, code: str) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio), json=swap(data))
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_unknown_operation_is_422_naming_the_field(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", headers=bearer(keys.studio), json={"operation": "deepfake"})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("operation:")


def test_too_many_images_is_422(client: Any, keys: Keys) -> None:
    images = [{"role": "target", "data_b64": b64(BOB)}] * 17
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    json={"operation": "img2img", "images": images})
    assert r.status_code == 422


def test_internal_fault_is_a_deny(client: Any, keys: Keys, fake_gate: Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: Any) -> Any:
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(fake_gate.parts.detector, "detect", broken)
    r = client.post("/v1/check", headers=bearer(keys.studio), json=swap())
    assert r.status_code == 200
    assert r.json()["verdict"] == "deny"
    assert r.json()["reasons"][0]["rule_id"] == "core.fail_closed"


def test_timeout_is_a_deny_recorded_once(tmp_path: Any) -> None:
    """The engine owns the deadline: a check that overruns it is denied
    (``core.fail_closed``, timeout), and the audit log holds that one outcome for the
    request id, never the late decision too."""
    from gate.api.keys import KeyStore
    from gate.engine import FaceGate
    from gate.vision.detect import FakeDetector, whole_image_face

    def slow(image: Any) -> Any:
        time.sleep(0.5)
        return whole_image_face(image)

    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake", check_timeout_s=0.1)
    try:
        gate.parts = dataclasses.replace(gate.parts, detector=FakeDetector(slow))
        key = KeyStore(gate.parts.store.engine).create("studio", ["check"]).token  # type: ignore[attr-defined]
        with make_client(gate) as c:
            r = c.post("/v1/check", headers=bearer(key) | {"X-Request-ID": "req-slow"},
                       json=swap())
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["verdict"] == "deny" and body["reasons"][0]["rule_id"] == \
                "core.fail_closed" and "timeout" in body["reasons"][0]["message"]
            assert "gate_check_timeouts_total 1.0" in c.get("/metrics").text
            time.sleep(0.8)  # the abandoned decision finishes: it must record nothing
        outcomes = [e["event"] for e in gate.audit_events(0, 1000)
                    if e["event"].get("request_id") == "req-slow"]
        assert [o["verdict"] for o in outcomes] == ["deny"]
    finally:
        gate.close()


def test_check_output_json_and_multipart(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check-output", headers=bearer(keys.studio),
                    json={"image_b64": b64(STRANGER), "request_id": "gen-1",
                          "operation": "img2img"})
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == "gen-1"
    assert r.json()["faces"][0]["role"] == "output"
    r = client.post("/v1/check-output", headers=bearer(keys.studio),
                    files=[("image", ("out.png", STRANGER, "image/png"))],
                    data={"request_id": "gen-2"})
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == "gen-2"


def test_check_output_needs_exactly_one_image(client: Any, keys: Keys) -> None:
    body = (b'--xx\r\nContent-Disposition: form-data; name="request_id"\r\n\r\ngen-3\r\n'
            b"--xx--\r\n")
    r = client.post("/v1/check-output", content=body, headers={
        **bearer(keys.studio), "content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("image:")
    r = client.post("/v1/check-output", headers=bearer(keys.studio),
                    json={"request_id": "gen-3"})
    assert r.status_code == 422
    assert "image_b64" in r.json()["error"]["message"]
