"""What the proxy's route handlers use, and the responses they build."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gate.proxy.auth import Authenticator
from gate.proxy.guard import Guard, Released
from gate.proxy.ledger import ComfyLedger
from gate.proxy.settings import ProxySettings
from gate.proxy.types import Mode, ProxyError
from gate.proxy.upstream import Upstream, UpstreamResponse
from gate.types import Decision

ErrorBody = Callable[[int, str, str, "str | None", "dict[str, Any] | None"], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Services:
    mode: Mode
    settings: ProxySettings
    guard: Guard
    auth: Authenticator
    upstream: Upstream
    ledger: ComfyLedger
    error_body: ErrorBody


def services(request: Request) -> Services:
    found = getattr(request.app.state, "proxy", None)
    if not isinstance(found, Services):
        raise ProxyError(503, "not_ready", "the proxy is starting")
    return found


def gate_headers(decision: Decision, released: Sequence[Released] = ()) -> dict[str, str]:
    obligations = dict.fromkeys([*decision.obligations,
                                 *(o for r in released for o in r.obligations)])
    return {"X-Gate-Request-Id": decision.request_id, "X-Gate-Verdict": decision.verdict,
            "X-Gate-Obligations": ",".join(obligations)}


def gated_json(doc: Any, decision: Decision, released: Sequence[Released] = ()) -> JSONResponse:
    return JSONResponse(doc, headers=gate_headers(decision, released))


def passthrough(upstream: UpstreamResponse, headers: dict[str, str] | None = None) -> Response:
    """The upstream's answer as it is (errors in its own style; bodies without images)."""
    return Response(upstream.content, status_code=upstream.status,
                    media_type=upstream.content_type or None, headers=headers)
