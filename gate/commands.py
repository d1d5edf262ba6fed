"""What every ``gate`` subcommand shares: the data-dir option, ``--json`` output, and one
way to fail.

Exit codes: 0 success (and ``allow`` for ``check``), 10 ``needs_consent``, 11 ``deny``,
3 a gate error, 2 usage errors. A gate error (bad input included: an unknown operation,
role or content category) is one line on stderr, ``error: CODE: message``; with ``--json``
it is ``{"error": {"code", "message"}}`` on stdout. Never a traceback, never pixels,
embeddings or secrets.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from gate.errors import GateError, invalid_request

EXIT_NEEDS_CONSENT = 10
EXIT_DENY = 11
EXIT_GATE_ERROR = 3

P = ParamSpec("P")
T = TypeVar("T")

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="GATE_DATA_DIR",
                                       help="Embedded data directory.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def emit(obj: Any, as_json: bool, human: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))
    else:
        typer.echo(human if human is not None else json.dumps(obj, indent=2, default=str))


def fail(exc: GateError, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
    else:
        message = exc.message if exc.field is None else f"{exc.field}: {exc.message}"
        typer.echo(f"error: {exc.code}: {message}", err=True)
    raise typer.Exit(EXIT_GATE_ERROR)


def handled(fn: Callable[P, T]) -> Callable[P, T]:
    """A command whose gate errors (and invalid input) end as ``fail`` says."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return fn(*args, **kwargs)
        except GateError as exc:
            fail(exc, as_json)
        except ValidationError as exc:
            fail(invalid_request(exc.errors(include_input=False)), as_json)

    return wrapper


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc


def database(data_dir: Path) -> Any:
    """An engine on the gate's database (migrated), for commands that need no models."""
    from gate.db import make_engine
    from gate.db.migrate import ensure_schema
    from gate.durable import private_dir
    from gate.settings import Settings

    settings = Settings(data_dir=data_dir)
    if not settings.database_url:
        private_dir(data_dir)
    engine = make_engine(settings.resolved_database_url())
    ensure_schema(engine, auto_migrate=settings.auto_migrate)
    return engine
