"""What route handlers use: the engine, the key store, limits and metrics.

Blocking engine calls run in worker threads, at most ``max_concurrent_checks`` at once, each
bounded by ``check_timeout_s``: a call that takes longer answers 503 ``check_timeout``.
The engine's thread is abandoned, not killed; it finishes and audits its own decision, so
the sidecar never invents a verdict, and a timeout is never an allow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Request

from gate.api.errors import CheckTimeout, NotReady
from gate.api.keys import KeyStore
from gate.api.limits import RateLimiter
from gate.api.metrics import Metrics
from gate.api.settings import ApiSettings
from gate.engine import FaceGate

T = TypeVar("T")


class Runner:
    """Runs blocking engine calls off the event loop, bounded in number and time."""

    def __init__(self, max_concurrent: int, timeout_s: float, metrics: Metrics) -> None:
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self._timeout_s = timeout_s
        self._metrics = metrics

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            with anyio.fail_after(self._timeout_s):
                return await anyio.to_thread.run_sync(
                    functools.partial(fn, *args, **kwargs), limiter=self._limiter,
                    abandon_on_cancel=True)
        except TimeoutError:
            self._metrics.check_timeouts.inc()
            raise CheckTimeout(f"the gate did not answer within {self._timeout_s:g} s; "
                               "treat the request as not allowed") from None


@dataclass(frozen=True, slots=True)
class Services:
    gate: FaceGate
    keys: KeyStore
    runner: Runner
    limiter: RateLimiter
    metrics: Metrics
    api: ApiSettings


def services(request: Request) -> Services:
    found = getattr(request.app.state, "services", None)
    if not isinstance(found, Services):
        raise NotReady("the gate is starting")
    return found
