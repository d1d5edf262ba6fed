"""A short-lived, bounded cache of face analyses for byte-identical images.

Keyed by the image's sha256, it holds what detection, alignment and embedding found (boxes,
quality, vectors; never pixels). It never holds a decision: identification against the
current consent store, policy and audit run for every request, so a grant, revocation or
policy change can never be served stale. Erasure empties it, so no analysis of an erased
person's photo outlives the erasure.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """LRU with a time-to-live; thread-safe."""

    def __init__(self, max_items: int = 512, ttl_s: float = 60.0) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < now:
                if item is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: str, value: V) -> None:
        if self.max_items <= 0 or self.ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
