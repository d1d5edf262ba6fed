"""Issue 19, items 2-7: each probe of the security review, tried again as an attacker
would (these failed before the fixes; docs/threat-model.md has the table).

2. Signed tokens outlive "protect me": switching to protected must revoke every grant
   token of the person, visibly in the revocation feed, and no fresh token is issued.
3. /v1/consent-requests runs outside the check runner's limits: every image route runs
   on the engine's bounded workers.
4. An app that wants "this user's own face" needs an operator key: apps now invite their
   user to a liveness-checked self-enrolment with a check key.
5. (one outcome per request: tests/api/test_check.py::test_timeout_is_a_deny_recorded_once)
6. A corrupted SQLite database keeps answering allow with /readyz 200.
7. gate.db and its WAL are readable by others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gate.consent.offline import GrantRevoked, OfflineGrantVerifier, RevocationList, RevocationPage
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.consent.conftest import Api, answer, link_token, portal_headers, pose_picture

BOB = noise_png(61)


def _swap(data: bytes, user: str | None = "u1") -> GateRequest:
    return GateRequest(operation="face_swap", requester=Requester(app_id="studio", user_id=user),
                       images=[ImageInput(role="target", data=data)])


# -- 2 ------------------------------------------------------------------------------------
def test_protect_me_revokes_every_grant_token_visibly(api: Api, svc: ConsentService,
                                                      fake_gate: FaceGate) -> None:
    bob = fake_gate.enroll([BOB], display_name="Bob", status="consenting")
    grants = [fake_gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"]),
              fake_gate.grant(bob.subject_id, app_id="studio", operations=["img2img"])]
    assert all(g.token for g in grants)
    feed = api.client.get("/v1/revocations", headers=api.bearer(api.studio)).json()
    assert feed["revoked"] == []
    revocations = RevocationList(
        lambda since: RevocationPage(*_page(api, since)), max_staleness_s=60,
        poll_interval_s=1)
    revocations.refresh()
    verifier = OfflineGrantVerifier(svc.jwks(), revocations, app_id="studio")
    verifier.verify(grants[0].token or "", operation="face_swap")  # valid before

    r = api.client.post(f"/v1/subjects/{bob.subject_id}/status",
                        headers=api.bearer(api.admin), json={"status": "protected"})
    if r.status_code == 404:  # the tiny consent app has no subject routes: the SDK door
        fake_gate.set_status(bob.subject_id, "protected")

    feed = api.client.get("/v1/revocations", headers=api.bearer(api.studio)).json()
    assert {e["grant_id"] for e in feed["revoked"]} == {g.grant_id for g in grants}
    assert {e["reason"] for e in feed["revoked"]} == {"revoked"}
    revocations.refresh()
    with pytest.raises(GrantRevoked):
        verifier.verify(grants[0].token or "", operation="face_swap")
    r = api.client.get(f"/v1/grants/{grants[0].grant_id}/token",
                       headers=api.bearer(api.studio))
    assert r.status_code == 422 and r.json()["error"]["code"] == "consent_error"
    assert fake_gate.check(_swap(BOB)).verdict == "deny"


def _page(api: Api, since: int) -> tuple[int, tuple[str, ...], bool]:
    body = api.client.get("/v1/revocations", params={"since_epoch": since},
                          headers=api.bearer(api.studio)).json()
    return body["epoch"], tuple(e["grant_id"] for e in body["revoked"]), body["more"]


def test_protect_me_through_the_portal_revokes_too(svc: ConsentService,
                                                   fake_gate: FaceGate) -> None:
    bob = fake_gate.enroll([BOB], display_name="Bob", status="consenting")
    grant = svc.lifecycle.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    svc.portal.set_status(bob.subject_id, "protected")
    assert [e["grant_id"] for e in svc.revocations("studio").revoked] == [grant.grant_id]


# -- 3 ------------------------------------------------------------------------------------
def test_consent_request_pictures_run_on_the_bounded_workers(
        api: Api, svc: ConsentService, fake_gate: FaceGate,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = svc.requests.create

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(fake_gate.pool.on_pool)
        return original(*args, **kwargs)

    monkeypatch.setattr(svc.requests, "create", spy)
    import base64

    r = api.client.post("/v1/consent-requests", headers=api.bearer(api.studio),
                        json={"image": base64.b64encode(noise_png(62)).decode(),
                              "operation": "face_swap"})
    assert r.status_code == 201, r.text
    assert seen == [True]  # decoded on the engine's workers, within its deadline


# -- 4 ------------------------------------------------------------------------------------
def test_an_app_enrols_its_own_user_with_a_check_key_and_liveness(
        pose_api: Api, pose_gate: FaceGate) -> None:
    client = pose_api.client
    r = client.post("/v1/self-enrolments", headers=pose_api.bearer(pose_api.studio),
                    json={"user_id": "u9"})
    assert r.status_code == 201, r.text
    enrolment_id, link = r.json()["enrolment"]["enrolment_id"], r.json()["link"]
    assert r.json()["enrolment"]["state"] == "pending"
    r = client.post("/portal/api/self/session", json={"token": link_token(link)},
                    headers=portal_headers())
    assert r.status_code == 200, r.text
    start = r.json()
    assert start["app_id"] == "studio"
    files = [("frames", (f"f{i}.png", data, "image/png"))
             for i, data in enumerate(answer(start["poses"], 21))]
    r = client.post("/portal/api/self", headers=portal_headers(start["csrf"]), files=files,
                    data={"challenge_id": start["challenge_id"], "display_name": "Nine"})
    assert r.status_code == 200, r.text
    subject_id = r.json()["subject_id"]
    status = client.get(f"/v1/self-enrolments/{enrolment_id}",
                        headers=pose_api.bearer(pose_api.studio)).json()
    assert status["state"] == "enrolled" and status["subject_id"] == subject_id
    assert client.get(f"/v1/self-enrolments/{enrolment_id}",
                      headers=pose_api.bearer(pose_api.other)).status_code == 404
    face = pose_picture(21, 0.0, frame=99)
    own = pose_gate.check(_swap(face, "u9"))
    assert own.faces[0].identity == "self" and own.verdict == "allow"
    stranger = pose_gate.check(_swap(face, "u10"))  # another user of the same app
    assert stranger.faces[0].identity == "protected" and stranger.verdict != "allow"
    # the link is one-time: it cannot bind another face
    assert client.post("/portal/api/self/session", json={"token": link_token(link)},
                       headers=portal_headers()).status_code == 422


def test_a_still_photo_cannot_be_self_enrolled(pose_api: Api) -> None:
    client = pose_api.client
    link = client.post("/v1/self-enrolments", headers=pose_api.bearer(pose_api.studio),
                       json={"user_id": "u9"}).json()["link"]
    start = client.post("/portal/api/self/session", json={"token": link_token(link)},
                        headers=portal_headers()).json()
    still = [pose_picture(22, 0.0)] * 6  # a stolen photo, not a live person turning
    files = [("frames", (f"f{i}.png", data, "image/png")) for i, data in enumerate(still)]
    r = client.post("/portal/api/self", headers=portal_headers(start["csrf"]), files=files,
                    data={"challenge_id": start["challenge_id"], "display_name": "Thief"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "liveness_failed"


# -- 6 ------------------------------------------------------------------------------------
def test_a_corrupted_database_is_not_ready_and_denies(tmp_path: Path) -> None:
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    try:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
        for i in range(60):  # audit rows: a file of many pages
            gate.check(_swap(noise_png(100 + i, size=64)))
        assert gate.check(_swap(BOB)).verdict == "allow"
        assert all(gate.readiness().values())
        db_file = tmp_path / "gate.db"
        import sqlite3

        gate.parts.store.engine.dispose()  # type: ignore[attr-defined]
        raw = sqlite3.connect(db_file)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # move the WAL into the file
        raw.close()
        size = db_file.stat().st_size
        with db_file.open("r+b") as fh:  # pages past the first overwritten
            fh.seek(size // 2)
            fh.write(os.urandom(min(16384, size // 3)))
        gate._integrity = (-1e9, None)
        ready = gate.readiness()
        assert ready["integrity"] is False
        d = gate.check(_swap(BOB))
        assert d.verdict == "deny" and d.rule_ids == ["core.fail_closed"]
    finally:
        gate.close()


# -- 7 ------------------------------------------------------------------------------------
def test_data_files_are_private_to_the_service_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = os.umask(0o022)  # a typical umask: files 0644, folders 0755 unless we say so
    try:
        gate = FaceGate.open(data, detector="fake", embedder="fake")
        gate.enroll([BOB], display_name="Bob")
        gate.close()
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data) == 0o700
    assert mode(data / "keys") == 0o700
    for name in ("gate.db", "gate.db-wal", "gate.db-shm"):
        if (data / name).exists():
            assert mode(data / name) == 0o600, name
    for key in (data / "keys").iterdir():
        assert mode(key) == 0o600, key.name
