"""``WorkPool``: the bounded workers every image-decoding call of the gate runs on.

Decisions, enrolments, liveness bursts, consent-request pictures and traces all decode
images and run models; they share one pool of ``check_workers`` threads, so a burst of
large images through any door queues instead of multiplying memory and CPU. The pool owns
the deadline (``check_timeout_s``): a call that has not finished by then raises
``WorkTimeout`` for its caller. Its thread is abandoned, not killed; it finishes on its
own. A call made *from* a pool worker (e.g. ``FaceGate.enroll`` inside a web request that
already runs on the pool) runs inline: one thread hop per request, never two, and no
worker ever waits for another.

Async callers (the web layer) ``await pool.run_async(fn, ...)``: the event loop awaits the
worker's future directly, with the same deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from gate.errors import GateClosed, GateError

P = ParamSpec("P")
T = TypeVar("T")


class WorkTimeout(GateError):
    """The gate did not finish in time; the caller must treat the request as refused."""

    code = "check_timeout"


class WorkPool:
    """A bounded thread pool with a deadline (see module doc)."""

    def __init__(self, workers: int, timeout_s: float, *, name: str = "gate-work") -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=self._mark)

    def _mark(self) -> None:
        self._local.on_pool = True

    @property
    def on_pool(self) -> bool:
        """True in a pool worker thread."""
        return bool(getattr(self._local, "on_pool", False))

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
               ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise GateClosed("this FaceGate is closed")
        try:
            return self._executor.submit(fn, *args, **kwargs)
        except RuntimeError as exc:  # shut down meanwhile
            raise GateClosed("this FaceGate is closed") from exc

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on a worker, within the deadline (inline on a worker)."""
        if self.on_pool:
            return fn(*args, **kwargs)
        future = self.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self.timeout() from None

    async def run_async(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The same from an event loop: one hop, awaited with the deadline."""
        future = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise self.timeout() from None

    def timeout(self) -> WorkTimeout:
        return WorkTimeout(f"the gate did not answer within {self.timeout_s:g} s; treat the "
                           "request as not allowed")

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def bound(pool: WorkPool, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` that always runs on ``pool`` (decorator for methods that decode images)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return pool.run(fn, *args, **kwargs)

    return wrapper
