"""Which photos or burst frames become a person's templates.

Recognition improves most from a few *different* good pictures of a person: on the full
efficacy protocol, 3 enrolment photos instead of 1 cut clean "protected not recognised"
from 16 % to ~1 % (docs/accuracy.md). A liveness burst or a set of uploads holds many
near-identical frames; keeping all of them adds nothing but index size, keeping the
first one keeps whatever it happened to be. ``select_templates`` keeps at most ``k``:
the best-quality face of the person most candidates agree on first (facing the camera
when one does), then, greedily, the
candidate that adds the most variety (the farthest from the templates kept so far in
embedding space), weighted by its quality. Candidates that look like another person
than the first pick, or are turned too far, are never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Templates per subject the engine keeps by default (docs/accuracy.md: 3 photos
#: meet the clean targets; more than 3 was not measurable on our sets).
DEFAULT_TEMPLATES = 3
#: Below this quality a face is not a template (the gate's ``min_quality`` is 0.30;
#: an enrolment photo should be clearly better than the worst face it can recognise).
MIN_TEMPLATE_QUALITY = 0.5
#: |yaw ratio| above this: turned too far to be a useful template.
MAX_TEMPLATE_YAW = 0.30
#: |yaw ratio| at most this: facing the camera.
FRONTAL_YAW = 0.08
#: Cosine to the first pick below which a candidate is taken for another person.
SAME_PERSON_MIN = 0.30
#: Cosine to a kept template above which a candidate adds nothing (a near copy).
NEAR_COPY = 0.95


@dataclass(frozen=True, slots=True)
class Candidate:
    """One face offered as a template: its quality, pose and (unit) embedding."""

    quality: float  # 0..1 (gate.vision.quality)
    yaw_ratio: float  # gate.consent.liveness.yaw_ratio of its landmarks
    vector: np.ndarray  # unit vector


def select_templates(candidates: Sequence[Candidate], k: int = DEFAULT_TEMPLATES, *,
                     min_quality: float = MIN_TEMPLATE_QUALITY) -> list[int]:
    """Positions (in ``candidates``) of at most ``k`` templates, in the order chosen.

    Empty when no candidate is good enough. Deterministic: ties go to the earlier one.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    usable = [i for i, c in enumerate(candidates)
              if c.quality >= min_quality and abs(c.yaw_ratio) <= MAX_TEMPLATE_YAW]
    if not usable:
        return []
    vectors = np.stack([candidates[i].vector for i in usable])
    agree = (vectors @ vectors.T >= SAME_PERSON_MIN).sum(axis=1)
    # The person is whoever most candidates agree on (a stray photo of someone else
    # must not become the anchor), facing the camera if possible, best quality first.
    majority = [i for i, n in zip(usable, agree, strict=True) if n == agree.max()]
    frontal = [i for i in majority if abs(candidates[i].yaw_ratio) <= FRONTAL_YAW]
    pool = frontal or majority
    first = max(pool, key=lambda i: (candidates[i].quality, -i))
    chosen = [first]
    anchor = candidates[first].vector
    rest = [i for i in usable if i != first
            and float(np.dot(candidates[i].vector, anchor)) >= SAME_PERSON_MIN]
    while len(chosen) < k and rest:
        kept = np.stack([candidates[i].vector for i in chosen])
        best, best_gain = -1, 0.0
        for i in rest:
            closest = float(np.max(kept @ candidates[i].vector))
            if closest >= NEAR_COPY:
                continue
            gain = candidates[i].quality * (1.0 - closest)
            if gain > best_gain:
                best, best_gain = i, gain
        if best < 0:
            break
        chosen.append(best)
        rest.remove(best)
    return chosen


#: What to tell a person (or the operator) who enrolled from fewer than
#: ``DEFAULT_TEMPLATES`` photos; figures from docs/accuracy.md (both sets, clean photos).
FEW_PHOTOS_GUIDANCE = (
    "Enrolled from {count} photo{s}. One photo recognises a person in about 5 of 6 of "
    "their other photos (on our test sets 16 % were missed; with 3 photos 1.3 %). Add "
    "{missing} more: taken on another day or in other light, one with the head turned "
    "slightly, no sunglasses, the face at least 100 px tall, or use the camera flow, "
    "which picks the best frames itself."
)


def enrolment_guidance(template_count: int) -> str | None:
    """Advice to show after an enrolment with fewer than ``DEFAULT_TEMPLATES`` photos."""
    if template_count >= DEFAULT_TEMPLATES:
        return None
    missing = DEFAULT_TEMPLATES - template_count
    return FEW_PHOTOS_GUIDANCE.format(count=template_count, s="" if template_count == 1
                                      else "s", missing=missing)
