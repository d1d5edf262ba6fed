"""Issue 17 on real photos: orientation check, the cheap orientation probe, template
selection, and the permissive top-2 / poor-quality rules through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gate.factory import build_embedder, build_robust_detector
from gate.identity.selection import Candidate, select_templates
from gate.settings import Settings
from gate.vision.align import norm_crop
from gate.vision.detect import Detection
from gate.vision.quality import face_quality
from gate.vision.robust import OrientationRobustDetector, roll_degrees

pytestmark = pytest.mark.real

#: Aligned 112 px crops: upside down, the upright pass "finds" them with landmarks in
#: upright order (the failure the orientation check fixes).
GLINT = ("Tom_Hanks", "Hugh_Jackman", "Keanu_Reeves")


def _photos(faces_dir: Path, set_name: str, identity: str, n: int) -> list[Path]:
    folder = faces_dir / set_name / identity
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    return sorted(folder.iterdir())[:n]


def _read(path: Path) -> np.ndarray:
    from gate.evaluation.transforms import decode_bgr

    return decode_bgr(path.read_bytes())


@pytest.fixture(scope="module")
def detector() -> OrientationRobustDetector:
    det = build_robust_detector(Settings(orientation_probe_px=320))
    assert isinstance(det, OrientationRobustDetector)
    return det


def _identities(faces_dir: Path) -> list[str]:
    found = [i for i in GLINT if (faces_dir / "glint24" / i).is_dir()]
    if not found:
        found = sorted(p.name for p in (faces_dir / "glint24").iterdir() if p.is_dir())[:3]
    return found


def test_upside_down_faces_get_upside_down_landmarks(
        detector: OrientationRobustDetector, faces_dir: Path) -> None:
    import cv2

    embedder = build_embedder(Settings())
    checked, wrong_without, same_person = 0, 0, []
    for identity in _identities(faces_dir):
        for path in _photos(faces_dir, "glint24", identity, 4):
            image = _read(path)
            upright = detector.detect(image)
            turned = cv2.rotate(image, cv2.ROTATE_180)
            dets = detector.detect(turned)
            assert len(dets) == 1, f"{path.name}: one face, not a face and its ghost"
            assert abs(roll_degrees(dets[0])) > 150, f"{path.name}: landmarks not turned"
            detector.check_orientation = False
            try:
                plain = detector.detect(turned)
            finally:
                detector.check_orientation = True
            wrong_without += any(abs(roll_degrees(d)) < 90 for d in plain)
            a = embedder.embed([norm_crop(image, upright[0].landmarks_array())])[0]
            b = embedder.embed([norm_crop(turned, dets[0].landmarks_array())])[0]
            same_person.append(float(a @ b))
            checked += 1
    assert checked >= 6
    assert wrong_without > 0, "the sample no longer shows the failure the check fixes"
    assert np.median(same_person) > 0.8  # the turned face embeds like the upright one


def test_cheap_probe_still_finds_quarter_turned_faces(
        detector: OrientationRobustDetector, faces_dir: Path) -> None:
    import cv2

    found = total = 0
    for identity in ("John_Salley", "ben_afflek", "bbt_penny"):
        for path in _photos(faces_dir, "natural_small", identity, 3):
            for code in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE):
                dets = detector.detect(cv2.rotate(_read(path), code))
                total += 1
                found += any(60 < abs(roll_degrees(d)) < 120 for d in dets)
    assert found >= total - 1


def test_yunet_runs_at_a_smaller_input(faces_dir: Path) -> None:
    from gate.vision import detect, packs

    path = packs.prepared_default("detector", Settings().resolved_model_cache())
    small = detect.YuNetDetector(path, input_px=320, threads=1)
    image = _read(_photos(faces_dir, "natural_small", "ben_afflek", 1)[0])
    dets = small.detect(image)
    assert len(dets) == 1 and dets[0].score > 0.6
    with pytest.raises(ValueError):
        detect.YuNetDetector(path, input_px=300)


def _candidates(faces_dir: Path, identity: str, n: int) -> list[Candidate]:
    from gate.consent.liveness import yaw_ratio
    from gate.vision.align import align_face

    detector = build_robust_detector(Settings())
    embedder = build_embedder(Settings())
    out = []
    for path in _photos(faces_dir, "natural_small", identity, n):
        image = _read(path)
        det: Detection = max(detector.detect(image), key=lambda d: d.size_px)
        crop, points = align_face(image, det.landmarks_array())
        out.append(Candidate(quality=face_quality(det, crop, points).score,
                             yaw_ratio=yaw_ratio(det.landmarks_array()),
                             vector=embedder.embed([crop])[0]))
    return out


def test_template_selection_keeps_the_person_and_drops_a_stranger(faces_dir: Path) -> None:
    own = _candidates(faces_dir, "ben_afflek", 6)
    stranger = _candidates(faces_dir, "bbt_penny", 1)
    chosen = select_templates([*own, *stranger], k=3)
    assert 1 <= len(chosen) <= 3
    assert len(own) not in chosen  # the stranger's face is never a template
    assert chosen == select_templates([*own, *stranger], k=3)  # deterministic
    # A burst of one picture repeated gives one template, not three copies.
    assert select_templates([own[0]] * 4, k=3) == [0]


def test_permissive_top2_and_poor_quality_threshold_on_real_photos(tmp_path: Path,
                                                                   faces_dir: Path) -> None:
    """The default rules still allow the consenting person's other photos, never a
    stranger, and never allow where the plain best-template rule would not."""
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    photos = _photos(faces_dir, "natural_small", "ben_afflek", 7)
    strangers = _photos(faces_dir, "natural_small", "bbt_penny", 3)
    verdicts: dict[str, list[tuple[str, str]]] = {}
    for rule in ("top2", "max"):
        gate = FaceGate.open(tmp_path / rule, permissive_rule=rule)
        try:
            subject = gate.enroll([p.read_bytes() for p in photos[:3]], "Ben",
                                  status="consenting")
            assert subject.template_count == 3
            gate.grant(subject.subject_id, app_id="t", operations=["face_swap"])

            def check(path: Path, gate: FaceGate = gate) -> tuple[str, str]:
                d = gate.check(GateRequest(
                    operation="face_swap", requester=Requester(app_id="t"),
                    images=[ImageInput(role="target", data=path.read_bytes())]))
                return d.verdict, d.faces[0].identity

            verdicts[rule] = [check(p) for p in (*photos[3:], *strangers)]
        finally:
            gate.close()
    top2, best = verdicts["top2"], verdicts["max"]
    genuine = len(photos) - 3
    assert any(v == ("allow", "consented") for v in top2[:genuine])
    assert all(v[0] != "allow" for v in top2[genuine:])
    for strict, plain in zip(top2, best, strict=True):
        assert strict[0] != "allow" or plain[0] == "allow"  # top2 only tightens


def test_mirror_only_where_it_can_matter_reads_like_flipping_every_face(
        tmp_path: Path, faces_dir: Path) -> None:
    """The default test-time flip band (``flip_margin``) gives the same readings as
    embedding every face's mirror, and skips the mirror of a stranger's face."""
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    ben = _photos(faces_dir, "natural_small", "ben_afflek", 8)
    penny = _photos(faces_dir, "natural_small", "bbt_penny", 4)
    probes = [*ben[3:], *penny[1:]]
    readings: dict[str, list[tuple[str, str | None, str]]] = {}
    stages: dict[str, list[set[str]]] = {}
    for name, margin in (("band", Settings().flip_margin), ("always", 2.0)):
        gate = FaceGate.open(tmp_path / name, flip_margin=margin, analysis_cache_items=0)
        try:
            gate.grant(gate.enroll([p.read_bytes() for p in ben[:3]], "Ben",
                                   status="consenting").subject_id,
                       app_id="t", operations=["face_swap"])
            gate.enroll([penny[0].read_bytes()], "Penny", status="protected")
            readings[name], stages[name] = [], []
            for path in probes:
                d = gate.check(GateRequest(
                    operation="face_swap", requester=Requester(app_id="t"),
                    images=[ImageInput(role="target", data=path.read_bytes())]))
                readings[name].append((d.verdict, d.faces[0].identity if d.faces else None,
                                       str(d.faces[0].subject_status) if d.faces else ""))
                stages[name].append(set(d.latency_ms))
        finally:
            gate.close()
    assert readings["band"] == readings["always"]
    assert any("embed_mirror" not in s for s in stages["band"])  # some faces skip it
    assert all("embed_mirror" not in s for s in stages["always"])  # one batch, no extra
    assert any(v == "allow" for v, _, _ in readings["band"])
    assert any(v == "deny" for v, _, _ in readings["band"])


def test_a_stranger_is_checked_without_a_mirror(tmp_path: Path, faces_dir: Path) -> None:
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    ben = _photos(faces_dir, "natural_small", "ben_afflek", 3)
    stranger = _photos(faces_dir, "glint24", _identities(faces_dir)[0], 1)[0]
    gate = FaceGate.open(tmp_path / "g", analysis_cache_items=0)
    try:
        gate.enroll([p.read_bytes() for p in ben], "Ben", status="protected")
        d = gate.check(GateRequest(operation="face_swap", requester=Requester(app_id="t"),
                                   images=[ImageInput(role="target",
                                                      data=stranger.read_bytes())]))
        assert d.faces and d.faces[0].identity == "unknown"
        assert "embed_mirror" not in d.latency_ms
    finally:
        gate.close()


def test_faces_embedded_early_on_a_spare_core_read_the_same(tmp_path: Path,
                                                            faces_dir: Path) -> None:
    """Embedding the detector's faces on a spare core during the orientation check
    (``parallel_passes``) changes no reading, upright or turned."""
    import cv2

    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    ben = _photos(faces_dir, "natural_small", "ben_afflek", 6)
    probes = [p.read_bytes() for p in ben[3:]]
    turned = [cv2.imencode(".png", cv2.rotate(_read(p), cv2.ROTATE_180))[1].tobytes()
              for p in ben[3:5]]
    seen: dict[bool, list[tuple[str, str | None, float | None]]] = {}
    for parallel in (True, False):
        gate = FaceGate.open(tmp_path / str(parallel), parallel_passes=parallel,
                             analysis_cache_items=0)
        try:
            early = gate.faces._early is not None
            assert early is parallel
            gate.grant(gate.enroll([p.read_bytes() for p in ben[:3]], "Ben",
                                   status="consenting").subject_id,
                       app_id="t", operations=["face_swap"])
            seen[parallel] = []
            for data in (*probes, *turned):
                d = gate.check(GateRequest(operation="face_swap",
                                           requester=Requester(app_id="t"),
                                           images=[ImageInput(role="target", data=data)]))
                seen[parallel] += [(d.verdict, f.identity, f.similarity) for f in d.faces]
        finally:
            gate.close()
    assert seen[True] == seen[False]
    assert any(v == "allow" for v, _, _ in seen[True])


def test_zoomed_views_complete_to_the_enrolment_vector(tmp_path: Path,
                                                       faces_dir: Path) -> None:
    """On real photos: a check embeds the crop alone, and completing it with the deferred
    mirror and zoomed views (``FaceAnalyzer.completed``) gives exactly the vector an
    enrolment makes of the same picture; the zoomed views move that vector."""
    from gate.engine import FaceGate

    photos = _photos(faces_dir, "natural_small", "ben_afflek", 3)
    vectors: dict[str, list[np.ndarray]] = {}
    for name, zooms in (("zooms", Settings().zoom_views), ("flip only", ())):
        gate = FaceGate.open(tmp_path / name.replace(" ", "_"), analysis_cache_items=0,
                             zoom_views=zooms)
        try:
            assert gate.faces.zooms == tuple(zooms)
            vectors[name] = []
            for path in photos:
                [analysis] = gate.faces.analyse([path.read_bytes()])
                face = max(analysis.faces, key=lambda f: f.size_px)
                assert face.mirror_deferred and len(face.views) == 1 + len(zooms)
                completed = gate.faces.completed([face])[0]
                enrolled = gate.faces.largest_face(path.read_bytes())
                assert enrolled is not None and not enrolled.views
                assert float(completed @ enrolled.vector) > 0.9999
                vectors[name].append(enrolled.vector)
        finally:
            gate.close()
    assert Settings().zoom_views
    for with_zooms, flip_only in zip(vectors["zooms"], vectors["flip only"], strict=True):
        assert 0.9 < float(with_zooms @ flip_only) < 0.9999
