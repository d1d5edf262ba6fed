"""The ``gate policy`` sub-app (check, test, schema), driven through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gate.policy.cli import policy_app

POLICIES = Path(__file__).resolve().parents[2] / "policies"
runner = CliRunner()

TABLE = """\
- name: own face
  facts:
    operation: face_swap
    faces: [{identity: self, role: source}]
  expect: {verdict: allow, rule_ids: [allow.self]}
"""


def test_check_ok_prints_the_rule_count() -> None:
    result = runner.invoke(policy_app, ["check", str(POLICIES / "default.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK ")
    assert "default@" in result.stdout
    assert "11 rules (+3 core rules)" in result.stdout


def test_check_error_prints_file_line_and_exits_1(tmp_path: Path) -> None:
    text = (POLICIES / "default.yaml").read_text(encoding="utf-8")
    line = text.splitlines().index("    effect: needs_consent") + 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("effect: needs_consent", "effect: need_consent", 1),
                   encoding="utf-8")
    result = runner.invoke(policy_app, ["check", str(POLICIES / "default.yaml"), str(bad)])
    assert result.exit_code == 1
    assert "OK " in result.stdout
    assert result.stderr.startswith(f"{bad}:{line}: field 'rules[4].effect': ")
    assert "did you mean 'needs_consent'?" in result.stderr


def test_test_runs_every_table_in_a_folder() -> None:
    result = runner.invoke(policy_app, ["test", str(POLICIES / "tests")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1].endswith(" passed, 0 failed")
    assert all(ln.startswith("PASS ") for ln in lines[:-1])
    assert any("self-portrait-only.yaml" in ln for ln in lines)


def test_test_infers_the_policy_from_the_table_name(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text((POLICIES / "default.yaml").read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "mine.yaml").write_text(TABLE)
    result = runner.invoke(policy_app, ["test", str(tmp_path / "tests" / "mine.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"PASS {tmp_path}/tests/mine.yaml:1 own face: allow ['allow.self']",
        f"note: {tmp_path}/tests/mine.yaml: no case expects rule(s) "
        "sexual.face_not_covered, nudify.uncovered_face, nudify.no_face, face_operation.no_face, "
        "consent.subject_not_covered, consent.unknown_face_sensitive, "
        "consent.unidentifiable_face_sensitive, allow.consented, allow.face_unchanged, "
        "allow.no_faces",
        "1 passed, 0 failed",
    ]


def test_test_failure_exits_1(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(TABLE.replace("identity: self", "identity: unknown"))
    result = runner.invoke(policy_app, ["test", str(table), "--policy",
                                        str(POLICIES / "self-portrait-only.yaml")])
    assert result.exit_code == 1
    assert (f"FAIL {table}:1 own face: expected allow ['allow.self'], got deny "
            "['other.identifiable_face']") in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_test_without_a_policy_to_infer_exits_1(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(TABLE)
    result = runner.invoke(policy_app, ["test", str(table)])
    assert result.exit_code == 1
    assert "cannot infer its policy" in result.stderr


def test_test_reports_an_invalid_table(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(TABLE.replace("verdict: allow", "verdict: yes"))
    result = runner.invoke(policy_app, ["test", str(table), "--policy",
                                        str(POLICIES / "default.yaml")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{table}:5: field '[0].expect.verdict'")


def test_test_of_an_empty_folder_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(policy_app, ["test", str(tmp_path)])
    assert result.exit_code == 1
    assert "no *.yaml table files" in result.stderr


def test_schema_prints_and_writes_the_committed_schema(tmp_path: Path) -> None:
    committed = (POLICIES / "schema.json").read_text(encoding="utf-8")
    printed = runner.invoke(policy_app, ["schema"])
    assert printed.exit_code == 0
    assert printed.stdout == committed
    assert json.loads(printed.stdout)["title"] == "Policy"
    out = tmp_path / "schema.json"
    written = runner.invoke(policy_app, ["schema", "--output", str(out)])
    assert written.exit_code == 0
    assert out.read_text(encoding="utf-8") == committed
