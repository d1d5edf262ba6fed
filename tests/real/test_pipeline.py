"""The real pipeline (YuNet/SCRFD + SFace via onnxruntime/OpenCV) on real photos."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.engine import FaceGate
from gate.errors import EnrollmentError, ModelUnavailable
from gate.types import GateRequest, ImageInput, Requester

pytestmark = pytest.mark.real

STUDIO = Requester(app_id="studio", user_id="u1")


def _pkg(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent.joinpath(*parts)


T1 = _pkg("insightface", "data", "images", "t1.jpg")


def _photos(faces_dir: Path, identity: str) -> list[bytes]:
    folder = faces_dir / "natural_small" / identity
    return [p.read_bytes() for p in sorted(folder.iterdir())]


@pytest.fixture(scope="module")
def real_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceGate]:
    gate = FaceGate.open(tmp_path_factory.mktemp("real"))
    yield gate
    gate.close()


def _swap(gate: FaceGate, data: bytes, operation: str = "face_swap", **kw: object) -> object:
    return gate.check(GateRequest(operation=operation,  # type: ignore[arg-type]
                                  images=[ImageInput(role="target", data=data)],
                                  requester=STUDIO, **kw))  # type: ignore[arg-type]


def test_group_photo_has_six_faces(real_gate: FaceGate) -> None:
    d = real_gate.check(GateRequest(operation="face_swap", requester=STUDIO,
                                    images=[ImageInput(role="target", data=T1.read_bytes())]))
    assert len(d.faces) == 6
    assert all(f.identity == "unknown" for f in d.faces)
    assert d.verdict == "needs_consent"
    assert len(d.consent_needed) == 6
    for f in d.faces:
        x1, y1, x2, y2 = f.bbox
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 886
        assert f.det_score > 0.6 and f.size_px > 60


def test_alignment_equals_insightface_norm_crop() -> None:
    from insightface.utils import face_align

    from gate.factory import build_detector
    from gate.settings import Settings
    from gate.vision.align import norm_crop

    image = cv2.imread(str(T1))
    det = build_detector(Settings()).detect(image)[0]
    ours = norm_crop(image, det.landmarks_array())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="skimage")
        warnings.filterwarnings("ignore", category=FutureWarning, module="insightface")
        theirs = face_align.norm_crop(image, det.landmarks_array())
    assert ours.shape == theirs.shape == (112, 112, 3)
    assert np.mean(np.abs(ours.astype(int) - theirs.astype(int))) < 1.0


def test_recognises_a_person_from_another_photo(real_gate: FaceGate, faces_dir: Path) -> None:
    photos = _photos(faces_dir, "mindy_kaling")
    subject = real_gate.enroll(photos[:1], display_name="Mindy", status="protected")
    try:
        denied = [_swap(real_gate, p).verdict == "deny" for p in photos[1:8]]  # type: ignore[attr-defined]
        assert sum(denied) >= 6
        other = _photos(faces_dir, "elton_john")[0]
        d = _swap(real_gate, other)
        assert d.faces[0].identity in ("unknown", "unidentifiable")  # type: ignore[attr-defined]
    finally:
        real_gate.erase(subject.subject_id)


def test_full_lifecycle_on_real_faces(real_gate: FaceGate, faces_dir: Path) -> None:
    ada_photos = _photos(faces_dir, "madonna")
    bob_photos = _photos(faces_dir, "ben_afflek")
    ada = real_gate.enroll(ada_photos[:2], display_name="Ada", status="protected")
    bob = real_gate.enroll(bob_photos[:1], display_name="Bob", status="consenting",
                           owner=Requester(app_id="studio", user_id="bob-account"))
    grant = real_gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                            content=["general"])
    d = _swap(real_gate, ada_photos[3])
    assert d.verdict == "deny" and d.faces[0].identity == "protected"  # type: ignore[attr-defined]
    bob_new = next(p for p in bob_photos[1:]
                   if _swap(real_gate, p).verdict == "allow")  # type: ignore[attr-defined]
    d = _swap(real_gate, bob_new)
    assert d.faces[0].identity == "consented"  # type: ignore[attr-defined]
    assert d.faces[0].subject_id == bob.subject_id  # type: ignore[attr-defined]
    self_use = real_gate.check(GateRequest(
        operation="face_swap", images=[ImageInput(role="target", data=bob_new)],
        requester=Requester(app_id="studio", user_id="bob-account")))
    assert self_use.faces[0].identity == "self" and self_use.verdict == "allow"
    nudify = _swap(real_gate, bob_new, operation="nudify")
    assert nudify.verdict == "deny"  # type: ignore[attr-defined]
    real_gate.revoke(grant.grant_id)
    assert _swap(real_gate, bob_new).verdict == "needs_consent"  # type: ignore[attr-defined]
    real_gate.erase(ada.subject_id)
    d = _swap(real_gate, ada_photos[3])
    assert d.faces[0].identity == "unknown"  # type: ignore[attr-defined]
    real_gate.erase(bob.subject_id)
    assert real_gate.verify_audit().ok


def test_nudify_of_an_unknown_real_face_is_denied(real_gate: FaceGate, faces_dir: Path) -> None:
    d = _swap(real_gate, _photos(faces_dir, "John_Simm")[0], operation="nudify")
    assert d.verdict == "deny"  # type: ignore[attr-defined]
    assert "nudify.uncovered_face" in d.rule_ids  # type: ignore[attr-defined]


def test_enrolment_rejects_no_face_and_group_photos(real_gate: FaceGate) -> None:
    no_face = cv2.imencode(".png", np.full((200, 200, 3), 127, np.uint8))[1].tobytes()
    with pytest.raises(EnrollmentError, match="no face"):
        real_gate.enroll([no_face], display_name="Nobody")
    with pytest.raises(EnrollmentError, match="6 faces"):
        real_gate.enroll([T1.read_bytes()], display_name="Group")


def test_scrfd_detector_path(tmp_path: Path, shared_models_dir: Path) -> None:
    model = shared_models_dir / "insightface" / "det_500m.onnx"
    with pytest.raises(ModelUnavailable, match="GATE_ACCEPT_LICENSE=noncommercial"):
        FaceGate.open(tmp_path / "a", detector="scrfd", scrfd_model=model)
    gate = FaceGate.open(tmp_path / "b", detector="scrfd", scrfd_model=model,
                         accept_license="noncommercial")
    try:
        d = gate.check(GateRequest(operation="face_swap", requester=STUDIO,
                                   images=[ImageInput(role="target", data=T1.read_bytes())]))
        assert len(d.faces) == 6
    finally:
        gate.close()


def test_tampered_or_unknown_model_file_is_refused(tmp_path: Path,
                                                   shared_models_dir: Path) -> None:
    bad = tmp_path / "det.onnx"
    bad.write_bytes((shared_models_dir / "insightface" / "det_500m.onnx").read_bytes()[:-10])
    with pytest.raises(ModelUnavailable, match="not in the manifest"):
        FaceGate.open(tmp_path / "x", detector="scrfd", scrfd_model=bad,
                      accept_license="noncommercial")
    with pytest.raises(ModelUnavailable, match="missing"):
        FaceGate.open(tmp_path / "y", detector="scrfd", scrfd_model=tmp_path / "nope.onnx")


def test_permissive_readings_need_the_stricter_allow_threshold(
        tmp_path: Path, faces_dir: Path) -> None:
    """Between match_threshold and allow_threshold a face still protects its subject but
    cannot borrow their consent (or self-use): it stays unknown and no grant use counts."""
    from gate.settings import Settings

    bob_photos = _photos(faces_dir, "ben_afflek")
    owner = Requester(app_id="studio", user_id="bob-account")
    with FaceGate.open(tmp_path / "measure") as gate:
        bob = gate.enroll(bob_photos[:1], display_name="Bob", status="consenting", owner=owner)
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
        decisions = [(p, _swap(gate, p)) for p in bob_photos[1:]]
        probe, d = next((p, d) for p, d in decisions
                        if d.faces and d.faces[0].identity == "consented")  # type: ignore[attr-defined]
        similarity = d.faces[0].similarity  # type: ignore[attr-defined]
    assert similarity is not None and similarity > 0.2
    for allow_at, expected in ((similarity - 0.01, "consented"), (similarity + 0.01, "unknown")):
        settings = Settings(data_dir=tmp_path / f"at{allow_at:.3f}", allow_threshold=allow_at,
                            match_threshold=min(0.2, allow_at))
        with FaceGate.from_settings(settings) as gate:
            bob = gate.enroll(bob_photos[:1], display_name="Bob", status="consenting",
                              owner=owner)
            grant = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                               max_uses=1)
            d = _swap(gate, probe)
            assert d.faces[0].identity == expected  # type: ignore[attr-defined]
            assert d.verdict == ("allow" if expected == "consented" else "needs_consent")  # type: ignore[attr-defined]
            own = gate.check(GateRequest(operation="face_swap", requester=owner,
                                         images=[ImageInput(role="target", data=probe)]))
            assert own.faces[0].identity == ("self" if expected == "consented" else "unknown")
            stored = gate.parts.store.get_grant(grant.grant_id)
            assert stored is not None and stored.uses == (1 if expected == "consented" else 0)
            # Protected, the same similarity is enough to deny.
            gate.set_status(bob.subject_id, "protected")
            assert _swap(gate, probe).verdict == "deny"  # type: ignore[attr-defined]
