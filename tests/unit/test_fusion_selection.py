"""Score fusion keeps SFace's verdict outside its band; template selection's rules (photos
and liveness bursts); the guidance for fewer than 3 photos."""

from __future__ import annotations

import numpy as np
import pytest

from gate.consent.liveness import FrameFace, enrolment_frames, verify_burst
from gate.identity.selection import Candidate, select_templates
from gate.pipeline import AnalysedFace
from gate.vision.fusion import ScoreFusion

FUSION = ScoreFusion(mu_s=0.07, sd_s=0.1, mu_d=0.85, sd_d=0.03, a=0.1, b=0.1,
                     band=(0.25, 0.5))


def test_scores_outside_the_band_are_sface_alone() -> None:
    sface = np.array([0.1, 0.24, 0.51, 0.9])
    out = FUSION.rescore(sface, np.array([0.99, 0.99, 0.5, 0.5]))
    assert np.array_equal(out, sface)


def test_scores_inside_the_band_follow_both_models() -> None:
    low_dlib = FUSION.rescore(np.array([0.4]), np.array([0.80]))[0]
    high_dlib = FUSION.rescore(np.array([0.4]), np.array([0.95]))[0]
    assert low_dlib < high_dlib
    assert FUSION.in_band(0.25) and FUSION.in_band(0.5) and not FUSION.in_band(0.51)
    assert FUSION.fuse(0.4, 0.95) == pytest.approx(high_dlib)


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def test_selection_prefers_quality_then_variety_and_skips_bad_faces() -> None:
    person = [Candidate(0.9, 0.0, _unit([1, 0.0, 0])),   # best frontal: first
              Candidate(0.95, 0.5, _unit([1, 0.1, 0])),  # turned too far: never
              Candidate(0.8, 0.1, _unit([1, 0.02, 0])),  # a near copy of the first
              Candidate(0.7, 0.1, _unit([1, 0.6, 0])),   # different: adds variety
              Candidate(0.3, 0.0, _unit([1, 0.9, 0]))]   # poor quality: never
    assert select_templates(person, k=3) == [0, 3]
    assert select_templates(person, k=1) == [0]
    assert select_templates([], k=3) == []
    with pytest.raises(ValueError):
        select_templates(person, k=0)


def _frame(quality: float, nose_dx: float, vec: list[float], n: int = 0) -> FrameFace:
    """A burst frame whose face has this quality, yaw (nose offset, px) and template."""
    landmarks = ((40.0, 50.0), (72.0, 50.0), (56.0 + nose_dx, 70.0), (44.0, 90.0),
                 (68.0, 90.0))
    sample = AnalysedFace(frame_index=0, bbox_px=(0, 0, 112, 112), landmarks_px=landmarks,
                          det_score=0.9, size_px=112, quality=quality, vector=_unit(vec))
    return FrameFace(faces=1, sample=sample, digest=f"{vec}{n}",
                     thumb=np.full((32, 32), 10.0 * n, dtype=np.float32))


def test_burst_enrolment_keeps_the_best_and_most_varied_frames() -> None:
    burst = [_frame(0.8, 0, [1, 0, 0]), _frame(0.9, 0, [1, 0.01, 0]),  # near copies
             _frame(0.7, 6, [1, 0.5, 0]),  # turned a little: variety
             FrameFace(faces=2, sample=None, digest="x", thumb=np.zeros((32, 32)))]
    assert enrolment_frames(burst) == [1, 2]
    assert enrolment_frames(burst, k=1) == [1]
    # Nothing good enough to select: the first usable frame, as before.
    poor = [_frame(0.1, 0, [1, 0, 0]), _frame(0.2, 0, [0, 1, 0])]
    assert enrolment_frames(poor) == [0]
    assert enrolment_frames([burst[3]]) == []


def test_a_passed_burst_names_the_frames_to_enrol() -> None:
    # front, front, left (nose towards the image's right), right: one person.
    burst = [_frame(0.8, 0, [1, 0, 0], 0), _frame(0.9, 0, [1, 0.02, 0], 1),
             _frame(0.7, 8, [1, 0.4, 0], 2), _frame(0.7, -8, [1, -0.4, 0.1], 3)]
    result = verify_burst(burst, ("front", "left", "right"))
    assert result.passed, result.reasons
    assert result.frontal_indices == (0, 1)
    assert result.enrol_indices == (1, 3, 2)  # best frontal first, then variety


def test_guidance_only_below_the_default_template_count() -> None:
    from gate.identity.selection import enrolment_guidance

    assert enrolment_guidance(3) is None and enrolment_guidance(5) is None
    one = enrolment_guidance(1)
    assert one is not None and "1 photo." in one and "Add 2 more" in one
