"""Every policy pack has a table of cases that pass and that exercise each of its rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate.errors import PolicyError
from gate.policy.evaluate import CORE_RULES
from gate.policy.load import load_policy
from gate.policy.table import (
    CaseResult,
    covered_documents,
    load_table,
    policy_for_table,
    run_table,
    run_target,
    target_for_table,
    uncovered_rules,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
POLICY_FILES = sorted(POLICIES.glob("*.yaml"))
TABLES = sorted((POLICIES / "tests").glob("*.yaml"))
CORE_IDS = {r.id for r in CORE_RULES}


def test_every_policy_has_a_table_and_every_table_a_policy() -> None:
    assert [p.name for p in POLICY_FILES] == [t.name for t in TABLES]


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_table_passes(table: Path) -> None:
    results = run_table(policy_for_table(table), table)
    failures = [f"{table.name}:{r.line} {r.name}: {r.describe()}" for r in results
                if not r.passed]
    assert results
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_table_covers_every_rule(table: Path) -> None:
    policy = load_policy(policy_for_table(table))
    cases = load_table(table)
    assert uncovered_rules(policy, cases) == []
    expected = {rule_id for _, case in cases for rule_id in case.expect.rule_ids}
    assert expected >= CORE_IDS, "each pack's table shows the core rules still apply"


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_table_names_only_real_rules(table: Path) -> None:
    policy = load_policy(policy_for_table(table))
    known = {r.id for r in policy.rules} | CORE_IDS | {"default.no_matching_rule"}
    for line, case in load_table(table):
        assert set(case.expect.rule_ids) <= known, f"{table.name}:{line}"


def test_policy_is_inferred_from_the_table_path() -> None:
    assert policy_for_table(Path("policies/tests/default.yaml")) == Path("policies/default.yaml")
    with pytest.raises(PolicyError, match="cannot infer its policy"):
        policy_for_table(Path("elsewhere/default.yaml"))


def test_a_wrong_expectation_fails_with_both_sides(tmp_path: Path) -> None:
    table = tmp_path / "t.yaml"
    table.write_text(
        "- name: wrong\n"
        "  facts: {operation: face_swap, faces: [{identity: unknown, role: source}]}\n"
        "  expect: {verdict: allow, rule_ids: [allow.self]}\n"
        "- name: right but obligations differ\n"
        "  facts: {operation: txt2img}\n"
        "  expect: {verdict: allow, rule_ids: [allow.no_faces], obligations: []}\n",
        encoding="utf-8")
    wrong, obligations = run_table(POLICIES / "default.yaml", table)
    assert wrong == CaseResult(name="wrong", line=1, expected_verdict="allow",
                               expected_rule_ids=("allow.self",), verdict="needs_consent",
                               rule_ids=("consent.unknown_face_sensitive",))
    assert not wrong.passed
    assert wrong.describe() == ("expected allow ['allow.self'], got needs_consent "
                                "['consent.unknown_face_sensitive']")
    assert (obligations.line, obligations.passed) == (4, False)
    assert obligations.describe().endswith("(obligations differ)")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    pytest.param("- name: a\n  facts: {operation: txt2img, color: red}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n", 2,
                 "field '[0].facts.color': unknown field", id="unknown-key"),
    pytest.param("- name: a\n  facts:\n    operation: txt2img\n    faces:\n"
                 "      - {identity: stranger, role: init}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n", 5,
                 "field '[0].facts.faces[0].identity'", id="unknown-identity"),
    pytest.param("- name: a\n  facts: {operation: txt2img}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n"
                 "- name: a\n  facts: {operation: txt2img}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n", 4,
                 "field '[1].name': duplicate case name 'a'", id="duplicate-name"),
    pytest.param("- name: a\n  facts: {operation: txt2img}\n"
                 "  expect: {verdict: alow, rule_ids: [x]}\n", 3,
                 "did you mean 'allow'?", id="misspelt-verdict"),
    pytest.param("name: a\n", 1, "a policy table is a list of cases", id="not-a-list"),
])
def test_table_errors_name_the_line(tmp_path: Path, text: str, line: int,
                                    fragment: str) -> None:
    table = tmp_path / "t.yaml"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_table(table)
    first = info.value.message.splitlines()[0]
    assert first.startswith(f"{table}:{line}: ")
    assert fragment in first


# -- jurisdiction packs: policies/tests/jurisdictions/<code>[+<code>...].yaml ---------------
PACKS = sorted((POLICIES / "jurisdictions").glob("*.yaml"))
PACK_TABLES = sorted((POLICIES / "tests" / "jurisdictions").glob("*.yaml"))


def test_every_pack_has_its_own_table_and_there_are_composition_tables() -> None:
    single = [t.name for t in PACK_TABLES if "+" not in t.stem]
    assert single == [p.name for p in PACKS]
    assert {"cn+eu.yaml", "us-il+us.yaml"} <= {t.name for t in PACK_TABLES}


@pytest.mark.parametrize("table", PACK_TABLES, ids=lambda p: p.name)
def test_pack_table_passes(table: Path) -> None:
    target = target_for_table(table)
    assert target.base == POLICIES / "default.yaml"
    assert target.jurisdictions == tuple(
        c for c in ("cn", "eu", "us-il", "us-tx", "us-wa", "us") if c in table.stem.split("+"))
    results = run_target(target, table)
    failures = [f"{table.name}:{r.line} {r.name}: {r.describe()}" for r in results
                if not r.passed]
    assert results
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("table", [t for t in PACK_TABLES if "+" not in t.stem],
                         ids=lambda p: p.name)
def test_pack_table_covers_every_rule_and_formality(table: Path) -> None:
    target = target_for_table(table)
    (pack,) = covered_documents(target, table)
    assert uncovered_rules(pack, load_table(table)) == []


@pytest.mark.parametrize("table", PACK_TABLES, ids=lambda p: p.name)
def test_pack_table_names_only_real_rules(table: Path) -> None:
    known = CORE_IDS | {"default.no_matching_rule"}
    for path in [*POLICY_FILES, *PACKS]:
        policy = load_policy(path)
        known |= {r.id for r in policy.rules} | {f.id for f in policy.formalities}
    for line, case in load_table(table):
        assert set(case.expect.rule_ids) <= known, f"{table.name}:{line}"


def test_a_composition_table_covers_no_single_pack() -> None:
    table = POLICIES / "tests" / "jurisdictions" / "cn+eu.yaml"
    assert covered_documents(target_for_table(table), table) == []


def test_a_plain_table_can_be_run_with_packs(tmp_path: Path) -> None:
    table = tmp_path / "t.yaml"
    table.write_text(
        "- name: swap\n"
        "  facts: {operation: face_swap, faces: [{identity: self, role: source}]}\n"
        "  expect: {verdict: allow, rule_ids: [allow.self], jurisdictions: [us-il, us]}\n",
        encoding="utf-8")
    (result,) = run_table(POLICIES / "default.yaml", table, jurisdictions="us-il")
    assert result.passed, result.describe()
    (alone,) = run_table(POLICIES / "default.yaml", table)
    assert not alone.passed
    assert alone.describe().endswith("(jurisdictions differ)")


def test_a_case_naming_an_unknown_base_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "tests" / "jurisdictions"
    folder.mkdir(parents=True)
    (tmp_path / "default.yaml").write_text((POLICIES / "default.yaml").read_text())
    table = folder / "us.yaml"
    table.write_text("- name: a\n  base: nowhere\n  facts: {operation: txt2img}\n"
                     "  expect: {verdict: allow, rule_ids: [allow.no_faces]}\n",
                     encoding="utf-8")
    with pytest.raises(PolicyError, match=r"nowhere\.yaml: cannot read the file"):
        run_target(target_for_table(table), table)


@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("- name: a\n  jurisdictions: [fr]\n  facts: {operation: txt2img}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n", "field '[0].jurisdictions[0]'",
                 id="unknown-code"),
    pytest.param("- name: a\n  facts:\n    operation: txt2img\n    faces:\n"
                 "      - {identity: consented, role: init, grant_formalities: [handshake]}\n"
                 "  expect: {verdict: allow, rule_ids: [x]}\n",
                 "field '[0].facts.faces[0].grant_formalities[0]'", id="unknown-formality"),
])
def test_pack_table_errors_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    table = tmp_path / "t.yaml"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=re.escape(fragment)):
        load_table(table)
