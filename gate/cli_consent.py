"""``gate consent ...``: retention, signing keys, portal links and webhooks.

Mounted by ``gate.cli`` as ``app.add_typer(consent_app, name="consent")``. Exit code 3 on a
gate error (message on stderr, never tokens or names), as the rest of the ``gate`` command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gate.clock import aware, utcnow
from gate.errors import GateError

consent_app = typer.Typer(no_args_is_help=True,
                          help="Consent lifecycle: retention, signing keys, portal links.")
retention_app = typer.Typer(no_args_is_help=True, help="Destroy data that is kept too long.")
tokens_app = typer.Typer(no_args_is_help=True, help="Grant-token signing keys (Ed25519).")
portal_app = typer.Typer(no_args_is_help=True, help="The subject portal.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Consent-request webhooks.")
consent_app.add_typer(retention_app, name="retention")
consent_app.add_typer(tokens_app, name="tokens")
consent_app.add_typer(portal_app, name="portal")
consent_app.add_typer(webhooks_app, name="webhooks")

EXIT_GATE_ERROR = 3
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="GATE_DATA_DIR",
                                       help="Embedded data directory.")]


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


@contextmanager
def _service(data_dir: Path) -> Iterator[Any]:
    from gate.consent.service import ConsentService
    from gate.engine import FaceGate

    try:
        gate = FaceGate.open(data_dir)
    except GateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_GATE_ERROR) from None
    svc = ConsentService(gate)
    try:
        yield svc
    except GateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_GATE_ERROR) from None
    finally:
        svc.sender.flush(10)
        svc.close()
        gate.close()


def _keyring(data_dir: Path) -> Any:
    from gate.consent.tokens import SigningKeyring
    from gate.settings import Settings

    try:
        return SigningKeyring(Settings(data_dir=data_dir).resolved_signing_key_file())
    except GateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_GATE_ERROR) from None


@retention_app.command("run")
def retention_run(
    data_dir: DataDir = Path("data"),
    max_idle_days: Annotated[int, typer.Option(
        min=1, help="Erase subjects idle for longer (BIPA: at most 3 years).")] = 3 * 365,
    now: Annotated[str | None, typer.Option(
        help="Pretend it is this ISO time (tests, audits of the schedule).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
) -> None:
    """Erase idle subjects; expire stale requests, links and sessions."""
    when = aware(datetime.fromisoformat(now)) if now else utcnow()
    with _service(data_dir) as svc:
        report = svc.run_retention(when, max_idle_days, dry_run=dry_run)
        _print(report.as_dict())


@tokens_app.command("jwks")
def tokens_jwks(data_dir: DataDir = Path("data")) -> None:
    """Print the public JWKS that verifies grant tokens."""
    _print(_keyring(data_dir).jwks())


@tokens_app.command("rotate")
def tokens_rotate(data_dir: DataDir = Path("data")) -> None:
    """Add a new active signing key; older keys keep verifying their tokens."""
    keyring = _keyring(data_dir)
    kid = keyring.rotate()
    _print({"active_kid": kid, "kids": keyring.kids()})


@tokens_app.command("retire")
def tokens_retire(
    data_dir: DataDir = Path("data"),
    keep: Annotated[int, typer.Option(min=1, help="How many newest keys to keep.")] = 2,
) -> None:
    """Drop old signing keys (tokens they signed stop verifying)."""
    keyring = _keyring(data_dir)
    _print({"dropped": keyring.retire(keep), "kids": keyring.kids()})


@tokens_app.command("issue")
def tokens_issue(grant_id: str, data_dir: DataDir = Path("data")) -> None:
    """Print a fresh signed token for an active grant."""
    with _service(data_dir) as svc:
        typer.echo(svc.lifecycle.token_for(grant_id).token)


@portal_app.command("link")
def portal_link(subject_id: str, data_dir: DataDir = Path("data")) -> None:
    """Print a one-time portal sign-in link for a subject (send it to them privately)."""
    with _service(data_dir) as svc:
        typer.echo(svc.portal.link(subject_id))


@webhooks_app.command("set")
def webhooks_set(
    app_id: Annotated[str, typer.Option("--app", help="The app that receives them.")],
    url: Annotated[str, typer.Option(help="Where to POST consent-request events.")],
    data_dir: DataDir = Path("data"),
) -> None:
    """Register an app's webhook URL; prints the signing secret once."""
    with _service(data_dir) as svc:
        _print({"app_id": app_id, "url": url,
                "secret": svc.requests.set_webhook(app_id, url)})
