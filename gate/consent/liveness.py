"""Active liveness for self-enrolment and consent: "turn your head left, then right".

From a short burst of frames: the head pose (yaw) of each frame is estimated from the 5
detector landmarks (the nose's offset from the eye midpoint, along the eye axis, relative
to the eye distance); the burst must pass through the challenged poses in order; frames
must differ (a replayed frame or a single still photo fails); and every frame must show
the same person (embedding similarity to the frontal frames).

This is a speed bump, not anti-spoofing: a video replay of the person turning their head,
a set of photos of them in those poses, or a mask defeats it (see docs/consent.md).

Sign convention: ``yaw_ratio > 0`` when the nose sits towards the image's right. In an
unmirrored camera frame that is the person turning to *their own left*, so the pose is
``left``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from gate.errors import EnrollmentError
from gate.identity.selection import DEFAULT_TEMPLATES, Candidate, select_templates
from gate.pipeline import AnalysedFace

if TYPE_CHECKING:
    from gate.consent.lifecycle import FaceReader

Pose = Literal["front", "left", "right", "between"]
CHALLENGES: tuple[tuple[Pose, ...], ...] = (("front", "left", "right"),
                                            ("front", "right", "left"))


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """Thresholds of the liveness check (``yaw`` ratios are unitless, see module doc)."""

    front_max: float = 0.08  # |yaw ratio| at most this: facing the camera
    turn_min: float = 0.16  # |yaw ratio| at least this: head turned
    min_frames: int = 3
    max_frames: int = 12
    #: Cosine similarity every frame must reach against the frontal reference. Turned
    #: faces match less well than frontal ones, hence lower than the gate's threshold.
    same_person_min: float = 0.30
    #: Mean absolute difference (0..255) of 32x32 grey thumbnails below which two frames
    #: count as the same picture.
    min_change: float = 1.5


@dataclass(frozen=True, slots=True)
class FrameFace:
    """What liveness needs from one frame of a burst."""

    faces: int  # faces found in the frame
    sample: AnalysedFace | None  # the face, when exactly one was found
    digest: str  # sha256 of the decoded pixels (not the file bytes)
    thumb: np.ndarray  # 32x32 grey thumbnail of the whole frame, float32


@dataclass(frozen=True, slots=True)
class LivenessResult:
    passed: bool
    reasons: tuple[str, ...]
    poses: tuple[Pose, ...]
    #: Mean template of the frontal frames (L2-normalised); None when it failed early.
    reference: np.ndarray | None = field(default=None, repr=False)
    #: Positions (in the burst) of the frames facing the camera.
    frontal_indices: tuple[int, ...] = ()
    #: Positions of the frames enrolment keeps as templates (``enrolment_frames``): the
    #: best face, then the frames that add the most variety; empty when it failed early.
    enrol_indices: tuple[int, ...] = ()


def yaw_ratio(landmarks: np.ndarray) -> float:
    """Nose offset from the eye midpoint, along the eye axis, over the eye distance."""
    pts = np.asarray(landmarks, dtype=np.float64)
    eye_a, eye_b, nose = pts[0], pts[1], pts[2]
    axis = eye_b - eye_a
    dist = float(np.linalg.norm(axis))
    if dist < 1e-6:
        return 0.0
    return float(np.dot(nose - (eye_a + eye_b) / 2, axis / dist) / dist)


def pose_of(ratio: float, config: LivenessConfig) -> Pose:
    if abs(ratio) <= config.front_max:
        return "front"
    if ratio >= config.turn_min:
        return "left"
    if ratio <= -config.turn_min:
        return "right"
    return "between"


def new_challenge() -> tuple[Pose, ...]:
    return CHALLENGES[secrets.randbelow(len(CHALLENGES))]


def _follows(poses: Sequence[Pose], challenge: Sequence[Pose]) -> bool:
    """True when ``challenge`` appears in ``poses`` in order (other poses may interleave)."""
    it = iter(poses)
    return all(any(p == wanted for p in it) for wanted in challenge)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def verify_burst(frames: Sequence[FrameFace], challenge: Sequence[Pose],
                 config: LivenessConfig | None = None) -> LivenessResult:
    """Judge a burst against a challenge. Pure: no I/O, no state."""
    cfg = config or LivenessConfig()
    if not cfg.min_frames <= len(frames) <= cfg.max_frames:
        return LivenessResult(False, (f"send {cfg.min_frames}-{cfg.max_frames} frames",), ())
    if any(f.faces != 1 or f.sample is None for f in frames):
        return LivenessResult(False, ("every frame must show exactly one face",), ())
    if len({f.digest for f in frames}) != len(frames):
        return LivenessResult(False, ("a frame was repeated (replay)",), ())
    kept = [0]  # positions of frames that differ from the previous kept one
    for i in range(1, len(frames)):
        if float(np.mean(np.abs(frames[i].thumb - frames[kept[-1]].thumb))) >= cfg.min_change:
            kept.append(i)
    samples = [s for s in (frames[i].sample for i in kept) if s is not None]
    poses = tuple(pose_of(yaw_ratio(np.asarray(s.landmarks_px)), cfg) for s in samples)
    reasons: list[str] = []
    if len(kept) < cfg.min_frames:
        reasons.append("the frames are (nearly) the same picture: a still image")
    if not _follows(poses, challenge):
        reasons.append("the head did not turn as asked")
    front_at = tuple(i for i, p in zip(kept, poses, strict=True) if p == "front")
    frontal = [s.vector for s, p in zip(samples, poses, strict=True) if p == "front"]
    if not frontal:
        return LivenessResult(False, (*reasons, "no frame faces the camera"), poses)
    reference = _unit(np.mean(np.stack(frontal), axis=0))
    sims = [float(np.dot(_unit(s.vector), reference)) for s in samples]
    if min(sims) < cfg.same_person_min:
        reasons.append("the frames do not all show the same person")
    return LivenessResult(not reasons, tuple(reasons), poses, reference, front_at,
                          tuple(enrolment_frames(frames)))


def enrolment_frames(frames: Sequence[FrameFace], k: int = DEFAULT_TEMPLATES) -> list[int]:
    """Positions of the burst frames to enrol from: at most ``k``, the best-quality face
    first, then the frames that add the most variety (``select_templates``); never a
    near copy of a kept frame. Falls back to the first usable frame."""
    usable = [(i, f.sample) for i, f in enumerate(frames) if f.sample is not None]
    candidates = [Candidate(quality=sample.quality,
                            yaw_ratio=yaw_ratio(np.asarray(sample.landmarks_px)),
                            vector=sample.vector) for _, sample in usable]
    chosen = select_templates(candidates, k, min_quality=0.3)
    return [usable[i][0] for i in chosen] or [i for i, _ in usable[:1]]


# -- analysis of a burst with the gate's own pipeline -------------------------------------
def analyse_burst(faces: FaceReader, frames: Sequence[bytes],
                  config: LivenessConfig | None = None, *, min_face_px: int = 24
                  ) -> list[FrameFace]:
    cfg = config or LivenessConfig()
    if not cfg.min_frames <= len(frames) <= cfg.max_frames:
        raise EnrollmentError(f"send {cfg.min_frames}-{cfg.max_frames} frames")
    out = []
    for i, data in enumerate(frames):
        still = faces.analyse_still(data, what=f"frame {i}")
        sample = still.faces[0] if len(still.faces) == 1 else None
        if sample is not None and sample.size_px < min_face_px:
            sample = None
        out.append(FrameFace(faces=len(still.faces), sample=sample, digest=still.pixel_digest,
                             thumb=still.thumb))
    return out


def check_liveness(faces: FaceReader, frames: Sequence[bytes], challenge: Sequence[Pose],
                   config: LivenessConfig | None = None, *, min_face_px: int = 24
                   ) -> LivenessResult:
    """Analyse a burst with the gate's pipeline and judge it against ``challenge``."""
    return verify_burst(analyse_burst(faces, frames, config, min_face_px=min_face_px),
                        challenge, config)
