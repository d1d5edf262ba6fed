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


# -- jurisdiction packs ------------------------------------------------------------------------
def test_check_reports_a_jurisdiction_pack() -> None:
    result = runner.invoke(policy_app, ["check", str(POLICIES / "jurisdictions" / "cn.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK ")
    assert "jurisdiction pack cn jurisdiction-cn@" in result.stdout


def test_test_of_the_tests_folder_runs_the_pack_tables_too() -> None:
    result = runner.invoke(policy_app, ["test", str(POLICIES / "tests")])
    assert result.exit_code == 0, result.output
    assert any("jurisdictions/cn+eu.yaml" in ln for ln in result.stdout.splitlines())
    assert any("jurisdictions/us-il.yaml" in ln for ln in result.stdout.splitlines())


def test_test_composes_a_plain_table_with_packs(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(TABLE.replace("verdict: allow, rule_ids: [allow.self]",
                                   "verdict: allow, rule_ids: [allow.self], "
                                   "obligations: [label_ai_content, label_visible, "
                                   "label_gb45438_metadata], jurisdictions: [cn]"))
    args = ["test", str(table), "--policy", str(POLICIES / "default.yaml")]
    assert runner.invoke(policy_app, [*args, "--jurisdictions", "cn"]).exit_code == 0
    assert runner.invoke(policy_app, args).exit_code == 1
    bad = runner.invoke(policy_app, [*args, "--jurisdictions", "cn,mars"])
    assert bad.exit_code == 1
    assert "unknown jurisdiction code 'mars'" in bad.stderr


def test_explain_prints_what_applies_with_sources() -> None:
    result = runner.invoke(policy_app, ["explain", "--jurisdictions", "cn,eu"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("policy set: default@")
    assert "jurisdictions: cn (People's Republic of China (mainland)), eu (European Union)" \
        in out
    for expected in ("cn.portrait.unknown_face_changed: needs_consent",
                     "eu.ai_act.deepfake_disclosure: allow",
                     "label_visible: text en: 'AI生成 | AI-generated'; zh: 'AI生成'",
                     "text height >= 5% of the shorter side",
                     "label_gb45438_metadata: fields Label, ContentProducer, ProduceID",
                     "mark_machine_readable: "
                     "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                     "cn.formality.separate_consent: separate_consent for every operation",
                     "eu.formality.guardian_consent: guardian_consent for every operation, "
                     "minors only",
                     "retention of biometric templates: no limit set",
                     "takedown: no deadline set",
                     "eu.duty.dpia:",
                     "source: Personal Information Protection Law of the PRC (个人信息保护法), "
                     "Art. 29 <https://",
                     "Art. 50(2) <https://eur-lex.europa.eu/eli/reg/2024/1689/oj>"):
        assert expected in out, expected


def test_explain_of_a_state_shows_retention_takedown_and_the_federal_pack() -> None:
    result = runner.invoke(policy_app, ["explain", "--jurisdictions", "us-il"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "jurisdictions: us-il (United States - Illinois), us (United States (federal))" \
        in out
    assert "us-il implies us" in out
    assert ("retention of biometric templates: 1095 days after the last interaction; "
            "0 days after the purpose ended") in out
    assert "takedown: within 48 hours of a valid request" in out
    assert "(max_days_since_last_interaction=1095)" in out
    assert "740 ILCS 14" in out


def test_explain_json_is_the_same_data() -> None:
    result = runner.invoke(policy_app, ["explain", "--jurisdictions", "us-tx", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["code"] for p in data["jurisdictions"]] == ["us-tx", "us"]
    assert data["retention"]["days_after_purpose_end"] == 365
    assert data["takedown"]["hours"] == 48
    assert data["formalities"][0]["formality"] == "informed_consent"
    assert data["formalities"][0]["sources"][0]["url"].startswith("https://statutes.capitol")


def test_explain_without_packs_and_with_another_base() -> None:
    result = runner.invoke(policy_app, ["explain", "--policy",
                                        str(POLICIES / "creative-app.yaml")])
    assert result.exit_code == 0, result.output
    assert "jurisdictions: none (the base policy alone)" in result.stdout
    assert "embed_c2pa_manifest (base): allowed decisions where rule " \
           "allow.unknown_face_edit_general matches" in result.stdout


def test_explain_rejects_an_unknown_code() -> None:
    result = runner.invoke(policy_app, ["explain", "--jurisdictions", "cn,uk"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("unknown jurisdiction code 'uk'; valid codes: cn, eu, "
                                     "us-il, us-tx, us-wa, us")
