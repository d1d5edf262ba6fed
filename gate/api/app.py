"""``create_app(settings, gate=None)``: the HTTP sidecar in front of one ``FaceGate``.

The app only translates HTTP to engine calls and back. Its lifespan opens the engine
(models verified, policy validated, database reached) unless one is passed in, opens the
API key store on the same database, and closes what it opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from pydantic.json_schema import models_json_schema

from gate import __version__
from gate.api.auth import require
from gate.api.bodies import (
    CHECK_FILE_FIELDS,
    ENROLL_FILE_FIELDS,
    OUTPUT_FILE_FIELDS,
    REPORT_FILE_FIELDS,
)
from gate.api.errors import install_error_handlers
from gate.api.keys import KeyStore
from gate.api.limits import BodySizeLimit, RateLimiter
from gate.api.logging import RequestContext
from gate.api.metrics import Metrics
from gate.api.routes import (
    audit,
    check,
    consent,
    console,
    grants,
    health,
    incident,
    portal,
    subjects,
)
from gate.api.schemas import (
    CheckBody,
    CheckFields,
    CheckOutputBody,
    CheckOutputFields,
    EnrollBody,
    EnrollFields,
    LabelOutputBody,
    LabelOutputFields,
    ReportBody,
    ReportFields,
    TraceBody,
    multipart_schema,
)
from gate.api.services import Services
from gate.api.settings import ApiSettings
from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.incident.notify import Notifier
from gate.settings import Settings

DESCRIPTION = """\
consent-gate's sidecar: `POST /v1/check` before a generation, `POST /v1/check-output`
after it; subjects, grants and the audit log for operators.

**Keys and scopes.** Every `/v1` route needs `Authorization: Bearer gk_...` (create keys
with `gate keys create --app APP --scopes check|admin`). A `check` key decides for its own
app only: the requester's `app_id` is the key's, never the body's, and every decision is
audited under it. An `admin` key is an operator-level key (the consent portal, the
operator's tooling): it enrols and erases subjects and records or revokes grants for any
grantee app (a grant is the *subject's* decision), and reads the whole audit log. Give
apps `check` keys only: an app that wants to recognise its own users' faces as `self`
invites them through `POST /v1/self-enrolments` (a liveness check in the portal), not
with an operator key.

**Errors** always answer `{"error": {"code", "message", "request_id"}}`. A decision never
fails open: internal faults and timeouts are a `deny` (`core.fail_closed`).
`/healthz`, `/readyz` and (by default) `/metrics` need no key.
"""


def create_app(settings: Settings | None = None, gate: FaceGate | None = None,
               api_settings: ApiSettings | None = None,
               consent_config: ConsentConfig | None = None) -> FastAPI:
    """The sidecar app; ``gate`` (e.g. a fake-model gate in tests) is used as given."""
    settings = settings or (gate.settings if gate is not None else Settings())
    api = api_settings or ApiSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = gate if gate is not None else \
            await anyio.to_thread.run_sync(FaceGate.from_settings, settings)
        consent_service = ConsentService(engine, consent_config or ConsentConfig())
        keys = KeyStore(consent_service.engine)
        notifier = _notifier(engine.settings, consent_service)
        metrics.observe_readiness(await anyio.to_thread.run_sync(engine.readiness))
        app.state.services = Services(
            gate=engine, consent=consent_service, keys=keys, metrics=metrics, api=api,
            limiter=RateLimiter(api.rate_limit_per_s, api.rate_limit_burst),
            notifier=notifier)
        try:
            yield
        finally:
            app.state.services = None
            if notifier is not None:
                notifier.close()
            consent_service.close()
            if gate is None:
                engine.close()

    app = FastAPI(title="consent-gate", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    install_error_handlers(app)
    for module in (check, subjects, grants, audit, health, consent, portal, incident,
                   console):
        app.include_router(module.router)
    metrics_deps = [Depends(require("admin"))] if api.metrics_auth == "admin" else []
    app.add_api_route("/metrics", health.metrics, methods=["GET"], tags=["health"],
                      dependencies=metrics_deps, response_class=PlainTextResponse)
    app.add_middleware(BodySizeLimit, max_bytes=api.max_body_bytes)
    app.add_middleware(RequestContext, observe=metrics.observe_http)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _notifier(settings: Settings, consent_service: ConsentService) -> Notifier | None:
    """The attempt notifier's background thread, when a webhook is configured."""
    if not settings.notify_webhook_url:
        return None
    notifier = Notifier(consent_service.engine, consent_service.tokens.keyring,
                        url=settings.notify_webhook_url, window_s=settings.notify_window_s,
                        max_tries=settings.notify_max_tries,
                        backoff_s=settings.notify_backoff_s,
                        timeout_s=settings.notify_timeout_s)
    return notifier.start(settings.notify_interval_s)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies that routes read themselves."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in (CheckBody, CheckOutputBody, EnrollBody, TraceBody,
                                     LabelOutputBody, ReportBody)],
        ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, body in defs.get("$defs", {}).items():
        components.setdefault(name, body)
    components["CheckForm"] = multipart_schema(CheckFields, CHECK_FILE_FIELDS)
    components["CheckOutputForm"] = multipart_schema(CheckOutputFields, OUTPUT_FILE_FIELDS)
    components["EnrollForm"] = multipart_schema(EnrollFields, ENROLL_FILE_FIELDS)
    components["LabelOutputForm"] = multipart_schema(LabelOutputFields, OUTPUT_FILE_FIELDS)
    components["ReportForm"] = multipart_schema(ReportFields, REPORT_FILE_FIELDS)
    app.openapi_schema = schema
    return schema
