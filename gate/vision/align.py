"""5-point similarity alignment to the 112x112 ArcFace template.

Same template and least-squares similarity transform (Umeyama) as insightface's
``face_align.norm_crop``; computed here directly so no deprecated scikit-image call runs
in the hot path. ``tests/real/test_pipeline.py`` checks the crops equal insightface's.
"""

from __future__ import annotations

import numpy as np

#: insightface ``face_align.arcface_dst`` (the ArcFace 112x112 five-point template).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity mapping ``src`` points onto ``dst``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def norm_crop(image_bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned ``size`` x ``size`` face crop (BGR uint8)."""
    return align_face(image_bgr, landmarks, size)[0]


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray,
               size: int = 112, *, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop and the landmarks mapped into it (5x2, crop pixels). ``zoom``
    scales the template about its centre (above 1: the face fills more of the crop)."""
    import cv2

    dst = ARCFACE_TEMPLATE * (size / 112.0)
    if zoom != 1.0:
        centre = dst.mean(axis=0)
        dst = (dst - centre) * zoom + centre
    matrix = similarity_transform(landmarks, dst)
    crop = cv2.warpAffine(image_bgr, matrix, (size, size), borderValue=0.0)
    pts = np.asarray(landmarks, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return crop, pts.astype(np.float32)


def zoom_views(image_bgr: np.ndarray, landmarks: np.ndarray, zooms: tuple[float, ...],
               size: int = 112) -> tuple[np.ndarray, ...]:
    """Aligned crops at each of ``zooms`` (the test-time views that, with their mirrors,
    are averaged into one vector; docs/accuracy.md, issue 17)."""
    return tuple(align_face(image_bgr, landmarks, size, zoom=z)[0] for z in zooms)
