"""Liveness: yaw from 5 landmarks, poses in the challenged order, distinct frames, one
identity. Scripted landmark sequences (fake detector) and real photos (real models)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from gate.consent.liveness import (
    FrameFace,
    LivenessConfig,
    analyse_burst,
    check_liveness,
    new_challenge,
    pose_of,
    verify_burst,
    yaw_ratio,
)
from gate.engine import FaceGate
from gate.pipeline import AnalysedFace
from gate.vision.align import ARCFACE_TEMPLATE
from tests.conftest import noise_png
from tests.consent.conftest import LEFT_RIGHT, RIGHT_LEFT, burst, pose_picture

CFG = LivenessConfig()


def landmarks(yaw: float, roll_deg: float = 0.0, scale: float = 2.0) -> np.ndarray:
    pts = ARCFACE_TEMPLATE.astype(np.float64) * scale
    eye_dist = pts[1, 0] - pts[0, 0]
    pts[2, 0] = (pts[0, 0] + pts[1, 0]) / 2 + yaw * eye_dist
    theta = np.radians(roll_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = pts.mean(axis=0)
    return (pts - centre) @ rot.T + centre + 50


def frame(yaw: float, person: int = 1, n: int = 0, *, faces: int = 1,
          digest: str | None = None, thumb_level: float | None = None) -> FrameFace:
    vector = np.eye(16)[person]  # people are orthogonal
    sample = AnalysedFace(frame_index=0, bbox_px=(0, 0, 100, 100),
                          landmarks_px=tuple((float(x), float(y)) for x, y in landmarks(yaw)),
                          det_score=0.9, size_px=100, quality=1.0, vector=vector)
    level = float(n * 10) if thumb_level is None else thumb_level
    return FrameFace(faces=faces, sample=sample if faces == 1 else None,
                     digest=digest or f"d{n}-{yaw}-{person}",
                     thumb=np.full((32, 32), level, dtype=np.float32))


def frames(yaws: Sequence[float], person: int = 1) -> list[FrameFace]:
    return [frame(y, person, i) for i, y in enumerate(yaws)]


@pytest.mark.parametrize("roll", [0.0, 15.0, -30.0, 90.0])
def test_yaw_ratio_is_the_nose_offset_along_the_eye_axis(roll: float) -> None:
    # (the template's nose sits 0.003 eye-distances off the eye midpoint)
    assert yaw_ratio(landmarks(0.0, roll)) == pytest.approx(0.0, abs=0.005)
    assert yaw_ratio(landmarks(0.25, roll)) == pytest.approx(0.25, abs=0.005)
    assert yaw_ratio(landmarks(-0.3, roll)) == pytest.approx(-0.3, abs=0.005)


def test_pose_classes() -> None:
    assert [pose_of(r, CFG) for r in (0.0, 0.05, 0.12, 0.2, -0.2, -0.1)] == [
        "front", "front", "between", "left", "right", "between"]


def test_challenges_start_facing_the_camera_and_turn_both_ways() -> None:
    seen = {new_challenge() for _ in range(200)}
    assert seen == {("front", "left", "right"), ("front", "right", "left")}


def test_turning_as_asked_passes() -> None:
    result = verify_burst(frames(LEFT_RIGHT), ("front", "left", "right"))
    assert result.passed, result.reasons
    assert result.poses == ("front", "front", "left", "left", "right", "right")
    assert result.frontal_indices == (0, 1)
    assert result.reference is not None


def test_intermediate_poses_may_interleave() -> None:
    result = verify_burst(frames([0.0, 0.1, 0.2, 0.1, 0.0, -0.1, -0.25]),
                          ("front", "left", "right"))
    assert result.passed, result.reasons


def test_wrong_order_fails() -> None:
    result = verify_burst(frames(RIGHT_LEFT), ("front", "left", "right"))
    assert not result.passed and "the head did not turn as asked" in result.reasons


def test_no_turn_fails() -> None:
    result = verify_burst(frames([0.0] * 6), ("front", "left", "right"))
    assert result.reasons == ("the head did not turn as asked",)


def test_replayed_frame_fails() -> None:
    fs = frames(LEFT_RIGHT)
    fs[3] = frame(0.3, 1, 2, digest=fs[2].digest)
    result = verify_burst(fs, ("front", "left", "right"))
    assert result.reasons == ("a frame was repeated (replay)",)


def test_near_identical_frames_count_once() -> None:
    fs = [frame(y, 1, i, thumb_level=0.0) for i, y in enumerate(LEFT_RIGHT)]
    result = verify_burst(fs, ("front", "left", "right"))
    assert not result.passed
    assert "the frames are (nearly) the same picture: a still image" in result.reasons


def test_another_person_mid_burst_fails() -> None:
    fs = frames(LEFT_RIGHT)
    fs[4] = frame(-0.3, 2, 4)
    result = verify_burst(fs, ("front", "left", "right"))
    assert result.reasons == ("the frames do not all show the same person",)


@pytest.mark.parametrize("count", [0, 2, 13])
def test_frame_count_bounds(count: int) -> None:
    result = verify_burst(frames([0.0] * count), ("front",))
    assert not result.passed and "frames" in result.reasons[0]


def test_every_frame_needs_exactly_one_face() -> None:
    fs = frames(LEFT_RIGHT)
    fs[1] = frame(0.0, 1, 1, faces=2)
    assert verify_burst(fs, ("front", "left", "right")).reasons == (
        "every frame must show exactly one face",)


def test_no_frontal_frame_fails() -> None:
    result = verify_burst(frames([0.3, 0.3, -0.3, -0.3]), ("left", "right"))
    assert "no frame faces the camera" in result.reasons


# -- through the gate's own detector and embedder (scripted poses) ----------------------
def test_pose_gate_burst_passes_and_fails(pose_gate: FaceGate) -> None:
    ok = check_liveness(pose_gate.faces, burst(3, LEFT_RIGHT), ("front", "left", "right"))
    assert ok.passed, ok.reasons
    still = check_liveness(pose_gate.faces, [pose_picture(3, 0.0)] * 4, ("front", "left", "right"))
    assert still.reasons == ("a frame was repeated (replay)",)
    mixed = burst(3, LEFT_RIGHT)
    mixed[5] = pose_picture(4, -0.3, frame=9)
    assert check_liveness(pose_gate.faces, mixed, ("front", "left", "right")).reasons == (
        "the frames do not all show the same person",)


def test_single_still_photo_fails_on_fake_gate(fake_gate: FaceGate) -> None:
    photo = noise_png(5)
    result = check_liveness(fake_gate.faces, [photo, photo, photo], ("front", "left", "right"))
    assert not result.passed and result.reasons == ("a frame was repeated (replay)",)
    analysed = analyse_burst(fake_gate.faces, [noise_png(5), noise_png(6), noise_png(7)])
    assert all(f.faces == 1 for f in analysed)


# -- real photos, real models -------------------------------------------------------------
def _jpeg(data: bytes, quality: int, *, mirror: bool = False, shift: int = 0) -> bytes:
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if mirror:
        img = ImageOps.mirror(img)
    if shift:
        img = img.crop((shift, shift, img.width - shift, img.height - shift))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceGate]:
    gate = FaceGate.open(tmp_path_factory.mktemp("liveness-real"))
    yield gate
    gate.close()


@pytest.fixture(scope="module")
def obama(faces_dir: Path) -> dict[str, bytes]:
    folder = faces_dir / "natural_small" / "obama"
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.real
def test_real_still_photo_replayed_fails(real_gate: FaceGate, obama: dict[str, bytes]) -> None:
    photo = obama["obama.jpg"]
    result = check_liveness(real_gate.faces, [photo] * 4, ("front", "left", "right"))
    assert result.reasons == ("a frame was repeated (replay)",)


@pytest.mark.real
def test_real_still_photo_reencoded_or_moved_fails(real_gate: FaceGate,
                                                   obama: dict[str, bytes]) -> None:
    photo = obama["obama.jpg"]
    reencoded = [_jpeg(photo, q) for q in (95, 90, 85, 80)]
    result = check_liveness(real_gate.faces, reencoded, ("front", "left", "right"))
    assert not result.passed
    assert "the head did not turn as asked" in result.reasons
    assert "the frames are (nearly) the same picture: a still image" in result.reasons
    moved = [_jpeg(photo, 92, shift=s) for s in (0, 6, 12, 18)]  # a printout moved about
    result = check_liveness(real_gate.faces, moved, ("front", "right", "left"))
    assert not result.passed and "the head did not turn as asked" in result.reasons


@pytest.mark.real
def test_real_yaw_sign_and_mirror(real_gate: FaceGate, obama: dict[str, bytes]) -> None:
    def yaw(data: bytes) -> float:
        faces = real_gate.faces.analyse_still(data).faces
        assert len(faces) == 1
        return yaw_ratio(np.asarray(faces[0].landmarks_px))

    # obama1.jpg: he turns to his own left (nose towards the image's right)
    turned = yaw(obama["obama1.jpg"])
    assert pose_of(turned, CFG) == "left"
    assert pose_of(yaw(_jpeg(obama["obama1.jpg"], 95, mirror=True)), CFG) == "right"
    assert yaw(_jpeg(obama["obama1.jpg"], 95, mirror=True)) == pytest.approx(-turned, abs=0.1)
    assert pose_of(yaw(obama["obama.jpg"]), CFG) == "front"
    assert pose_of(yaw(obama["obama2.jpg"]), CFG) == "right"


@pytest.mark.real
def test_real_photos_in_the_asked_poses_pass_documented_limit(
        real_gate: FaceGate, obama: dict[str, bytes]) -> None:
    """Three different photos of one person, in the poses asked, pass: liveness is a
    speed bump against a single stolen photo, not against a set of them or a video."""
    shots = [obama["obama.jpg"], obama["obama1.jpg"], obama["obama2.jpg"]]
    result = check_liveness(real_gate.faces, shots, ("front", "left", "right"))
    assert result.passed, result.reasons
    wrong_order = check_liveness(real_gate.faces, shots, ("front", "right", "left"))
    assert "the head did not turn as asked" in wrong_order.reasons
