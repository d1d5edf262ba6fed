"""What route handlers use: the engine, the consent parts, the key store, limits, metrics.

Blocking work never runs on the event loop. Anything that decodes images or runs models
(checks, enrolment, consent-request pictures, liveness bursts) goes to the engine's own
bounded workers (``FaceGate.pool``), which own the deadline: one thread hop, one set of
concurrency slots for every door. Database-only calls use ``blocking``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request

from gate.api.errors import NotReady
from gate.api.keys import KeyStore
from gate.api.limits import RateLimiter
from gate.api.metrics import Metrics
from gate.api.settings import ApiSettings
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.incident.notify import Notifier

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Services:
    gate: FaceGate
    consent: ConsentService
    keys: KeyStore
    limiter: RateLimiter
    metrics: Metrics
    api: ApiSettings
    #: Tells people about attempts on their face (None: no webhook configured).
    notifier: Notifier | None = None

    async def images(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run image work (decode, models) on the engine's bounded workers."""
        return await self.gate.pool.run_async(fn, *args, **kwargs)


def services(request: Request) -> Services:
    found = getattr(request.app.state, "services", None)
    if not isinstance(found, Services):
        raise NotReady("the gate is starting")
    return found


def consent(request: Request) -> ConsentService:
    return services(request).consent


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A database-only call, off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
