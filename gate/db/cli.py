"""``gate db ...``: schema migrations (Alembic), mounted by ``gate/cli.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="GATE_DATA_DIR",
                                       help="Embedded data directory (SQLite).")]

db_app = typer.Typer(no_args_is_help=True, help="Database schema migrations (Alembic).")


def _url(data_dir: Path) -> str:
    from gate.settings import Settings

    settings = Settings(data_dir=data_dir)
    if not settings.database_url:
        from gate.durable import private_dir

        private_dir(data_dir)
    return settings.resolved_database_url()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
               data_dir: DataDir = Path("data")) -> None:
    """Migrate the database (GATE_DATABASE_URL, or SQLite in --data-dir) to the newest
    schema. Safe to run again; run it once before starting replicas."""
    from gate.db.migrate import upgrade

    reached = upgrade(_url(data_dir), revision)
    typer.echo(f"database at revision {reached}")


@db_app.command("current")
def db_current(data_dir: DataDir = Path("data")) -> None:
    """Print the database's schema revision."""
    from gate.db.migrate import current_revision

    typer.echo(current_revision(_url(data_dir)) or "none")
