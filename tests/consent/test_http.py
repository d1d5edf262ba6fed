"""The consent router mounted in a tiny FastAPI app (and in the real sidecar): API-key
routes for apps, the public JWKS, and the portal's cookie + CSRF protected person routes."""

from __future__ import annotations

import base64
import json
from typing import Any

from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.consent.conftest import Api, answer, link_token, portal_headers, pose_picture

ALICE = noise_png(31)
STRANGER = 8


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def swap(image: bytes, app: str = "studio") -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id=app, user_id="u1"))


def test_jwks_is_public(api: Api, svc: ConsentService) -> None:
    r = api.client.get("/.well-known/jwks.json")
    assert r.status_code == 200 and r.json() == svc.jwks()
    assert "public" in r.headers["cache-control"]


def test_app_routes_need_a_check_key(api: Api) -> None:
    assert api.client.get("/v1/revocations").status_code == 401
    assert api.client.post("/v1/consent-requests", json={}).status_code in (401, 422)
    r = api.client.post("/v1/subjects/sub_x/portal-link", headers=api.bearer(api.studio))
    assert r.status_code == 403


def test_revocation_feed_and_tokens_over_http(api: Api, svc: ConsentService,
                                              fake_gate: FaceGate) -> None:
    sid = fake_gate.enroll([ALICE], "Alice", status="consenting").subject_id
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
    r = api.client.get(f"/v1/grants/{grant.grant_id}/token", headers=api.bearer(api.studio))
    assert r.status_code == 200 and r.json()["token"].count(".") == 2
    r = api.client.get(f"/v1/grants/{grant.grant_id}/token", headers=api.bearer(api.other))
    assert r.status_code == 404  # another app's grant does not exist for this key
    svc.lifecycle.revoke(grant.grant_id)
    r = api.client.get("/v1/revocations", params={"since_epoch": 0},
                       headers=api.bearer(api.studio))
    assert r.status_code == 200
    body = r.json()
    assert body["revoked"] == [{"grant_id": grant.grant_id, "epoch": 1, "reason": "revoked"}]
    assert body["epoch"] == 1 and body["more"] is False
    other = api.client.get("/v1/revocations", headers=api.bearer(api.other)).json()
    assert other["revoked"] == [] and other["epoch"] == 1
    r = api.client.get(f"/v1/grants/{grant.grant_id}/token", headers=api.bearer(api.studio))
    assert r.status_code == 422 and r.json()["error"]["code"] == "consent_error"


def test_consent_request_over_http(pose_api: Api, pose_gate: FaceGate) -> None:
    client = pose_api.client
    image = pose_picture(STRANGER, 0.0)
    decision = pose_gate.check(swap(image))
    face = decision.faces[0]
    body = {"image": b64(image), "bbox": list(face.bbox), "operation": "face_swap",
            "content": ["general"], "user_id": "u1", "decision_request_id": decision.request_id,
            "face_ref": face.face_ref, "grant_ttl_s": 3600}
    r = client.post("/v1/consent-requests", json=body, headers=pose_api.bearer(pose_api.studio))
    assert r.status_code == 201, r.text
    request_id, link = r.json()["request"]["request_id"], r.json()["link"]
    assert r.json()["request"]["app_id"] == "studio"  # the key's app, never the body's
    poll = client.get(f"/v1/consent-requests/{request_id}",
                      headers=pose_api.bearer(pose_api.studio))
    assert poll.json()["state"] == "pending"
    assert client.get(f"/v1/consent-requests/{request_id}",
                      headers=pose_api.bearer(pose_api.other)).status_code == 404

    # the person opens the link
    assert client.post("/portal/api/request/session",
                       json={"token": link_token(link)}).status_code == 403  # no portal header
    r = client.post("/portal/api/request/session", json={"token": link_token(link)},
                    headers=portal_headers())
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "gate_consent=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/portal" in cookie
    csrf = r.json()["csrf"]
    assert r.json()["needs_name"] is True and len(r.json()["scope"]) == 7
    assert client.post("/portal/api/request/session", json={"token": link_token(link)},
                       headers=portal_headers()).status_code == 422  # used once
    assert client.post("/portal/api/request/challenge",
                       headers=portal_headers()).status_code == 403  # no CSRF token
    assert client.post("/portal/api/request/challenge",
                       headers=portal_headers("forged")).status_code == 403
    challenge = client.post("/portal/api/request/challenge", headers=portal_headers(csrf)).json()
    files = [("frames", (f"f{i}.png", data, "image/png"))
             for i, data in enumerate(answer(challenge["poses"], STRANGER))]
    r = client.post("/portal/api/request/proof", headers=portal_headers(csrf), files=files,
                    data={"challenge_id": challenge["challenge_id"], "display_name": "Eight"})
    assert r.status_code == 200, r.text
    assert client.get("/portal/api/request").json()["verified"] is True
    r = client.post("/portal/api/request/decision", json={"accept": True},
                    headers=portal_headers(csrf))
    assert r.json() == {"state": "granted"}
    poll = client.get(f"/v1/consent-requests/{request_id}",
                      headers=pose_api.bearer(pose_api.studio)).json()
    assert poll["state"] == "granted" and poll["grant_token"]
    assert pose_gate.check(swap(image)).verdict == "allow"


def test_invalid_request_body(api: Api) -> None:
    r = api.client.post("/v1/consent-requests", headers=api.bearer(api.studio),
                        json={"image": "not base64!", "operation": "edit"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("image")


def _sign_in(api: Api, svc: ConsentService, subject_id: str) -> str:
    token = link_token(svc.portal.link(subject_id))
    r = api.client.post("/portal/api/session", json={"token": token}, headers=portal_headers())
    assert r.status_code == 200, r.text
    assert "gate_portal=" in r.headers["set-cookie"]
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    return str(r.json()["csrf"])


def test_portal_revoke_protect_export_erase(api: Api, svc: ConsentService,
                                           fake_gate: FaceGate) -> None:
    client = api.client
    sid = fake_gate.enroll([ALICE], "Alice", status="consenting").subject_id
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"], max_uses=10)
    assert fake_gate.check(swap(ALICE)).verdict == "allow"
    assert client.get("/portal/api/me").status_code == 401
    r = client.post(f"/v1/subjects/{sid}/portal-link", headers=api.bearer(api.admin))
    assert r.status_code == 200 and "/portal/#t=" in r.json()["url"]
    csrf = _sign_in(api, svc, sid)
    me = client.get("/portal/api/me").json()
    assert me["subject"]["display_name"] == "Alice"
    assert [g["grant_id"] for g in me["grants"]] == [grant.grant_id]
    assert me["grants"][0]["uses"] == 1 and me["grants"][0]["uses_left"] == 9
    assert me["decisions"][0]["grant_id"] == grant.grant_id
    assert me["decisions"][0]["verdict"] == "allow"

    path = f"/portal/api/grants/{grant.grant_id}/revoke"
    assert client.post(path, headers=portal_headers()).status_code == 403
    r = client.post(path, headers=portal_headers(csrf))
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert fake_gate.check(swap(ALICE)).verdict == "needs_consent"
    other = fake_gate.enroll([noise_png(32)], "Bob", status="consenting").subject_id
    bobs = svc.lifecycle.grant(other, app_id="studio", operations=["face_swap"])
    r = client.post(f"/portal/api/grants/{bobs.grant_id}/revoke", headers=portal_headers(csrf))
    assert r.status_code == 404  # not theirs

    r = client.post("/portal/api/status", json={"status": "protected"},
                    headers=portal_headers(csrf))
    assert r.json() == {"status": "protected"}
    export = client.get("/portal/api/export")
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    data = export.json()
    assert data["subject"]["status"] == "protected" and len(data["grants"]) == 1
    text = json.dumps(data)
    assert "ciphertext" not in text and "vector" not in text and "token" not in text

    r = client.post("/portal/api/erase", headers=portal_headers(csrf))
    assert r.json() == {"erased": True}
    assert 'gate_portal=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert [s.subject_id for s in fake_gate.list_subjects()] == [other]
    assert client.get("/portal/api/me").status_code == 401


def test_portal_link_is_single_use(api: Api, svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = fake_gate.enroll([ALICE], "Alice").subject_id
    token = link_token(svc.portal.link(sid))
    ok = api.client.post("/portal/api/session", json={"token": token}, headers=portal_headers())
    assert ok.status_code == 200
    again = api.client.post("/portal/api/session", json={"token": token},
                            headers=portal_headers())
    assert again.status_code == 422 and again.json()["error"]["code"] == "link_invalid"
    assert token not in again.text


def test_portal_pages(api: Api) -> None:
    r = api.client.get("/portal", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/portal/"
    page = api.client.get("/portal/")
    assert page.status_code == 200 and "<main id=\"main\">" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "request.html", "enrol.html", "portal.js", "request.js",
                 "enrol.js", "common.js", "style.css"):
        r = api.client.get(f"/portal/{name}")
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, no trackers
    assert api.client.get("/portal/secret.key").status_code == 404
    assert api.client.get("/portal/..%2Fservice.py").status_code == 404


def test_self_enrolment_over_http(pose_api: Api, pose_gate: FaceGate) -> None:
    client = pose_api.client
    r = client.post("/portal/api/enrol/start", headers=portal_headers())
    assert r.status_code == 200
    start: dict[str, Any] = r.json()
    files = [("frames", (f"f{i}.png", data, "image/png"))
             for i, data in enumerate(answer(start["poses"], 14))]
    r = client.post("/portal/api/enrol", headers=portal_headers(start["csrf"]), files=files,
                    data={"challenge_id": start["challenge_id"], "display_name": "Fourteen",
                          "status": "protected"})
    assert r.status_code == 200, r.text
    me = client.get("/portal/api/me").json()  # signed in to the portal at once
    assert me["subject"]["display_name"] == "Fourteen" and me["subject"]["status"] == "protected"


def test_consent_routes_live_in_the_sidecar(fake_gate: FaceGate) -> None:
    """The consent routes are the sidecar's own (one web layer); its lifespan builds the
    consent parts around the gate and closes them."""
    from gate.api.keys import KeyStore
    from tests.api.conftest import make_client

    client = make_client(fake_gate)
    keys = KeyStore(fake_gate.parts.store.engine)  # type: ignore[attr-defined]
    token = keys.create("studio", ["check"]).token
    with client:
        assert client.get("/.well-known/jwks.json").json()["keys"]
        r = client.get("/v1/revocations", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["revoked"] == []
        assert client.get("/v1/revocations").status_code == 401
    assert client.app.state.services is None  # type: ignore[attr-defined]
