"""The analysis cache speeds up byte-identical images but never serves a stale decision."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from gate.engine import FaceGate
from gate.policy.evaluate import RulePolicyEngine
from gate.policy.load import parse_policy
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png

BOB = noise_png(2)
STUDIO = Requester(app_id="studio", user_id="u1")


def _swap(gate: FaceGate) -> Any:
    return gate.check(GateRequest(operation="face_swap", requester=STUDIO,
                                  images=[ImageInput(role="target", data=BOB)]))


def test_identical_bytes_hit_the_cache(fake_gate: FaceGate) -> None:
    first, second = _swap(fake_gate), _swap(fake_gate)
    assert fake_gate.faces.cache_hits == 1
    assert "decode" in first.latency_ms and "decode" not in second.latency_ms
    assert first.verdict == second.verdict and first.request_id != second.request_id
    assert first.faces[0].bbox == second.faces[0].bbox


def test_grant_and_revocation_are_never_served_stale(fake_gate: FaceGate) -> None:
    bob = fake_gate.enroll([BOB], display_name="Bob", status="consenting")
    assert _swap(fake_gate).verdict == "needs_consent"
    grant = fake_gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    assert _swap(fake_gate).verdict == "allow"
    fake_gate.revoke(grant.grant_id)
    assert _swap(fake_gate).verdict == "needs_consent"
    assert fake_gate.faces.cache_hits >= 2


def test_a_new_opt_out_applies_to_an_image_cached_before_it(fake_gate: FaceGate) -> None:
    assert _swap(fake_gate).faces[0].identity == "unknown"  # analysed and cached
    bob = fake_gate.enroll([BOB], display_name="Bob", status="protected")
    d = _swap(fake_gate)
    assert fake_gate.faces.cache_hits >= 1  # the cached faces were reused, not re-detected
    assert d.verdict == "deny" and d.faces[0].subject_id == bob.subject_id


def test_erasure_empties_the_cache(fake_gate: FaceGate) -> None:
    bob = fake_gate.enroll([BOB], display_name="Bob", status="protected")
    assert _swap(fake_gate).verdict == "deny"
    assert fake_gate.faces.cached_items == 1
    fake_gate.erase(bob.subject_id)
    assert fake_gate.faces.cached_items == 0
    assert _swap(fake_gate).faces[0].identity == "unknown"


def test_policy_change_applies_to_cached_images(fake_gate: FaceGate) -> None:
    assert _swap(fake_gate).verdict == "needs_consent"
    permissive = parse_policy(
        "policy: p\nversion: '1'\nrules:\n  - id: allow.all\n    effect: allow\n"
        "    message: everything\n")
    fake_gate.parts = dataclasses.replace(fake_gate.parts, policy=RulePolicyEngine(permissive))
    d = _swap(fake_gate)
    assert d.verdict == "allow" and d.policy_version == "p@1"


def test_ttl_and_bound(tmp_path: Path) -> None:
    alice = noise_png(3)

    def swap(gate: FaceGate, data: bytes) -> Any:
        return gate.check(GateRequest(operation="face_swap", requester=STUDIO,
                                      images=[ImageInput(role="target", data=data)]))

    with FaceGate.open(tmp_path / "a", detector="fake", embedder="fake",
                       analysis_cache_items=1, analysis_cache_ttl_s=0.6) as gate:
        swap(gate, BOB)
        swap(gate, alice)  # evicts BOB: one item at most
        assert "decode" in swap(gate, BOB).latency_ms
        assert "decode" not in swap(gate, BOB).latency_ms
        time.sleep(0.65)
        assert "decode" in swap(gate, BOB).latency_ms  # expired
    with FaceGate.open(tmp_path / "b", detector="fake", embedder="fake",
                       analysis_cache_items=0) as gate:
        swap(gate, BOB)
        assert "decode" in swap(gate, BOB).latency_ms and gate.faces.cache_hits == 0
