"""A real uvicorn server (fake models, SQLite): every endpoint and error status over HTTP,
auth and scope denial, cross-app isolation, and a restart that keeps the data."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gate.client import GateClient, HttpError
from gate.errors import NotFound
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.e2e.conftest import FAKE_MODELS, Server, create_key, sqlite_url

pytestmark = pytest.mark.slow

ADA, BOB, STRANGER = noise_png(1), noise_png(2), noise_png(4)
ENV = {**FAKE_MODELS, "GATE_API_MAX_BODY_BYTES": str(256 * 1024),
       "GATE_API_RATE_LIMIT_PER_S": "1", "GATE_API_RATE_LIMIT_BURST": "60"}


def swap(image: bytes, user: str = "u1", request_id: str | None = None) -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id="ignored", user_id=user),
                       request_id=request_id)


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["request_id"] == r.headers["x-request-id"]
    return str(body["error"]["code"])


def test_every_endpoint_and_error_status(tmp_path: Path,
                                         servers: Callable[..., Server]) -> None:
    data = tmp_path / "data"
    url = sqlite_url(data)
    admin_key = create_key(url, "ops", ["admin"])
    studio_key = create_key(url, "studio", ["check"])
    other_key = create_key(url, "other", ["check"])
    flood_key = create_key(url, "flood", ["admin"])
    server = servers(data, ENV)
    admin = GateClient(server.url, admin_key)
    studio = GateClient(server.url, studio_key)
    other = GateClient(server.url, other_key)

    # health, readiness, metrics, OpenAPI: no key
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert studio.readiness()["models"] is True
    assert "openapi" in httpx.get(f"{server.url}/openapi.json").json()

    # subjects and grants
    ada = admin.enroll([ADA], display_name="Ada", status="protected")
    bob = admin.enroll([BOB], display_name="Bob", status="consenting")
    assert admin.get_subject(ada.subject_id) == ada
    assert {s.subject_id for s in admin.list_subjects()} == {ada.subject_id, bob.subject_id}
    grant = admin.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    assert admin.list_grants(bob.subject_id) == [grant.model_copy(update={"token": None})]

    # decisions: the app comes from the key
    assert studio.check(swap(ADA)).verdict == "deny"
    allowed = studio.check(swap(BOB, request_id="e2e-1"))
    assert allowed.verdict == "allow" and allowed.faces[0].grant_id == grant.grant_id
    assert other.check(swap(BOB, request_id="e2e-2")).verdict != "allow"
    out = studio.check_output(STRANGER, request_id="e2e-1",
                              requester=Requester(app_id="ignored"))
    assert out.faces[0].role == "output"
    r = httpx.post(f"{server.url}/v1/check", headers={"Authorization": f"Bearer {studio_key}"},
                   files=[("target", ("b.png", BOB, "image/png"))],
                   data={"operation": "face_swap", "user_id": "u1"})
    assert r.status_code == 200 and r.json()["verdict"] == "allow"

    # revocation, status, erasure
    assert admin.revoke(grant.grant_id).revoked_at is not None
    assert studio.check(swap(BOB)).verdict != "allow"
    assert admin.set_status(bob.subject_id, "protected").status == "protected"
    assert admin.erase(ada.subject_id) is True
    with pytest.raises(NotFound):
        admin.get_subject(ada.subject_id)

    # audit: every decision under the key's app; the chain verifies
    events = admin.audit_events(limit=1000)
    apps = {e["event"]["request_id"]: e["event"]["app_id"] for e in events
            if e["event"]["kind"] == "check"}
    assert apps["e2e-1"] == "studio" and apps["e2e-2"] == "other"
    assert admin.verify_audit().ok

    # every error status, in the one error shape
    auth = {"Authorization": f"Bearer {studio_key}"}
    post = httpx.post
    assert error_code(post(f"{server.url}/v1/check", json={"operation": "txt2img"})) \
        == "unauthorized"
    assert error_code(post(f"{server.url}/v1/check", json={"operation": "txt2img"},
                           headers={"Authorization": "Bearer gk_bad"})) == "unauthorized"
    with pytest.raises(HttpError) as forbidden:
        studio.list_grants()
    assert forbidden.value.status == 403
    r = httpx.get(f"{server.url}/v1/subjects/sub_nope",
                  headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = httpx.delete(f"{server.url}/healthz")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"
    r = post(f"{server.url}/v1/check", content=b"{", headers={
        **auth, "content-type": "application/json"})
    assert r.status_code == 400 and error_code(r) == "malformed_json"
    r = post(f"{server.url}/v1/check", content=b"x" * (300 * 1024), headers={
        **auth, "content-type": "application/json"})
    assert r.status_code == 413 and error_code(r) == "body_too_large"
    r = post(f"{server.url}/v1/check", content=b"hello", headers={
        **auth, "content-type": "text/plain"})
    assert r.status_code == 415
    r = post(f"{server.url}/v1/check", headers=auth, json={
        "operation": "face_swap",
        "images": [{"role": "target", "data_b64": base64.b64encode(b"GIF? no").decode()}]})
    assert r.status_code == 415 and error_code(r) == "unsupported_media_type"
    r = post(f"{server.url}/v1/check", headers=auth, json={"operation": "txt2img",
                                                           "app_id": "other"})
    assert r.status_code == 422 and "app_id" in r.json()["error"]["message"]
    flood = {"Authorization": f"Bearer {flood_key}"}
    with httpx.Client(base_url=server.url, headers=flood) as c:
        codes = [c.get("/v1/subjects/sub_x").status_code for _ in range(70)]
    assert codes[0] == 404 and 429 in codes
    r = httpx.get(f"{server.url}/v1/subjects/sub_x", headers=flood)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1

    # metrics: counts, no identities
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'gate_decisions_total{endpoint="check",verdict="allow"}' in metrics
    assert bob.subject_id not in metrics and "studio" not in metrics
    for c in (admin, studio, other):
        c.close()


def test_restart_keeps_subjects_grants_keys_and_audit(tmp_path: Path,
                                                      servers: Callable[..., Server]) -> None:
    data = tmp_path / "data"
    url = sqlite_url(data)
    admin_key, studio_key = create_key(url, "ops", ["admin"]), create_key(url, "studio",
                                                                          ["check"])
    first = servers(data, FAKE_MODELS)
    with GateClient(first.url, admin_key) as admin, GateClient(first.url, studio_key) as app:
        bob = admin.enroll([BOB], display_name="Bob", status="consenting")
        grant = admin.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
        assert app.check(swap(BOB)).verdict == "allow"
        before = len(admin.audit_events(limit=1000))
    first.stop()
    second = servers(data, FAKE_MODELS)
    with GateClient(second.url, admin_key) as admin, GateClient(second.url, studio_key) as app:
        assert admin.get_subject(bob.subject_id) == bob
        assert admin.list_grants(bob.subject_id) == [grant.model_copy(update={"token": None})]
        assert app.check(swap(BOB)).verdict == "allow"
        assert len(admin.audit_events(limit=1000)) == before + 1
        assert admin.verify_audit().ok
