"""``gate policy``: check policy files, run their table tests, explain what applies.

Mounted in ``gate/cli.py`` as ``app.add_typer(policy_app, name="policy")``; also runnable
alone as ``python -m gate.policy.cli``. Exit codes: 0 success, 1 an invalid file or a
failing case (``file:line: ...`` on stderr), 2 usage errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gate.errors import PolicyError
from gate.policy.evaluate import CORE_RULES
from gate.policy.explain import render_explanation
from gate.policy.jurisdictions import load_policy_set
from gate.policy.load import load_policy
from gate.policy.packs import default_policy_file
from gate.policy.schema import render_policy_json_schema
from gate.policy.table import (
    CaseResult,
    covered_documents,
    load_table,
    run_target,
    target_for_table,
    uncovered_rules,
)

policy_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Policy files: check, test, explain, schema.")


@policy_app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files to validate.")],
) -> None:
    """Validate policy files: prints OK and the rule count, or file:line errors."""
    failed = False
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            typer.echo(exc.message, err=True)
            failed = True
            continue
        if policy.jurisdiction is not None:
            typer.echo(f"OK {path}: jurisdiction pack {policy.jurisdiction.code} "
                       f"{policy.policy}@{policy.version}, {len(policy.rules)} rules, "
                       f"{len(policy.formalities)} formalities, {len(policy.sources)} sources")
            continue
        typer.echo(f"OK {path}: {policy.policy}@{policy.version}, {len(policy.rules)} rules "
                   f"(+{len(CORE_RULES)} core rules)")
    if failed:
        raise typer.Exit(1)


@policy_app.command("test")
def test_tables(
    target: Annotated[Path, typer.Argument(
        help="A table file, or a folder of them (searched recursively).")],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Base policy to test (default: <dir>/tests/<name>.yaml tests "
                         "<dir>/<name>.yaml; <dir>/tests/jurisdictions/*.yaml test "
                         "<dir>/default.yaml).")] = None,
    jurisdictions: Annotated[str | None, typer.Option(
        "--jurisdictions", help="Packs to compose with the base policy, e.g. cn,eu "
                                "(default: none; a jurisdiction table's file name)")] = None,
) -> None:
    """Run table tests: PASS/FAIL per case; exit 1 on any failure."""
    tables = sorted(target.rglob("*.yaml")) if target.is_dir() else [target]
    if not tables:
        typer.echo(f"{target}: no *.yaml table files", err=True)
        raise typer.Exit(1)
    passed = failed = 0
    for table in tables:
        ok, bad = _run_one(table, policy, jurisdictions)
        passed, failed = passed + ok, failed + bad
    typer.echo(f"{passed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@policy_app.command()
def explain(
    jurisdictions: Annotated[str, typer.Option(
        "--jurisdictions", help="Jurisdiction codes, e.g. cn,eu (cn, eu, us-il, us-tx, "
                                "us-wa, us); empty: the base policy alone")] = "",
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Base policy (default: the installed policies/default.yaml).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print what applies: rules, obligations and their parameters, consent formalities,
    retention, takedown and duties, each with its source article."""
    try:
        policy_set = load_policy_set(policy or default_policy_file(), jurisdictions)
    except PolicyError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    data = policy_set.explain()
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        typer.echo(render_explanation(data), nl=False)


@policy_app.command()
def schema(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write here (e.g. policies/schema.json) instead of "
                               "printing.")] = None,
) -> None:
    """Print (or write) the JSON Schema of policy files."""
    text = render_policy_json_schema()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


def _run_one(table: Path, policy: Path | None,
             jurisdictions: str | None) -> tuple[int, int]:
    """Run one table; returns (passed, failed) and prints a line per case."""
    try:
        target = target_for_table(table, base=policy, jurisdictions=jurisdictions)
        results = run_target(target, table)
        cases = load_table(table)
        uncovered = [rule_id for doc in covered_documents(target, table)
                     for rule_id in uncovered_rules(doc, cases)]
    except PolicyError as exc:
        typer.echo(exc.message, err=True)
        return 0, 1
    for result in results:
        typer.echo(_line(table, result))
    if uncovered:
        typer.echo(f"note: {table}: no case expects rule(s) {', '.join(uncovered)}")
    ok = sum(r.passed for r in results)
    return ok, len(results) - ok


def _line(table: Path, result: CaseResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    return f"{status} {table}:{result.line} {result.name}: {result.describe()}"


if __name__ == "__main__":
    policy_app()
