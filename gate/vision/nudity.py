"""Output nudity screening: NudeNet's 320n ONNX detector (optional extra), and a fake.

The model is an Ultralytics YOLOv8n detector of 18 body-part classes shipped as
``320n.onnx`` in the ``nudenet`` wheel. We run the file directly with onnxruntime: the
image is padded bottom/right to a square, resized to 320x320, RGB, scaled to 0..1, NCHW
float32; the output (1, 22, anchors) holds a box (cx, cy, w, h) and 18 class scores per
anchor. The image's exposed score is the highest score of an exposed-explicit class over
all anchors; no box is needed to decide.

NudeNet 3.4.2's own ``NudeDetector`` feeds the model BGR (``COLOR_RGBA2BGR`` followed by
``swapRB=True``, NudeNet issue #203); YOLOv8 is trained on RGB and we feed RGB.

Licence: the wheel's METADATA says MIT but its LICENSE files are the GNU AGPL v3 and the
ONNX file's own metadata says "AGPL-3.0 License (https://ultralytics.com/license)". It is
therefore an optional extra, and loading it needs an explicit licence acceptance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gate.errors import InferenceError, ModelUnavailable
from gate.vision.age import manifest_entry, package_dir, package_model

log = logging.getLogger(__name__)

NUDITY_PACK = "nudenet"
NUDITY_PACKAGE = "nudenet"
#: The string an operator passes to accept the model's licence knowingly.
NUDITY_LICENSE_ACCEPTANCE = "agpl-3.0"
#: NudeNet 320n output classes, in output order (from the ONNX file's ``names``).
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
#: Classes whose presence makes an image sexual content.
EXPOSED_CLASSES = (
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED",
)
_EXPOSED_INDEX = np.array([NUDENET_LABELS.index(c) for c in EXPOSED_CLASSES])
#: Score at or above which an image is sexual. Low on purpose (NudeNet itself keeps
#: detections from 0.25): a strict gate prefers denying an ordinary image to passing a
#: nude one. The highest score measured on ~880 ordinary photos was well below it
#: (docs/age-and-nudity.md).
DEFAULT_THRESHOLD = 0.25
INPUT_PX = 320

_REMEDY = (
    "Install the optional nudity model with `pip install 'consent-gate[nudity]'` "
    "(nudenet==3.4.2), then `gate models verify`."
)


@dataclass(frozen=True, slots=True)
class NudityScore:
    """How sexual one image looks."""

    exposed_score: float  # max confidence over exposed-explicit classes, 0..1
    labels: tuple[str, ...]  # exposed classes at or above the threshold
    is_sexual: bool  # exposed_score >= threshold


@runtime_checkable
class NudityClassifier(Protocol):
    """Scores one upright BGR uint8 image for explicit nudity."""

    def score(self, image_bgr: np.ndarray) -> NudityScore: ...


def nudenet_blob(image_bgr: np.ndarray, size_px: int = INPUT_PX) -> np.ndarray:
    """(1, 3, size, size) float32 RGB 0..1: padded bottom/right to a square, then resized."""
    import cv2

    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise InferenceError("nudity screening needs a non-empty BGR uint8 image")
    h, w = image.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[:h, :w] = image
    interp = cv2.INTER_AREA if side > size_px else cv2.INTER_LINEAR
    resized = cv2.resize(square, (size_px, size_px), interpolation=interp)
    rgb = resized[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def _result(class_max: dict[str, float], threshold: float) -> NudityScore:
    exposed = max((class_max.get(c, 0.0) for c in EXPOSED_CLASSES), default=0.0)
    labels = tuple(c for c in EXPOSED_CLASSES if class_max.get(c, 0.0) >= threshold)
    return NudityScore(exposed_score=float(exposed), labels=labels,
                       is_sexual=bool(exposed >= threshold))


class OnnxNudityClassifier:
    """NudeNet ``320n.onnx`` via onnxruntime, RGB input."""

    name = "nudenet/320n"

    def __init__(self, path: Path, *, threshold: float = DEFAULT_THRESHOLD, threads: int = 2,
                 input_px: int = INPUT_PX) -> None:
        from gate.vision.detect import ort_session

        if input_px <= 0 or input_px % 32:
            raise ValueError("input_px must be a positive multiple of 32")
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self._session = ort_session(path, threads)
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or outputs[0].shape[1] != 4 + len(
                NUDENET_LABELS):
            raise ModelUnavailable(f"{path.name} is not the NudeNet 18-class detector")
        self._input = inputs[0].name
        self.threshold = threshold
        self.input_px = input_px

    def class_scores(self, image_bgr: np.ndarray) -> dict[str, float]:
        """Highest score of every class over the whole image."""
        blob = nudenet_blob(image_bgr, self.input_px)
        try:
            out = np.asarray(self._session.run(None, {self._input: blob})[0])
        except Exception as exc:  # onnxruntime raises its own opaque types
            raise InferenceError(f"nudity model failed: {type(exc).__name__}") from exc
        if out.ndim != 3 or out.shape[1] != 4 + len(NUDENET_LABELS):
            raise InferenceError("nudity model returned an unexpected shape")
        scores = out[0, 4:, :]
        if not np.all(np.isfinite(scores)):
            raise InferenceError("nudity model returned non-finite values")
        best = np.clip(scores.max(axis=1), 0.0, 1.0)
        return {label: float(v) for label, v in zip(NUDENET_LABELS, best, strict=True)}

    def score(self, image_bgr: np.ndarray) -> NudityScore:
        return _result(self.class_scores(image_bgr), self.threshold)


class FakeNudityClassifier:
    """Scripted scores for fast tests: a constant, or ``script(image) -> exposed score``."""

    name = "fake"

    def __init__(self, exposed_score: float = 0.0, *,
                 script: Callable[[np.ndarray], float] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, label: str = "FEMALE_BREAST_EXPOSED"
                 ) -> None:
        if label not in EXPOSED_CLASSES:
            raise ValueError(f"{label} is not an exposed class")
        self._score = exposed_score
        self._script = script
        self._label = label
        self.threshold = threshold

    def score(self, image_bgr: np.ndarray) -> NudityScore:
        value = float(self._script(image_bgr)) if self._script else self._score
        return _result({self._label: value}, self.threshold)


def default_nudity_model() -> Path:
    """Verified ``320n.onnx`` from the installed ``nudenet`` wheel."""
    return package_model(NUDITY_PACKAGE, NUDITY_PACK, "nudity", remedy=_REMEDY)


def load_nudity_classifier(*, accepted_license: str | None, threshold: float = DEFAULT_THRESHOLD,
                           threads: int = 2, **kwargs: Any) -> OnnxNudityClassifier | None:
    """The NudeNet classifier, or ``None`` (logged) when the optional extra is not installed.

    Raises ``ModelUnavailable`` when it is installed but its licence was not accepted
    (``accepted_license="agpl-3.0"``) or its file fails verification: a configuration the
    operator must fix, never a silent downgrade.
    """
    if package_dir(NUDITY_PACKAGE) is None:
        log.warning("output nudity screening is off: the optional nudity model is not "
                    "installed. %s", _REMEDY)
        return None
    entry = manifest_entry(NUDITY_PACK, "nudity")
    if accepted_license != NUDITY_LICENSE_ACCEPTANCE:
        raise ModelUnavailable(
            f"the nudity model {entry.name} is licensed {entry.license} (the nudenet wheel's "
            f"metadata says MIT, its LICENSE files say AGPL-3.0). Accept it knowingly with "
            f"'{NUDITY_LICENSE_ACCEPTANCE}', or uninstall nudenet."
        )
    return OnnxNudityClassifier(default_nudity_model(), threshold=threshold, threads=threads,
                                **kwargs)
