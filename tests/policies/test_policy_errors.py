"""A typo in a policy file is an error naming the file, the exact line and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gate.errors import PolicyError
from gate.policy.load import load_policy, parse_policy

BASE = """\
policy: demo
version: "1"
rules:
  - id: allow.self
    effect: allow
    message: own face
    when:
      identity: [self]
  - id: nudify.refused
    effect: deny
    scope: request
    message: no nudify
    when:
      operation:
        - nudify
"""  # 15 lines; every case below edits this text


def _error(text: str, name: str = "demo.yaml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, name)
    return info.value


def _first(err: PolicyError) -> str:
    return err.message.splitlines()[0]


def test_base_is_valid() -> None:
    policy = parse_policy(BASE)
    assert [r.id for r in policy.rules] == ["allow.self", "nudify.refused"]


@pytest.mark.parametrize(("old", "new", "line", "field", "hint"), [
    pytest.param("rules:\n", "colour: red\nrules:\n", 3, "colour", "unknown field",
                 id="unknown-top-level-key"),
    pytest.param("identity: [self]", "identiy: [self]", 8, "rules[0].when.identiy",
                 "unknown field (did you mean 'identity'?)", id="unknown-key-in-when"),
    pytest.param("message: own face\n", "message: own face\n    whem: {}\n", 7,
                 "rules[0].whem", "did you mean 'when'?", id="unknown-key-in-rule"),
    pytest.param("effect: allow", "effect: alow", 5, "rules[0].effect",
                 "(got 'alow', did you mean 'allow'?)", id="misspelt-effect"),
    pytest.param("        - nudify\n", "        - txt2img\n        - nudfy\n", 16,
                 "rules[1].when.operation[1]", "(got 'nudfy', did you mean 'nudify'?)",
                 id="unknown-operation-in-list"),
    pytest.param("identity: [self]", "identity: [self, stranger]", 8,
                 "rules[0].when.identity[1]", "(got 'stranger')", id="unknown-identity"),
    pytest.param("id: nudify.refused", "id: allow.self", 9, "rules[1].id",
                 "duplicate rule id 'allow.self'", id="duplicate-rule-id"),
    pytest.param("    when:\n      operation:", "    when:\n      role: [target]\n      operation:",
                 14, "rules[1].when.role",
                 "a request-scoped rule cannot use the face condition 'role'",
                 id="request-rule-with-face-condition"),
    pytest.param("scope: request", "scope: everything", 11, "rules[1].scope",
                 "Input should be 'face' or 'request'", id="unknown-scope"),
    pytest.param('version: "1"', "version: 1.0", 2, "version",
                 "YAML reads 1.0 as a float; put it in quotes", id="unquoted-number"),
    pytest.param("    message: no nudify\n", "", 9, "rules[1].message", "Field required",
                 id="missing-field-points-at-its-rule"),
    pytest.param("      operation:\n        - nudify\n", "      operation: []\n", 14,
                 "rules[1].when.operation", "at least 1 item", id="empty-condition-list"),
    pytest.param("    message: no nudify\n",
                 "    message: no nudify\n    obligations: [label_ai_content]\n", 13,
                 "rules[1].obligations", "obligations only apply to allow rules",
                 id="obligations-on-deny-rule"),
    pytest.param("        - nudify\n", "        - nudify\n      face_count: {min: 2, max: 1}\n",
                 16, "rules[1].when.face_count.min", "min is greater than max",
                 id="empty-count-range"),
    pytest.param("      identity: [self]\n",
                 "      identity: [self]\n    obligations: [label_ai_contnet]\n", 9,
                 "rules[0].obligations[0]",
                 "(got 'label_ai_contnet', did you mean 'label_ai_content'?)",
                 id="unknown-obligation"),
    pytest.param("id: allow.self", "id: core.self", 4, "rules[0].id",
                 "rule ids starting with 'core.' are reserved", id="reserved-rule-id"),
    pytest.param("id: allow.self", "id: Allow Self", 4, "rules[0].id",
                 "String should match pattern", id="bad-rule-id"),
])
def test_field_errors_name_file_line_and_field(old: str, new: str, line: int, field: str,
                                               hint: str) -> None:
    assert old in BASE
    err = _error(BASE.replace(old, new, 1))
    assert _first(err).startswith(f"demo.yaml:{line}: field '{field}': "), err.message
    assert hint in _first(err)
    assert err.field == field
    assert err.code == "policy_invalid"


@pytest.mark.parametrize(("text", "line", "fragment"), [
    pytest.param(BASE.replace("    effect: deny", "   effect: deny"), 10, "not valid YAML",
                 id="bad-indentation"),
    pytest.param(BASE.replace("identity: [self]", "identity: [self"), 9,
                 "(while parsing a flow sequence on line 8)", id="unclosed-bracket"),
    pytest.param(BASE.replace("    scope: request", "\tscope: request"), 11,
                 "not valid YAML: found character '\\t' that cannot start any token",
                 id="tab"),
    pytest.param(BASE + "---\npolicy: second\n", 16, "not valid YAML: but found another "
                 "document", id="two-documents"),
    pytest.param(BASE.replace("message: no nudify", "message: no nudify\x07"), 12,
                 "not valid YAML: unacceptable character", id="control-character"),
    pytest.param("", 1, "the file is empty", id="empty-file"),
    pytest.param("# only a comment\n\n", 1, "the file is empty", id="only-comments"),
    pytest.param("- policy: demo\n", 1, "a policy is a mapping with 'policy', 'version' and "
                 "'rules', not a list", id="a-list"),
    pytest.param("# header\n\njust text\n", 3, "not a string", id="a-scalar"),
    pytest.param("null\n", 1, "not empty", id="null-document"),
    pytest.param(BASE.replace("    message: own face\n",
                              "    message: own face\n    effect: deny\n"), 7,
                 "duplicate key 'effect' (first on line 5)", id="duplicate-key"),
])
def test_document_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    err = _error(text)
    assert _first(err).startswith(f"demo.yaml:{line}: "), err.message
    assert fragment in _first(err)


def test_all_problems_are_listed_earliest_first() -> None:
    text = BASE.replace("effect: deny", "effect: dney").replace("identity: [self]",
                                                               "identiy: [self]")
    text = text.replace('version: "1"', "version: 2")
    lines = _error(text).message.splitlines()
    assert [ln.split(": field")[0] for ln in lines] == [
        "demo.yaml:2", "demo.yaml:8", "demo.yaml:10"]


def test_load_policy_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(BASE.replace("effect: allow", "effect: alow"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"typo\.yaml:5: field 'rules\[0\]\.effect'"):
        load_policy(path)


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: p, id="missing"),
    pytest.param(lambda p: (p.mkdir(), p)[1], id="a-directory"),
    pytest.param(lambda p: (p.write_bytes(b"policy: \xff\xfe\n"), p)[1], id="not-utf8"),
])
def test_unreadable_files_are_policy_errors(tmp_path: Path,
                                            make: Callable[[Path], Path]) -> None:
    path = make(tmp_path / "p.yaml")
    with pytest.raises(PolicyError, match=r"p\.yaml: cannot read the file"):
        load_policy(path)


def test_errors_do_not_echo_long_values() -> None:
    secret = "x" * 500
    err = _error(BASE.replace("effect: allow", f"effect: {secret}"))
    assert secret not in err.message


# -- jurisdiction packs: checks the loader makes, each pointing at its line -------------------
PACK = """\
policy: pack
version: "1"
jurisdiction:
  code: us-il
  name: Illinois
formalities:
  - id: us-il.formality.release
    formality: written_release
    message: release needed
    sources: [bipa.b]
retention:
  - id: us-il.retention.last
    days: 1095
    since: last_interaction
    message: three years
    sources: [bipa.a]
sources:
  bipa.a: {title: BIPA, article: 15(a), url: "https://ilga.gov/", verified: primary_text}
  bipa.b: {title: BIPA, article: 15(b), url: "https://ilga.gov/", verified: primary_text}
"""  # 19 lines


def test_pack_base_is_valid() -> None:
    pack = parse_policy(PACK)
    assert pack.jurisdiction is not None and pack.rules == []


@pytest.mark.parametrize(("old", "new", "line", "field", "hint"), [
    pytest.param("id: us-il.retention.last", "id: il.retention.last", 12, "retention[0].id",
                 "ids in the 'us-il' pack start with 'us-il.'", id="id-without-code"),
    pytest.param("    sources: [bipa.b]\n", "", 7, "formalities[0].sources",
                 "every item of a jurisdiction pack cites at least one source",
                 id="item-without-source"),
    pytest.param("sources: [bipa.a]", "sources: [bipa.z]", 16, "retention[0].sources[0]",
                 "unknown source 'bipa.z' (sources: bipa.a, bipa.b)", id="unknown-source"),
    pytest.param("id: us-il.retention.last", "id: us-il.formality.release", 12,
                 "retention[0].id", "duplicate id 'us-il.formality.release'",
                 id="duplicate-id-across-sections"),
    pytest.param("formality: written_release", "formality: written_relase", 8,
                 "formalities[0].formality", "did you mean 'written_release'?",
                 id="misspelt-formality"),
    pytest.param("  code: us-il", "  code: us-ny", 4, "jurisdiction.code",
                 "(got 'us-ny'", id="unknown-code"),
    pytest.param("  name: Illinois\n", "  name: Illinois\n  implies: [us-il]\n", 6,
                 "jurisdiction.implies", "a jurisdiction cannot imply itself",
                 id="implies-itself"),
    pytest.param("since: last_interaction", "since: last_visit", 14, "retention[0].since",
                 "Input should be 'last_interaction' or 'purpose_end'", id="unknown-clock"),
    pytest.param('verified: primary_text}\n  bipa.b', 'verified: trust_me}\n  bipa.b', 18,
                 "sources.bipa.a.verified", "Input should be", id="unknown-verification"),
    pytest.param("policy: pack\n", "policy: pack\nobligations: [label_visible]\n", 2,
                 "obligations[0]", "obligation 'label_visible' needs its parameters in "
                 "'labels.visible'", id="label-obligation-without-parameters"),
])
def test_pack_errors_name_file_line_and_field(old: str, new: str, line: int, field: str,
                                              hint: str) -> None:
    assert old in PACK
    err = _error(PACK.replace(old, new, 1))
    assert _first(err).startswith(f"demo.yaml:{line}: field '{field}': "), err.message
    assert hint in _first(err)


LABELS = """\
labels:
  visible:
    id: us-il.label.visible
    text: {en: AI-generated, zh: AI生成}
    positions: [bottom_right, top_left]
    min_text_height_ratio: 0.05
    message: m
    sources: [bipa.a]
  metadata:
    id: us-il.label.metadata
    scheme: gb45438
    fields: [Label, ContentProducer, ProduceID, ReservedCode1, ContentPropagator,
             PropagateID, ReservedCode2]
    xmp_namespace: http://www.tc260.org.cn/ns/AIGC/1.0/
    message: m
    sources: [bipa.a]
"""  # appended after PACK: lines 20-35


def test_pack_with_labels_is_valid() -> None:
    pack = parse_policy(PACK + LABELS)
    assert pack.labels is not None and pack.labels.metadata is not None
    assert pack.labels.metadata.label_value == "1"


@pytest.mark.parametrize(("old", "new", "line", "field", "hint"), [
    pytest.param("{en: AI-generated, zh: AI生成}", "{en: AI-generated}", 23,
                 "labels.visible.text", "'zh' is missing", id="label-text-without-zh"),
    pytest.param("[bottom_right, top_left]", "[top_left, top_left]", 24,
                 "labels.visible.positions", "listed twice", id="position-twice"),
    pytest.param("min_text_height_ratio: 0.05", "min_text_height_ratio: 5", 25,
                 "labels.visible.min_text_height_ratio", "less than or equal to 0.5",
                 id="ratio-as-percent"),
    pytest.param("fields: [Label, ContentProducer, ProduceID,",
                 "fields: [ContentProducer, Label, ProduceID,", 31, "labels.metadata.fields",
                 "fields must be exactly Label, ContentProducer", id="metadata-field-order"),
])
def test_label_errors_name_file_line_and_field(old: str, new: str, line: int, field: str,
                                               hint: str) -> None:
    text = PACK + LABELS
    assert old in text
    err = _error(text.replace(old, new, 1))
    assert _first(err).startswith(f"demo.yaml:{line}: field '{field}': "), err.message
    assert hint in _first(err)


def test_a_base_policy_without_rules_is_an_error() -> None:
    err = _error('policy: demo\nversion: "1"\nrules: []\n')
    assert _first(err).startswith("demo.yaml:3: field 'rules': a policy needs at least one "
                                  "rule (only a jurisdiction pack may have none)")
    missing = _error('policy: demo\nversion: "1"\n')
    assert "a policy needs at least one rule" in _first(missing)
