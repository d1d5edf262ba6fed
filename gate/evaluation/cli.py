"""``gate eval DIR``: recognition efficacy under evasion transforms (see docs/accuracy.md).

``eval_command`` is a plain function with typer annotations; ``gate/cli.py`` mounts it
with ``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gate.evaluation.harness import (
    QUICK_PROBES_PER_IDENTITY,
    EfficacyReport,
    default_gate_factory,
    run_efficacy,
)
from gate.evaluation.transforms import resolve


def print_report(report: EfficacyReport) -> None:
    """The rich tables (one per dataset x enrolment count) and any warnings, on stdout."""
    from rich.console import Console

    console = Console()
    if console.width < 150:  # a pipe or a narrow terminal: do not squeeze the columns
        console = Console(width=150)
    for table in report.tables():
        console.print(table)
    for failure in report.enrolment_failures:
        console.print(f"[yellow]enrolment failed[/]: {failure}")
    if any(c.counts.faults for c in report.cases):
        console.print("[red]some checks failed closed (core.fail_closed): the counts above "
                      "measure faults, not recognition[/]")
    console.print(f"{sum(c.counts.total for c in report.cases)} checks in "
                  f"{report.elapsed_s:.0f}s")


def eval_command(
    dir: Annotated[Path, typer.Argument(
        help="A folder of <identity>/<photo> folders, or a folder of such sets.",
        metavar="DIR", exists=True, file_okay=False, dir_okay=True, resolve_path=True)],
    enrol: Annotated[int, typer.Option(
        min=1, max=3, help="Enrolment photos per person (1..3).")] = 1,
    transforms: Annotated[str, typer.Option(
        help="'all' or comma-separated names, e.g. clean,hflip,rot90.")] = "all",
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the full report as JSON to this file.")] = None,
    quick: Annotated[bool, typer.Option(
        help=f"At most {QUICK_PROBES_PER_IDENTITY} probes per identity.")] = False,
    sets: Annotated[str, typer.Option(
        help="'all' or comma-separated set folder names under DIR.")] = "all",
    limit: Annotated[int | None, typer.Option(
        min=1, help="At most this many probes per identity.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, placements and noise.")] = 0,
) -> None:
    """Measure false-allow, false-block, wrong subject and detection misses under evasion
    transforms, with the real pipeline, on labelled photos in DIR."""
    from gate.evaluation.harness import discover_sets

    try:
        names = resolve(transforms)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--transforms") from exc
    roots = discover_sets(dir)
    if sets.strip().lower() != "all":
        wanted = {s.strip() for s in sets.split(",") if s.strip()}
        roots = [r for r in roots if r.name in wanted]
    if not roots:
        raise typer.BadParameter(f"no labelled sets found in {dir}", param_hint="DIR")
    probes = limit if limit is not None else (QUICK_PROBES_PER_IDENTITY if quick else None)
    report = run_efficacy(
        default_gate_factory(), roots, enrol_photos=enrol, transforms=names, seed=seed,
        max_probes_per_identity=probes,
        progress=lambda msg: typer.echo(msg, err=True),
    )
    print_report(report)
    if json_out is not None:
        report.write_json(json_out)
        typer.echo(f"wrote {json_out}", err=True)
