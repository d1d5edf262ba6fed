"""``gate policy``: check policy files, run their table tests, print their JSON Schema.

Mounted in ``gate/cli.py`` as ``app.add_typer(policy_app, name="policy")``; also runnable
alone as ``python -m gate.policy.cli``. Exit codes: 0 success, 1 an invalid file or a
failing case (``file:line: ...`` on stderr), 2 usage errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gate.errors import PolicyError
from gate.policy.evaluate import CORE_RULES
from gate.policy.load import load_policy
from gate.policy.schema import render_policy_json_schema
from gate.policy.table import (
    CaseResult,
    load_table,
    policy_for_table,
    run_table,
    uncovered_rules,
)

policy_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Policy files: check, test, schema.")


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
        typer.echo(f"OK {path}: {policy.policy}@{policy.version}, {len(policy.rules)} rules "
                   f"(+{len(CORE_RULES)} core rules)")
    if failed:
        raise typer.Exit(1)


@policy_app.command("test")
def test_tables(
    target: Annotated[Path, typer.Argument(help="A table file, or a folder of them.")],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Policy to test (default: <dir>/tests/<name>.yaml tests "
                         "<dir>/<name>.yaml).")] = None,
) -> None:
    """Run table tests: PASS/FAIL per case; exit 1 on any failure."""
    tables = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
    if not tables:
        typer.echo(f"{target}: no *.yaml table files", err=True)
        raise typer.Exit(1)
    passed = failed = 0
    for table in tables:
        ok, bad = _run_one(table, policy)
        passed, failed = passed + ok, failed + bad
    typer.echo(f"{passed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


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


def _run_one(table: Path, policy: Path | None) -> tuple[int, int]:
    """Run one table; returns (passed, failed) and prints a line per case."""
    try:
        policy_path = policy or policy_for_table(table)
        results = run_table(policy_path, table)
        uncovered = uncovered_rules(load_policy(policy_path), load_table(table))
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
