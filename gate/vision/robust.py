"""Detection an abuser cannot dodge by turning the photo or cropping it tight.

A face that is not detected is a face that is not checked. Upright detectors miss faces
rotated by 90/180/270 degrees and faces cropped so tightly that nothing surrounds them.
``OrientationRobustDetector`` wraps any ``FaceDetector`` and adds ONE extra detector pass:
a 2x2 mosaic holding the image rotated by 90, 180 and 270 degrees and an upright copy with
a margin around it, each at half the detector's input size. Detections are mapped back
to the original image; the alignment step then undoes the rotation (the similarity
transform from the 5 landmarks to the ArcFace template includes it). Only a face that is
tilted (turned photos, heads at an angle) costs more: it is re-detected upright at full
resolution so that its landmarks are as tight as an upright face's (``_refine``).
``UnionDetector`` adds a second model's extra faces (an opt-in ensemble).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gate.imaging.resize import shrink
from gate.vision.detect import Detection, FaceDetector, box_iou

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class _Cell:
    """One mosaic cell: how to get from its pixels back to the original image."""

    x0: int
    y0: int
    scale: float  # cell pixels per rotated-image pixel
    pad_x: float
    pad_y: float
    to_original: Callable[[float, float], Point]


def _rotations(w: int, h: int) -> list[tuple[int | None, Callable[[float, float], Point]]]:
    """(cv2 rotate code or None for upright, map from rotated coords to original coords)."""
    import cv2

    return [
        (None, lambda u, v: (u, v)),
        (cv2.ROTATE_90_CLOCKWISE, lambda u, v: (v, h - 1 - u)),
        (cv2.ROTATE_180, lambda u, v: (w - 1 - u, h - 1 - v)),
        (cv2.ROTATE_90_COUNTERCLOCKWISE, lambda u, v: (w - 1 - v, u)),
    ]


class OrientationRobustDetector:
    """Upright pass at full detector resolution, plus one mosaic pass (see module doc)."""

    def __init__(self, base: FaceDetector, *, canvas_px: int = 640, margin: float = 0.2,
                 iou_duplicate: float = 0.3) -> None:
        self.base = base
        self.name = f"{base.name}+orientations"
        self.canvas_px = canvas_px
        self.margin = margin
        self.iou_duplicate = iou_duplicate
        #: An upright-pass face keeps priority over a mosaic one unless the mosaic one
        #: scores this much higher (the upright pass sees more pixels).
        self.prefer_upright_by = 0.1
        #: Faces tilted more than this (turned photos included) are re-detected upright
        #: at full resolution (``_refine``); the patch holds the face with this much
        #: context (patch side / template side).
        self.refine_roll_degrees = 8.0
        self.refine_rounds = 2
        self.refine_context = 3.0

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        # Downscale once to the detector's scale: both passes work from the same copy.
        small, factor = _fit(image_bgr, self.canvas_px)
        found: list[Detection] = []
        for det in self._detect(small):
            if factor != 1.0:
                det = _scaled(det, factor)
            for _ in range(self.refine_rounds):
                if abs(roll_degrees(det)) <= self.refine_roll_degrees:
                    break
                refined = self._refine(image_bgr, det)
                if refined is None:
                    break
                det = refined
            found.append(det)
        return found

    def _refine(self, image: np.ndarray, det: Detection) -> Detection | None:
        """The same face re-detected upright, centred and at full resolution.

        A face found rotated (in a mosaic cell, or tilted in the upright pass) was seen
        at low resolution or at an angle the detector rarely trained on, and its
        landmarks are loose; alignment and recognition suffer (on the full efficacy run,
        rot30 probes of protected people went unrecognised 32 % of the time before this
        step, 19 % after; docs/accuracy.md). The original pixels are warped so the face
        stands upright in the middle of a detector-sized patch, the detector runs once
        more, and its landmarks are mapped back. ``None`` when the patch yields no
        plausible face. The detector under-reports the roll of a tilted face (a 35 degree
        tilt reads as 10-20 degrees), so a second round may follow.
        """
        import cv2

        from gate.vision.align import ARCFACE_TEMPLATE, similarity_transform

        size = self.canvas_px
        k = size / (112.0 * self.refine_context)
        dst = ARCFACE_TEMPLATE * k + (size / 2 - 56.0 * k)
        matrix = similarity_transform(det.landmarks_array(), dst)
        patch = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
        centre = size / 2
        best: Detection | None = None
        for cand in self.base.detect(patch):
            cx, cy = (cand.bbox[0] + cand.bbox[2]) / 2, (cand.bbox[1] + cand.bbox[3]) / 2
            if (upright_geometry(cand) and abs(cx - centre) < size / 8
                    and abs(cy - centre) < size / 6 and (best is None or cand.score > best.score)):
                best = cand
        if best is None:
            return None
        back = cv2.invertAffineTransform(matrix)

        def to_image(points: np.ndarray) -> np.ndarray:
            mapped: np.ndarray = points @ back[:, :2].T + back[:, 2]
            return mapped

        x1, y1, x2, y2 = best.bbox
        corners = to_image(np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], dtype=np.float64))
        landmarks = to_image(best.landmarks_array().astype(np.float64))
        return Detection(
            bbox=(float(corners[:, 0].min()), float(corners[:, 1].min()),
                  float(corners[:, 0].max()), float(corners[:, 1].max())),
            landmarks=tuple((float(x), float(y)) for x, y in landmarks),
            score=max(det.score, best.score))

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        upright = [(d, upright_geometry(d)) for d in self.base.detect(image_bgr)]
        mosaic_img, cells = self._mosaic(image_bgr)
        mosaic: list[tuple[Detection, bool]] = []
        for det in self.base.detect(mosaic_img):
            mapped = self._map_back(det, cells)
            if mapped is not None:
                mosaic.append((mapped, upright_geometry(det)))
        mosaic.sort(key=lambda m: not m[1])  # faces seen upright in their cell first
        found: list[Detection] = []
        used: set[int] = set()
        for det, plausible in upright:
            # The upright pass may "find" a sideways or upside-down face and report its
            # landmarks in upright order (alignment would keep it rotated); such hits are
            # implausible or weak. Prefer the same face found upright in a rotated cell
            # when it is clearly more confident.
            margin = -1.0 if not plausible else self.prefer_upright_by
            alt = next((i for i, (m, ok) in enumerate(mosaic) if ok and i not in used
                        and box_iou(m.bbox, det.bbox) > self.iou_duplicate
                        and m.score > det.score + margin), None)
            if alt is not None:
                used.add(alt)
                det = mosaic[alt][0]
            found.append(det)
        for i, (det, _) in enumerate(mosaic):
            if i in used or any(box_iou(det.bbox, d.bbox) > self.iou_duplicate for d in found):
                continue
            found.append(det)
        return found

    def _mosaic(self, image: np.ndarray) -> tuple[np.ndarray, list[_Cell]]:
        import cv2

        h, w = image.shape[:2]
        half = self.canvas_px // 2
        base_scale = half * 0.96 / max(h, w)  # downscale once, then rotate the small copy
        small = shrink(image, (max(1, round(w * base_scale)), max(1, round(h * base_scale))))
        canvas = np.full((self.canvas_px, self.canvas_px, 3), 127, dtype=np.uint8)
        cells: list[_Cell] = []
        for i, (code, back) in enumerate(_rotations(w, h)):
            if code is None:  # upright, with a margin so tight crops have context
                margin_factor = (1 - 2 * self.margin) / 0.96
                cell_img = shrink(small, (max(1, round(small.shape[1] * margin_factor)),
                                          max(1, round(small.shape[0] * margin_factor))))
            else:
                cell_img = cv2.rotate(small, code)
            nh, nw = cell_img.shape[:2]
            scale = base_scale * (nw / small.shape[1] if code in (None, cv2.ROTATE_180)
                                  else nw / small.shape[0])
            x0, y0 = (i % 2) * half, (i // 2) * half
            px, py = (half - nw) // 2, (half - nh) // 2
            canvas[y0 + py:y0 + py + nh, x0 + px:x0 + px + nw] = cell_img
            cells.append(_Cell(x0, y0, scale, px, py, back))
        return canvas, cells

    def _map_back(self, det: Detection, cells: list[_Cell]) -> Detection | None:
        half = self.canvas_px // 2
        cx = (det.bbox[0] + det.bbox[2]) / 2
        cy = (det.bbox[1] + det.bbox[3]) / 2
        cell = cells[int(cy // half) * 2 + int(cx // half)] if 0 <= cx < 2 * half and \
            0 <= cy < 2 * half else None
        if cell is None:
            return None
        x1, y1, x2, y2 = det.bbox
        inside = box_iou((x1, y1, x2, y2), (max(x1, cell.x0), max(y1, cell.y0),
                                            min(x2, cell.x0 + half), min(y2, cell.y0 + half)))
        if inside < 0.6:
            return None  # mostly in another cell: an artefact of the mosaic
        pts = det.landmarks_array()
        if not ((pts[:, 0] >= cell.x0 - 4) & (pts[:, 0] <= cell.x0 + half + 4) &
                (pts[:, 1] >= cell.y0 - 4) & (pts[:, 1] <= cell.y0 + half + 4)).all():
            return None

        def back(x: float, y: float) -> Point:
            u = (x - cell.x0 - cell.pad_x) / cell.scale
            v = (y - cell.y0 - cell.pad_y) / cell.scale
            return cell.to_original(u, v)

        corners = [back(x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        landmarks = tuple(back(x, y) for x, y in det.landmarks)
        return Detection(bbox=(min(xs), min(ys), max(xs), max(ys)), landmarks=landmarks,
                         score=det.score)



class UnionDetector:
    """Every face of ``first``, plus the faces only ``second`` finds (an ensemble).

    Measured on the shrink32 evasion (a face shrunk to 32 px in a 640x480 canvas): the
    orientation-robust YuNet found 389 of 420, SCRFD-2.5GF 412, the union 412.
    """

    def __init__(self, first: FaceDetector, second: FaceDetector, *,
                 iou_duplicate: float = 0.3) -> None:
        self.first = first
        self.second = second
        self.name = f"{first.name}|{second.name}"
        self.iou_duplicate = iou_duplicate

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        found = list(self.first.detect(image_bgr))
        for det in self.second.detect(image_bgr):
            if not any(box_iou(det.bbox, d.bbox) > self.iou_duplicate for d in found):
                found.append(det)
        return found


def _fit(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk so its longer side is at most ``max_side``, and the factor back."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return shrink(image, (nw, nh)), w / nw


def _scaled(det: Detection, factor: float) -> Detection:
    x1, y1, x2, y2 = det.bbox
    return Detection(bbox=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
                     landmarks=tuple((x * factor, y * factor) for x, y in det.landmarks),
                     score=det.score)


def roll_degrees(det: Detection) -> float:
    """In-plane rotation of the face, -180..180 degrees, clockwise on screen positive.

    The mean of two readings from the landmarks: the eye line's angle, and the angle of
    the line from the eyes' midpoint down to the mouth's midpoint.
    """
    pts = det.landmarks_array().astype(np.float64)
    eye_line = pts[1] - pts[0]
    down = (pts[3] + pts[4]) / 2 - (pts[0] + pts[1]) / 2
    # Both as unit vectors pointing "right" in the face's frame, then averaged.
    a = eye_line / max(float(np.hypot(*eye_line)), 1e-9)
    b = np.array([down[1], -down[0]]) / max(float(np.hypot(*down)), 1e-9)
    mean = a + b
    return float(np.degrees(np.arctan2(mean[1], mean[0])))


def upright_geometry(det: Detection) -> bool:
    """Do the landmarks describe an upright face in the frame the detector saw?

    Eyes left to right and roughly level, the nose below the eyes, the mouth below the
    nose. A detector that fires on a rotated face still reports landmarks in this order,
    so a rotated face fails the test.
    """
    pts = det.landmarks_array()
    eye_l, eye_r, nose, mouth_l, mouth_r = pts
    eye_dist = float(eye_r[0] - eye_l[0])
    if eye_dist <= 0:
        return False
    eyes_y = (eye_l[1] + eye_r[1]) / 2
    mouth_y = (mouth_l[1] + mouth_r[1]) / 2
    level = abs(float(eye_r[1] - eye_l[1])) < 0.6 * eye_dist
    return bool(level and nose[1] > eyes_y and mouth_y > nose[1] and
                mouth_y - eyes_y > 0.4 * eye_dist and mouth_r[0] > mouth_l[0])
