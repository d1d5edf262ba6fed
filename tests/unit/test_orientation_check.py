"""The orientation check's geometry with scripted detectors (real photos:
tests/real/test_recognition_research.py): turned cells map back to the image, the most
confident orientation wins, overlapping faces merge."""

from __future__ import annotations

import numpy as np
import pytest

from gate.vision.detect import Detection, FakeDetector
from gate.vision.robust import (
    OrientationRobustDetector,
    _merge_same_faces,
    _unrotate,
    roll_degrees,
)
from tests.conftest import template_face as _face

CELL = 160


@pytest.mark.parametrize("rotation", [0, 1, 2, 3])
def test_points_in_a_turned_cell_map_back(rotation: int) -> None:
    import cv2

    codes = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cell = np.zeros((CELL, CELL), dtype=np.uint8)
    cell[37, 101] = 255  # y, x
    code = codes[rotation]
    turned = cell if code is None else cv2.rotate(cell, code)
    v, u = np.argwhere(turned == 255)[0]
    back = _unrotate(np.array([[u, v]], dtype=np.float64), rotation, CELL)
    assert back[0] == pytest.approx([101, 37])


def _checker(cells: dict[int, float]) -> FakeDetector:
    """A detector on the check's 320 px canvas that finds, for the first face, an upright
    face in each turned cell ``r`` of ``cells`` with that score."""
    def script(canvas: np.ndarray) -> list[Detection]:
        assert canvas.shape[:2] == (2 * CELL, 2 * CELL)
        k = CELL / (112.0 * 2.5)  # the cell's template scale (orient_context 2.5)
        return [_face(((r % 2) * CELL + CELL / 2, (r // 2) * CELL + CELL / 2), k, score)
                for r, score in cells.items()]
    return FakeDetector(script)


def _detector(cells: dict[int, float]) -> OrientationRobustDetector:
    return OrientationRobustDetector(FakeDetector(lambda _: []), checker=_checker(cells),
                                     checker_px=2 * CELL)


IMAGE = np.full((640, 640, 3), 90, dtype=np.uint8)
FOUND = _face((300.0, 260.0), 1.5, 0.8)  # the upright pass reports upright landmarks


def test_a_more_confident_upside_down_cell_turns_the_landmarks() -> None:
    [det] = _detector({0: 0.70, 2: 0.95})._orient(IMAGE, [FOUND])
    assert abs(roll_degrees(FOUND)) < 1
    assert abs(roll_degrees(det)) > 179  # the same face, upside down
    assert det.score == pytest.approx(0.95)
    # Its box is where the face is (the cell's centre maps back to the face's, within
    # one cell pixel: 2.6 image pixels here).
    x1, y1, x2, y2 = det.bbox
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((300.0, 260.0), abs=3.0)


@pytest.mark.parametrize(("rotation", "roll"), [(1, -90), (3, 90)])
def test_quarter_turns(rotation: int, roll: float) -> None:
    [det] = _detector({rotation: 0.9})._orient(IMAGE, [FOUND])
    assert roll_degrees(det) == pytest.approx(roll, abs=1)


def test_the_faces_own_orientation_wins_a_tie_or_when_nothing_else_is_found() -> None:
    assert _detector({0: 0.9, 2: 0.9})._orient(IMAGE, [FOUND]) == [FOUND]
    assert _detector({})._orient(IMAGE, [FOUND]) == [FOUND]


def test_overlapping_faces_merge_to_the_most_confident() -> None:
    a = _face((100.0, 100.0), 1.0, 0.7)
    b = _face((104.0, 98.0), 1.0, 0.9)  # the same face found twice
    c = _face((400.0, 100.0), 1.0, 0.6)  # another face
    assert _merge_same_faces([a, b, c], 0.3) == [b, c]


def test_spare_cores_never_queue_and_free_their_thread() -> None:
    """A busy spare thread makes the caller do the work itself; a finished (or failed)
    job frees it again."""
    import threading

    from gate.vision.robust import SpareCores

    spare = SpareCores(1)
    release = threading.Event()

    def slow(_: np.ndarray) -> list[Detection]:
        release.wait(5)
        return []

    def boom(_: np.ndarray) -> list[Detection]:
        raise RuntimeError("model failed")

    first = spare.try_submit(slow, np.zeros(1))
    assert first is not None
    assert spare.try_submit(slow, np.zeros(1)) is None  # busy: no queueing
    release.set()
    assert first.result(5) == []
    failing = None
    for _ in range(100):  # the done-callback frees the thread right after the result
        failing = spare.try_submit(boom, np.zeros(1))
        if failing is not None:
            break
        threading.Event().wait(0.01)
    assert failing is not None
    with pytest.raises(RuntimeError):
        failing.result(5)


def test_spare_cores_stay_idle_while_every_core_has_a_check() -> None:
    from gate.vision.robust import SpareCores

    spare = SpareCores(1, cores=2)

    def work(_: np.ndarray) -> list[Detection]:
        return []

    with spare.running():
        job = spare.try_submit(work, np.zeros(1))  # one check, two cores: a core idles
        assert job is not None and job.result(5) == []
        with spare.running():  # a second check is detecting: no core is spare
            assert spare.try_submit(work, np.zeros(1)) is None
