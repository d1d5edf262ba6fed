"""Orientation-robust detection on real photos: turned faces are found and re-detected
upright, so their landmarks (and so their embeddings) are as good as an upright face's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from gate.factory import build_embedder, build_robust_detector
from gate.imaging.resize import shrink
from gate.settings import Settings
from gate.vision.align import norm_crop
from gate.vision.detect import Detection
from gate.vision.embed import FaceEmbedder
from gate.vision.robust import OrientationRobustDetector, roll_degrees

pytestmark = pytest.mark.real

IDENTITIES = ("John_Salley", "John_Savage", "John_Schneider", "John_Shimkus", "John_Simm",
              "ben_afflek", "bbt_amy", "bbt_penny")


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(image, matrix, (nw, nh))


def _largest(dets: list[Detection]) -> Detection:
    assert dets, "no face found"
    return max(dets, key=lambda d: d.size_px)


def _vector(embedder: FaceEmbedder, image: np.ndarray, det: Detection) -> np.ndarray:
    return embedder.embed([norm_crop(image, det.landmarks_array())])[0]


def _photo(detector: OrientationRobustDetector, embedder: FaceEmbedder, faces_dir: Path,
           identity: str) -> tuple[np.ndarray, Detection, np.ndarray]:
    """The identity's first natural_small photo, its largest face, and that face's vector
    (the reference a transformed copy is compared with)."""
    import cv2

    path = sorted((faces_dir / "natural_small" / identity).iterdir())[0]
    photo = cv2.imread(str(path))
    face = _largest(detector.detect(photo))
    return photo, face, _vector(embedder, photo, face)


@contextmanager
def _setting(detector: OrientationRobustDetector, name: str, value: float) -> Iterator[None]:
    """``detector.<name>`` set to ``value`` for the block, then restored."""
    before = getattr(detector, name)
    setattr(detector, name, value)
    try:
        yield
    finally:
        setattr(detector, name, before)


@pytest.fixture(scope="module")
def parts() -> tuple[OrientationRobustDetector, FaceEmbedder]:
    settings = Settings()
    detector = build_robust_detector(settings)
    assert isinstance(detector, OrientationRobustDetector)
    return detector, build_embedder(settings)


@pytest.mark.parametrize("degrees", [30, -35, 90, 180])
def test_turned_faces_are_refined_to_upright_quality(
        parts: tuple[OrientationRobustDetector, FaceEmbedder], faces_dir: Path,
        degrees: int) -> None:
    detector, embedder = parts
    refined_sims, loose_sims = [], []
    for identity in IDENTITIES:
        upright, first, reference = _photo(detector, embedder, faces_dir, identity)
        turned = _rotate(upright, degrees)
        face = _largest(detector.detect(turned))
        # cv2 turns counter-clockwise for positive angles: the eye line turns the other way
        expected = roll_degrees(first) - degrees
        assert abs((roll_degrees(face) - expected + 180) % 360 - 180) < 12, identity
        refined_sims.append(float(reference @ _vector(embedder, turned, face)))
        # Refinement off: the first detection's landmarks.
        with _setting(detector, "refine_roll_degrees", 400.0):
            loose = _largest(detector.detect(turned))
        loose_sims.append(float(reference @ _vector(embedder, turned, loose)))
    # The same photo, only turned: after refinement it matches itself far above the
    # match threshold, and on average better than with the detector's first landmarks.
    assert min(refined_sims) > 0.6, refined_sims
    assert np.mean(refined_sims) >= np.mean(loose_sims) - 0.01, (refined_sims, loose_sims)


def test_second_look_moves_a_small_face_s_landmarks(
        parts: tuple[OrientationRobustDetector, FaceEmbedder], faces_dir: Path) -> None:
    """A face shrunk to ~32 px is re-detected in an upscaled patch (on by default below
    40 px): its crop then matches the full-size photo better on average than with the
    upright pass's landmarks (docs/accuracy.md, issue 17 fourth round)."""
    import cv2

    detector, embedder = parts
    assert detector.second_look_below_px == 40
    looked, first = [], []
    for identity in IDENTITIES:
        photo, face, reference = _photo(detector, embedder, faces_dir, identity)
        k = 32.0 / face.size_px
        small = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        canvas = np.full((300, 400, 3), 120, dtype=np.uint8)
        canvas[100:100 + small.shape[0], 150:150 + small.shape[1]] = small
        looked.append(float(reference @ _vector(embedder, canvas,
                                                _largest(detector.detect(canvas)))))
        with _setting(detector, "second_look_below_px", 0.0):
            plain = _largest(detector.detect(canvas))
        first.append(float(reference @ _vector(embedder, canvas, plain)))
    assert min(looked) > 0.7, looked
    assert np.mean(looked) > np.mean(first), (looked, first)


def test_shrink_halves_with_a_pyramid_then_interpolates() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1000, 1500, 3), dtype=np.uint8)
    assert shrink(image, (1500, 1000)) is image
    out = shrink(image, (640, 427))
    assert out.shape == (427, 640, 3) and out.dtype == np.uint8
    # Alias-free: a fine checkerboard shrinks to its mean grey, not to a moire pattern.
    board = (np.indices((1024, 1024)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = shrink(np.dstack([board] * 3), (300, 300))
    assert abs(float(small.mean()) - 127.5) < 2 and float(small.std()) < 3


def test_second_detector_adds_the_small_faces_yunet_misses(
        faces_dir: Path, shared_models_dir: Path, tmp_path: Path) -> None:
    """GATE_SECOND_DETECTOR=scrfd: a face YuNet misses but SCRFD finds is checked too."""
    import cv2

    from gate.engine import FaceGate
    from gate.errors import ModelUnavailable
    from gate.evaluation.transforms import TRANSFORMS, TransformContext, decode_bgr, locate_face
    from gate.types import GateRequest, ImageInput, Requester
    from gate.vision.robust import UnionDetector

    model = shared_models_dir / "insightface" / "det_2.5g.onnx"
    with pytest.raises(ModelUnavailable, match="GATE_ACCEPT_LICENSE"):
        FaceGate.open(tmp_path / "refused", second_detector="scrfd", scrfd_model=model)
    yunet = build_robust_detector(Settings())
    with FaceGate.open(tmp_path / "union", second_detector="scrfd", scrfd_model=model,
                       accept_license="noncommercial") as gate:
        union = gate.parts.detector
        assert isinstance(union, UnionDetector)
        gained = 0
        for n, path in enumerate(sorted((faces_dir / "glint24").glob("*/*"))[::7][:60]):
            data = path.read_bytes()
            face = locate_face(yunet, decode_bgr(data))
            if face is None:
                continue
            probe = TRANSFORMS["shrink32"](data, TransformContext(seed=n, face=face))
            image = decode_bgr(probe)
            mine, both = yunet.detect(image), union.detect(image)
            assert len(both) >= len(mine)  # never loses a face
            if not mine and both:
                gained += 1
                d = gate.check(GateRequest(
                    operation="img2img", requester=Requester(app_id="studio"),
                    images=[ImageInput(role="target", data=cv2.imencode(".png", image)[1]
                                       .tobytes())]))
                assert d.faces, "the face SCRFD found must reach the decision"
        assert gained >= 1


def test_passes_in_parallel_find_exactly_what_passes_in_turn_find(faces_dir: Path) -> None:
    """``parallel_passes`` only changes when the mosaic runs, never what is found."""
    import cv2

    from gate.evaluation.transforms import decode_bgr

    parallel = build_robust_detector(Settings())
    serial = build_robust_detector(Settings(parallel_passes=False))
    assert isinstance(parallel, OrientationRobustDetector) and parallel.pool is not None
    assert isinstance(serial, OrientationRobustDetector) and serial.pool is None
    checked = 0
    for identity in IDENTITIES[:4]:
        folder = faces_dir / "natural_small" / identity
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir())[:2]:
            image = decode_bgr(path.read_bytes())
            for view in (image, cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)):
                assert parallel.detect(view) == serial.detect(view)
                checked += 1
    assert checked >= 8
