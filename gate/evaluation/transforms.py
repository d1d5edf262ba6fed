"""Evasion transforms: what someone might do to a photo to slip a face past the gate.

Each transform is a pure function ``(photo bytes, TransformContext) -> image bytes``,
registered by name in :data:`TRANSFORMS`. Given the same bytes and context it returns the
same bytes: all randomness comes from ``TransformContext.seed``. Lossless outputs are PNG
so that only the named degradation is applied; ``jpeg20`` and ``up2x_jpeg50`` are JPEG.

Some transforms need to know where the face is (``shrink*``, ``eyes_band``,
``tight_crop``, ``in_scene``): the context may carry a :class:`FaceGeometry` of the
largest face in the original photo (see :func:`locate_face`, which runs the gate's own
detector); without one they fall back to a centred-face heuristic for a face crop.
``crowd`` needs photos of other people in ``TransformContext.others``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

Pixels = npt.NDArray[np.uint8]

#: Neutral grey used for canvases that a face is placed into.
NEUTRAL = 128
#: Canvas of the ``shrink*`` transforms (width, height).
SHRINK_CANVAS = (640, 480)
#: Canvas of ``in_scene`` (width, height).
SCENE_CANVAS = (1280, 720)
#: ``crowd``: a grid of cells, the other people large, the protected person small.
CROWD_CELL_PX = 320
CROWD_OTHER_PX = 280
CROWD_TARGET_PX = 140


@dataclass(frozen=True, slots=True)
class FaceGeometry:
    """Where the face is in the original (upright) photo, in pixels."""

    bbox: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # viewer's L, R

    @property
    def size_px(self) -> float:
        """Shorter side of the box, as the gate reports ``size_px``."""
        return min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])


@dataclass(frozen=True, slots=True)
class TransformContext:
    """Everything a transform may use besides the photo."""

    seed: int = 0
    face: FaceGeometry | None = None
    #: Photos of other people (``crowd`` fillers); never the photo's own identity.
    others: tuple[bytes, ...] = ()


Transform = Callable[[bytes, TransformContext], bytes]


# -- codec -----------------------------------------------------------------------------
def decode_bgr(data: bytes) -> Pixels:
    """Upright (EXIF-oriented) BGR ``uint8`` pixels of a trusted test photo."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        arr = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(arr[:, :, ::-1])


def _encode(image: np.ndarray, ext: str, params: Sequence[int] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:  # pragma: no cover - OpenCV encoders do not fail on uint8 arrays
        raise ValueError(f"could not encode {ext}")
    return bytes(buf.tobytes())


def png(image: np.ndarray) -> bytes:
    """Lossless PNG, fast compression (the evaluation's default output)."""
    return _encode(image, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))


def jpeg(image: np.ndarray, quality: int) -> bytes:
    return _encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, quality))


def _rng(ctx: TransformContext, salt: int) -> np.random.Generator:
    return np.random.default_rng([ctx.seed & 0xFFFFFFFF, salt])


# -- where the face is -------------------------------------------------------------------
def face_box(image: np.ndarray, face: FaceGeometry | None) -> tuple[int, int, int, int]:
    """The face box, clipped to the image; without geometry, a centred square covering
    60% of the shorter side (a face crop such as ``natural_small`` or ``glint24``)."""
    h, w = image.shape[:2]
    if face is not None:
        x1, y1, x2, y2 = face.bbox
    else:
        side = 0.6 * min(h, w)
        x1, y1 = (w - side) / 2, (h - side) / 2
        x2, y2 = x1 + side, y1 + side
    ix1, iy1 = max(0, round(x1)), max(0, round(y1))
    ix2, iy2 = min(w, round(x2)), min(h, round(y2))
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return 0, 0, w, h
    return ix1, iy1, ix2, iy2


def locate_face(detector: Any, image: np.ndarray, pad_fraction: float = 0.5,
                detections: Sequence[Any] | None = None) -> FaceGeometry | None:
    """The largest face the gate's detector (``detect(bgr) -> [Detection]``) finds.

    Tight crops (e.g. aligned 112x112 faces) are retried on a grey-padded copy, since a
    detector needs some context around a face; coordinates are those of ``image``.
    ``detections`` are the detector's results on ``image`` when already known.
    """
    h, w = image.shape[:2]
    pad = round(pad_fraction * max(h, w))
    attempts: list[tuple[np.ndarray, int]] = [(image, 0)]
    if pad > 0:
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                    value=(NEUTRAL, NEUTRAL, NEUTRAL))
        attempts.append((padded, pad))
    for n, (pixels, offset) in enumerate(attempts):
        dets = detections if n == 0 and detections is not None else detector.detect(pixels)
        if not dets:
            continue
        det = max(dets, key=lambda d: d.size_px)
        x1, y1, x2, y2 = (float(v) - offset for v in det.bbox)
        pts = det.landmarks_array() - offset
        eyes = ((float(pts[0][0]), float(pts[0][1])), (float(pts[1][0]), float(pts[1][1])))
        box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        return FaceGeometry(bbox=box, eyes=eyes)
    return None


# -- building blocks ------------------------------------------------------------------------
def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (nw, nh), interpolation=interp)


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    return _resize(image, max_side / max(image.shape[:2]))


def _paste(canvas: np.ndarray, tile: np.ndarray, x: int, y: int,
           feather: bool = False) -> None:
    """Paste ``tile`` with its top-left at (x, y), clipped to the canvas, in place."""
    ch, cw = canvas.shape[:2]
    th, tw = tile.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(cw, x + tw), min(ch, y + th)
    if x1 <= x0 or y1 <= y0:
        return
    part = tile[y0 - y:y1 - y, x0 - x:x1 - x]
    if not feather:
        canvas[y0:y1, x0:x1] = part
        return
    ph, pw = part.shape[:2]
    edge = max(1, min(ph, pw) // 12)
    hard = np.zeros((ph, pw), np.float32)
    hard[edge:ph - edge, edge:pw - edge] = 1.0
    mask = cv2.GaussianBlur(hard, (0, 0), edge / 2)[:, :, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(mask * part + (1 - mask) * region, 0, 255).astype(np.uint8)


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A face-free synthetic background: smooth colour blobs and a fainter finer layer
    (made small and upscaled, so it is cheap to make and to compress)."""
    coarse = cv2.resize(rng.integers(40, 216, (9, 16, 3)).astype(np.uint8), (160, 90),
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.integers(-24, 25, (45, 80, 3)).astype(np.int16), (160, 90),
                      interpolation=cv2.INTER_NEAREST)
    small = np.clip(coarse.astype(np.int16) + fine, 0, 255).astype(np.uint8)
    out: np.ndarray = cv2.resize(cv2.GaussianBlur(small, (0, 0), 0.8), (width, height),
                                 interpolation=cv2.INTER_LINEAR)
    return out


# -- the transforms -------------------------------------------------------------------------
def clean(data: bytes, ctx: TransformContext) -> bytes:
    """The photo as it is (the very same bytes)."""
    return data


def jpeg20(data: bytes, ctx: TransformContext) -> bytes:
    """Heavy JPEG compression (quality 20)."""
    return jpeg(decode_bgr(data), 20)


def blur2(data: bytes, ctx: TransformContext) -> bytes:
    """Gaussian blur, sigma 2 px."""
    return png(cv2.GaussianBlur(decode_bgr(data), (0, 0), 2.0))


def grayscale(data: bytes, ctx: TransformContext) -> bytes:
    """Grey levels, stored as a one-channel PNG."""
    return png(cv2.cvtColor(decode_bgr(data), cv2.COLOR_BGR2GRAY))


def hflip(data: bytes, ctx: TransformContext) -> bytes:
    """Mirror image."""
    return png(cv2.flip(decode_bgr(data), 1))


def rot90(data: bytes, ctx: TransformContext) -> bytes:
    """Quarter turn clockwise (pixels rotated, no EXIF orientation tag)."""
    return png(cv2.rotate(decode_bgr(data), cv2.ROTATE_90_CLOCKWISE))


def rot180(data: bytes, ctx: TransformContext) -> bytes:
    """Upside down."""
    return png(cv2.rotate(decode_bgr(data), cv2.ROTATE_180))


def rotate_expanded(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise by ``degrees`` on a canvas grown to hold every pixel."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    matrix[0, 2] += nw / 2 - w / 2
    matrix[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, matrix, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def rot30(data: bytes, ctx: TransformContext) -> bytes:
    """30 degrees counter-clockwise, canvas expanded (black corners) so nothing is cut."""
    return png(rotate_expanded(decode_bgr(data), 30.0))


def noise12(data: bytes, ctx: TransformContext) -> bytes:
    """Additive Gaussian noise, sigma 12 grey levels."""
    image = decode_bgr(data)
    noise = _rng(ctx, 12).normal(0.0, 12.0, image.shape)
    return png(np.clip(np.rint(image + noise), 0, 255).astype(np.uint8))


def up2x_jpeg50(data: bytes, ctx: TransformContext) -> bytes:
    """Upscaled 2x (bicubic), then JPEG quality 50."""
    return jpeg(_resize(decode_bgr(data), 2.0), 50)


def shrink_to(face_px: int) -> Transform:
    """The photo scaled so the face box is ``face_px`` on its shorter side, placed at a
    seeded position inside a neutral 640x480 canvas."""

    def shrink(data: bytes, ctx: TransformContext) -> bytes:
        image = decode_bgr(data)
        x1, y1, x2, y2 = face_box(image, ctx.face)
        small = _resize(image, face_px / min(x2 - x1, y2 - y1))
        cw, ch = SHRINK_CANVAS
        canvas = np.full((ch, cw, 3), NEUTRAL, np.uint8)
        rng = _rng(ctx, face_px)
        sh, sw = small.shape[:2]
        x = int(rng.integers(0, max(1, cw - sw + 1)))
        y = int(rng.integers(0, max(1, ch - sh + 1)))
        _paste(canvas, small, x, y)
        return png(canvas)

    shrink.__name__ = f"shrink{face_px}"
    shrink.__doc__ = f"Face box ~{face_px} px, placed in a neutral 640x480 canvas."
    return shrink


def eyes_band(data: bytes, ctx: TransformContext) -> bytes:
    """A black band over both eyes (censor bar): along the eye line when the eye
    landmarks are known, else across the upper part of the face box."""
    image = decode_bgr(data)
    if ctx.face is not None and ctx.face.eyes is not None:
        left, right = (np.asarray(p, np.float64) for p in ctx.face.eyes)
        dist = float(np.linalg.norm(right - left))
        if dist > 1.0:
            along = (right - left) / dist
            across = np.array([-along[1], along[0]])
            centre = (left + right) / 2
            half_len, half_h = dist * 1.0, dist * 0.3
            corners = np.array([centre + sa * half_len * along + sb * half_h * across
                                for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
            cv2.fillConvexPoly(image, np.rint(corners).astype(np.int32), (0, 0, 0))
            return png(image)
    x1, y1, x2, y2 = face_box(image, ctx.face)
    fh = y2 - y1
    image[y1 + int(0.22 * fh):y1 + int(0.45 * fh), x1:x2] = 0
    return png(image)


def tight_crop(data: bytes, ctx: TransformContext) -> bytes:
    """Cropped to the face box plus a 5% margin."""
    image = decode_bgr(data)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = face_box(image, ctx.face)
    margin = round(0.05 * max(x2 - x1, y2 - y1))
    crop = image[max(0, y1 - margin):min(h, y2 + margin), max(0, x1 - margin):min(w, x2 + margin)]
    return png(np.ascontiguousarray(crop))


def in_scene(data: bytes, ctx: TransformContext) -> bytes:
    """The photo pasted (feathered edges) at a seeded position and scale (face box
    64-160 px) into a 1280x720 face-free synthetic scene (colour blobs and patches)."""
    image = decode_bgr(data)
    rng = _rng(ctx, 720)
    cw, ch = SCENE_CANVAS
    canvas = _texture(cw, ch, rng)
    x1, y1, x2, y2 = face_box(image, ctx.face)
    face_px = float(rng.uniform(64.0, 160.0))
    tile = _resize(image, face_px / min(x2 - x1, y2 - y1))
    if max(tile.shape[:2]) > min(cw, ch):
        tile = _fit(tile, min(cw, ch))
    th, tw = tile.shape[:2]
    x = int(rng.integers(0, cw - tw + 1))
    y = int(rng.integers(0, ch - th + 1))
    _paste(canvas, tile, x, y, feather=True)
    return png(canvas)


def crowd(data: bytes, ctx: TransformContext) -> bytes:
    """The photo, small, among 3-5 larger photos of other people on a grid."""
    if not ctx.others:
        raise ValueError("crowd needs photos of other people (TransformContext.others)")
    rng = _rng(ctx, 5)
    count = int(rng.integers(3, 6))
    picks = rng.choice(len(ctx.others), size=count, replace=len(ctx.others) < count)
    tiles = [_fit(decode_bgr(ctx.others[int(i)]), CROWD_OTHER_PX) for i in picks]
    target_slot = int(rng.integers(0, count + 1))
    tiles.insert(target_slot, _fit(decode_bgr(data), CROWD_TARGET_PX))
    cols = 3
    rows = (len(tiles) + cols - 1) // cols
    canvas = np.full((rows * CROWD_CELL_PX, cols * CROWD_CELL_PX, 3), NEUTRAL, np.uint8)
    for n, tile in enumerate(tiles):
        th, tw = tile.shape[:2]
        cx, cy = (n % cols) * CROWD_CELL_PX, (n // cols) * CROWD_CELL_PX
        x = cx + int(rng.integers(0, CROWD_CELL_PX - tw + 1))
        y = cy + int(rng.integers(0, CROWD_CELL_PX - th + 1))
        _paste(canvas, tile, x, y)
    return png(canvas)


#: Every transform by name, in the order reports list them.
TRANSFORMS: dict[str, Transform] = {
    "clean": clean,
    "jpeg20": jpeg20,
    "blur2": blur2,
    "grayscale": grayscale,
    "hflip": hflip,
    "rot90": rot90,
    "rot180": rot180,
    "rot30": rot30,
    "noise12": noise12,
    "up2x_jpeg50": up2x_jpeg50,
    "shrink48": shrink_to(48),
    "shrink32": shrink_to(32),
    "eyes_band": eyes_band,
    "tight_crop": tight_crop,
    "in_scene": in_scene,
    "crowd": crowd,
}

#: Transforms that read ``TransformContext.face`` (better with :func:`locate_face`).
NEEDS_GEOMETRY: frozenset[str] = frozenset(
    {"shrink48", "shrink32", "eyes_band", "tight_crop", "in_scene"})
#: Transforms that read ``TransformContext.others``.
NEEDS_OTHERS: frozenset[str] = frozenset({"crowd"})


def resolve(names: str | Sequence[str]) -> list[str]:
    """``"all"``, a comma-separated string or a list of names -> validated names."""
    if isinstance(names, str):
        if names.strip().lower() == "all":
            return list(TRANSFORMS)
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transforms {unknown}; known: {', '.join(TRANSFORMS)}")
    return list(dict.fromkeys(names))


def apply(name: str, data: bytes, ctx: TransformContext | None = None) -> bytes:
    """Apply the transform called ``name``."""
    return TRANSFORMS[name](data, ctx or TransformContext())
