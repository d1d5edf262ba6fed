"""The small-face second look (``small_face_second_look_px``) with scripted detectors:
which faces get one, on what patch, how many per image, and that the landmarks come from
the patch. On real photos: ``test_second_look_moves_a_small_face_s_landmarks`` in
tests/real/test_robust_detection.py."""

from __future__ import annotations

import numpy as np
import pytest

from gate.settings import Settings
from gate.vision.detect import Detection, FakeDetector
from gate.vision.robust import OrientationRobustDetector
from tests.conftest import template_face

IMAGE = np.full((640, 640, 3), 90, dtype=np.uint8)


def _face(centre: tuple[float, float], side: float, score: float = 0.8,
          shift: float = 0.0) -> Detection:
    """An upright face ``side`` px wide (``template_face``)."""
    face: Detection = template_face(centre, side / 112.0, score, shift)
    return face


class _Base:
    """The upright pass reports ``faces``; the checker (the second look's detector)
    finds one centred face in a patch, its landmarks 1 px right of the template (so a
    refined face is told apart from the original)."""

    def __init__(self, faces: list[Detection]) -> None:
        self.faces = faces
        self.patches: list[tuple[int, int]] = []
        self.upright = FakeDetector(lambda image: list(self.faces))
        self.checker = FakeDetector(self._patch)

    def _patch(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        self.patches.append((h, w))
        return [_face((w / 2, h / 2), w / 3.0, 0.9, shift=1.0)]


def _detector(base: _Base, below_px: float) -> OrientationRobustDetector:
    return OrientationRobustDetector(base.upright, probe=FakeDetector(lambda _: []),
                                     checker=base.checker, checker_px=320,
                                     check_orientation=False, second_look_below_px=below_px)


def test_a_small_face_is_looked_at_again_by_the_checker_in_a_320_px_patch() -> None:
    small = _face((200.0, 200.0), 30.0)
    base = _Base([small])
    [det] = _detector(base, 48).detect(IMAGE)
    assert base.patches == [(320, 320)]
    # The landmarks are the patch's, mapped back: moved from the original, same face.
    moved = np.abs(det.landmarks_array() - small.landmarks_array())
    assert moved.max() > 0.01
    assert moved.max() < 1.0  # 1 patch px is a third of a face-template px here
    assert det.score == pytest.approx(0.9)


def test_faces_at_or_above_the_size_and_the_setting_off_get_no_second_look() -> None:
    base = _Base([_face((200.0, 200.0), 60.0)])
    _detector(base, 48).detect(IMAGE)
    assert base.patches == []
    base = _Base([_face((200.0, 200.0), 30.0)])
    [det] = _detector(base, 0).detect(IMAGE)
    assert base.patches == []
    assert det == base.faces[0]


def test_a_crowd_of_tiny_faces_gets_a_bounded_number_of_second_looks() -> None:
    faces = [_face((40.0 + 45 * i, 300.0), 30.0) for i in range(12)]
    base = _Base(faces)
    detector = _detector(base, 48)
    found = detector.detect(IMAGE)
    assert len(found) == 12
    assert len(base.patches) == detector.second_look_max_faces == 8
    assert found[8:] == faces[8:]  # the rest keep the upright pass's landmarks


def test_the_second_look_is_on_by_default_below_40_px() -> None:
    assert Settings().small_face_second_look_px == 40
