"""``gate trace``, ``gate label``, ``gate report``, ``gate blocklist``: incident response.

``gate report FILE --reason ncii`` files a takedown report (its subcommands ``list``,
``show`` and ``resolve`` manage the queue); ``gate trace FILE`` finds the request an
image came from. Same conventions as every ``gate`` command (``gate.commands``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gate.commands import DataDir, JsonOut, emit, handled, read_file


class _ReportGroup(TyperGroup):
    """``gate report FILE ...`` files a report; ``gate report list|show|resolve`` manage
    them: anything that is not a subcommand name goes to the hidden ``file`` command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["file", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(cls=_ReportGroup, no_args_is_help=True,
                         help="Takedown reports: file one (gate report FILE --reason ncii), "
                              "list, show, resolve.")
blocklist_app = typer.Typer(no_args_is_help=True,
                            help="The known-image blocklist (PDQ hashes): list, import, "
                                 "export.")


@contextmanager
def _gate(data_dir: Path) -> Iterator[Any]:
    from gate.engine import FaceGate

    gate = FaceGate.open(data_dir)
    try:
        yield gate
    finally:
        gate.close()


def _desk(gate: Any) -> Any:
    return gate.incident_desk()


@handled
def trace_command(file: Annotated[Path, typer.Argument(help="The image to trace.")],
                  data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Where did this image come from? Its request and audit record, or found: false."""
    data = read_file(file)
    with _gate(data_dir) as gate:
        found = gate.trace(data)
    body = found.model_dump(mode="json")
    if not found.found:
        emit(body, as_json, "found: false (no mark or manifest of this gate)")
        return
    record = found.record
    human = [f"found: request {found.request_id} (from the {found.source})"]
    if record is not None:
        human.append(f"  decided {record.at}: {record.verdict} for app {record.app_id}, "
                     f"operation {record.operation}; rules {', '.join(record.rule_ids)}")
        human.append(f"  audit event {record.seq}, chain verified: {record.chain_verified}")
    emit(body, as_json, "\n".join(human))


@handled
def label_command(file: Annotated[Path, typer.Argument(help="The generated image.")],
                  request_id: Annotated[str, typer.Option(
                      "--request-id", help="The request id of the allowed input decision.")],
                  out: Annotated[Path, typer.Option("--out", "-o", help="Where to write "
                                                    "the labelled image.")],
                  locale: Annotated[str | None, typer.Option(
                      help="Language of a visible label.")] = None,
                  data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Mark and label the output of an allowed request (what trace reads back)."""
    from gate.durable import atomic_write

    data = read_file(file)
    with _gate(data_dir) as gate:
        labelled = gate.label(data, request_id=request_id, locale=locale)
    atomic_write(out, labelled.data)
    emit({"out": str(out), "media_type": labelled.media_type,
          "watermarked": labelled.digest is not None, "visible_label": labelled.visible,
          "c2pa": labelled.c2pa}, as_json, f"wrote {out}")


@report_app.command("file", hidden=True)
@handled
def report_file(
        file: Annotated[Path | None, typer.Argument(help="The reported image.")] = None,
        reason: Annotated[str, typer.Option(help="ncii, impersonation, minor or other.")]
        = "ncii",
        pdq: Annotated[list[str] | None, typer.Option(
            help="A PDQ hash (64 hex) instead of, or besides, the image.")] = None,
        subject: Annotated[str | None, typer.Option(help="The enrolled person shown.")]
        = None,
        contact: Annotated[str | None, typer.Option(help="How to reach the reporter.")]
        = None,
        data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """File a takedown report: hashes blocked at once, trace attached, deadline set."""
    data = read_file(file) if file is not None else None
    with _gate(data_dir) as gate:
        report = gate.report(image=data, pdq=pdq or None, reason=reason, subject_id=subject,
                             contact=contact)
    emit(report.model_dump(mode="json"), as_json, _render(report))


@report_app.command("list")
@handled
def report_list(
        overdue: Annotated[bool, typer.Option(help="Only open reports past their deadline.")]
        = False,
        status: Annotated[str | None, typer.Option(help="open, actioned or rejected.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
        data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """The reports queue, nearest deadline first."""
    from gate.errors import InvalidRequest

    if status not in (None, "open", "actioned", "rejected"):
        raise InvalidRequest("status must be open, actioned or rejected", field="status")
    with _gate(data_dir) as gate:
        rows = _desk(gate).reports.list(status=status, overdue=overdue, limit=limit)
    emit([r.model_dump(mode="json") for r in rows], as_json,
         "\n".join(_render(r) for r in rows) or "no reports")
    if overdue and rows:
        raise typer.Exit(1)  # scripts and cron alert on overdue reports


@report_app.command("show")
@handled
def report_show(report_id: str, data_dir: DataDir = Path("data"),
                as_json: JsonOut = False) -> None:
    """One report, with its trace."""
    with _gate(data_dir) as gate:
        report = _desk(gate).reports.get(report_id)
    emit(report.model_dump(mode="json"), as_json, _render(report, full=True))


@report_app.command("resolve")
@handled
def report_resolve(
        report_id: str,
        status: Annotated[str, typer.Option(help="actioned or rejected.")],
        reason: Annotated[str, typer.Option(help="Why (kept with the report; audited).")],
        by: Annotated[str, typer.Option(help="Who resolves it.")] = "cli",
        data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Act on a report: actioned (hashes stay blocked) or rejected (provisional hashes
    removed)."""
    with _gate(data_dir) as gate:
        report = _desk(gate).reports.resolve(report_id, status, reason, by=f"cli:{by}")
    emit(report.model_dump(mode="json"), as_json, _render(report))


def _render(report: Any, *, full: bool = False) -> str:
    late = "  OVERDUE" if report.overdue else ""
    line = (f"{report.report_id}  {report.status:<8}  {report.reason:<13}  "
            f"deadline {report.deadline:%Y-%m-%d %H:%M} UTC{late}")
    if report.trace is not None and report.trace.found:
        line += f"  traced to {report.trace.request_id}"
    if full and report.resolution:
        line += f"\n  resolved {report.resolved_at} by {report.resolved_by}: {report.resolution}"
    return line


@blocklist_app.command("list")
@handled
def blocklist_list(limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
                   data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Newest entries first."""
    with _gate(data_dir) as gate:
        rows = _desk(gate).blocklist.entries(limit)
    emit(rows, as_json, "\n".join(
        f"{r['entry_id']}  {r['pdq'][:16]}...  {r['source']:<8} "
        f"{'provisional' if r['provisional'] else ''}" for r in rows) or "blocklist empty")


@blocklist_app.command("import")
@handled
def blocklist_import(
        file: Annotated[Path, typer.Argument(help="A hash list ('-' for stdin).")],
        name: Annotated[str, typer.Option(help="The list's name (collaboration).")],
        fmt: Annotated[str | None, typer.Option(
            "--format", help="te-file, te-csv or te-simple (sniffed by default).")] = None,
        data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Add a shared hash list (ThreatExchange / HMA formats)."""
    from gate.incident.hashlists import read_hash_list

    data = sys.stdin.buffer.read() if str(file) == "-" else read_file(file)
    parsed = read_hash_list(data, fmt, collab=name)  # type: ignore[arg-type]
    with _gate(data_dir) as gate:
        added = _desk(gate).blocklist.add_entries(parsed.entries, list_name=name)
    emit({"added": added, "skipped": parsed.skipped}, as_json, f"added {added} hashes")


@blocklist_app.command("export")
@handled
def blocklist_export(
        fmt: Annotated[str, typer.Option("--format", help="te-file, te-csv or te-simple.")]
        = "te-csv",
        data_dir: DataDir = Path("data")) -> None:
    """The confirmed entries, for other platforms (stdout)."""
    from gate.errors import InvalidRequest
    from gate.incident.hashlists import write_hash_list

    if fmt not in ("te-file", "te-csv", "te-simple"):
        raise InvalidRequest("format must be te-file, te-csv or te-simple", field="format")
    with _gate(data_dir) as gate:
        entries = _desk(gate).blocklist.export()
    sys.stdout.write(write_hash_list(entries, fmt))  # type: ignore[arg-type]
