"""Incident response over HTTP (issue 15): label, trace, reports, blocklist, attempts.

The fake detector sees a face in every image; a plain textured picture with a txt2img
request is allowed (its "face" is nobody enrolled), which is all labelling needs. The
watermark, PDQ and audit parts are the real ones.
"""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import cv2
import numpy as np
from fastapi.testclient import TestClient

from tests.api.conftest import Keys, b64, bearer
from tests.conftest import noise_png, picture_png


def _picture(seed: int) -> bytes:
    return picture_png(seed)


def _attacked(data: bytes) -> bytes:
    """Re-posted: 8 % border crop, 60 % resize, JPEG q70."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    image = image[h * 8 // 100:h - h * 8 // 100, w * 8 // 100:w - w * 8 // 100]
    image = cv2.resize(image, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return buf.tobytes()


def _allowed(client: TestClient, keys: Keys) -> str:
    r = client.post("/v1/check", headers=bearer(keys.studio),
                    json={"operation": "txt2img", "prompt": "a quiet lake at dawn"})
    assert r.status_code == 200 and r.json()["verdict"] == "allow", r.text
    return str(r.json()["request_id"])


def test_label_then_trace_finds_the_request_and_its_audit_record(
        client: TestClient, keys: Keys) -> None:
    request_id = _allowed(client, keys)
    output = _picture(1)
    labelled = client.post("/v1/label-output", headers=bearer(keys.studio),
                           files={"image": ("out.png", output, "image/png")},
                           data={"request_id": request_id})
    assert labelled.status_code == 200, labelled.text
    assert labelled.headers["content-type"] == "image/png"
    assert labelled.headers["x-gate-watermarked"] == "true"
    leaked = _attacked(labelled.content)
    r = client.post("/v1/trace", headers=bearer(keys.admin),
                    files={"image": ("leak.jpg", leaked, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["found"] is True and body["request_id"] == request_id
    assert body["source"] == "watermark"
    record = body["record"]
    assert record["app_id"] == "studio" and record["operation"] == "txt2img"
    assert record["verdict"] == "allow" and record["chain_verified"] is True
    assert record["rule_ids"]


def test_check_output_can_return_the_labelled_image(client: TestClient, keys: Keys) -> None:
    request_id = _allowed(client, keys)
    r = client.post("/v1/check-output", headers=bearer(keys.studio),
                    json={"request_id": request_id, "image_b64": b64(_picture(2)),
                          "label": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "allow" and body["labelled_media_type"] == "image/png"
    traced = client.post("/v1/trace", headers=bearer(keys.admin),
                         json={"image_b64": body["labelled_image_b64"]})
    assert traced.json()["request_id"] == request_id
    plain = client.post("/v1/check-output", headers=bearer(keys.studio),
                        json={"request_id": request_id, "image_b64": b64(_picture(2))})
    assert "labelled_image_b64" not in plain.json()  # only when asked (older clients)


def test_unmarked_images_are_not_found(client: TestClient, keys: Keys) -> None:
    _allowed(client, keys)  # some marks exist
    for seed in range(3, 6):
        r = client.post("/v1/trace", headers=bearer(keys.admin),
                        files={"image": ("x.png", _picture(seed), "image/png")})
        assert r.status_code == 200 and r.json() == {
            "found": False, "request_id": None, "source": None, "distance_bits": None,
            "record": None}


def test_label_output_refuses_requests_not_allowed_for_the_app(
        client: TestClient, keys: Keys) -> None:
    request_id = _allowed(client, keys)
    for token, rid in ((keys.other, request_id), (keys.studio, "req_never_decided")):
        r = client.post("/v1/label-output", headers=bearer(token),
                        json={"request_id": rid, "image_b64": b64(_picture(7))})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_request"


def test_trace_is_operator_only_and_rejects_bad_input(client: TestClient, keys: Keys) -> None:
    files = {"image": ("x.png", _picture(8), "image/png")}
    assert client.post("/v1/trace", files=files).status_code == 401
    assert client.post("/v1/trace", headers=bearer(keys.studio),
                       files=files).status_code == 403
    bad = client.post("/v1/trace", headers=bearer(keys.admin),
                      files={"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_image"
    unknown = client.post("/v1/trace", headers=bearer(keys.admin),
                          json={"image_b64": b64(_picture(8)), "subject_id": "x"})
    assert unknown.status_code == 422
    none = client.post("/v1/trace", headers=bearer(keys.admin), json={})
    assert none.status_code == 422


def test_report_blocks_the_image_everywhere_and_keeps_no_pixels(
        client: TestClient, keys: Keys, fake_gate: Any) -> None:
    request_id = _allowed(client, keys)
    labelled = client.post("/v1/label-output", headers=bearer(keys.studio),
                           json={"request_id": request_id, "image_b64": b64(_picture(9))})
    leaked = labelled.content
    r = client.post("/v1/reports", headers=bearer(keys.studio),
                    files={"image": ("leak.png", leaked, "image/png")},
                    data={"reason": "ncii", "contact": "reporter@example.org"})
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["status"] == "open" and report["hashes"] >= 1 and not report["overdue"]
    assert report["trace"]["found"] is True and report["trace"]["request_id"] == request_id
    from datetime import datetime

    created = datetime.fromisoformat(report["created_at"])
    deadline = datetime.fromisoformat(report["deadline"])
    assert (deadline - created).total_seconds() == 48 * 3600

    # the reported image, resized and re-encoded, is denied as an input...
    image = cv2.imdecode(np.frombuffer(leaked, np.uint8), cv2.IMREAD_COLOR)
    smaller = cv2.imencode(".jpg", cv2.resize(image, None, fx=0.75, fy=0.75),
                           [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    d = client.post("/v1/check", headers=bearer(keys.other), json={
        "operation": "img2img", "images": [{"role": "init", "data_b64": b64(smaller)}]})
    assert d.json()["verdict"] == "deny"
    assert "core.known_image" in [x["rule_id"] for x in d.json()["reasons"]]
    # ... and as an output, while another picture is not blocked by that rule
    other = client.post("/v1/check", headers=bearer(keys.other), json={
        "operation": "img2img", "images": [{"role": "init", "data_b64": b64(_picture(10))}]})
    assert "core.known_image" not in [x["rule_id"] for x in other.json()["reasons"]]

    # nothing of the image is kept: not in the database file, not in its WAL
    data_dir = fake_gate.settings.data_dir
    needle = leaked[len(leaked) // 2:len(leaked) // 2 + 48]
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    db = sqlite3.connect(data_dir / "gate.db")
    (hashes,) = db.execute("SELECT hashes FROM reports").fetchone()
    db.close()
    assert all(len(h) == 64 for h in __import__("json").loads(hashes))


def test_reports_queue_resolution_is_audited_and_conflicts_are_409(
        client: TestClient, keys: Keys) -> None:
    pdq = "f" * 16 + "0" * 16 + "a5" * 16
    r = client.post("/v1/reports", headers=bearer(keys.admin),
                    json={"pdq": [pdq], "reason": "impersonation"})
    assert r.status_code == 201, r.text
    report_id = r.json()["report_id"]
    queue = client.get("/v1/reports", headers=bearer(keys.admin), params={"status": "open"})
    assert [x["report_id"] for x in queue.json()] == [report_id]
    assert client.get("/v1/reports", headers=bearer(keys.admin),
                      params={"overdue": "true"}).json() == []
    entries = client.get("/v1/blocklist", headers=bearer(keys.admin)).json()
    assert entries["total"] == 1 and entries["entries"][0]["provisional"] is True
    bad = client.post(f"/v1/reports/{report_id}/resolve", headers=bearer(keys.admin),
                      json={"status": "closed", "reason": "x"})
    assert bad.status_code == 422
    done = client.post(f"/v1/reports/{report_id}/resolve", headers=bearer(keys.admin),
                       json={"status": "rejected", "reason": "not an intimate image"})
    assert done.status_code == 200 and done.json()["status"] == "rejected"
    assert client.get("/v1/blocklist", headers=bearer(keys.admin)).json()["total"] == 0
    again = client.post(f"/v1/reports/{report_id}/resolve", headers=bearer(keys.admin),
                        json={"status": "actioned", "reason": "changed my mind"})
    assert again.status_code == 409
    assert client.post(f"/v1/reports/{report_id}/resolve", headers=bearer(keys.studio),
                       json={"status": "actioned", "reason": "x"}).status_code == 403
    events = client.get("/v1/audit", headers=bearer(keys.admin),
                        params={"limit": 1000}).json()["events"]
    kinds = [(e["event"]["kind"], e["event"].get("status")) for e in events]
    assert ("report", "open") in kinds and ("report_resolved", "rejected") in kinds
    metrics = client.get("/metrics", headers=bearer(keys.admin)).text
    assert "gate_reports_open 0.0" in metrics
    assert 'gate_report_time_to_action_seconds_count{status="rejected"} 1.0' in metrics


def test_blocklist_import_export_round_trip(client: TestClient, keys: Keys) -> None:
    hashes = ["0" * 63 + "1", "ab" * 32]
    te_file = "".join(f"pdq {h}\n" for h in hashes)
    r = client.post("/v1/blocklist/import", headers={**bearer(keys.admin),
                                                     "content-type": "text/plain"},
                    params={"name": "shared-ncii"}, content=te_file)
    assert r.status_code == 200 and r.json() == {"added": 2}, r.text
    out = client.get("/v1/blocklist/export", headers=bearer(keys.admin),
                     params={"format": "te-file"})
    assert out.status_code == 200 and sorted(out.text.split("\n")[:-1]) == sorted(
        f"pdq {h}" for h in hashes)
    broken = client.post("/v1/blocklist/import", headers={**bearer(keys.admin),
                                                          "content-type": "text/plain"},
                         params={"name": "x", "format": "te-file"}, content="pdq nothex\n")
    assert broken.status_code == 422


def test_attempts_are_shown_to_the_person_and_change_nothing_for_the_requester(
        client: TestClient, keys: Keys, fake_gate: Any) -> None:
    face = noise_png(41)
    subject = fake_gate.enroll([face], "Protected Person", status="protected")
    request = {"operation": "face_swap", "images": [
        {"role": "target", "data_b64": b64(face)}, {"role": "source",
                                                  "data_b64": b64(noise_png(42))}]}
    first = client.post("/v1/check", headers=bearer(keys.studio), json=request).json()
    second = client.post("/v1/check", headers=bearer(keys.studio), json=request).json()
    assert first["verdict"] == second["verdict"] == "deny"
    strip = ("request_id", "latency_ms")
    assert {k: v for k, v in first.items() if k not in strip} == \
        {k: v for k, v in second.items() if k not in strip}
    attempts = fake_gate.incident.attempts.of(subject.subject_id)
    assert [(a.app_id, a.operation, a.verdict) for a in attempts] == [
        ("studio", "face_swap", "deny")] * 2
    exported = fake_gate.export(subject.subject_id)
    assert len(exported["attempts"]) == 2
    assert {key for attempt in exported["attempts"] for key in attempt} == {
        "at", "app_id", "operation", "verdict"}
    assert b64(face) not in str(exported) and not _keys_named_like(exported, "b64", "image")
    fake_gate.erase(subject.subject_id)
    assert fake_gate.incident.attempts.of(subject.subject_id) == []


def _keys_named_like(value: Any, *parts: str) -> bool:
    """Whether any key of a nested export names image bytes (a subject id is random hex,
    so the export's text may hold "b64" by chance: only keys tell)."""
    if isinstance(value, dict):
        return any(any(part in str(key) for part in parts) or _keys_named_like(item, *parts)
                   for key, item in value.items())
    if isinstance(value, list):
        return any(_keys_named_like(item, *parts) for item in value)
    return False


def test_label_output_json_and_locale(client: TestClient, keys: Keys) -> None:
    request_id = _allowed(client, keys)
    r = client.post("/v1/label-output", headers=bearer(keys.studio),
                    json={"request_id": request_id, "image_b64": b64(_picture(11)),
                          "locale": "zh-CN"})
    assert r.status_code == 200
    assert base64.b64encode(r.content)  # bytes, not JSON
    assert r.headers["x-gate-visible-label"] == "false"  # default policy: no visible label
