"""Safety properties that hold for EVERY policy in policies/, on random request facts."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.policy.evaluate import CORE_RULES, FaceFacts, RequestFacts, RulePolicyEngine
from gate.policy.load import load_policy, parse_policy
from gate.policy.model import Rule
from gate.types import CONTENT_CATEGORIES, OPERATIONS, ROLES

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ENGINES = {p.name: RulePolicyEngine(load_policy(p)) for p in sorted(POLICIES.glob("*.yaml"))}
# A policy that speaks about the requester's own face only: every other face is unmatched.
SELF_ONLY = RulePolicyEngine(parse_policy(
    "policy: self-only\nversion: '1'\n"
    "rules: [{id: allow.self, effect: allow, message: m, when: {identity: [self]}}]\n"))

IDENTITIES = ("self", "consented", "protected", "unknown", "unidentifiable")
policies = pytest.mark.parametrize("name", sorted(ENGINES))
# About 300 examples per property, shared between the policies (keeps the file fast).
examples = settings(max_examples=max(100, 300 // len(ENGINES)), deadline=None)

# Every combination of face facts (1890); one sampled_from is much faster than seven.
face_st = st.sampled_from([
    FaceFacts(face_ref="", identity=identity, role=role, source=source,
              subject_status=status, age_band=age, grant_purpose=purpose)
    for identity, role, source, status, age, purpose in itertools.product(
        IDENTITIES, ROLES, ("image", "prompt"), (None, "consenting", "protected"),
        ("unknown", "adult", "minor"), (None, "portrait", "advertising"))])


def _numbered(faces: list[FaceFacts]) -> tuple[FaceFacts, ...]:
    return tuple(replace(f, face_ref=f"f{i}") for i, f in enumerate(faces))


@st.composite
def facts_st(draw: st.DrawFn, extra: st.SearchStrategy[FaceFacts] | None = None,
             content: st.SearchStrategy[frozenset[str]] | None = None) -> RequestFacts:
    """Random facts; ``extra`` (if given) is one more face, inserted anywhere."""
    faces = draw(st.lists(face_st, max_size=5))
    if extra is not None:
        faces.insert(draw(st.integers(0, len(faces))), draw(extra))
    return RequestFacts(
        operation=draw(st.sampled_from(OPERATIONS)),
        content=draw(content if content is not None
                     else st.frozensets(st.sampled_from(CONTENT_CATEGORIES))),
        app_id=draw(st.sampled_from(("app-a", "app-b"))),
        faces=_numbered(faces),
        user_id=draw(st.sampled_from((None, "user-1"))))


with_sexual = st.frozensets(st.sampled_from(CONTENT_CATEGORIES)).map(lambda c: c | {"sexual"})


@policies
@examples
@given(facts=facts_st(extra=face_st.map(lambda f: replace(
    f, identity="protected", subject_status="protected"))))
def test_never_allow_an_opted_out_person(name: str, facts: RequestFacts) -> None:
    evaluation = ENGINES[name].evaluate(facts)
    assert evaluation.verdict == "deny"
    assert "core.protected_subject" in {r.rule_id for r in evaluation.reasons}


@policies
@examples
@given(facts=facts_st(extra=face_st.map(lambda f: replace(f, age_band="minor")),
                      content=with_sexual))
def test_never_allow_sexual_content_with_an_apparent_minor(name: str,
                                                          facts: RequestFacts) -> None:
    evaluation = ENGINES[name].evaluate(facts)
    assert evaluation.verdict == "deny"
    assert "core.minor_sexual" in {r.rule_id for r in evaluation.reasons}


@policies
@examples
@given(facts=facts_st(extra=face_st.filter(lambda f: f.identity not in {"self", "consented"}),
                      content=with_sexual))
def test_never_allow_sexual_content_with_a_face_not_self_or_consented(
        name: str, facts: RequestFacts) -> None:
    assert ENGINES[name].evaluate(facts).verdict != "allow"


def _value_matches(field: str, allowed: Any, facts: RequestFacts, face: FaceFacts) -> bool:
    """An independent reading of one ``when`` condition (the oracle for the next test)."""
    if field == "content_any":
        return bool(facts.content & set(allowed))
    if field == "content_none":
        return not facts.content & set(allowed)
    if field == "face_count":
        n = len(facts.faces)
        return (allowed["min"] is None or n >= allowed["min"]) and (
            allowed["max"] is None or n <= allowed["max"])
    negated = field.endswith("_not")
    attr = field.removesuffix("_not")
    value = getattr(face, attr) if hasattr(face, attr) else getattr(facts, attr)
    return (value not in allowed) if negated else (value in allowed)


def _mentions(rule: Rule, facts: RequestFacts, face: FaceFacts) -> bool:
    conditions = rule.when.model_dump(exclude_none=True)
    return rule.scope == "face" and all(
        _value_matches(field, allowed, facts, face) for field, allowed in conditions.items())


@pytest.mark.parametrize("name", [*sorted(ENGINES), "self-only"])
@examples
@given(facts=facts_st())
def test_a_face_no_rule_mentions_makes_the_verdict_deny(name: str,
                                                       facts: RequestFacts) -> None:
    engine = ENGINES.get(name, SELF_ONLY)
    rules = CORE_RULES + tuple(engine.policy.rules)
    unmatched = {f.face_ref for f in facts.faces
                 if not any(_mentions(r, facts, f) for r in rules)}
    evaluation = engine.evaluate(facts)
    flagged = {r.face_ref for r in evaluation.reasons
               if r.rule_id == "default.no_matching_rule" and r.face_ref is not None}
    if unmatched:
        assert evaluation.verdict == "deny"
        assert flagged == unmatched
    else:
        assert not flagged


@policies
@examples
@given(data=st.data(), facts=facts_st())
def test_evaluation_is_deterministic_and_independent_of_face_order(
        name: str, data: st.DataObject, facts: RequestFacts) -> None:
    engine = ENGINES[name]
    first = engine.evaluate(facts)
    assert engine.evaluate(facts) == first
    shuffled = replace(facts, faces=tuple(data.draw(st.permutations(facts.faces))))
    other = engine.evaluate(shuffled)
    assert other.verdict == first.verdict
    assert sorted(other.reasons, key=repr) == sorted(first.reasons, key=repr)
    assert set(other.obligations) == set(first.obligations)


@policies
@examples
@given(facts=facts_st())
def test_reasons_name_only_rules_whose_effect_is_the_verdict(name: str,
                                                            facts: RequestFacts) -> None:
    engine = ENGINES[name]
    evaluation = engine.evaluate(facts)
    effects = {r.id: r.effect for r in (*CORE_RULES, *engine.policy.rules)}
    effects["default.no_matching_rule"] = "deny"
    assert evaluation.reasons
    for reason in evaluation.reasons:
        assert reason.effect == evaluation.verdict
        assert effects[reason.rule_id] == evaluation.verdict
    if evaluation.verdict != "allow":
        assert evaluation.obligations == ()
