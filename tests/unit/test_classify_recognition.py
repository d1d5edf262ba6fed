"""Issue 17's recognition rules in ``classify`` (pure): permissive readings on the mean of
the two best templates (``permissive_rule="top2"``), protective readings on the best one,
and a stricter threshold at which a poor-quality face may still read as consented."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from gate.identity.classify import (
    Asked,
    Observation,
    TemplateSims,
    Thresholds,
    classify,
    mirror_can_matter,
    permissive_similarity,
)
from gate.identity.index import IndexHit
from gate.types import Grant, Requester, Subject

NOW = datetime(2026, 12, 4, tzinfo=UTC)
RULES = Thresholds(match=0.36, allow=0.40, protected_margin=0.15, min_quality=0.30,
                   min_face_px=24, permissive_rule="top2", poor_quality_allow=0.45)
PLAIN = Thresholds(match=0.36, allow=0.40, protected_margin=0.15, min_quality=0.30,
                   min_face_px=24)
ASKED = Asked(operation="face_swap", content=frozenset({"general"}), purpose=None,
              requester=Requester(app_id="app", user_id="u1"))


def subject(subject_id: str, status: str, *, owner: Requester | None = None,
            templates: int = 3) -> Subject:
    return Subject(subject_id=subject_id, display_name=subject_id, status=status,  # type: ignore[arg-type]
                   owner=owner, model_pack="p", template_count=templates, created_at=NOW)


def grant(subject_id: str) -> Grant:
    return Grant(grant_id=f"g_{subject_id}", subject_id=subject_id, app_id="app",
                 operations=["face_swap"], content=["general"], created_at=NOW)


def face(quality: float = 0.8, size_px: int = 120) -> Observation:
    return Observation(face_ref="i0f0", image_index=0, frame_index=0, role="target",
                       bbox=(0, 0, size_px, size_px), det_score=0.9, quality=quality,
                       size_px=size_px)


def read_one(hits: Sequence[IndexHit], subjects: Sequence[Subject],
             sims: TemplateSims | None, thresholds: Thresholds = RULES,
             observation: Observation | None = None) -> tuple[str, str | None]:
    by_id: Mapping[str, Subject] = {s.subject_id: s for s in subjects}
    grants = {s.subject_id: [grant(s.subject_id)] for s in subjects
              if s.status == "consenting" and s.owner is None}
    result = classify([observation or face()], [list(hits)], [], by_id, grants, ASKED,
                      thresholds, now=NOW, template_sims=None if sims is None else [sims])
    [reading] = result.faces
    return reading.identity, reading.subject_id


# -- the rule itself ------------------------------------------------------------------------
@pytest.mark.parametrize(("best", "sims", "rule", "expected"), [
    (0.50, [0.50, 0.30, 0.20], "top2", 0.40),  # mean of the two best
    (0.50, [0.20, 0.50, 0.46], "top2", 0.48),  # order does not matter
    (0.50, [0.50], "top2", 0.50),  # one template: itself
    (0.50, [], "top2", 0.50),  # similarities unknown: the best template
    (0.50, None, "top2", 0.50),
    (0.50, [0.50, 0.30], "max", 0.50),  # the plain rule
    (0.45, [0.60, 0.58], "top2", 0.45),  # never above what the index reported
])
def test_permissive_similarity(best: float, sims: list[float] | None, rule: str,
                               expected: float) -> None:
    assert permissive_similarity(best, sims, rule) == pytest.approx(expected)


# -- permissive readings need two templates close, protective ones need one ----------------
def test_one_close_template_no_longer_makes_a_consented_reading() -> None:
    carol = subject("carol", "consenting")
    hits = [IndexHit("carol", 0.46)]
    # The best template alone (0.46 >= 0.40) used to read consented...
    assert read_one(hits, [carol], {"carol": [0.46, 0.30, 0.25]}, PLAIN) == \
        ("consented", "carol")
    # ...the mean of the two best (0.38) is below allow: unknown, as for a stranger.
    assert read_one(hits, [carol], {"carol": [0.46, 0.30, 0.25]}) == ("unknown", None)


def test_two_close_templates_read_consented() -> None:
    carol = subject("carol", "consenting")
    assert read_one([IndexHit("carol", 0.52)], [carol], {"carol": [0.52, 0.44, 0.10]}) == \
        ("consented", "carol")


def test_a_one_template_subject_is_read_as_before() -> None:
    carol = subject("carol", "consenting", templates=1)
    assert read_one([IndexHit("carol", 0.41)], [carol], {"carol": [0.41]}) == \
        ("consented", "carol")
    assert read_one([IndexHit("carol", 0.39)], [carol], {"carol": [0.39]}) == \
        ("unknown", None)


def test_self_readings_follow_the_permissive_rule_too() -> None:
    me = subject("me", "consenting", owner=ASKED.requester)
    assert read_one([IndexHit("me", 0.50)], [me], {"me": [0.50, 0.20]}) == ("unknown", None)
    assert read_one([IndexHit("me", 0.50)], [me], {"me": [0.50, 0.42]}) == ("self", "me")


def test_protective_readings_keep_the_best_template() -> None:
    # A protected subject or a consenting one without a grant for this request: one
    # close template is enough, whatever the others say.
    paul = subject("paul", "protected")
    assert read_one([IndexHit("paul", 0.37)], [paul], {"paul": [0.37, 0.0, -0.1]}) == \
        ("protected", "paul")
    nora = subject("nora", "consenting")
    result = classify([face()], [[IndexHit("nora", 0.37)]], [], {"nora": nora}, {}, ASKED,
                      RULES, now=NOW, template_sims=[{"nora": [0.37, 0.0]}])
    assert (result.faces[0].identity, result.faces[0].subject_status) == \
        ("protected", "consenting")


def test_the_most_restrictive_reading_still_wins() -> None:
    # Consented by two templates, but a protected look-alike is close: protected.
    carol, paul = subject("carol", "consenting"), subject("paul", "protected")
    hits = [IndexHit("carol", 0.55), IndexHit("paul", 0.45)]
    sims = {"carol": [0.55, 0.50], "paul": [0.45, 0.1]}
    assert read_one(hits, [carol, paul], sims) == ("protected", "paul")


def test_the_reported_similarity_is_the_best_template() -> None:
    carol = subject("carol", "consenting")
    result = classify([face()], [[IndexHit("carol", 0.52)]], [], {"carol": carol},
                      {"carol": [grant("carol")]}, ASKED, RULES, now=NOW,
                      template_sims=[{"carol": [0.52, 0.44]}])
    assert result.faces[0].similarity == 0.52
    assert result.faces[0].grant_id == "g_carol"


def test_template_sims_must_match_the_faces() -> None:
    with pytest.raises(ValueError):
        classify([face()], [[]], [], {}, {}, ASKED, RULES, now=NOW, template_sims=[])


# -- poor-quality faces ----------------------------------------------------------------------
def test_a_poor_face_of_a_consenting_person_reads_consented_beyond_the_stricter_bar() -> None:
    carol = subject("carol", "consenting")
    profile = face(quality=0.10)
    sure = {"carol": [0.55, 0.47]}  # permissive 0.51 >= 0.45
    assert read_one([IndexHit("carol", 0.55)], [carol], sure, observation=profile) == \
        ("consented", "carol")
    near = {"carol": [0.46, 0.42]}  # permissive 0.44: enough for a good face only
    assert read_one([IndexHit("carol", 0.46)], [carol], near, observation=profile) == \
        ("unidentifiable", "carol")
    assert read_one([IndexHit("carol", 0.46)], [carol], near) == ("consented", "carol")


def test_a_poor_face_judged_on_the_permissive_rule_not_the_best_template() -> None:
    carol = subject("carol", "consenting")
    # Best template 0.60, but the mean of the two best is 0.42 < 0.45: unidentifiable.
    assert read_one([IndexHit("carol", 0.60)], [carol], {"carol": [0.60, 0.24]},
                    observation=face(quality=0.1)) == ("unidentifiable", "carol")


def test_a_too_small_face_never_reads_permissive() -> None:
    carol = subject("carol", "consenting")
    tiny = face(quality=0.9, size_px=20)
    assert read_one([IndexHit("carol", 0.9)], [carol], {"carol": [0.9, 0.9]},
                    observation=tiny) == ("unidentifiable", "carol")


def test_a_poor_unknown_face_stays_unidentifiable() -> None:
    carol = subject("carol", "consenting")
    assert read_one([IndexHit("carol", 0.30)], [carol], {"carol": [0.30, 0.29]},
                    observation=face(quality=0.1)) == ("unidentifiable", None)


def test_off_by_default_in_thresholds() -> None:
    carol = subject("carol", "consenting")
    assert read_one([IndexHit("carol", 0.9)], [carol], {"carol": [0.9, 0.9]}, PLAIN,
                    observation=face(quality=0.1)) == ("unidentifiable", "carol")


def test_a_poor_face_of_a_protected_person_stays_protected() -> None:
    paul = subject("paul", "protected")
    assert read_one([IndexHit("paul", 0.38)], [paul], {"paul": [0.38, 0.1]},
                    observation=face(quality=0.1)) == ("protected", "paul")


# -- test-time flip only where it can change a reading (issue 17) --------------------------
M = 0.08  # flip_margin
H = 0.45 + M  # the highest threshold (poor-quality allow) plus the margin


@pytest.mark.parametrize(("hits", "sims", "asks"), [
    ([], {}, False),  # nobody enrolled near: unknown either way
    ([("a", 0.27)], {}, False),  # below match - margin
    ([("a", 0.28)], {}, True),  # within the margin of match
    ([("a", 0.40)], {}, True),  # between the thresholds (no template similarities known)
    ([("a", 0.60)], {"a": [0.60, 0.58, 0.30]}, False),  # one subject, clearly
    ([("a", 0.60)], {"a": [0.60, 0.40, 0.30]}, True),  # top-2 mean 0.50: near 0.45
    ([("a", 0.60)], {}, True),  # top2 rule but its similarities unknown: ask
    ([("a", 0.70), ("b", 0.30)], {"a": [0.7, 0.7]}, True),  # a second subject near match
    ([("a", 0.70), ("b", 0.20)], {"a": [0.7, 0.7]}, False),  # the second far below
    ([("a", H - 0.001)], {"a": [0.7, 0.7]}, True),
    ([("a", H)], {"a": [H, H]}, False),
])
def test_mirror_only_where_a_reading_could_change(
        hits: list[tuple[str, float]], sims: dict[str, list[float]], asks: bool) -> None:
    row = [IndexHit(s, v) for s, v in hits]
    assert mirror_can_matter(row, sims, RULES, M) is asks


def test_mirror_band_follows_the_rules() -> None:
    """With the plain rules (best template, no poor-quality reading) the top of the band
    is ``allow`` + margin and template similarities are not needed."""
    assert mirror_can_matter([IndexHit("a", 0.49)], None, PLAIN, M) is False
    assert mirror_can_matter([IndexHit("a", 0.47)], None, PLAIN, M) is True
    # margin 2.0: every face that matches anyone at all
    assert mirror_can_matter([IndexHit("a", -0.5)], None, PLAIN, 2.0) is True
