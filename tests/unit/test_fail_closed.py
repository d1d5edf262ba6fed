"""Every failure inside the decision path ends in deny (or a clear input error)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.engine import FaceGate
from gate.errors import GateClosed, InvalidImage, StorageError
from gate.types import GateRequest, ImageInput, Requester
from gate.vision.detect import FakeDetector
from gate.vision.embed import FakeEmbedder
from tests.conftest import noise_png

BOB = noise_png(2)
STUDIO = Requester(app_id="studio", user_id="u1")


def _allowing_gate(tmp_path: Path) -> FaceGate:
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    return gate


def _swap(gate: FaceGate) -> Any:
    return gate.check(GateRequest(operation="face_swap", requester=STUDIO,
                                  images=[ImageInput(role="target", data=BOB)]))


def _replace(gate: FaceGate, **parts: Any) -> None:
    gate.parts = dataclasses.replace(gate.parts, **parts)
    gate.faces.clear_cache()  # the next check must run the faulty part


class _NaNEmbedder(FakeEmbedder):
    def embed(self, aligned_bgr: Any) -> np.ndarray:
        out = np.full((len(aligned_bgr), self.dim), np.nan, dtype=np.float32)
        from gate.vision.embed import l2_normalise

        return l2_normalise(out)


def _raise(*_: Any, **__: Any) -> Any:
    raise RuntimeError("boom: internal detail that must not leak")


class _BrokenStore:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in {"grants_for", "get_subject"}:
            def fail(*_: Any, **__: Any) -> Any:
                raise StorageError("the consent database is unavailable")
            return fail
        return getattr(self._inner, name)


class _BrokenAudit:
    def append(self, event: Any) -> Any:
        from gate.errors import AuditError

        raise AuditError("the audit log could not be written")


@pytest.mark.parametrize(("fault", "parts", "named"), [
    ("detector raises", lambda g: {"detector": FakeDetector(_raise)}, "RuntimeError"),
    ("recognizer returns NaN", lambda g: {"embedder": _NaNEmbedder()}, "inference_failed"),
    ("consent store down", lambda g: {"store": _BrokenStore(g.parts.store)},
     "storage_unavailable"),
    ("audit append fails", lambda g: {"audit": _BrokenAudit()}, "audit_failed"),
])
def test_faults_deny(tmp_path: Path, fault: str, parts: Any, named: str,
                     caplog: pytest.LogCaptureFixture) -> None:
    gate = _allowing_gate(tmp_path)
    try:
        assert _swap(gate).verdict == "allow"
        _replace(gate, **parts(gate))
        d = _swap(gate)
        assert d.verdict == "deny", fault
        assert d.rule_ids == ["core.fail_closed"]
        assert named in d.reasons[0].message
        assert "internal detail" not in d.reasons[0].message
    finally:
        gate.close()


def test_model_pack_mismatch_denies_instead_of_silently_missing(tmp_path: Path) -> None:
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    gate.enroll([BOB], display_name="Bob", status="protected")
    gate.close()

    class OtherPack(FakeEmbedder):
        pack_id = "fake/other"

    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    try:
        _replace(gate, embedder=OtherPack())
        gate.follower.load()
        d = _swap(gate)
        assert d.verdict == "deny"
        assert "model_mismatch" in d.reasons[0].message
    finally:
        gate.close()


def test_undecodable_image_is_a_clear_error(tmp_path: Path) -> None:
    gate = _allowing_gate(tmp_path)
    try:
        for bad in (b"", b"not an image", BOB[: len(BOB) // 2]):
            with pytest.raises(InvalidImage):
                gate.check(GateRequest(operation="img2img", requester=STUDIO,
                                       images=[ImageInput(role="init", data=bad)]))
    finally:
        gate.close()


def test_closed_gate_refuses(tmp_path: Path) -> None:
    gate = _allowing_gate(tmp_path)
    gate.close()
    with pytest.raises(GateClosed):
        _swap(gate)


def test_hung_model_times_out_into_deny(tmp_path: Path) -> None:
    import threading

    release = threading.Event()

    def hang(image: Any) -> Any:
        release.wait(5)
        return []

    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake", check_timeout_s=0.2)
    try:
        _replace(gate, detector=FakeDetector(hang))
        d = _swap(gate)
        assert d.verdict == "deny"
        assert "timeout" in d.reasons[0].message
    finally:
        release.set()
        gate.close()


def test_invalid_policy_at_reload_keeps_the_last_good_one(tmp_path: Path) -> None:
    from gate.errors import PolicyError
    from gate.settings import DEFAULT_POLICY

    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY.read_text())
    gate = FaceGate.open(tmp_path / "d", detector="fake", embedder="fake", policy_file=policy)
    try:
        before = gate.parts.policy.version
        policy.write_text(DEFAULT_POLICY.read_text().replace("effect: deny", "effect: dney"))
        with pytest.raises(PolicyError):
            gate.reload_policy()
        assert gate.parts.policy.version == before
        assert _swap(gate).verdict == "needs_consent"  # still the strict default policy
        policy.write_text(DEFAULT_POLICY.read_text().replace("2026-11-25.1", "2026-11-26.1"))
        assert gate.reload_policy().endswith("2026-11-26.1")
    finally:
        gate.close()


#: Every stage of the decision path (where it lives, its name); a fault in any of them
#: must end in deny.
STAGES = [("follower", "sync"), ("faces", "decode"), ("faces", "detect"),
          ("faces", "_finish"), ("engine", "_effective_content"), ("gate", "_names_in_prompt"),
          ("engine", "classify"), ("gate", "_consume_uses"), ("gate", "_audit_decision"),
          ("follower", "search"), ("engine", "_facts")]


@pytest.mark.parametrize(("owner", "stage"), STAGES)
def test_no_stage_can_turn_an_exception_into_allow(tmp_path: Path, owner: str, stage: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import gate.engine

    gate_ = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    bob = gate_.enroll([BOB], display_name="Bob", status="consenting")
    gate_.grant(bob.subject_id, app_id="studio", operations=["face_swap"], max_uses=100)
    target = {"gate": gate_, "engine": gate.engine, "faces": gate_.faces,
              "follower": gate_.follower}[owner]
    gate = gate_
    try:
        assert _swap(gate).verdict == "allow"
        gate.faces.clear_cache()
        monkeypatch.setattr(target, stage, _raise)
        d = _swap(gate)
        assert d.verdict == "deny" and d.rule_ids == ["core.fail_closed"], stage
    finally:
        monkeypatch.undo()
        gate.close()


@pytest.mark.parametrize("part", ["index", "policy", "embedder", "age"])
def test_no_part_can_turn_an_exception_into_allow(tmp_path: Path, part: str) -> None:
    class Exploding:
        def __getattr__(self, name: str) -> Any:
            if name in {"version", "pack_id", "dim"}:
                return getattr(original, name)
            return _raise

    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
               content=["general", "sexual"])
    original = getattr(gate.parts, part)
    try:
        _replace(gate, **{part: Exploding()})
        d = gate.check(GateRequest(operation="face_swap", requester=STUDIO, content=["sexual"],
                                   images=[ImageInput(role="target", data=BOB)]))
        assert d.verdict == "deny" and d.rule_ids == ["core.fail_closed"], part
    finally:
        gate.close()


def test_output_nudity_tightens_the_output_check(tmp_path: Path) -> None:
    from gate.vision.nudity import FakeNudityClassifier

    gate = _allowing_gate(tmp_path)
    try:
        requester = STUDIO
        assert gate.check_output(BOB, request_id="r1", requester=requester,
                                 operation="face_swap").verdict == "allow"
        _replace(gate, nudity=FakeNudityClassifier(0.9))
        d = gate.check_output(BOB, request_id="r1", requester=requester, operation="face_swap")
        assert d.verdict == "deny" and "sexual" in d.content
        assert "sexual.face_not_covered" in d.rule_ids
    finally:
        gate.close()


@pytest.mark.parametrize("fault", ["database read-only", "disk full"])
def test_storage_faults_deny_checks_and_fail_writes_clearly(tmp_path: Path,
                                                            fault: str) -> None:
    import sqlite3

    from sqlalchemy import event

    from gate.errors import StorageError

    gate = _allowing_gate(tmp_path)
    try:
        engine = gate.parts.store.engine  # type: ignore[attr-defined]
        engine.dispose()
        if fault == "database read-only":
            @event.listens_for(engine, "connect")
            def _read_only(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA query_only = ON")
        else:
            @event.listens_for(engine, "before_cursor_execute")
            def _disk_full(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
                if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                    raise sqlite3.OperationalError("database or disk is full")

        big = noise_png(77, size=400)  # a new subject needs new pages
        with pytest.raises(StorageError):
            gate.enroll([big], display_name="Carol")
        gate.faces.clear_cache()
        d = _swap(gate)  # the audit append cannot be written: no allow without it
        assert d.verdict == "deny", fault
        assert d.rule_ids == ["core.fail_closed"]
    finally:
        gate.close()
