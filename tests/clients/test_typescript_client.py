"""The TypeScript client (``clients/typescript``) against a real sidecar on the embedded
default (uvicorn, SQLite, the real YuNet + SFace models) and real photos.

The test makes what the Node tests need on the sidecar (a ``check`` and an ``admin`` key, a
protected person enrolled from a real photo, a consenting person with a grant and its
token, a second grant revoked), then in ``clients/typescript`` runs ``npm ci``,
``npm run types:check`` (the types generated from ``tests/api/openapi.json`` are current),
``npm run build`` and ``npm test`` (Node's test runner), the ``GATE_TS_*`` variables naming
the sidecar, keys, ids, tokens and photo files. Skips only when ``node`` or ``npm`` is
missing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from gate.client import GateClient
from tests.conftest import REPO
from tests.e2e.conftest import create_key, sqlite_url, start_server

pytestmark = [pytest.mark.real, pytest.mark.slow]

CLIENT = REPO / "clients" / "typescript"
APP = "studio"
#: npm without its network extras (audit, funding, update notices).
NPM_ENV = {"npm_config_audit": "false", "npm_config_fund": "false",
           "npm_config_update_notifier": "false", "npm_config_progress": "false"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: the TypeScript client's tests need "
                    "Node.js >= 18 and npm")
    return path


def _run(args: list[str], env: dict[str, str], timeout_s: float, hint: str = "") -> str:
    proc = subprocess.run(args, cwd=CLIENT, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    out = proc.stdout + proc.stderr
    command = " ".join([Path(args[0]).name, *args[1:]])
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}{hint}:\n{out[-8000:]}"
    return out


def _face_free_png() -> bytes:
    """A landscape without any face: sky, sun, hills."""
    image = Image.new("RGB", (320, 240), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((230, 30, 280, 80), fill=(250, 220, 90))
    draw.polygon([(0, 240), (0, 150), (110, 110), (210, 160), (320, 120), (320, 240)],
                 fill=(70, 130, 60))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _photos(faces_dir: Path, identity: str) -> list[Path]:
    return sorted((faces_dir / "natural_small" / identity).iterdir())


def _count(output: str, what: str) -> int:
    """A closing count of Node's test runner (``# pass 12`` in TAP, the same after an
    information sign in the spec reporter)."""
    found = re.findall(rf"^(?:#|\u2139) {what} (\d+)\s*$", output, re.MULTILINE)
    assert found, f"no '{what}' count in the test runner's output:\n{output[-3000:]}"
    return int(found[-1])


def test_typescript_client_against_a_real_sidecar(tmp_path: Path, faces_dir: Path) -> None:
    npm = _tool("npm")
    node = _tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 20, (
        f"node {version}: the client's tests need Node.js >= 20 (jose 6, the offline part)")
    env = {**os.environ, **NPM_ENV}

    _run([npm, "ci"], env, 600)
    _run([npm, "run", "types:check"], env, 120,
         hint=" (the API changed: run `npm run types` in clients/typescript, review the "
              "diff of src/generated/openapi.ts, commit it)")
    _run([npm, "run", "build"], env, 300)
    assert (CLIENT / "dist" / "index.js").is_file()
    assert (CLIENT / "dist" / "offline" / "index.d.ts").is_file()

    data = tmp_path / "data"
    url = sqlite_url(data)
    check_key, admin_key = create_key(url, APP, ["check"]), create_key(url, "ops", ["admin"])
    mindy = _photos(faces_dir, "mindy_kaling")
    elton = _photos(faces_dir, "elton_john")
    face_free = tmp_path / "face-free.png"
    face_free.write_bytes(_face_free_png())

    server = start_server(data)
    try:
        with GateClient(server.url, admin_key) as admin:
            protected = admin.enroll([p.read_bytes() for p in mindy[:3]],
                                     display_name="Protected", status="protected")
            consenting = admin.enroll([elton[0].read_bytes()], display_name="Consenting",
                                      status="consenting")
            grant = admin.grant(consenting.subject_id, app_id=APP, operations=["face_swap"])
            revoked = admin.grant(consenting.subject_id, app_id=APP, operations=["face_swap"])
            admin.revoke(revoked.grant_id)
        assert grant.token and revoked.token
        fixtures = {
            "GATE_TS_URL": server.url, "GATE_TS_CHECK_KEY": check_key,
            "GATE_TS_ADMIN_KEY": admin_key, "GATE_TS_APP_ID": APP,
            "GATE_TS_PROTECTED_SUBJECT_ID": protected.subject_id,
            "GATE_TS_PROTECTED_PHOTO": str(mindy[3]),
            "GATE_TS_CONSENTING_SUBJECT_ID": consenting.subject_id,
            "GATE_TS_GRANT_ID": grant.grant_id, "GATE_TS_GRANT_TOKEN": grant.token,
            "GATE_TS_REVOKED_GRANT_ID": revoked.grant_id,
            "GATE_TS_REVOKED_TOKEN": revoked.token,
            "GATE_TS_FACE_FREE_PHOTO": str(face_free),
            "GATE_TS_STRANGER_PHOTO": str(faces_dir / "natural_small" / "biden" / "biden.jpg"),
        }
        output = _run([npm, "test"], {**env, **fixtures}, 600)
    finally:
        server.stop()
    assert _count(output, "fail") == 0
    assert _count(output, "skipped") == 0, "every Node test must run against the sidecar"
    assert _count(output, "pass") >= 20
