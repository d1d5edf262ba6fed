"""docs/policies.md stays true: its examples run and it names every field and rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate.errors import PolicyError
from gate.policy.evaluate import CORE_RULES
from gate.policy.jurisdictions import parse_jurisdictions
from gate.policy.load import load_policy, parse_policy
from gate.policy.model import When
from gate.policy.table import load_table, run_table

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_policy_example_is_valid() -> None:
    policy = parse_policy(YAML_BLOCKS[0], "docs/policies.md")
    assert policy.rules[0].id == "consent.unknown_face_swap"


def test_the_table_example_passes_against_the_default_policy(tmp_path: Path) -> None:
    table = tmp_path / "example.yaml"
    table.write_text(YAML_BLOCKS[1], encoding="utf-8")
    results = run_table(ROOT / "policies" / "default.yaml", table)
    assert [r.passed for r in results] == [True]


def test_every_condition_is_documented() -> None:
    for name in When.model_fields:
        assert f"| `{name}` |" in DOC, name


def test_every_pack_and_rule_is_documented() -> None:
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        assert f"`{path.name}`" in DOC
        for rule in load_policy(path).rules:
            assert f"`{rule.id}`" in DOC, (path.name, rule.id)
    for rule in CORE_RULES:
        assert f"`{rule.id}`" in DOC


# -- docs/jurisdictions.md and docs/dpia-template.md -------------------------------------------
JURISDICTIONS_DOC = (ROOT / "docs" / "jurisdictions.md").read_text(encoding="utf-8")
DPIA = (ROOT / "docs" / "dpia-template.md").read_text(encoding="utf-8")
PACK_FILES = sorted((ROOT / "policies" / "jurisdictions").glob("*.yaml"))


def test_the_jurisdictions_doc_names_every_pack_and_item() -> None:
    for path in PACK_FILES:
        pack = load_policy(path)
        assert pack.jurisdiction is not None
        assert f"| `{pack.jurisdiction.code}` |" in JURISDICTIONS_DOC, path.name
        for _, item_id, _ in pack.cited_items():
            assert f"`{item_id}`" in JURISDICTIONS_DOC, (path.name, item_id)


def test_the_jurisdictions_doc_links_every_source() -> None:
    for path in PACK_FILES:
        for source in load_policy(path).sources.values():
            assert source.url in JURISDICTIONS_DOC, (path.name, source.url)


def test_table_cases_the_doc_cites_exist() -> None:
    cited = re.findall(r"`([\w+-]+\.yaml)`: ((?:\"[^\"]+\"(?:, )?)+)", JURISDICTIONS_DOC)
    assert len(cited) > 10
    for file, names in cited:
        table = ROOT / "policies" / "tests" / "jurisdictions" / file
        known = {case.name for _, case in load_table(table)}
        for name in re.findall(r"\"([^\"]+)\"", names):
            assert name in known, f"docs/jurisdictions.md cites {file}: {name!r}"


def test_the_unknown_code_message_in_the_doc_is_the_real_one() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_jurisdictions("fr")
    assert f"`{caught.value.message}`" in JURISDICTIONS_DOC


def test_the_dpia_template_covers_article_35_7() -> None:
    for part in ("Art. 35(7)(a)", "Art. 35(7)(b)", "Art. 35(7)(c)", "Art. 35(7)(d)",
                 "Art. 35(9)", "Art. 35(2)", "Art. 36", "Art. 35(11)", "eu.duty.dpia"):
        assert part in DPIA, part
    assert "dpia-template.md" in load_policy(ROOT / "policies" / "jurisdictions" /
                                             "eu.yaml").duties[0].message
