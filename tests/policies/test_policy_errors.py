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
