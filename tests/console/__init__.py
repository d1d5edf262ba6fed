"""The operator console (``/console``): HTTP tests and a real-browser test.

``console_app`` builds the sidecar over a fake-model gate with the console router
included (once: ``create_app`` may already include it), and ``admin_keys`` makes the keys
the tests sign in with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from gate.api.app import create_app
from gate.api.keys import KeyStore
from gate.api.routes import console
from gate.api.settings import ApiSettings
from gate.consent.config import ConsentConfig
from gate.db import make_engine


def console_app(gate: Any, public_url: str = "http://testserver") -> FastAPI:
    app = create_app(gate=gate, api_settings=ApiSettings(rate_limit_per_s=0),
                     consent_config=ConsentConfig(secure_cookies=False, public_url=public_url))
    if not any(getattr(r, "path", None) == "/console/" for r in app.routes):
        app.include_router(console.router)
    return app


@dataclass(frozen=True)
class ConsoleKeys:
    admin: str  # an operator key (scope admin)
    studio: str  # a check key of app "studio"


def console_keys(gate: Any) -> ConsoleKeys:
    store = KeyStore(make_engine(gate.settings.resolved_database_url()))  # migrated
    try:
        return ConsoleKeys(admin=store.create("ops", ["admin"]).token,
                           studio=store.create("studio", ["check"]).token)
    finally:
        store.close()
