"""A protected face on screen for one second of a 60-second clip is found."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester

pytestmark = pytest.mark.real
av = pytest.importorskip("av")


def clip_with_cameo(face_bgr: np.ndarray, *, seconds: int = 60, fps: int = 4,
                    cameo: tuple[int, int] = (120, 123)) -> bytes:
    buf = io.BytesIO()
    container = av.open(buf, mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    rng = np.random.default_rng(3)
    background = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (31, 31), 0)
    face = cv2.resize(face_bgr, (150, 150))
    for i in range(seconds * fps):
        image = background.copy()
        if cameo[0] <= i <= cameo[1]:
            image[45:195, 85:235] = face
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[FaceGate]:
    g = FaceGate.open(tmp_path)
    yield g
    g.close()


def test_one_second_cameo_of_a_protected_person_is_denied(gate: FaceGate,
                                                          faces_dir: Path) -> None:
    photos = sorted((faces_dir / "natural_small" / "madonna").iterdir())
    subject = gate.enroll([photos[0].read_bytes()], display_name="M", status="protected")
    video = clip_with_cameo(cv2.imread(str(photos[2])))
    d = gate.check(GateRequest(operation="video_face_swap", requester=Requester(app_id="a"),
                               images=[ImageInput(role="target", data=video)]))
    assert d.verdict == "deny"
    hits = [f for f in d.faces if f.subject_id == subject.subject_id]
    assert hits and all(120 <= f.frame_index <= 123 for f in hits)
    assert "core.protected_subject" in d.rule_ids


def test_video_without_faces_on_video_face_swap_is_refused(gate: FaceGate) -> None:
    video = clip_with_cameo(np.full((10, 10, 3), 80, np.uint8), seconds=4, cameo=(-1, -1))
    d = gate.check(GateRequest(operation="video_face_swap", requester=Requester(app_id="a"),
                               images=[ImageInput(role="target", data=video)]))
    assert d.verdict == "deny" and d.rule_ids == ["face_operation.no_face"]
