"""Obligations reach the output: a policy that requires a C2PA manifest gets one (signed
offline with a test certificate), and without a signer the output is withheld."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate.engine import FaceGate
from gate.marking.labels import png_chunks
from gate.proxy.app import create_proxy_app
from gate.settings import DEFAULT_POLICY
from tests.proxy.conftest import TestClient, Upstream
from tests.proxy.test_labels import _test_certificates


@pytest.fixture
def c2pa_gate(tmp_path: Path) -> Iterator[FaceGate]:
    text = DEFAULT_POLICY.read_text().replace(
        "obligations: [label_ai_content]", "obligations: [label_ai_content, embed_c2pa_manifest]")
    policy = tmp_path / "c2pa-policy.yaml"
    policy.write_text(text)
    gate = FaceGate.open(tmp_path / "data", detector="fake", embedder="fake",
                         match_threshold=0.9, policy_file=policy)
    yield gate
    gate.close()


def test_without_a_signer_the_output_is_withheld(c2pa_gate: FaceGate,
                                                 openai_upstream: Upstream) -> None:
    app = create_proxy_app(c2pa_gate, mode="openai", upstream=openai_upstream.url,
                           app_id="studio")
    with TestClient(app) as proxy:
        r = proxy.post("/v1/images/generations", json={"prompt": "a boat"})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "obligation_unmet"


@pytest.mark.slow
def test_the_output_carries_a_signed_manifest(c2pa_gate: FaceGate,
                                              openai_upstream: Upstream) -> None:
    pytest.importorskip("c2pa")
    from gate.marking.provenance import C2paSigner

    app = create_proxy_app(c2pa_gate, mode="openai", upstream=openai_upstream.url,
                           app_id="studio", signer=C2paSigner(*_test_certificates()))
    with TestClient(app) as proxy:
        r = proxy.post("/v1/images/generations", json={"prompt": "a boat"})
    assert r.status_code == 200, r.text
    assert "embed_c2pa_manifest" in r.headers["x-gate-obligations"]
    png = base64.b64decode(r.json()["data"][0]["b64_json"])
    kinds = [k for k, _ in png_chunks(png)]
    assert b"caBX" in kinds and b"iTXt" in kinds
