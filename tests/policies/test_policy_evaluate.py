"""Evaluation semantics: combination, core rules, request scope, obligations, user_id."""

from __future__ import annotations

from typing import Any

import pytest

from gate.policy.evaluate import FaceFacts, RequestFacts, RulePolicyEngine, evaluate_documents
from gate.policy.load import parse_policy
from gate.policy.model import CountRange, Policy


def _engine(rules: str, obligations: str = "[]") -> RulePolicyEngine:
    text = f"policy: t\nversion: '1'\nobligations: {obligations}\nrules:\n{rules}"
    return RulePolicyEngine(parse_policy(text))


ALLOW_ALL = """\
  - {id: allow.any_face, effect: allow, message: any face}
  - {id: allow.no_faces, effect: allow, scope: request, message: no face,
     when: {face_count: {max: 0}}}
"""


def _face(ref: str = "f0", identity: str = "unknown", **kw: Any) -> FaceFacts:
    return FaceFacts(face_ref=ref, identity=identity, role=kw.pop("role", "init"), **kw)


def _facts(*faces: FaceFacts, operation: str = "img2img", content: str = "general",
           user_id: str | None = None) -> RequestFacts:
    return RequestFacts(operation=operation, content=frozenset({content}), app_id="app",
                        faces=faces, user_id=user_id)


def test_request_facts_keep_their_positional_signature() -> None:
    facts = RequestFacts("txt2img", frozenset({"general"}), "app")
    assert (facts.faces, facts.user_id) == ((), None)


@pytest.mark.parametrize(("face", "rule_id"), [
    (_face(identity="protected", subject_status="protected"), "core.protected_subject"),
    (_face(identity="self", age_band="minor"), "core.minor_sexual"),
])
def test_no_allow_rule_overrides_a_core_rule(face: FaceFacts, rule_id: str) -> None:
    evaluation = _engine(ALLOW_ALL).evaluate(_facts(face, content="sexual"))
    assert evaluation.verdict == "deny"
    assert [r.rule_id for r in evaluation.reasons] == [rule_id]
    assert evaluation.obligations == ()


def test_deny_overrides_needs_consent_overrides_allow() -> None:
    engine = _engine("""\
  - {id: a.allow, effect: allow, message: m}
  - {id: a.consent, effect: needs_consent, message: m, when: {identity: [unknown]}}
  - {id: a.deny, effect: deny, message: m, when: {identity: [protected]}}
""")
    assert engine.evaluate(_facts(_face(identity="self"))).verdict == "allow"
    two = engine.evaluate(_facts(_face("f0", "self"), _face("f1", "unknown")))
    assert (two.verdict, [(r.rule_id, r.face_ref) for r in two.reasons]) == (
        "needs_consent", [("a.consent", "f1")])
    three = engine.evaluate(_facts(_face("f0", "unknown"), _face("f1", "protected")))
    assert (three.verdict, [r.rule_id for r in three.reasons]) == ("deny", ["a.deny"])


def test_a_face_no_rule_matches_is_denied_even_with_a_request_allow() -> None:
    engine = _engine("""\
  - {id: allow.self, effect: allow, message: m, when: {identity: [self]}}
  - {id: allow.always, effect: allow, scope: request, message: m}
""")
    evaluation = engine.evaluate(_facts(_face("f0", "self"), _face("f1", "unknown")))
    assert evaluation.verdict == "deny"
    assert [(r.rule_id, r.face_ref) for r in evaluation.reasons] == [
        ("default.no_matching_rule", "f1")]


def test_duplicate_face_refs_cannot_hide_an_unmatched_face() -> None:
    engine = _engine("  - {id: allow.self, effect: allow, message: m, "
                     "when: {identity: [self]}}\n")
    evaluation = engine.evaluate(_facts(_face("f0", "unknown"), _face("f0", "self")))
    assert evaluation.verdict == "deny"


def test_nothing_matched_without_faces_is_denied() -> None:
    engine = _engine("  - {id: allow.self, effect: allow, message: m}\n")
    evaluation = engine.evaluate(_facts())
    assert evaluation.verdict == "deny"
    assert [(r.rule_id, r.face_ref) for r in evaluation.reasons] == [
        ("default.no_matching_rule", None)]


def test_request_rules_add_their_effect_with_faces_present() -> None:
    engine = _engine(ALLOW_ALL + "  - {id: app.blocked, effect: deny, scope: request, "
                                 "message: m, when: {app_id: [app]}}\n")
    evaluation = engine.evaluate(_facts(_face(identity="self")))
    assert [r.rule_id for r in evaluation.reasons] == ["app.blocked"]


def test_user_id_condition_matches_only_named_users() -> None:
    engine = _engine(ALLOW_ALL + "  - {id: user.banned, effect: deny, scope: request, "
                                 "message: m, when: {user_id: [u-bad]}}\n")
    assert engine.evaluate(_facts(user_id="u-bad")).verdict == "deny"
    assert engine.evaluate(_facts(user_id="u-good")).verdict == "allow"
    assert engine.evaluate(_facts()).verdict == "allow"  # no user: never matches


def test_face_conditions_on_optional_facts_never_match_a_missing_value() -> None:
    engine = _engine(ALLOW_ALL + "  - {id: wedding.only, effect: deny, message: m, "
                                 "when: {grant_purpose: [ads], subject_status: [consenting]}}\n")
    assert engine.evaluate(_facts(_face(identity="consented"))).verdict == "allow"
    hit = _face(identity="consented", grant_purpose="ads", subject_status="consenting")
    assert engine.evaluate(_facts(hit)).verdict == "deny"


def test_obligations_policy_first_then_rules_without_repeats() -> None:
    engine = _engine("""\
  - {id: allow.a, effect: allow, message: m, obligations: [notify_subject, label_ai_content]}
  - {id: allow.b, effect: allow, message: m, obligations: [log_for_review]}
""", obligations="[label_ai_content]")
    evaluation = engine.evaluate(_facts(_face()))
    assert evaluation.obligations == ("label_ai_content", "notify_subject", "log_for_review")


def test_obligations_are_dropped_unless_allowed() -> None:
    engine = _engine(ALLOW_ALL + "  - {id: no.edit, effect: needs_consent, message: m, "
                                 "when: {operation: [edit]}}\n", obligations="[label_ai_content]")
    assert engine.evaluate(_facts(_face(), operation="edit")).obligations == ()
    assert engine.evaluate(_facts(_face())).obligations == ("label_ai_content",)


def test_content_conditions() -> None:
    engine = _engine(ALLOW_ALL + """\
  - {id: c.any, effect: needs_consent, message: m, when: {content_any: [violent, political]}}
  - {id: c.none, effect: deny, message: m, when: {content_none: [general]}}
""")
    assert engine.evaluate(_facts(_face())).verdict == "allow"
    assert engine.evaluate(_facts(_face(), content="violent")).verdict == "deny"
    both = RequestFacts("img2img", frozenset({"general", "political"}), "app", (_face(),))
    assert engine.evaluate(both).verdict == "needs_consent"


@pytest.mark.parametrize(("bounds", "inside", "outside"), [
    (CountRange(min=1, max=2), [1, 2], [0, 3]),
    (CountRange(max=0), [0], [1]),
    (CountRange(min=3), [3, 99], [2]),
    (CountRange(), [0, 5], []),
])
def test_count_range(bounds: CountRange, inside: list[int], outside: list[int]) -> None:
    assert all(bounds.contains(n) for n in inside)
    assert not any(bounds.contains(n) for n in outside)


def test_version_names_policy_and_version() -> None:
    assert _engine(ALLOW_ALL).version == "t@1"


# -- overlays (jurisdiction packs): they only tighten -------------------------------------
def _overlay(rules: str, obligations: str = "[]") -> Policy:
    return parse_policy(f"policy: o\nversion: '1'\njurisdiction: {{code: us, name: US}}\n"
                        f"obligations: {obligations}\nrules:\n{rules}"
                        "sources: {s.a: {title: T, article: A, url: 'https://x.org/', "
                        "verified: unconfirmed}}\n")


def test_an_overlay_allow_never_rescues_a_face_the_base_does_not_allow() -> None:
    base = _engine("  - {id: allow.self, effect: allow, message: m, when: {identity: [self]}}\n")
    overlay = _overlay("  - {id: us.any, effect: allow, message: m, sources: [s.a], "
                       "obligations: [log_for_review]}\n")
    evaluation = evaluate_documents(base.policy, [overlay], _facts(_face(identity="unknown")))
    assert evaluation.verdict == "deny"
    assert [r.rule_id for r in evaluation.reasons] == ["default.no_matching_rule"]
    allowed = evaluate_documents(base.policy, [overlay], _facts(_face(identity="self")))
    assert [r.rule_id for r in allowed.reasons] == ["allow.self", "us.any"]
    assert allowed.obligations == ("log_for_review",)


def test_an_overlay_tightens_and_its_reasons_alone_explain_it() -> None:
    overlay = _overlay("  - {id: us.consent, effect: needs_consent, message: m, "
                       "sources: [s.a], when: {identity: [unknown]}}\n",
                       obligations="[notify_subject]")
    base = _engine(ALLOW_ALL, obligations="[label_ai_content]")
    tightened = evaluate_documents(base.policy, [overlay], _facts(_face(identity="unknown")))
    assert (tightened.verdict, [r.rule_id for r in tightened.reasons]) == (
        "needs_consent", ["us.consent"])
    assert tightened.obligations == ()
    allowed = evaluate_documents(base.policy, [overlay], _facts(_face(identity="self")))
    assert allowed.obligations == ("label_ai_content", "notify_subject")


def test_an_overlay_request_rule_does_not_stand_in_for_the_base() -> None:
    base = _engine("  - {id: allow.self, effect: allow, message: m, when: {identity: [self]}}\n")
    overlay = _overlay("  - {id: us.req, effect: allow, scope: request, message: m, "
                       "sources: [s.a]}\n")
    evaluation = evaluate_documents(base.policy, [overlay], _facts())
    assert evaluation.verdict == "deny"
    assert "default.no_matching_rule" in [r.rule_id for r in evaluation.reasons]


def test_a_missing_formality_makes_a_consented_face_need_consent() -> None:
    base = parse_policy("policy: t\nversion: '1'\nrules: [{id: allow.any, effect: allow, "
                        "message: m}]\nformalities: [{id: f.sep, formality: separate_consent, "
                        "message: separate consent needed}, {id: f.guard, formality: "
                        "guardian_consent, minors_only: true, message: guardian needed}]\n")
    face = _face(identity="consented")
    missing = evaluate_documents(base, (), _facts(face))
    assert [(r.rule_id, r.effect, r.face_ref) for r in missing.reasons] == [
        ("f.sep", "needs_consent", "f0")]
    met = _face(identity="consented", grant_formalities=frozenset({"separate_consent"}))
    assert evaluate_documents(base, (), _facts(met)).verdict == "allow"
    minor = _face(identity="consented", age_band="minor",
                  grant_formalities=frozenset({"separate_consent"}))
    assert [r.rule_id for r in evaluate_documents(base, (), _facts(minor)).reasons] == [
        "f.guard"]
    assert evaluate_documents(base, (), _facts(_face(identity="self"))).verdict == "allow"
