"""The proxy on real sockets: served by uvicorn (in a thread, and as ``python -m
gate.proxy.cli`` in a subprocess), the real default models, and logs free of secrets."""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gate.engine import FaceGate
from gate.marking.labels import jpeg_segments
from gate.proxy.app import create_proxy_app
from tests.conftest import REPO
from tests.proxy.conftest import PROTECTED, UPSTREAM_AUTH, People, TestClient, Upstream
from tests.proxy.upstreams import Served

SECRET_PROMPT = "a lighthouse painted by the sea 7d1c"


@pytest.fixture
def served_proxy(fake_gate: FaceGate, openai_upstream: Upstream) -> Iterator[str]:
    served = Served(create_proxy_app(fake_gate, mode="openai", upstream=openai_upstream.url,
                                     app_id="studio"))
    yield served.url
    served.stop()


def test_real_socket_allow_and_deny_without_secrets_in_logs(
        served_proxy: str, openai_upstream: Upstream, people: People,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": UPSTREAM_AUTH}
    with httpx.Client(base_url=served_proxy, timeout=30) as client:
        r = client.post("/v1/images/generations", json={"prompt": SECRET_PROMPT},
                        headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["echo"]["authorization"] == UPSTREAM_AUTH
        openai_upstream.state.output = PROTECTED
        r = client.post("/v1/images/generations", json={"prompt": SECRET_PROMPT},
                        headers=headers)
        assert r.status_code == 403 and r.json()["decision"]["stage"] == "output"
    logged = " ".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
    assert "refused" in logged
    for secret in (UPSTREAM_AUTH, "sk-upstream-secret", SECRET_PROMPT):
        assert secret not in logged


@pytest.mark.slow
def test_run_proxy_serves_in_a_subprocess(tmp_path: Path, openai_upstream: Upstream) -> None:
    sock_port = Served.free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATE_DETECTOR": "fake",
           "GATE_EMBEDDER": "fake", "GATE_MATCH_THRESHOLD": "0.9"}
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gate.proxy.cli", "openai", openai_upstream.url,
             "--app", "studio", "--port", str(sock_port), "--data-dir", str(tmp_path / "d")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{sock_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a boat"},
                               timeout=10)
                break
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.headers["x-gate-verdict"] == "allow"
    finally:
        proc.terminate()
        proc.wait(15)


def _insightface_image(name: str) -> bytes:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    return (Path(spec.origin).parent / "data" / "images" / name).read_bytes()


@pytest.mark.real
def test_real_models_withhold_a_protected_face_and_label_a_group_photo(
        tmp_path: Path, openai_upstream: Upstream) -> None:
    gate = FaceGate.open(tmp_path / "real")
    try:
        gate.enroll([_insightface_image("Tom_Hanks_54745.png")], "Tom", status="protected")
        app = create_proxy_app(gate, mode="openai", upstream=openai_upstream.url,
                               app_id="studio")
        with TestClient(app) as proxy:
            openai_upstream.state.output = _insightface_image("t1.jpg")  # six strangers
            r = proxy.post("/v1/images/generations", json={"prompt": "a group photo"})
            assert r.status_code == 200, r.text
            jpeg = base64.b64decode(r.json()["data"][0]["b64_json"])
            assert any(m == 0xE1 and b"trainedAlgorithmicMedia" in s
                       for m, s in jpeg_segments(jpeg)[0])
            openai_upstream.state.output = _insightface_image("Tom_Hanks_54745.png")
            r = proxy.post("/v1/images/generations", json={"prompt": "a portrait"})
            assert r.status_code == 403
            assert r.json()["decision"]["reasons"][0]["rule_id"] == "core.protected_subject"
    finally:
        gate.close()
