"""Micro-batching across concurrent checks: one model call for the faces of many requests.

Under load the sidecar runs several checks at once, each embedding its own few faces.
``MicroBatcher`` lets the first caller of a round wait up to ``window_ms`` for others
(never longer, and not at all once ``max_items`` are waiting), then runs one batched call
for everybody and hands each caller its own rows. A lone caller pays at most the window;
callers that arrive while a batch runs form the next one. Errors reach every caller of
the failed batch (the engine turns them into a deny, as before).

``BatchingEmbedder`` wraps any ``FaceEmbedder`` with it (``GATE_BATCH_WINDOW_MS`` > 0;
the sidecar's default). Figures: ``benchmarks/batching.py``, ``docs/scaling.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

from gate.vision.embed import FaceEmbedder

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Runs ``fn`` on the concatenation of concurrent callers' item lists (see module)."""

    def __init__(self, fn: Callable[[list[T]], np.ndarray], *, window_ms: float = 2.0,
                 max_items: int = 64) -> None:
        if window_ms < 0 or max_items < 1:
            raise ValueError("window_ms must be >= 0 and max_items >= 1")
        self.fn = fn
        self.window_s = window_ms / 1000.0
        self.max_items = max_items
        self._cond = threading.Condition()
        self._waiting: list[tuple[list[T], Future[np.ndarray]]] = []
        self._leader = False
        self.batches = 0
        self.items = 0

    def run(self, items: Sequence[T]) -> np.ndarray:
        """``fn(items)``, possibly computed in one call with other callers' items."""
        future: Future[np.ndarray] = Future()
        with self._cond:
            self._waiting.append((list(items), future))
            lead = not self._leader
            if lead:
                self._leader = True
            elif sum(len(i) for i, _ in self._waiting) >= self.max_items:
                self._cond.notify_all()
        if lead:
            self._lead()
        return future.result()

    def _lead(self) -> None:
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while True:
                queued = sum(len(i) for i, _ in self._waiting)
                left = deadline - time.monotonic()
                if queued >= self.max_items or left <= 0:
                    break
                self._cond.wait(left)
            batch, self._waiting = self._waiting, []
            self._leader = False
        flat = [item for items, _ in batch for item in items]
        try:
            out = self.fn(flat)
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(flat)
        start = 0
        for items, future in batch:
            future.set_result(out[start:start + len(items)])
            start += len(items)


class BatchingEmbedder:
    """A ``FaceEmbedder`` whose concurrent callers share model calls."""

    def __init__(self, base: FaceEmbedder, *, window_ms: float = 2.0,
                 max_items: int = 64) -> None:
        self.base = base
        self.pack_id = base.pack_id
        self.dim = base.dim
        self.batcher: MicroBatcher[np.ndarray] = MicroBatcher(
            self._embed_all, window_ms=window_ms, max_items=max_items)

    def _embed_all(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.base.embed(crops)

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        crops = list(aligned_bgr)
        if not crops:
            return self.base.embed([])
        return self.batcher.run(crops)
