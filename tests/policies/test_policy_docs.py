"""docs/policies.md stays true: its examples run and it names every field and rule."""

from __future__ import annotations

import re
from pathlib import Path

from gate.policy.evaluate import CORE_RULES
from gate.policy.load import load_policy, parse_policy
from gate.policy.model import When
from gate.policy.table import run_table

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
