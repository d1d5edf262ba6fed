"""What the ComfyUI proxy remembers between requests: names and hashes, never pixels.

ComfyUI splits a generation over several calls (upload, prompt, history, view), so the
proxy keeps, per app, bounded in count and time: the sha256 of each image uploaded through
it, each checked prompt (its decision's context, no images), and which output files belong
to which checked prompt. An output that belongs to no checked prompt is never served.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gate.proxy.comfyui import ImageRef

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """A prompt the gate allowed: enough to screen and label its outputs later."""

    app_id: str
    user_id: str | None
    request_id: str
    operation: str
    prompt: str
    content: tuple[str, ...]
    obligations: tuple[str, ...]
    grant_ids: tuple[str, ...]
    policy_version: str


class _Bounded(Generic[V]):
    """An insertion-ordered map with a size bound and a time-to-live; thread-safe."""

    def __init__(self, max_items: int, ttl_s: float) -> None:
        self.max_items, self.ttl_s = max_items, ttl_s
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def get(self, key: str) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                return None
            return item[1]

    def newest(self, limit: int) -> list[tuple[str, V]]:
        now = time.monotonic()
        with self._lock:
            alive = [(k, v) for k, (exp, v) in reversed(self._items.items()) if exp >= now]
        return alive[:limit]


class ComfyLedger:
    """Uploads, checked prompts and their outputs, per app."""

    def __init__(self, max_items: int = 10_000, ttl_s: float = 86_400.0) -> None:
        self._uploads: _Bounded[str] = _Bounded(max_items, ttl_s)
        self._prompts: _Bounded[PromptRecord] = _Bounded(max_items, ttl_s)
        self._outputs: _Bounded[str] = _Bounded(max_items * 4, ttl_s)

    def remember_upload(self, app_id: str, ref: ImageRef, sha256: str) -> None:
        self._uploads.put(f"{app_id}\n{ref.key}", sha256)

    def upload_sha256(self, app_id: str, ref: ImageRef) -> str | None:
        return self._uploads.get(f"{app_id}\n{ref.key}")

    def remember_prompt(self, prompt_id: str, record: PromptRecord) -> None:
        self._prompts.put(prompt_id, record)

    def prompt(self, app_id: str, prompt_id: str) -> PromptRecord | None:
        record = self._prompts.get(prompt_id)
        return record if record is not None and record.app_id == app_id else None

    def recent_prompts(self, app_id: str, limit: int = 32) -> list[str]:
        return [pid for pid, rec in self._prompts.newest(limit * 8)
                if rec.app_id == app_id][:limit]

    def remember_outputs(self, prompt_id: str, refs: Sequence[ImageRef]) -> None:
        for ref in refs:
            self._outputs.put(ref.key, prompt_id)

    def output_of(self, app_id: str, ref: ImageRef) -> tuple[str, PromptRecord] | None:
        prompt_id = self._outputs.get(ref.key)
        if prompt_id is None:
            return None
        record = self.prompt(app_id, prompt_id)
        return (prompt_id, record) if record is not None else None
