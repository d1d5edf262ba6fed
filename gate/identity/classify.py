"""Identity readings: who each face (and each person named in the prompt) is, for this
request. A pure function of its inputs, tested with fact tables
(``tests/unit/test_classify.py``).

Readings, from most permissive to most restrictive: ``self`` (the requester's own
enrolled face), ``consented`` (a grant covers this request), ``unknown`` (matches nobody
well enough), ``protected`` with status ``consenting`` (enrolled, but nothing covers this
request), ``protected`` with status ``protected`` (opted out). When several enrolled people
match a face, the most restrictive reading wins. A permissive reading needs the stricter
``allow_threshold``; below it, a match only protects. A face too small or too poor to
identify is ``unidentifiable`` unless it matched somebody protective.

Two rules make permissive readings stricter than protective ones (docs/accuracy.md,
issue 17), both set in ``Thresholds``:

- ``permissive_rule="top2"``: a protective reading keeps the subject's best template; a
  permissive one is judged on the mean of the face's two best similarities to the
  subject's templates (``template_sims``; a subject with one template keeps it). A
  stranger rarely comes close to two photos of one person; the person usually does.
- ``poor_quality_allow``: a face below ``min_quality`` (a profile, blur) that is at
  least ``min_face_px`` may still read ``consented`` or ``self`` when its permissive
  similarity reaches this stricter threshold; otherwise it stays ``unidentifiable``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from gate.identity.index import IndexHit
from gate.types import ConsentNeed, FaceResult, Grant, Requester, Subject

#: Two subjects whose similarities are this close are an ambiguous match.
AMBIGUITY_MARGIN = 0.05
#: ``flip_margin`` at which every face that matches anyone gets its mirror embedded.
MIRROR_ALWAYS = 2.0
#: Identity readings from most permissive to most restrictive.
RESTRICTIVENESS: Mapping[tuple[str, str | None], int] = {
    ("self", "consenting"): 0, ("consented", "consenting"): 1, ("unknown", None): 2,
    ("protected", "consenting"): 3, ("protected", "protected"): 4,
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Calibrated similarity thresholds (cosine) and quality floors (see Settings)."""

    match: float  # protective readings
    allow: float  # permissive readings (never below ``match``)
    protected_margin: float
    min_quality: float
    min_face_px: int
    ambiguity_margin: float = AMBIGUITY_MARGIN
    #: What a permissive reading is judged on: ``max`` (the best template) or ``top2``
    #: (the mean of the two best templates, never above the best; see module doc).
    #: These defaults keep the plain rules; ``Settings`` holds the recommended ones.
    permissive_rule: Literal["max", "top2"] = "max"
    #: Similarity at which a poor-quality face (at least ``min_face_px``) may still read
    #: permissive; above 1: never.
    poor_quality_allow: float = 2.0


@dataclass(frozen=True, slots=True)
class Observation:
    """A face as the pipeline saw it, before anyone says who it is."""

    face_ref: str
    image_index: int
    frame_index: int
    role: str
    bbox: tuple[int, int, int, int]
    det_score: float
    quality: float
    size_px: int
    age_band: Literal["minor", "adult", "unknown"] | None = None
    apparent_age: float | None = None


@dataclass(frozen=True, slots=True)
class Asked:
    """What the request asks, as far as identity is concerned."""

    operation: str
    content: frozenset[str]
    purpose: str | None
    requester: Requester
    #: Consent formalities a grant must record to cover this request (jurisdictions).
    required_formalities: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Classification:
    faces: tuple[FaceResult, ...]
    needs: tuple[ConsentNeed, ...]
    #: The grants that made a face ``consented``, by grant id.
    covering: Mapping[str, Grant]
    #: Faces a grant covered in scope but not in form: the formalities it lacked.
    formality_gaps: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Reading:
    identity: str
    status: str | None
    grant: Grant | None = None
    missing: frozenset[str] = frozenset()  # formalities a covering grant lacked


_ReadFn = Callable[[str, float], _Reading]
#: Per face: subject id -> the face's cosine to each of that subject's templates.
TemplateSims = Mapping[str, Sequence[float]]


def permissive_similarity(best: float, template_sims: Sequence[float] | None,
                          rule: str) -> float:
    """The similarity a permissive reading (self, consented) is judged on.

    ``best`` is the subject's best template (what the index reports). With ``top2`` and
    at least two template similarities: the mean of the two best, never above ``best``.
    Otherwise ``best`` (one template, or similarities not known).
    """
    if rule != "top2" or template_sims is None or len(template_sims) < 2:
        return best
    first, second = sorted((float(v) for v in template_sims), reverse=True)[:2]
    return min(best, (first + second) / 2.0)


def mirror_can_matter(face_hits: Sequence[IndexHit], template_sims: TemplateSims | None,
                      thresholds: Thresholds, margin: float) -> bool:
    """Whether a face's flip-averaged vector could be read differently from the reading
    of its own (single-crop) vector, when the two similarities to any template differ by
    at most ``margin`` (test-time flip only where it can matter; issue 17).

    It cannot when no subject comes within ``margin`` of ``match`` (the face stays
    unknown), or when exactly one does and both its best and its permissive similarity
    clear the highest threshold (``match``, ``allow``, ``poor_quality_allow``) by
    ``margin`` (the same single reading). Everything else (two subjects near the face,
    or one near a threshold) asks for the mirror.
    """
    near = [h for h in face_hits if h.similarity >= thresholds.match - margin]
    if not near:
        return False
    if len(near) > 1:
        return True
    highest = max(thresholds.match, thresholds.allow,
                  thresholds.poor_quality_allow if thresholds.poor_quality_allow <= 1.0
                  else thresholds.allow)
    hit = near[0]
    sims = template_sims.get(hit.subject_id) if template_sims is not None else None
    if thresholds.permissive_rule == "top2" and template_sims is not None and sims is None:
        return True  # the permissive similarity is not known: ask
    score = min(hit.similarity,
                permissive_similarity(hit.similarity, sims, thresholds.permissive_rule))
    return score < highest + margin


def classify(faces: Sequence[Observation], hits: Sequence[Sequence[IndexHit]],
             named: Sequence[str], subjects: Mapping[str, Subject],
             grants: Mapping[str, Sequence[Grant]], asked: Asked, thresholds: Thresholds,
             *, now: datetime, count_uses: bool = True,
             template_sims: Sequence[TemplateSims] | None = None) -> Classification:
    """Readings of every face (``hits[i]`` are face ``i``'s index hits, best first) and of
    every enrolled person ``named`` in the prompt. ``subjects`` holds the subjects that
    still exist (one erased between search and lookup reads as nobody).
    ``template_sims[i]`` (``permissive_rule="top2"``): face ``i``'s similarities to each
    template of the subjects it may read permissively as (see module doc)."""
    if template_sims is not None and len(template_sims) != len(faces):
        raise ValueError("template_sims needs one mapping per face")
    results: list[FaceResult] = []
    covering: dict[str, Grant] = {}
    gaps: dict[str, frozenset[str]] = {}

    def read(subject_id: str, similarity: float = 1.0) -> _Reading:
        subject = subjects.get(subject_id)
        if subject is None:  # erased meanwhile: nobody
            return _Reading("unknown", None)
        if subject.status == "protected":
            return _Reading("protected", "protected")
        confident = similarity >= max(thresholds.allow, thresholds.match)
        req = asked.requester
        owner = subject.owner
        if owner is not None and req.user_id is not None and owner.app_id == req.app_id \
                and owner.user_id == req.user_id:
            return _Reading("self", subject.status) if confident else _Reading("unknown", None)
        missing: frozenset[str] = frozenset()
        for grant in grants.get(subject_id, ()):
            if not grant.covers(app_id=req.app_id, user_id=req.user_id,
                                operation=asked.operation, content=sorted(asked.content),
                                purpose=asked.purpose, now=now, count_uses=count_uses):
                continue
            lacking = asked.required_formalities - grant.formalities
            if lacking:  # the right scope, but not consent in the form the law asks for
                missing = missing | lacking
                continue
            if not confident:
                return _Reading("unknown", None)
            return _Reading("consented", subject.status, grant)
        return _Reading("protected", subject.status, missing=missing)

    for n, (face, face_hits) in enumerate(zip(faces, hits, strict=True)):
        sims = template_sims[n] if template_sims is not None else {}
        reading, subject_id, similarity, permissive = _read_face(
            face_hits, subjects, thresholds, read, sims)
        if reading.identity == "unknown":
            subject_id = None
        poor = face.size_px < thresholds.min_face_px or face.quality < thresholds.min_quality
        # A poor face that is large enough and matches a consenting subject (or the
        # requester) beyond the stricter poor-quality threshold keeps its reading.
        sure = reading.identity in ("consented", "self") and \
            face.size_px >= thresholds.min_face_px and \
            permissive >= thresholds.poor_quality_allow
        if poor and reading.identity in ("unknown", "consented", "self") and not sure:
            # Too poor to hand anyone a permissive reading; a match still names the
            # person, so a consent request can reach them.
            reading = _Reading("unidentifiable", reading.status)
        if reading.grant is not None:
            covering[reading.grant.grant_id] = reading.grant
        if reading.missing:
            gaps[face.face_ref] = reading.missing
        results.append(FaceResult(
            face_ref=face.face_ref, image_index=face.image_index,
            frame_index=face.frame_index, role=face.role,
            bbox=face.bbox, det_score=face.det_score, quality=face.quality,
            size_px=face.size_px, identity=reading.identity,
            subject_id=subject_id,
            subject_status=reading.status,
            similarity=similarity,
            grant_id=reading.grant.grant_id if reading.grant else None,
            age_band=face.age_band, apparent_age=face.apparent_age))
    for n, subject_id in enumerate(dict.fromkeys(named)):
        reading = read(subject_id)
        if reading.identity == "unknown":
            continue
        if reading.grant is not None:
            covering[reading.grant.grant_id] = reading.grant
        if reading.missing:
            gaps[f"p{n}"] = reading.missing
        results.append(FaceResult(
            face_ref=f"p{n}", image_index=-1, role="reference", bbox=(0, 0, 0, 0),
            det_score=0.0, quality=0.0, size_px=0,
            identity=reading.identity,
            subject_id=subject_id, subject_status=reading.status,
            grant_id=reading.grant.grant_id if reading.grant else None, source="prompt"))
    return Classification(tuple(results), _needs(results, asked), covering, gaps)


def _read_face(face_hits: Sequence[IndexHit], subjects: Mapping[str, Subject],
               thresholds: Thresholds, read: _ReadFn, template_sims: TemplateSims
               ) -> tuple[_Reading, str | None, float | None, float]:
    """The most restrictive reading among the close matches of one face, and the
    permissive similarity of the match it names (-1 when none)."""
    similarity = round(face_hits[0].similarity, 4) if face_hits else None
    candidates = [h for h in face_hits
                  if h.similarity >= thresholds.match and h.subject_id in subjects]
    if not candidates:
        return _Reading("unknown", None), None, similarity, -1.0
    top = candidates[0].similarity
    close = [h for h in candidates
             if h is candidates[0] or h.similarity >= top - thresholds.ambiguity_margin
             or (subjects[h.subject_id].status == "protected"
                 and h.similarity >= top - thresholds.protected_margin)]
    permissive = {h.subject_id: permissive_similarity(
        h.similarity, template_sims.get(h.subject_id), thresholds.permissive_rule)
        for h in close}
    readings = [(h, read(h.subject_id, permissive[h.subject_id])) for h in close]
    hit, reading = max(readings, key=lambda r: RESTRICTIVENESS.get(
        (r[1].identity, r[1].status), 99))
    return reading, hit.subject_id, round(hit.similarity, 4), permissive[hit.subject_id]


def _needs(results: Collection[FaceResult], asked: Asked) -> tuple[ConsentNeed, ...]:
    """Faces that consent could cover: unknown, unidentifiable, or enrolled and
    consenting without a covering grant."""
    req = asked.requester
    return tuple(
        ConsentNeed(face_ref=r.face_ref, subject_id=r.subject_id,
                    operation=asked.operation,
                    content=sorted(asked.content),
                    app_id=req.app_id, user_id=req.user_id,
                    formalities=sorted(asked.required_formalities))
        for r in results
        if r.identity in ("unknown", "unidentifiable")
        or (r.identity == "protected" and r.subject_status == "consenting"))

