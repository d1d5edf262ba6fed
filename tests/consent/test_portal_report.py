"""A person reports an image of themselves from the portal (issue 15.2/15.3).

No browser PDQ implementation is installable, so the portal says plainly that the server
hashes the image and discards it; these tests hold it to that: the report blocks the
image at once, names the person (erased with them), and nothing of the image is kept.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.api.conftest import make_client
from tests.conftest import noise_png
from tests.consent.conftest import link_token, portal_headers


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _signed_in(client: Any, svc: Any, subject_id: str) -> str:
    r = client.post("/portal/api/session", json={"token": link_token(
        svc.portal.link(subject_id))}, headers=portal_headers())
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


def test_person_reports_an_image_that_is_then_blocked_and_not_kept(
        fake_gate: FaceGate, svc: Any, tmp_path: Path) -> None:
    person = fake_gate.enroll([noise_png(5)], "Rin Reporter", status="protected")
    leaked = _photo(11)
    with make_client(fake_gate) as client:
        csrf = _signed_in(client, svc, person.subject_id)
        page = client.get("/portal/").text
        assert "discards the image" in page and "Only the" in page
        r = client.post("/portal/api/report", headers=portal_headers(csrf),
                        files={"image": ("leak.jpg", leaked, "image/jpeg")},
                        data={"reason": "ncii"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "open" and body["hashes"] >= 1 and body["deadline"]
        assert body["traced_here"] is False
        no_csrf = client.post("/portal/api/report", headers=portal_headers(),
                              files={"image": ("leak.jpg", leaked, "image/jpeg")})
        assert no_csrf.status_code in (401, 403)
        bad = client.post("/portal/api/report", headers=portal_headers(csrf),
                          files={"image": ("x.jpg", leaked[:300], "image/jpeg")})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_image"

    desk = fake_gate.incident_desk()
    [report] = desk.reports.list()
    assert report.subject_id == person.subject_id and report.reason == "ncii"
    reused = Image.open(io.BytesIO(leaked)).resize((480, 360))
    buf = io.BytesIO()
    reused.save(buf, format="PNG")
    decision = fake_gate.check(GateRequest(
        operation="img2img", requester=Requester(app_id="studio"),
        images=[ImageInput(role="init", data=buf.getvalue())]))
    assert decision.verdict == "deny" and "core.known_image" in decision.rule_ids

    needle = leaked[len(leaked) // 2:len(leaked) // 2 + 48]
    for path in fake_gate.settings.data_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path

    fake_gate.erase(person.subject_id)
    [after] = desk.reports.list()
    assert after.subject_id is None  # the image stays blocked; the person is not named
    assert fake_gate.check(GateRequest(
        operation="img2img", requester=Requester(app_id="studio"),
        images=[ImageInput(role="init", data=buf.getvalue())])).verdict == "deny"
