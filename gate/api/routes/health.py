"""``/healthz``, ``/readyz`` (no key) and ``/metrics`` (no key or ``admin``, by setting)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gate.api.errors import NotReady
from gate.api.routes import errors
from gate.api.schemas import Health, Readiness
from gate.api.services import blocking, services

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=errors(503))
async def readyz(request: Request) -> Readiness:
    """Models loaded, database reachable, policy valid: 200, else 503 naming what fails."""
    svc = services(request)
    checks = await blocking(svc.gate.readiness)
    svc.metrics.observe_readiness(checks)
    failing = sorted(name for name, ok in checks.items() if not ok)
    if failing:
        raise NotReady(f"not ready: {', '.join(failing)}")
    return Readiness(ready=True, checks=checks)


async def metrics(request: Request) -> Response:
    """Prometheus text format: counts by verdict and rule id, stage latencies."""
    svc = services(request)
    desk = svc.gate.incident
    if desk is not None:
        svc.metrics.observe_reports(await blocking(desk.reports.counts))
    notifier = svc.notifier
    if notifier is not None:
        svc.metrics.observe_notifier(await blocking(notifier.backlog), {
            "aggregated": notifier.aggregated, "sent": notifier.sent,
            "failed": notifier.failed, "dead": notifier.dead, "errors": notifier.errors})
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)
