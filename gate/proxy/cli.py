"""``run_proxy(...)``: serve the proxy with uvicorn (``gate serve --proxy MODE --upstream URL``).

    python -m gate.proxy.cli openai http://127.0.0.1:9000 --app studio --port 8081
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gate.proxy.types import MODES


def run_proxy(mode: str, upstream: str, host: str = "127.0.0.1", port: int = 8080,
              app_id: str | None = None, data_dir: Path = Path("data")) -> None:
    """Open the gate on ``data_dir`` and serve the ``mode`` proxy in front of ``upstream``.

    Without ``app_id``, apps authenticate with ``X-Gate-Key`` keys from ``gate keys create``
    (scope ``check``) on the same database; with it, every request acts for that app.
    """
    import uvicorn

    from gate.api.keys import KeyStore
    from gate.api.logging import configure_logging
    from gate.api.settings import ApiSettings
    from gate.db import make_engine
    from gate.engine import FaceGate
    from gate.proxy.app import create_proxy_app
    from gate.proxy.settings import ProxySettings
    from gate.settings import Settings

    if mode not in MODES:
        raise typer.BadParameter(f"mode must be one of {', '.join(MODES)}")
    configure_logging(ApiSettings().log_level)
    settings = Settings(data_dir=data_dir)
    if not settings.database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
    gate = FaceGate.from_settings(settings)
    keys = None if app_id else KeyStore(make_engine(settings.resolved_database_url()))
    try:
        app = create_proxy_app(gate, mode=mode, upstream=upstream, app_id=app_id,
                               key_store=keys, settings=ProxySettings())
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False,
                    server_header=False, timeout_graceful_shutdown=10)
    finally:
        if keys is not None:
            keys.close()
        gate.close()


def proxy_command(
    mode: Annotated[str, typer.Argument(help="openai, a1111 or comfyui")],
    upstream: Annotated[str, typer.Argument(help="The image API's base URL.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    app_id: Annotated[str | None, typer.Option("--app", help="Single-tenant app id (no "
                                               "gate keys).")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="GATE_DATA_DIR")] = Path("data"),
) -> None:
    """Serve the consent-gate proxy in front of an image API."""
    run_proxy(mode, upstream, host, port, app_id=app_id, data_dir=data_dir)


if __name__ == "__main__":
    typer.run(proxy_command)
