"""Proving who you are: a liveness burst, matched to the face a consent act is about.

Used by every flow where a person acts for themselves: answering a consent request,
self-enrolment in the portal, and an app's tenant-bound self-enrolment of its user's own
face. A live person must reach the stricter ``allow_threshold`` to act *as* an enrolled
subject (granting consent is a permissive act); a plain lookup uses ``match_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gate.consent.config import ConsentConfig
from gate.consent.lifecycle import SubjectLifecycle
from gate.consent.links import Links, LivenessFailed, Session
from gate.consent.liveness import LivenessResult, check_liveness
from gate.errors import ConsentError, InvalidRequest
from gate.types import Requester, Subject, SubjectStatus


class IdentityMismatch(ConsentError):
    """The selfie does not match the face the request (or the subject) is about."""

    code = "identity_mismatch"


@dataclass(frozen=True, slots=True)
class ProofThresholds:
    match: float  # to find a person
    allow: float  # to act as them


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else -1.0


class Proof:
    """Liveness and identity proofs (see module doc)."""

    def __init__(self, lifecycle: SubjectLifecycle, links: Links, config: ConsentConfig,
                 thresholds: ProofThresholds) -> None:
        self.lifecycle = lifecycle
        self.links = links
        self.config = config
        self.thresholds = thresholds

    def answer_challenge(self, session: Session, challenge_id: str,
                         frames: Sequence[bytes]) -> LivenessResult:
        poses = self.links.take_challenge(session, challenge_id)
        result = check_liveness(self.lifecycle.faces, frames, poses, self.config.liveness(),
                                min_face_px=self.lifecycle.min_face_px)
        if not result.passed or result.reference is None:
            raise LivenessFailed("liveness check failed: " + "; ".join(result.reasons))
        return result

    def enrolled_match(self, reference: np.ndarray, *, to_act_as: bool = False) -> str | None:
        """The enrolled subject ``reference`` matches (``to_act_as``: strictly enough to
        act as them), or None."""
        threshold = max(self.thresholds.allow, self.thresholds.match) if to_act_as \
            else self.thresholds.match
        hits = self.lifecycle.index.search(reference[None, :].astype(np.float32), 1)
        if hits and hits[0] and hits[0][0].similarity >= threshold:
            return str(hits[0][0].subject_id)
        return None

    def matches_subject(self, subject_id: str, reference: np.ndarray) -> bool:
        best = max((cosine(reference, v) for v in self.lifecycle.templates_of(subject_id)),
                   default=-1.0)
        return best >= max(self.thresholds.allow, self.thresholds.match)

    def matches_vector(self, vector: np.ndarray, reference: np.ndarray) -> bool:
        return cosine(reference, vector) >= max(self.thresholds.allow, self.thresholds.match)

    def enrol_from_burst(self, frames: Sequence[bytes], result: LivenessResult,
                         display_name: str | None, *, guardian: bool = False,
                         status: SubjectStatus = "protected",
                         owner: Requester | None = None) -> Subject:
        """Enrol the person from the burst's frontal frames (several templates)."""
        if not display_name or not display_name.strip():
            raise InvalidRequest("a name is needed to enrol", field="display_name")
        frontal = [frames[i] for i in result.frontal_indices]
        return self.lifecycle.enroll(frontal, display_name, status=status, guardian=guardian,
                                     owner=owner)
