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

The upright pass also "finds" most upside-down faces, but reports their landmarks in
upright order, so alignment keeps them upside down and recognition fails. The
orientation check (``_orient``, on by default) shows every found face to the detector
turned 0/90/180/270 degrees in one small mosaic pass (a 320 px YuNet pass per one or two
faces) and keeps the orientation the detector is most confident about (issue 17,
docs/accuracy.md: rot180 "protected not recognised" 5.6 -> 2.3 %).
``UnionDetector`` adds a second model's extra faces (an opt-in ensemble).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

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
                 iou_duplicate: float = 0.3, probe: FaceDetector | None = None,
                 probe_px: int | None = None, checker: FaceDetector | None = None,
                 checker_px: int | None = None, check_orientation: bool = True,
                 second_look_below_px: float = 0.0) -> None:
        self.base = base
        #: The detector (and its square input) for the orientation mosaic and the
        #: orientation check: by default the base detector at ``canvas_px``; a smaller
        #: input (YuNet at 320) costs a quarter and still finds faces that fill a cell.
        self.probe = probe or base
        self.probe_px = probe_px or canvas_px
        #: The detector (and its square input) of the orientation check; a small input
        #: (YuNet at 320) holds one or two faces' four turned cells.
        self.checker = checker or self.probe
        self.checker_px = checker_px or self.probe_px
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
        #: Orientation check (``_orient``): every face is warped upright by its own
        #: landmarks into a ``orient_cell_px`` cell and shown to the detector turned by
        #: 0/90/180/270 degrees, all in one mosaic pass; the orientation the detector is
        #: most confident about wins. Off: trust the landmarks' order.
        self.check_orientation = check_orientation
        self.orient_cell_px = 160
        self.orient_context = 2.5
        #: Faces smaller than this (px, shorter side of the box) get a second look:
        #: re-detected in an upscaled patch around them (``_refine``), for tighter
        #: landmarks. 0: off.
        self.second_look_below_px = second_look_below_px
        #: A second look runs the orientation check's detector (``checker``, YuNet at
        #: 320 px) on a ``checker_px`` patch (the face fills about a third of it); at
        #: most this many faces of one image get one (the first found; the rest keep
        #: their landmarks), so a crowd of tiny faces costs a bounded number of passes.
        self.second_look_max_faces = 8
        #: A turned cell must beat the face's own orientation by this much.
        self.orient_margin = 0.0
        #: Run the orientation mosaic on a spare core while the upright pass runs on
        #: this one (independent passes, one onnxruntime thread each), when a spare
        #: core is free; otherwise, and with None, one after the other.
        self.pool: SpareCores | None = None

    def detect(self, image_bgr: np.ndarray, *,
               early: Callable[[list[Detection]], None] | None = None) -> list[Detection]:
        """Every face. ``early`` (optional) is shown the faces of the two passes before
        the orientation check and the refinement (original pixels), except faces due for
        a second look: a caller may start work on them, valid for each returned face
        equal to one of them."""
        if self.pool is None:
            return self._detect_all(image_bgr, early)
        with self.pool.running():
            return self._detect_all(image_bgr, early)

    def _detect_all(self, image_bgr: np.ndarray,
                    early: Callable[[list[Detection]], None] | None) -> list[Detection]:
        # Downscale once to the detector's scale: both passes work from the same copy.
        small, factor = _fit(image_bgr, self.canvas_px)
        first = self._detect(small)
        if early is not None and first:
            scaled = [_scaled(d, factor) for d in first] if factor != 1.0 else first
            # Faces due for a second look will change: embedding them now is wasted work.
            shown = [d for d in scaled if d.size_px >= self.second_look_below_px]
            if shown:
                early(shown)
        if self.check_orientation and first:
            first = self._orient(small, first)
        if factor != 1.0:
            first = [_scaled(d, factor) for d in first]
        found: list[Detection] = []
        looks = 0
        for det in first:
            for round_ in range(self.refine_rounds):
                tilted = abs(roll_degrees(det)) > self.refine_roll_degrees
                small_face = (round_ == 0 and det.size_px < self.second_look_below_px
                              and looks < self.second_look_max_faces)
                if not (tilted or small_face):
                    break
                if tilted:
                    refined = self._refine(image_bgr, det)
                else:
                    looks += 1
                    refined = self._refine(image_bgr, det, size=self.checker_px,
                                           detector=self.checker)
                if refined is None:
                    break
                det = refined
            found.append(det)
        return found

    def _orient(self, image: np.ndarray, dets: list[Detection]) -> list[Detection]:
        """Each face with its landmarks in the order of its true orientation.

        The detector fires on many upside-down faces (and on some sideways ones) and
        still reports its landmarks in upright order, so alignment keeps the face turned
        and recognition fails (rot180: 77 % of upside-down faces found that way). Each
        face is warped "upright" by its own landmarks into a cell, the cell is turned by
        0, 90, 180 and 270 degrees, and all cells of up to 4 faces go through the detector
        in one 2x2-per-face mosaic pass. A face keeps its landmarks unless a turned cell
        holds a clearly more confident, upright, centred face; then that face's landmarks
        are mapped back. Faces that turn out to be the same face are merged.
        """
        import cv2

        from gate.vision.align import ARCFACE_TEMPLATE, similarity_transform

        cell = self.orient_cell_px
        detector, side = self.checker, self.checker_px
        if len(dets) > 2 and self.checker_px < self.canvas_px:  # one big mosaic is cheaper
            detector, side = self.base, self.canvas_px
        per_row = max(1, side // (2 * cell))  # faces per mosaic row
        per_pass = per_row * per_row
        k = cell / (112.0 * self.orient_context)
        dst = ARCFACE_TEMPLATE * k + (cell / 2 - 56.0 * k)
        codes = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180,
                 cv2.ROTATE_90_COUNTERCLOCKWISE)
        out: list[Detection] = []
        for start in range(0, len(dets), per_pass):
            group = dets[start:start + per_pass]
            canvas = np.full((side, side, 3), 127, dtype=np.uint8)
            matrices = []
            for n, det in enumerate(group):
                matrix = similarity_transform(det.landmarks_array(), dst)
                matrices.append(matrix)
                patch = cv2.warpAffine(image, matrix, (cell, cell), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=(127, 127, 127))
                fx, fy = (n % per_row) * 2 * cell, (n // per_row) * 2 * cell
                for r, code in enumerate(codes):
                    view = patch if code is None else cv2.rotate(patch, code)
                    x0, y0 = fx + (r % 2) * cell, fy + (r // 2) * cell
                    canvas[y0:y0 + cell, x0:x0 + cell] = view
            best: list[list[Detection | None]] = [[None] * 4 for _ in group]
            for cand in detector.detect(canvas):
                cx, cy = (cand.bbox[0] + cand.bbox[2]) / 2, (cand.bbox[1] + cand.bbox[3]) / 2
                n = int(cy // (2 * cell)) * per_row + int(cx // (2 * cell))
                if not 0 <= n < len(group) or not upright_geometry(cand):
                    continue
                fx, fy = (n % per_row) * 2 * cell, (n // per_row) * 2 * cell
                r = int((cy - fy) // cell) * 2 + int((cx - fx) // cell)
                x0, y0 = fx + (r % 2) * cell, fy + (r // 2) * cell
                if abs(cx - x0 - cell / 2) > cell / 6 or abs(cy - y0 - cell / 2) > cell / 5:
                    continue
                held = best[n][r]
                if held is None or cand.score > held.score:
                    best[n][r] = cand
            for n, det in enumerate(group):
                scores = [b.score if b is not None else 0.0 for b in best[n]]
                r = int(np.argmax(scores))
                if r == 0 or scores[r] <= scores[0] + self.orient_margin:
                    out.append(det)
                    continue
                turned = best[n][r]
                assert turned is not None
                fx, fy = (n % per_row) * 2 * cell, (n // per_row) * 2 * cell
                x0, y0 = fx + (r % 2) * cell, fy + (r // 2) * cell
                back = cv2.invertAffineTransform(matrices[n])

                def to_image(points: np.ndarray, r: int = r, x0: int = x0, y0: int = y0,
                             back: np.ndarray = back) -> np.ndarray:
                    local = points - np.array([x0, y0], dtype=np.float64)
                    patch_pts = _unrotate(local, r, cell)
                    mapped: np.ndarray = patch_pts @ back[:, :2].T + back[:, 2]
                    return mapped

                x1, y1, x2, y2 = turned.bbox
                corners = to_image(np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]],
                                            dtype=np.float64))
                landmarks = to_image(turned.landmarks_array().astype(np.float64))
                out.append(Detection(
                    bbox=(float(corners[:, 0].min()), float(corners[:, 1].min()),
                          float(corners[:, 0].max()), float(corners[:, 1].max())),
                    landmarks=tuple((float(x), float(y)) for x, y in landmarks),
                    score=max(det.score, turned.score)))
        return _merge_same_faces(out, self.iou_duplicate)

    def _refine(self, image: np.ndarray, det: Detection, *, size: int | None = None,
                detector: FaceDetector | None = None) -> Detection | None:
        """The same face re-detected upright, centred and at full resolution.

        A face found rotated (in a mosaic cell, or tilted in the upright pass) was seen
        at low resolution or at an angle the detector rarely trained on, and its
        landmarks are loose; alignment and recognition suffer (on the full efficacy run,
        rot30 probes of protected people went unrecognised 32 % of the time before this
        step, 19 % after; docs/accuracy.md). The original pixels are warped so the face
        stands upright in the middle of a detector-sized patch, the detector runs once
        more, and its landmarks are mapped back. ``None`` when the patch yields no
        plausible face. The detector under-reports the roll of a tilted face (a 35 degree
        tilt reads as 10-20 degrees), so a second round may follow. ``size`` and
        ``detector``: the patch side and what runs on it (default ``canvas_px`` and the
        base detector).
        """
        import cv2

        from gate.vision.align import ARCFACE_TEMPLATE, similarity_transform

        size = size or self.canvas_px
        detector = detector or self.base
        k = size / (112.0 * self.refine_context)
        dst = ARCFACE_TEMPLATE * k + (size / 2 - 56.0 * k)
        matrix = similarity_transform(det.landmarks_array(), dst)
        patch = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
        centre = size / 2
        best: Detection | None = None
        for cand in detector.detect(patch):
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
        mosaic_img, cells = self._mosaic(image_bgr)
        pending = self.pool.try_submit(self.probe.detect, mosaic_img) \
            if self.pool is not None else None
        upright = [(d, upright_geometry(d)) for d in self.base.detect(image_bgr)]
        in_mosaic = pending.result() if pending is not None else self.probe.detect(mosaic_img)
        mosaic: list[tuple[Detection, bool]] = []
        for det in in_mosaic:
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
        half = self.probe_px // 2
        base_scale = half * 0.96 / max(h, w)  # downscale once, then rotate the small copy
        small = shrink(image, (max(1, round(w * base_scale)), max(1, round(h * base_scale))))
        canvas = np.full((self.probe_px, self.probe_px, 3), 127, dtype=np.uint8)
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
        half = self.probe_px // 2
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



T = TypeVar("T")
R = TypeVar("R")


class SpareCores:
    """Threads for work a check can do beside its own thread, only while cores idle.

    ``try_submit`` never queues: while as many checks are detecting (``running``) as
    there are cores, or every spare thread is busy, it returns None and the caller does
    the work itself. Spare threads lower latency when cores idle and cost a loaded gate
    nothing (docs/benchmarks.md).
    """

    def __init__(self, threads: int, cores: int | None = None) -> None:
        self.threads = max(1, threads)
        self.cores = max(1, cores if cores is not None else self.threads + 1)
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="gate-spare")
        self._free = threading.BoundedSemaphore(self.threads)
        self._lock = threading.Lock()
        self._running = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count the calling check as using a core while it detects."""
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    def try_submit(self, fn: Callable[[T], R], arg: T) -> Future[R] | None:
        with self._lock:
            if self._running >= self.cores:
                return None
        if not self._free.acquire(blocking=False):
            return None
        try:
            future = self._pool.submit(fn, arg)
        except BaseException:
            self._free.release()
            raise
        future.add_done_callback(lambda _: self._free.release())
        return future


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


def _unrotate(points: np.ndarray, rotation: int, side: int) -> np.ndarray:
    """Points in a ``side`` square cell turned by ``rotation`` quarter turns clockwise
    (0..3, as the cv2 codes in ``_orient``) back to the unturned cell."""
    u, v = points[:, 0], points[:, 1]
    last = side - 1
    if rotation == 1:  # 90 clockwise: (x, y) -> (last - y, x)
        return np.stack([v, last - u], axis=1)
    if rotation == 2:
        return np.stack([last - u, last - v], axis=1)
    if rotation == 3:  # 90 counter-clockwise: (x, y) -> (y, last - x)
        return np.stack([last - v, u], axis=1)
    return points


def _merge_same_faces(dets: list[Detection], iou_duplicate: float) -> list[Detection]:
    """One detection per face: the most confident of those that overlap."""
    kept: list[int] = []
    for i in sorted(range(len(dets)), key=lambda i: -dets[i].score):
        if not any(box_iou(dets[i].bbox, dets[k].bbox) > iou_duplicate for k in kept):
            kept.append(i)
    return [dets[i] for i in sorted(kept)]


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
