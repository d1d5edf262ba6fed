"""Bounded video decoding (MP4, MOV, WebM) for ``video_face_swap`` and friends.

Frames are sampled every ``sample_every_s`` seconds *and* whenever the picture changes
sharply (a scene cut), so a protected face that is on screen for one second of a long clip
is still checked. Every bound is explicit: bytes, dimensions, duration, decoded frames,
sampled frames and wall-clock time; a stream that exceeds one, or that cannot be decoded,
is an ``InvalidImage`` (never a partial "allow"). Decoding uses PyAV (FFmpeg).
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gate.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from gate.imaging.decode import DecodedImage, Frame, sniff_format

VIDEO_FORMATS = frozenset({"MP4", "MOV", "WEBM"})


@dataclass(frozen=True, slots=True)
class VideoLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_side_px: int = 4096
    max_duration_s: float = 600.0
    max_decoded_frames: int = 36_000  # a bound on work even if timestamps lie
    max_sampled_frames: int = 240
    sample_every_s: float = 0.5
    scene_change: float = 0.2  # mean absolute difference of 32x32 grey thumbnails, 0..1
    target_side_px: int = 1280
    max_decode_s: float = 60.0


def is_video(data: bytes) -> bool:
    return sniff_format(data) in VIDEO_FORMATS


def decode_video(data: bytes, limits: VideoLimits = VideoLimits()) -> DecodedImage:
    """Sampled frames of a video as a ``DecodedImage`` (``frame_count`` = decoded frames)."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge("video exceeds the byte limit")
    fmt = sniff_format(data)
    if fmt not in VIDEO_FORMATS:
        raise InvalidImage("not a supported video (MP4, MOV or WebM)")
    try:
        import av
    except ImportError as exc:
        raise UnsupportedMediaType("video input needs the video extra: pip install "
                                   "'consent-gate[video]'") from exc
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:
        raise InvalidImage("video is corrupt or not decodable") from exc
    try:
        return _sample(container, data, fmt or "MP4", limits)
    except (ImageTooLarge, InvalidImage):
        raise
    except Exception as exc:
        raise InvalidImage("video is corrupt or not decodable") from exc
    finally:
        container.close()


def _sample(container: Any, data: bytes, fmt: str, limits: VideoLimits) -> DecodedImage:
    if not container.streams.video:
        raise InvalidImage("video has no video stream")
    stream = container.streams.video[0]
    width, height = int(stream.width or 0), int(stream.height or 0)
    if width <= 0 or height <= 0:
        raise InvalidImage("video has no picture size")
    if max(width, height) > limits.max_side_px:
        raise ImageTooLarge("video dimensions exceed the limit")
    duration = container.duration / 1_000_000 if container.duration else None
    if duration is not None and duration > limits.max_duration_s:
        raise ImageTooLarge("video is longer than the limit")
    interval = limits.sample_every_s
    if duration is not None:  # long clips: widen the interval, never drop the tail
        interval = max(interval, duration / limits.max_sampled_frames)
    scale = min(1.0, limits.target_side_px / max(width, height))
    out_w, out_h = max(2, round(width * scale)), max(2, round(height * scale))
    started = time.monotonic()
    frames: list[Frame] = []
    previous: np.ndarray | None = None
    next_t, decoded = 0.0, 0
    fps = float(stream.average_rate or 25)
    for frame in container.decode(stream):
        decoded += 1
        if decoded > limits.max_decoded_frames:
            raise ImageTooLarge("video has too many frames")
        if time.monotonic() - started > limits.max_decode_s:
            raise ImageTooLarge("video took too long to decode")
        t = float(frame.time) if frame.time is not None else (decoded - 1) / fps
        if t > limits.max_duration_s:
            raise ImageTooLarge("video is longer than the limit")
        thumb = frame.reformat(width=32, height=32, format="gray").to_ndarray()
        cut = previous is not None and float(
            np.mean(np.abs(thumb.astype(np.int16) - previous))) / 255 > limits.scene_change
        previous = thumb.astype(np.int16)
        if t + 1e-6 >= next_t or cut:
            if len(frames) >= limits.max_sampled_frames:
                raise ImageTooLarge("video needs more sampled frames than the limit")
            pixels = frame.reformat(width=out_w, height=out_h, format="bgr24").to_ndarray()
            frames.append(Frame(np.ascontiguousarray(pixels), decoded - 1, scale))
            if t + 1e-6 >= next_t:
                next_t = t + interval
    if not frames:
        raise InvalidImage("video has no decodable frame")
    return DecodedImage(frames=tuple(frames), format=fmt, width=width, height=height,
                        frame_count=decoded, sha256=hashlib.sha256(data).hexdigest())
