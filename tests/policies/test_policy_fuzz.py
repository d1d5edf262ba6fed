"""parse_policy on hostile or random text returns a Policy or raises PolicyError, quickly."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.errors import PolicyError
from gate.policy.load import MAX_CHARS, parse_policy
from gate.policy.model import FACE_CONDITIONS, Policy, When
from gate.types import CONTENT_CATEGORIES, OPERATIONS, ROLES

SMALL_POLICY = """\
policy: demo
version: "1"
obligations: [label_ai_content]
rules:
  - id: allow.self
    effect: allow
    message: own face
    when: {identity: [self], operation: [face_swap, inpaint]}
  - id: nudify.refused
    effect: deny
    scope: request
    message: no nudify
    when:
      operation:
        - nudify
      face_count: {min: 0, max: 3}
"""
fuzz = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _parse_or_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.message.startswith("fuzz.yaml:")
    else:
        assert isinstance(policy, Policy)


@fuzz
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    _parse_or_policy_error(text)


TOKENS = ["policy:", "version:", "rules:", "when:", "id:", "effect:", "- ", "  ", "\n", ":",
          ",", "[", "]", "{", "}", "&a ", "*a", "&b ", "*b", "<<: ", "? ", "'", '"', "#",
          "---", "...", "%YAML 1.1", "!!python/object/apply:os.system ['true']",
          "!!python/name:os.system", "!!binary ", "!!int ", "!!float ", "!!timestamp ",
          "!!set ", "!!omap ", "2001-13-01", "1e999", "0x", "~", "null", "yes", "no", ".nan",
          "deny", "allow", "self", "nudify", "x" * 30, "\t", "\\", "|", ">", "é", "\x85"]


@fuzz
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_yaml_token_soup(text: str) -> None:
    _parse_or_policy_error(text)


@fuzz
@given(st.data())
def test_mutated_policy(data: st.DataObject) -> None:
    text = SMALL_POLICY
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 20))
        insert = data.draw(st.sampled_from(["", *TOKENS]))
        text = text[:at] + insert + text[at + cut:]
    _parse_or_policy_error(text)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["policy", "version", "rules", "id", "effect", "when", "message",
                         "scope", "operation", "identity", "face_count", "min", "max"]),
        inner, max_size=5),
    max_leaves=15)


@fuzz
@given(json_like)
def test_random_documents(data: Any) -> None:
    _parse_or_policy_error(yaml.safe_dump(data))


# -- round trip: any valid policy survives YAML -------------------------------------------
CHOICES: dict[str, tuple[str, ...]] = {
    "operation": OPERATIONS, "operation_not": OPERATIONS, "content_any": CONTENT_CATEGORIES,
    "content_none": CONTENT_CATEGORIES, "app_id": ("app-a", "app-b"), "user_id": ("u1",),
    "identity": ("self", "consented", "protected", "unknown", "unidentifiable"),
    "identity_not": ("self", "consented"), "subject_status": ("consenting", "protected"),
    "role": ROLES, "age_band": ("minor", "adult", "unknown"), "source": ("image", "prompt"),
    "grant_purpose": ("portrait",),
}
assert set(CHOICES) | {"face_count"} == set(When.model_fields)


@st.composite
def when_st(draw: st.DrawFn, scope: str) -> dict[str, Any]:
    names = [n for n in CHOICES if not (scope == "request" and n in FACE_CONDITIONS)]
    when: dict[str, Any] = {
        name: draw(st.lists(st.sampled_from(CHOICES[name]), min_size=1, max_size=3,
                            unique=True))
        for name in draw(st.sets(st.sampled_from(names), max_size=4))}
    if draw(st.booleans()):
        low = draw(st.none() | st.integers(0, 3))
        when["face_count"] = {"min": low, "max": draw(st.none() | st.integers(low or 0, 5))}
    return when


@st.composite
def rule_st(draw: st.DrawFn, index: int) -> dict[str, Any]:
    scope = draw(st.sampled_from(["face", "request"]))
    effect = draw(st.sampled_from(["allow", "needs_consent", "deny"]))
    obligations = draw(st.lists(st.sampled_from(["label_ai_content", "log_for_review"]),
                                unique=True)) if effect == "allow" else []
    return {"id": f"rule.r{index}", "effect": effect, "scope": scope,
            "message": draw(st.text(st.characters(categories=["L", "N", "P", "Zs"]),
                                    min_size=1, max_size=20)),
            "when": draw(when_st(scope)), "obligations": obligations}


@st.composite
def policy_st(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    return {"policy": "random", "version": draw(st.sampled_from(["1", "2026-11-25", "1.0"])),
            "rules": [draw(rule_st(i)) for i in range(n)]}


@settings(max_examples=100, deadline=None)
@given(policy_st())
def test_valid_policies_round_trip_through_yaml(data: dict[str, Any]) -> None:
    expected = Policy.model_validate(data)
    text = yaml.safe_dump(expected.model_dump(exclude_none=True), allow_unicode=True)
    assert parse_policy(text) == expected


# -- specific hostile documents -------------------------------------------------------------
def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _rejected_quickly(text: str, fragment: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(text, "bomb.yaml")
    assert time.perf_counter() - started < 1.0


def test_billion_laughs_is_rejected_quickly() -> None:
    _rejected_quickly(_bomb(10), "alias bomb")


def test_recursive_alias_is_rejected() -> None:
    _rejected_quickly("policy: &p [*p]\n", "bomb.yaml:1: recursive YAML alias")


@pytest.mark.parametrize("text", [
    "[" * 100_000,
    "{a: " * 50_000,
    "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)),
    "".join("- " * 5000) + "x\n",
])
def test_deep_nesting_is_rejected_quickly(text: str) -> None:
    _rejected_quickly(text, "nested more than 64 levels deep")


def test_oversized_file_is_rejected() -> None:
    _rejected_quickly("#" * (MAX_CHARS + 1), "larger than")


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['echo pwned']",
    "!!python/object:gate.policy.model.Policy {}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!<tag:yaml.org,2002:python/object/new:os.system> ['echo pwned']",
])
def test_python_tags_are_policy_errors(tag: str) -> None:
    with pytest.raises(PolicyError, match=r"x\.yaml:2: not valid YAML: could not determine "
                                          "a constructor"):
        parse_policy(f"policy: demo\nversion: {tag}\n", "x.yaml")


@pytest.mark.parametrize(("value", "line"), [
    ("!!timestamp 2001-13-01", 2), ("!!int twelve", 2), ("!!float x", 2),
    ("!!binary 'not base64!'", 2), ("!!bool maybe", 2),
])
def test_bad_tagged_values_name_their_line(value: str, line: int) -> None:
    with pytest.raises(PolicyError, match=rf"x\.yaml:{line}: not valid YAML"):
        parse_policy(f"policy: demo\nversion: {value}\nrules: []\n", "x.yaml")


def test_small_policy_is_valid() -> None:
    assert len(parse_policy(SMALL_POLICY).rules) == 2


def test_dates_stay_strings_and_anchors_can_share_lists() -> None:
    policy = parse_policy("""\
policy: shared
version: 2026-11-25
rules:
  - id: consent.face_changing
    effect: needs_consent
    message: m
    when: {operation: &face_changing [face_swap, inpaint, edit], identity: [unknown]}
  - id: allow.face_changing_self
    effect: allow
    message: m
    when: {operation: *face_changing, identity: [self]}
""")
    assert policy.version == "2026-11-25"
    assert policy.rules[0].when.operation == policy.rules[1].when.operation == [
        "face_swap", "inpaint", "edit"]
