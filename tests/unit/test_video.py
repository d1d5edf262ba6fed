"""Bounded video decoding: sampling, scene cuts, limits, corrupt streams."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gate.errors import ImageTooLarge, InvalidImage
from gate.imaging.video import VideoLimits, decode_video, is_video

av = pytest.importorskip("av")


def make_video(seconds: float = 10.0, fps: int = 4, size: tuple[int, int] = (160, 120),
               flash: tuple[int, int] | None = None, fmt: str = "mp4") -> bytes:
    """Grey frames; frames in ``flash`` (first, last index) are bright white."""
    buf = io.BytesIO()
    container = av.open(buf, mode="w", format=fmt)
    stream = container.add_stream("libx264" if fmt == "mp4" else "libvpx-vp9", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for i in range(int(seconds * fps)):
        value = 250 if flash and flash[0] <= i <= flash[1] else 60
        frame = av.VideoFrame.from_ndarray(
            np.full((size[1], size[0], 3), value, np.uint8), format="bgr24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


def test_samples_every_half_second() -> None:
    data = make_video(seconds=10, fps=4)
    assert is_video(data)
    decoded = decode_video(data)
    assert decoded.format == "MP4" and decoded.frame_count == 40
    assert len(decoded.frames) == 20
    assert all(f.pixels.shape == (120, 160, 3) for f in decoded.frames)


def test_a_short_flash_between_samples_is_caught_by_the_scene_cut() -> None:
    data = make_video(seconds=20, fps=4, flash=(13, 13))  # 0.25 s at t=3.25 s
    decoded = decode_video(data, VideoLimits(sample_every_s=5.0))
    flashed = [f for f in decoded.frames if f.pixels.mean() > 200]
    assert [f.index for f in flashed] == [13]


def test_long_videos_widen_the_interval_but_keep_the_tail() -> None:
    data = make_video(seconds=60, fps=2)
    decoded = decode_video(data, VideoLimits(max_sampled_frames=30))
    assert len(decoded.frames) <= 30
    assert decoded.frames[-1].index >= 110  # the last seconds are sampled too


@pytest.mark.parametrize(("limits", "error"), [
    (VideoLimits(max_duration_s=5.0), ImageTooLarge),
    (VideoLimits(max_decoded_frames=10), ImageTooLarge),
    (VideoLimits(max_side_px=100), ImageTooLarge),
    (VideoLimits(max_bytes=1000), ImageTooLarge),
])
def test_limits(limits: VideoLimits, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_video(make_video(seconds=10, fps=4), limits)


def test_corrupt_and_truncated_videos_are_invalid() -> None:
    data = make_video(seconds=4, fps=4)
    for bad in (data[: len(data) // 3], data[:32] + bytes(2000), b"\x00\x00\x00\x18ftypmp42"):
        with pytest.raises(InvalidImage):
            decode_video(bad)
    with pytest.raises(InvalidImage):
        decode_video(b"\x89PNG\r\n\x1a\n")


def test_webm_is_accepted() -> None:
    decoded = decode_video(make_video(seconds=2, fps=4, fmt="webm"))
    assert decoded.format == "WEBM" and len(decoded.frames) == 4
