"""1:N identity index: which enrolled subject is this face?

``ExactIndex`` is an exact cosine search over one numpy matrix (the default; exact and
fast enough up to ~100k templates on 2 cores). ``DictIndex`` is the plain fake for tests.
Both keep several templates per subject and report each subject's best template;
``template_similarities`` gives a query's similarity to each template of one subject
(what the permissive ``top2`` rule of ``gate.identity.classify`` reads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from gate.identity.protection import TemplateProtector


@dataclass(frozen=True, slots=True)
class IndexHit:
    subject_id: str
    similarity: float  # cosine, -1..1


@runtime_checkable
class IdentityIndex(Protocol):
    """Unit-vector templates keyed by subject; searched in batches."""

    def add(self, subject_id: str, templates: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]: ...

    def remove(self, subject_id: str) -> int: ...

    def clear(self) -> None: ...

    def template_similarities(self, query: np.ndarray, subject_id: str) -> np.ndarray:
        """Cosine of one ``query`` to each of the subject's templates (any order; empty
        when the subject has none)."""
        ...

    def __len__(self) -> int: ...


@runtime_checkable
class SharedIndex(IdentityIndex, Protocol):
    """An index outside this process, shared by every replica (Milvus).

    It keeps its own change-feed checkpoint, so a replica opens it in constant time and
    replays only the feed after it; an erased subject is found by the feed's erasure
    digest (the feed never names them); a subject is replaced without a moment in which
    it has no templates; ``close`` disconnects and never drops what other replicas share.
    """

    dim: int

    def checkpoint(self) -> int | None: ...

    def set_checkpoint(self, seq: int) -> None: ...

    def replace(self, subject_id: str, templates: np.ndarray) -> int: ...

    def remove_erased(self, digest: str) -> int: ...

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None: ...

    def rotate_key(self, protector: TemplateProtector) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class ExactIndex:
    """Exact cosine search; rows grow in place (amortised doubling), removal compacts."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.RLock()
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._owners: list[str] = []
        self._rows_of: dict[str, list[int]] = {}  # subject -> its rows in the matrix
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        rows = np.asarray(templates, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            needed = self._size + len(rows)
            if needed > len(self._matrix):
                grown = np.zeros((max(needed, 2 * len(self._matrix), 64), self.dim),
                                 dtype=np.float32)
                grown[: self._size] = self._matrix[: self._size]
                self._matrix = grown
            self._matrix[self._size : needed] = rows
            self._owners.extend([subject_id] * len(rows))
            self._rows_of.setdefault(subject_id, []).extend(range(self._size, needed))
            self._size = needed

    def remove(self, subject_id: str) -> int:
        with self._lock:
            keep = [i for i, owner in enumerate(self._owners) if owner != subject_id]
            removed = self._size - len(keep)
            if removed:
                matrix = np.zeros_like(self._matrix)
                matrix[: len(keep)] = self._matrix[keep]
                self._matrix = matrix  # the old rows are dropped, not left in memory
                self._owners = [self._owners[i] for i in keep]
                self._rows_of = {}
                for row, owner in enumerate(self._owners):
                    self._rows_of.setdefault(owner, []).append(row)
                self._size = len(keep)
            return removed

    def clear(self) -> None:
        with self._lock:
            self._matrix = np.zeros((0, self.dim), dtype=np.float32)
            self._owners = []
            self._rows_of = {}
            self._size = 0

    def template_similarities(self, query: np.ndarray, subject_id: str) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock:
            rows = self._rows_of.get(subject_id, [])
            sims: np.ndarray = self._matrix[rows] @ q
        return sims

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            if self._size == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            sims = q @ self._matrix[: self._size].T
            owners = self._owners
        return [_best_per_subject(row, owners, k) for row in sims]


def _best_per_subject(row: np.ndarray, owners: list[str], k: int) -> list[IndexHit]:
    depth = min(len(row), max(k * 8, 32))
    top = np.argpartition(-row, depth - 1)[:depth] if depth < len(row) else np.arange(len(row))
    top = top[np.argsort(-row[top], kind="stable")]
    hits: list[IndexHit] = []
    seen: set[str] = set()
    for i in top:
        owner = owners[int(i)]
        if owner in seen:
            continue
        seen.add(owner)
        hits.append(IndexHit(owner, float(row[int(i)])))
        if len(hits) == k:
            break
    return hits


class DictIndex:
    """The simplest possible index, for tests: a dict of subject -> template rows."""

    def __init__(self) -> None:
        self._rows: dict[str, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._rows.values())

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        for row in np.atleast_2d(np.asarray(templates, dtype=np.float32)):
            self._rows.setdefault(subject_id, []).append(row)

    def remove(self, subject_id: str) -> int:
        return len(self._rows.pop(subject_id, []))

    def clear(self) -> None:
        self._rows.clear()

    def template_similarities(self, query: np.ndarray, subject_id: str) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32).ravel()
        return np.array([float(q @ r) for r in self._rows.get(subject_id, [])],
                        dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]:
        out = []
        for q in np.atleast_2d(np.asarray(queries, dtype=np.float32)):
            best = [IndexHit(s, max(float(q @ r) for r in rows)) for s, rows in self._rows.items()]
            out.append(sorted(best, key=lambda h: -h.similarity)[:k])
        return out
