"""Micro-batching (issue 16): concurrent callers share one call and each gets its rows;
errors reach every caller; a lone caller is served."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gate.batching import BatchingEmbedder, MicroBatcher
from gate.vision.embed import FakeEmbedder


def test_concurrent_callers_get_their_own_rows_from_shared_calls() -> None:
    calls: list[int] = []

    def double(items: list[int]) -> np.ndarray:
        calls.append(len(items))
        time.sleep(0.01)
        return np.array([[2 * i] for i in items])

    batcher: MicroBatcher[int] = MicroBatcher(double, window_ms=20, max_items=100)
    results: dict[int, list[int]] = {}

    def caller(k: int) -> None:
        results[k] = [int(v) for v in batcher.run([k, k + 100])[:, 0]]

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: [2 * k, 2 * (k + 100)] for k in range(8)}
    assert sum(calls) == 16 and len(calls) < 8  # shared calls


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    def fail(items: list[int]) -> np.ndarray:
        raise RuntimeError("model failed")

    batcher: MicroBatcher[int] = MicroBatcher(fail, window_ms=20)
    errors: list[str] = []

    def caller() -> None:
        with pytest.raises(RuntimeError) as exc:
            batcher.run([1])
        errors.append(str(exc.value))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["model failed"] * 4


def test_batching_embedder_equals_its_base() -> None:
    base = FakeEmbedder()
    batched = BatchingEmbedder(base, window_ms=1)
    crops = [np.full((112, 112, 3), v, np.uint8) for v in (10, 200)]
    assert np.array_equal(batched.embed(crops), base.embed(crops))
    assert batched.embed([]).shape == (0, base.dim)


def test_a_lone_caller_is_served() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(lambda items: np.array(items), window_ms=5)
    assert batcher.run([3]).tolist() == [3]
    assert batcher.batches == 1 and batcher.items == 1
