"""``create_proxy_app(gate, mode=..., upstream=...)``: consent-gate in front of an image API.

Clients keep speaking the upstream API (OpenAI Images, AUTOMATIC1111, ComfyUI); the proxy
maps each request to a ``GateRequest``, checks it before forwarding, forwards it with
httpx when allowed, screens and labels the generated images, and answers 403 with the
decision (in the upstream API's error style) otherwise. Route handlers only translate;
the mapping lives in ``gate.proxy.openai``, ``a1111`` and ``comfyui``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gate import __version__
from gate.api.keys import KeyStore
from gate.api.limits import RateLimiter
from gate.api.logging import RequestContext
from gate.engine import FaceGate
from gate.marking.provenance import C2paSigner, ManifestSigner
from gate.proxy import a1111, comfyui, openai
from gate.proxy.auth import Authenticator
from gate.proxy.guard import Guard
from gate.proxy.ledger import ComfyLedger
from gate.proxy.routes import a1111 as a1111_routes
from gate.proxy.routes import comfyui as comfyui_routes
from gate.proxy.routes import openai as openai_routes
from gate.proxy.services import ErrorBody, Services
from gate.proxy.settings import ProxySettings
from gate.proxy.types import MODES, Mode, ProxyError, Refused
from gate.proxy.upstream import Upstream

log = logging.getLogger("gate.proxy")

_DIALECTS: dict[str, tuple[ErrorBody, Any]] = {
    "openai": (openai.error_body, openai_routes.router),
    "a1111": (a1111.error_body, a1111_routes.router),
    "comfyui": (comfyui.error_body, comfyui_routes.router),
}


def create_proxy_app(gate: FaceGate, *, mode: Mode, upstream: str, app_id: str | None = None,
                     key_store: KeyStore | None = None, settings: ProxySettings | None = None,
                     signer: ManifestSigner | None = None) -> FastAPI:
    """The proxy app. Give ``key_store`` (apps send ``X-Gate-Key``) or ``app_id``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    settings = settings or ProxySettings()
    error_body, router = _DIALECTS[mode]
    if signer is None and settings.c2pa_cert_file and settings.c2pa_key_file:
        signer = C2paSigner.from_files(settings.c2pa_cert_file, settings.c2pa_key_file,
                                       settings.c2pa_alg)
    auth = Authenticator(key_store, app_id,
                         RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst))
    target = Upstream(upstream, timeout_s=settings.upstream_timeout_s,
                      max_response_bytes=settings.max_response_bytes,
                      image_hosts=settings.image_url_hosts)
    svc = Services(mode=mode, settings=settings, guard=Guard(gate, settings, signer),
                   auth=auth, upstream=target, error_body=error_body,
                   ledger=ComfyLedger(settings.comfyui_ledger_items,
                                      settings.comfyui_ledger_ttl_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await target.aclose()

    app = FastAPI(title=f"consent-gate proxy ({mode})", version=__version__,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.proxy = svc
    app.include_router(router)
    _install_errors(app, error_body)
    app.add_middleware(RequestContext)
    return app


def _install_errors(app: FastAPI, error_body: ErrorBody) -> None:
    def render(status: int, code: str, message: str, param: str | None = None,
               decision: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, code, message, param, decision),
                            status_code=status, headers=headers)

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        if isinstance(exc, Refused):
            log.info("refused", extra={"verdict": exc.decision.verdict,
                                       "rule_ids": exc.decision.rule_ids})
            headers = {"X-Gate-Request-Id": exc.decision.request_id,
                       "X-Gate-Verdict": exc.decision.verdict}
            return render(exc.status, exc.code, exc.message, exc.param, exc.decision_json(),
                          headers)
        return render(exc.status, exc.code, exc.message, exc.param, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "this route is not available through the consent gate" \
            if exc.status_code in (404, 405) else str(exc.detail)
        return render(exc.status_code, code, message)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", extra={"fault": type(exc).__name__})
        return render(500, "internal_error", "an internal error occurred")

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
