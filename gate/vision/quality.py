"""Face quality: can this face be identified? (size, sharpness, pose, detector score)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gate.vision.detect import Detection


@dataclass(frozen=True, slots=True)
class Quality:
    score: float  # 0..1, geometric mean of the parts below
    size: float
    sharpness: float
    frontal: float
    detector: float


def face_quality(det: Detection, aligned_bgr: np.ndarray,
                 aligned_landmarks: np.ndarray | None = None) -> Quality:
    """Score a face from its box, landmarks and aligned crop.

    - size: 0 at 16 px, 1 from 64 px (shorter side of the box);
    - sharpness: Laplacian variance of the aligned grey crop, 1 from 120;
    - frontal: how centred the nose is between the eyes (profile faces score low),
      measured on the aligned landmarks so an upside-down or rotated face is judged
      by its pose, not by its orientation in the photo;
    - detector: the detector's confidence.
    """
    import cv2

    size = float(np.clip((det.size_px - 16.0) / 48.0, 0.0, 1.0))
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    lap_var = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    sharpness = float(np.clip(lap_var / 120.0, 0.0, 1.0))
    pts = det.landmarks_array() if aligned_landmarks is None else aligned_landmarks
    eye_l, eye_r, nose = pts[0], pts[1], pts[2]
    eye_dist = float(np.linalg.norm(eye_r - eye_l))
    if eye_dist < 1e-3:
        frontal = 0.0
    else:
        offset = abs(float(nose[0] - (eye_l[0] + eye_r[0]) / 2)) / eye_dist
        frontal = float(np.clip(1.0 - max(0.0, offset - 0.15) * 2.0, 0.0, 1.0))
    detector = float(np.clip(det.score, 0.0, 1.0))
    parts = np.array([size, sharpness, frontal, detector])
    score = float(np.prod(np.maximum(parts, 1e-6)) ** (1 / len(parts)))
    return Quality(score=score, size=size, sharpness=sharpness, frontal=frontal,
                   detector=detector)
