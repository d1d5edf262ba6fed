"""``gate serve`` and ``gate keys ...``, mounted by ``gate/cli.py``:

    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from gate.api.keys import KeyStore

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="GATE_DATA_DIR",
                                       help="Embedded data directory (SQLite).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP sidecar.")


def _key_store(data_dir: Path) -> KeyStore:
    from gate.api.keys import KeyStore
    from gate.commands import database

    return KeyStore(database(data_dir))


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 in containers).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    data_dir: DataDir = Path("data"),
    proxy: Annotated[str | None, typer.Option(
        "--proxy", help="openai, a1111 or comfyui: run the drop-in proxy instead.")] = None,
    upstream: Annotated[str | None, typer.Option(
        "--upstream", help="The image API's base URL (with --proxy).")] = None,
    app_id: Annotated[str | None, typer.Option(
        "--app", help="Proxy: single-tenant app id (no gate keys).")] = None,
) -> None:
    """Run the HTTP sidecar (models verified and policy validated before it listens)."""
    if proxy is not None:
        if proxy not in ("openai", "a1111", "comfyui"):
            raise typer.BadParameter("--proxy must be openai, a1111 or comfyui")
        if not upstream:
            raise typer.BadParameter("--proxy needs --upstream")
        from gate.proxy.cli import run_proxy

        run_proxy(proxy, upstream, host, port, app_id=app_id, data_dir=data_dir)
        return
    import uvicorn

    from gate.api.app import create_app
    from gate.api.logging import configure_logging
    from gate.api.settings import ApiSettings
    from gate.settings import Settings

    api = ApiSettings()
    configure_logging(api.log_level)
    settings = Settings(data_dir=data_dir)
    uvicorn.run(create_app(settings, api_settings=api), host=host, port=port,
                log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=10)


@keys_app.command("create")
def keys_create(
    app_id: Annotated[str, typer.Option("--app", help="The app (tenant) the key acts for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: check, admin.")] = "check",
    jurisdictions: Annotated[str, typer.Option(
        help="Jurisdiction packs this app's decisions add (cn, eu, us-il, us-tx, us-wa, "
             "us), comma-separated.")] = "",
    data_dir: DataDir = Path("data"),
    as_json: JsonOut = False,
) -> None:
    """Create a key. The secret is printed once and only its hash is stored."""
    store = _key_store(data_dir)
    try:
        new = store.create(app_id, scopes.split(","), jurisdictions)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"key_id": new.key.key_id, "app_id": new.key.app_id,
                               "scopes": sorted(new.key.scopes),
                               "jurisdictions": list(new.key.jurisdictions),
                               "api_key": new.token}))
    else:
        typer.echo(new.token)
        typer.echo(f"key {new.key.key_id} for app {new.key.app_id} "
                   f"[{','.join(sorted(new.key.scopes))}]; store the key now, it is not "
                   "shown again", err=True)


@keys_app.command("list")
def keys_list(data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """List keys (ids, apps, scopes; never secrets)."""
    store = _key_store(data_dir)
    try:
        keys = store.list()
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([
            {"key_id": k.key_id, "app_id": k.app_id, "scopes": sorted(k.scopes),
             "created_at": k.created_at.isoformat(),
             "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None} for k in keys],
            indent=2))
        return
    for k in keys:
        state = "revoked" if k.revoked_at else "active"
        typer.echo(f"{k.key_id}  {k.app_id:<20} {','.join(sorted(k.scopes)):<12} {state}")
    if not keys:
        typer.echo("no keys")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (not the secret).")],
                data_dir: DataDir = Path("data")) -> None:
    """Revoke a key: every replica refuses it from its next request on."""
    store = _key_store(data_dir)
    try:
        key = store.revoke(key_id)
    finally:
        store.close()
    typer.echo(f"revoked {key.key_id} (app {key.app_id})")


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = Path("data"), as_json: JsonOut = False) -> None:
    """Rotate the template encryption key: every face template is re-encrypted."""
    from gate.engine import FaceGate

    gate = FaceGate.open(data_dir)
    try:
        count = gate.rotate_template_key()
        key_id = gate.parts.cipher.key_id
    finally:
        gate.close()
    if as_json:
        typer.echo(json.dumps({"reencrypted": count, "key_id": key_id}))
    else:
        typer.echo(f"re-encrypted {count} template(s) under key {key_id}")


def standalone() -> typer.Typer:
    """These commands on their own: ``python -m gate.api.cli serve|keys|db ...``."""
    cli = typer.Typer(add_completion=False, no_args_is_help=True)
    cli.command("serve")(serve_command)
    cli.add_typer(keys_app, name="keys")
    from gate.db.cli import db_app

    cli.add_typer(db_app, name="db")
    return cli


if __name__ == "__main__":
    standalone()()
