"""Subjects, grants and audit over HTTP (scope ``admin``)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Keys, b64, bearer
from tests.conftest import noise_png

ADA, BOB, CAROL = noise_png(1), noise_png(2), noise_png(3)


def test_subject_lifecycle(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    r = client.post("/v1/subjects", headers=h, json={
        "images_b64": [b64(ADA)], "display_name": "Ada", "aliases": ["A. L."]})
    assert r.status_code == 201
    sid = r.json()["subject_id"]
    assert r.json()["status"] == "protected" and r.json()["owner"] is None
    assert client.get(f"/v1/subjects/{sid}", headers=h).json()["aliases"] == ["A. L."]
    assert [s["subject_id"] for s in client.get("/v1/subjects", headers=h).json()] == [sid]
    r = client.post(f"/v1/subjects/{sid}/status", headers=h, json={"status": "consenting"})
    assert r.status_code == 200 and r.json()["status"] == "consenting"
    r = client.delete(f"/v1/subjects/{sid}", headers=h)
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"/v1/subjects/{sid}", headers=h).status_code == 404
    assert client.delete(f"/v1/subjects/{sid}", headers=h).json()["error"]["code"] == "not_found"


def test_enrol_multipart_with_owner_from_the_key(client: Any, keys: Keys) -> None:
    r = client.post("/v1/subjects", headers=bearer(keys.studio_admin),
                    files=[("image", ("carol.png", CAROL, "image/png"))],
                    data={"display_name": "Carol", "status": "consenting",
                          "owner_user_id": "u1", "aliases": "Caz,C"})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == {"app_id": "studio", "user_id": "u1"}
    assert r.json()["aliases"] == ["Caz", "C"]
    d = client.post("/v1/check", headers=bearer(keys.studio), json={
        "operation": "face_swap", "user_id": "u1",
        "images": [{"role": "target", "data_b64": b64(CAROL)}]}).json()
    assert d["verdict"] == "allow" and d["faces"][0]["identity"] == "self"
    d = client.post("/v1/check", headers=bearer(keys.other), json={
        "operation": "face_swap", "user_id": "u1",
        "images": [{"role": "target", "data_b64": b64(CAROL)}]}).json()
    assert d["verdict"] != "allow"  # same user id, other app: not self


def test_enrol_errors(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    r = client.post("/v1/subjects", headers=h, json={"images_b64": [], "display_name": "X"})
    assert r.status_code == 422 and "images_b64" in r.json()["error"]["message"]
    r = client.post("/v1/subjects", headers=h, json={
        "images_b64": [b64(b"not an image")], "display_name": "X"})
    assert r.status_code == 415
    r = client.post("/v1/subjects", headers=h, json={
        "images_b64": [b64(ADA)], "display_name": "X", "owner_app_id": "other"})
    assert r.status_code == 422 and "owner_app_id" in r.json()["error"]["message"]


def test_grant_revoke_list(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    sid = client.post("/v1/subjects", headers=h, json={
        "images_b64": [b64(BOB)], "display_name": "Bob", "status": "consenting"}
    ).json()["subject_id"]
    r = client.post("/v1/grants", headers=h, json={
        "subject_id": sid, "app_id": "studio", "operations": ["face_swap", "img2img"],
        "content": ["general"], "expires_at": "2099-01-01T00:00:00Z", "max_uses": 5})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["app_id"] == "studio" and grant["max_uses"] == 5
    listed = client.get("/v1/grants", headers=h, params={"subject_id": sid}).json()
    assert [g["grant_id"] for g in listed] == [grant["grant_id"]]
    assert client.get("/v1/grants", headers=h).json()[0]["grant_id"] == grant["grant_id"]
    r = client.delete(f"/v1/grants/{grant['grant_id']}", headers=h)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    d = client.post("/v1/check", headers=bearer(keys.studio), json={
        "operation": "face_swap", "images": [{"role": "target", "data_b64": b64(BOB)}]}).json()
    assert d["verdict"] != "allow"


def test_grant_errors(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    r = client.post("/v1/grants", headers=h, json={
        "subject_id": "sub_missing", "app_id": "studio", "operations": ["face_swap"]})
    assert r.status_code == 404
    r = client.post("/v1/grants", headers=h, json={
        "subject_id": "s", "app_id": "studio", "operations": ["teleport"]})
    assert r.status_code == 422 and "operations" in r.json()["error"]["message"]
    assert client.delete("/v1/grants/gr_missing", headers=h).status_code == 404


def test_audit_query_and_verify(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    client.post("/v1/subjects", headers=h, json={"images_b64": [b64(ADA)],
                                                  "display_name": "Ada"})
    for _ in range(3):
        client.post("/v1/check", headers=bearer(keys.studio), json={"operation": "txt2img"})
    page = client.get("/v1/audit", headers=h, params={"since": 0, "limit": 2}).json()
    assert [e["seq"] for e in page["events"]] == [1, 2] and page["next_since"] == 2
    rest = client.get("/v1/audit", headers=h, params={"since": 2}).json()
    assert [e["seq"] for e in rest["events"]] == [3, 4]
    assert "Ada" not in str(page) + str(rest)  # no names in the audit log
    v = client.post("/v1/audit/verify", headers=h).json()
    assert v == {"ok": True, "events": 4, "first_bad_seq": None, "problem": None}
    assert client.get("/v1/audit", headers=h, params={"limit": 0}).status_code == 422


def test_huge_integers_are_422_not_500(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    r = client.get("/v1/audit", headers=h, params={"since": 2**63})  # found by schemathesis
    assert r.status_code == 422
    r = client.post("/v1/grants", headers=h, json={
        "subject_id": "s", "app_id": "a", "operations": ["img2img"], "max_uses": 2**40})
    assert r.status_code == 422 and "max_uses" in r.json()["error"]["message"]


def test_nul_characters_and_odd_ids_are_422(client: Any, keys: Keys) -> None:
    h = bearer(keys.admin)
    r = client.post("/v1/subjects", headers=h, json={
        "images_b64": [b64(ADA)], "display_name": "A\x00da"})
    assert r.status_code == 422 and "NUL" in r.json()["error"]["message"]
    assert client.get("/v1/subjects/a%00b", headers=h).status_code == 422
    assert client.delete("/v1/grants/x y", headers=h).status_code == 422
    assert client.get("/v1/grants", headers=h, params={"subject_id": "a\x00"}).status_code \
        == 422
