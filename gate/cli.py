"""The ``gate`` command: the same operations as the SDK, with ``--json`` output.

Exit codes: 0 success (and ``allow`` for ``check``), 10 ``needs_consent``, 11 ``deny``,
3 a gate error (one line on stderr, or JSON on stdout with ``--json``; never pixels,
embeddings or a traceback), 2 usage errors. See ``gate.commands``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from gate.commands import (
    EXIT_DENY,
    EXIT_NEEDS_CONSENT,
    DataDir,
    JsonOut,
    emit,
    fail,
    handled,
    read_file,
)
from gate.errors import GateError, invalid_request

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="consent-gate: consent-aware face-use gate for generative AI.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
models_app = typer.Typer(no_args_is_help=True, help="Model weights: verify and fetch.")
app.add_typer(audit_app, name="audit")
app.add_typer(models_app, name="models")


def _mount_subapps() -> None:
    from gate.api.cli import keys_app, serve_command
    from gate.cli_consent import consent_app
    from gate.db.cli import db_app
    from gate.policy.cli import policy_app

    app.add_typer(policy_app, name="policy", help="Validate and test policy files.")
    app.command("serve", help="Run the sidecar HTTP service (uvicorn).")(serve_command)
    app.add_typer(keys_app, name="keys", help="API keys of the sidecar; template key rotation.")
    app.add_typer(db_app, name="db", help="Database schema migrations.")
    app.add_typer(consent_app, name="consent",
                  help="Consent lifecycle: retention, grant tokens, portal links.")
    from gate.cli_incident import blocklist_app, label_command, report_app, trace_command
    from gate.evaluation.cli import eval_command

    app.command("trace", help="Trace an image to the request and audit record it came "
                              "from.")(trace_command)
    app.command("label", help="Mark and label the output of an allowed request.")(
        label_command)
    app.add_typer(report_app, name="report")
    app.add_typer(blocklist_app, name="blocklist")

    app.command("eval", help="Efficacy under evasion on a labelled photo folder.")(
        eval_command)


_mount_subapps()


def _open(data_dir: Path) -> Any:
    from gate.engine import FaceGate

    return FaceGate.open(data_dir)






@app.command()
@handled
def check(
    images: Annotated[list[str], typer.Argument(help="IMAGE or ROLE=IMAGE (role: source, "
                                                     "target, reference, init, mask, training)")],
    operation: Annotated[str, typer.Option(help="txt2img, img2img, inpaint, face_swap, ...")],
    app_id: Annotated[str, typer.Option("--app", help="Requesting app id.")],
    user: Annotated[str | None, typer.Option(help="Requesting end-user id.")] = None,
    prompt: Annotated[str, typer.Option(help="The generation prompt.")] = "",
    negative_prompt: Annotated[str, typer.Option(help="The negative prompt.")] = "",
    content: Annotated[str, typer.Option(help="Comma-separated content categories.")] = "general",
    role: Annotated[str, typer.Option(help="Role of images given without ROLE=.")] = "target",
    purpose: Annotated[str | None, typer.Option(help="Declared purpose.")] = None,
    data_dir: DataDir = Path("data"),
    as_json: JsonOut = False,
) -> None:
    """Decide whether a generation request may use the faces in IMAGES."""
    from gate.types import GateRequest, ImageInput, Requester

    inputs = []
    for spec in images:
        r, _, p = spec.partition("=") if "=" in spec else (role, "=", spec)
        inputs.append(ImageInput(role=r, data=read_file(Path(p))))
    gate = _open(data_dir)
    try:
        decision = gate.check(GateRequest(
            operation=operation, images=inputs, prompt=prompt,
            negative_prompt=negative_prompt, content=content.split(","),
            purpose=purpose, requester=Requester(app_id=app_id, user_id=user)))
    finally:
        gate.close()
    emit(decision.model_dump(mode="json"), as_json, _render_decision(decision))
    code = {"allow": 0, "needs_consent": EXIT_NEEDS_CONSENT, "deny": EXIT_DENY}
    raise typer.Exit(code[decision.verdict])


def _render_decision(decision: Any) -> str:
    lines = [f"verdict: {decision.verdict}   request: {decision.request_id}   "
             f"policy: {decision.policy_version}"]
    for f in decision.faces:
        sim = f"{f.similarity:.3f}" if f.similarity is not None else "-"
        lines.append(f"  face {f.face_ref} ({f.role}, {f.size_px}px, q={f.quality:.2f}): "
                     f"{f.identity} subject={f.subject_id or '-'} similarity={sim}")
    for r in decision.reasons:
        where = f" [{r.face_ref}]" if r.face_ref else ""
        lines.append(f"  {r.effect:<13} {r.rule_id}{where}: {r.message.strip()}")
    if decision.obligations:
        lines.append(f"  obligations: {', '.join(decision.obligations)}")
    return "\n".join(lines)


@app.command()
@handled
def enroll(
    images: Annotated[list[Path], typer.Argument(help="Photos, each with exactly one face.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    status: Annotated[str, typer.Option(help="protected or consenting.")] = "protected",
    owner_app: Annotated[str | None, typer.Option(help="Owner app (for self-use).")] = None,
    owner_user: Annotated[str | None, typer.Option(help="Owner user id.")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="An alias (repeatable).")] = None,
    data_dir: DataDir = Path("data"),
    as_json: JsonOut = False,
) -> None:
    """Enrol a person from one or more photos."""
    from gate.types import Requester

    owner = Requester(app_id=owner_app, user_id=owner_user) if owner_app else None
    gate = _open(data_dir)
    try:
        subject = gate.enroll([read_file(p) for p in images], display_name=name,
                              status=status, owner=owner, aliases=alias or [])
    finally:
        gate.close()
    emit(subject.model_dump(mode="json"), as_json,
          f"enrolled {subject.subject_id} ({subject.status}, {subject.template_count} template(s))")


@app.command()
@handled
def grant(
    subject_id: Annotated[str, typer.Argument(help="Subject to grant for.")],
    app_id: Annotated[str, typer.Option("--app", help="Grantee app id.")],
    operations: Annotated[str, typer.Option(help="Comma-separated operations.")],
    content: Annotated[str, typer.Option(help="Comma-separated content categories.")] = "general",
    user: Annotated[str | None, typer.Option(help="Grantee user id (optional).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Purpose (optional).")] = None,
    expires_at: Annotated[datetime | None, typer.Option(help="Expiry (ISO 8601).")] = None,
    max_uses: Annotated[int | None, typer.Option(help="Maximum number of uses.")] = None,
    data_dir: DataDir = Path("data"),
    as_json: JsonOut = False,
) -> None:
    """Record a consent grant."""
    gate = _open(data_dir)
    try:
        g = gate.grant(subject_id, app_id=app_id, operations=operations.split(","),
                       content=content.split(","), user_id=user, purpose=purpose,
                       expires_at=expires_at, max_uses=max_uses)
    finally:
        gate.close()
    emit(g.model_dump(mode="json"), as_json, f"granted {g.grant_id}")


@app.command()
@handled
def revoke(grant_id: str, data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Revoke a grant at once."""
    gate = _open(data_dir)
    try:
        g = gate.revoke(grant_id)
    finally:
        gate.close()
    emit(g.model_dump(mode="json"), as_json, f"revoked {g.grant_id}")


@app.command()
@handled
def erase(subject_id: str, data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Erase a subject: templates, grants, index entries."""
    gate = _open(data_dir)
    try:
        gate.erase(subject_id)
    finally:
        gate.close()
    emit({"erased": subject_id}, as_json, f"erased {subject_id}")


@app.command()
@handled
def subjects(data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """List enrolled subjects."""
    gate = _open(data_dir)
    try:
        rows = [s.model_dump(mode="json") for s in gate.list_subjects()]
    finally:
        gate.close()
    emit(rows, as_json, "\n".join(f"{r['subject_id']}  {r['status']:<10}  {r['display_name']}"
                                   for r in rows) or "no subjects")


@app.command()
@handled
def grants(subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
           data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """List grants."""
    gate = _open(data_dir)
    try:
        rows = [g.model_dump(mode="json") for g in gate.list_grants(subject)]
    finally:
        gate.close()
    emit(rows, as_json, "\n".join(
        f"{r['grant_id']}  {r['subject_id']}  {r['app_id']}  {','.join(r['operations'])}  "
        f"{'revoked' if r['revoked_at'] else 'active'}" for r in rows) or "no grants")


@audit_app.command("verify")
@handled
def audit_verify(data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Verify the audit hash chain (detects edits, deletions, reordering)."""
    from gate.audit.chain import SqlAuditSink
    from gate.commands import database

    engine = database(data_dir)
    try:
        result = SqlAuditSink(engine).verify()
    finally:
        engine.dispose()
    emit(result.model_dump(), as_json,
          f"audit chain OK ({result.events} events)" if result.ok else
          f"audit chain BROKEN at seq {result.first_bad_seq}: {result.problem}")
    if not result.ok:
        raise typer.Exit(1)


@models_app.command("verify")
@handled
def models_verify(as_json: JsonOut = False) -> None:
    """Verify the configured model files by sha256 and prepare derived files."""
    from gate.models_cli import verify_models

    report = verify_models()
    emit(report, as_json, "\n".join(f"{r['role']:<10} {r['status']:<8} {r['file']}  "
                                     f"[{r['license']}]" for r in report["files"]))


@models_app.command("fetch")
@handled
def models_fetch(
    pack: Annotated[str, typer.Argument(help="buffalo_l or buffalo_s (insightface).")],
    accept_license: Annotated[str | None, typer.Option(help="Must be 'noncommercial'.")] = None,
    dest: Annotated[Path | None, typer.Option(help="Target directory.")] = None,
    url: Annotated[str | None, typer.Option(help="Override the download URL (mirror).")] = None,
    as_json: JsonOut = False,
) -> None:
    """Download an insightface pack (non-commercial licence; explicit acceptance needed)."""
    from gate.models_cli import fetch_pack

    result = fetch_pack(pack, accept_license=accept_license, dest=dest, url=url)
    emit(result, as_json, "\n".join([result["license_notice"], *[
        f"verified {f}" for f in result["files"]], f"saved in {result['dest']}"]))


@app.command()
def demo(data_dir: Annotated[Path | None, typer.Option(help="Where to keep demo data "
                                                          "(default: a temporary folder).")]
         = None) -> None:
    """A narrated scenario on photos that ship with the installed packages."""
    from gate.demo import run_demo

    run_demo(data_dir)


@app.command()
def bench(
    iterations: Annotated[int, typer.Option(help="Timed iterations per case.")] = 30,
    threads: Annotated[bool, typer.Option(help="Also measure 1/2/4-thread throughput.")]
    = True,
    as_json: JsonOut = False,
) -> None:
    """Run the standard benchmarks (baselines measured in the same run) and print a table."""
    from rich.console import Console
    from rich.table import Table

    from gate.evaluation.bench import rows, run_check_latency

    report = run_check_latency(iterations, threads)
    if as_json:
        emit(report, True)
        return
    table = Table(title="consent-gate benchmarks (this machine, this run)")
    table.add_column("measure")
    table.add_column("value")
    for name, value in rows(report):
        table.add_row(name, value)
    Console().print(table)


def main() -> None:
    as_json = "--json" in sys.argv[1:]
    try:
        app()
    except GateError as exc:  # a command without @handled, or raised while mounting
        fail(exc, as_json)
    except ValidationError as exc:
        fail(invalid_request(exc.errors(include_input=False)), as_json)


if __name__ == "__main__":
    main()
