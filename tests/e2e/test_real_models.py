"""The real default models (YuNet + SFace) behind a real server, on real photos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gate.client import GateClient
from gate.types import GateRequest, ImageInput, Requester
from tests.e2e.conftest import Server, create_key, sqlite_url

pytestmark = [pytest.mark.real, pytest.mark.slow]


def photos(faces_dir: Path, identity: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((faces_dir / "natural_small" / identity).iterdir())]


def swap(image: bytes) -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id="ignored", user_id="u1"))


def test_real_models_over_http(tmp_path: Path, faces_dir: Path,
                               servers: Callable[..., Server]) -> None:
    data = tmp_path / "data"
    url = sqlite_url(data)
    admin_key, app_key = create_key(url, "ops", ["admin"]), create_key(url, "studio",
                                                                       ["check"])
    server = servers(data)
    mindy, elton = photos(faces_dir, "mindy_kaling"), photos(faces_dir, "elton_john")
    with GateClient(server.url, admin_key) as admin, GateClient(server.url, app_key) as app:
        assert app.readiness() == {**app.readiness(), "models": True, "database": True}
        subject = admin.enroll(mindy[:1], display_name="Mindy", status="protected")
        decisions = [app.check(swap(p)) for p in mindy[1:5]]
        assert sum(d.verdict == "deny" for d in decisions) >= 3
        assert any(d.faces and d.faces[0].subject_id == subject.subject_id for d in decisions)
        stranger = app.check(swap(elton[0]))
        assert stranger.faces[0].identity in ("unknown", "unidentifiable")
        assert stranger.verdict != "allow"
        nudify = app.check(GateRequest(operation="nudify",
                                       images=[ImageInput(role="target", data=elton[0])],
                                       requester=Requester(app_id="ignored")))
        assert nudify.verdict == "deny"
        assert admin.verify_audit().ok
