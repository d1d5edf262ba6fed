"""Approximate 1:N identity index (HNSW, ``usearch``) and the exact-or-HNSW chooser.

``HnswIndex`` satisfies :class:`gate.identity.index.IdentityIndex`. Each template gets its
own integer key; a small side table maps keys to subject ids, so a search returns at most
one hit per subject (its best template) exactly like ``ExactIndex``.

Removal really removes. ``usearch``'s ``remove`` only marks a slot as free: the vector's
bytes stay in memory, and in every file saved afterwards, until the slot is reused. So
``remove`` immediately reuses the freed slots for random "scrub" vectors (new keys the
side table marks as scrub, never reported), which overwrites the removed templates in
place; the next ``add`` recycles scrub slots first. The index therefore never holds a free
slot between calls, and a removed template is neither searchable nor saved.

Persistence: ``save(path)`` writes the usearch file at ``path`` and the side table at
``path + ".subjects.npz"`` (no pickle), each through a temporary file, ``fsync`` and
``os.replace``; both are created 0600 and hold the templates unencrypted (f16), so they
belong on a protected volume. ``HnswIndex.load(path, view=True)`` memory-maps the usearch
file, so a restart does not rebuild the graph; the side table is small and read into
memory. A viewed index is read-only in ``usearch``: the first write copies it into memory
(about a second per million templates) and carries on.

Thread safety: every ``usearch`` call and every side-table change runs under one lock.
The usearch 2.26 binding releases the GIL inside its calls and, in the source we could
read, each call also re-sizes per-thread scratch buffers, so two calls must not overlap.
Searches are therefore serialised with each other and with writes (one search costs
0.2-2.7 ms of CPU from 10k to 1M templates, docs/benchmarks.md). Any mix of ``add``,
``remove`` and ``search`` from many threads is safe, and each search sees the index as it
was before or after each single ``add``/``remove``/``clear``, never half of one.
``add_many`` (bulk loading) takes the lock per chunk, so a concurrent search may see part
of a bulk load.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from gate.durable import fsync_path, temp_beside
from gate.errors import StorageError
from gate.identity.index import ExactIndex, IdentityIndex, IndexHit

# Measured (benchmarks/index.py --exact-only, docs/benchmarks.md): one exact 128-d query
# costs p99 ~1.1 ms of CPU at 20k templates, ~1.7 ms at 30k and passes 2 ms between 30k
# and 40k, while HNSW stays near 1 ms from 10k to 100k. Below 30k exact search is as fast
# and needs no build, no recall loss and less memory; above it HNSW wins and keeps winning.
EXACT_THRESHOLD: Final = 30_000

# Chosen by measurement (benchmarks/index.py, docs/benchmarks.md) on synthetic 128-d
# templates: M=32 beat M=16 at equal latency; f16 keeps similarities within 1e-4 of float32
# (i8: 1e-2) for ~800 MB at 1M. expansion_search is set for recall, since a missed
# enrolled face becomes a wrong subject or no match. On real faces enrolled into an
# existing graph (benchmarks/match_recall.py, docs/scaling.md) 128 was not enough: at
# 100k match recall 95.1 % / genuine 98.6 % (p50 1.3 ms), 256: 98.6 % / 99.8 %, 512:
# 99.8 % / 99.96 % (p50 4.7 ms); at 1M, 128 gave 81.4 % / 92.9 %. 512 it is: a few ms
# for not losing protected people.
DEFAULT_DTYPE: Final = "f16"
DEFAULT_CONNECTIVITY: Final = 32
DEFAULT_EXPANSION_ADD: Final = 128
DEFAULT_EXPANSION_SEARCH: Final = 512

SIDE_TABLE_SUFFIX: Final = ".subjects.npz"
_FORMAT_VERSION: Final = 1
_REMOVED: Final = -1  # key never used, or its template was removed
_SCRUB: Final = -2  # key holds a random vector that overwrote a removed template
_BULK_CHUNK: Final = 2048
_DTYPES: Final = ("f16", "i8", "f32")


def _usearch_index_class() -> Any:
    """``usearch.index.Index``, imported lazily so exact-only deployments need no usearch."""
    from usearch.index import Index

    return Index


class HnswIndex:
    """HNSW cosine index over unit-vector templates, several per subject."""

    def __init__(
        self,
        dim: int,
        *,
        dtype: str = DEFAULT_DTYPE,
        connectivity: int = DEFAULT_CONNECTIVITY,
        expansion_add: int = DEFAULT_EXPANSION_ADD,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        seed: int | None = None,
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}")
        self.dim = dim
        self.dtype = dtype
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self._expansion_search = expansion_search
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self._index: Any = self._new_usearch_index()
        self._view = False
        self._reset_tables()
        self.checkpoint: int | None = None  # set by load() from the saved side table

    # -- construction helpers -------------------------------------------------------------

    def _new_usearch_index(self) -> Any:
        return _usearch_index_class()(
            ndim=self.dim, metric="cos", dtype=self.dtype, connectivity=self.connectivity,
            expansion_add=self.expansion_add, expansion_search=self._expansion_search,
        )

    def _reset_tables(self) -> None:
        self._owners: NDArray[np.int32] = np.full(1024, _REMOVED, dtype=np.int32)
        self._next_key = 0
        self._subject_ids: list[str] = []  # subject number -> id ("" once removed)
        self._subject_numbers: dict[str, int] = {}
        self._counts: list[int] = []  # live templates per subject number
        self._free_numbers: list[int] = []
        self._scrub_keys: list[int] = []
        self._live = 0
        self._max_templates = 1  # upper bound on templates per subject (search depth)

    # -- Protocol -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live

    @property
    def expansion_search(self) -> int:
        return self._expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        with self._lock:
            self._expansion_search = int(value)
            self._index.expansion_search = int(value)

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        rows = self._check_templates(templates)
        if not subject_id:
            raise ValueError("subject_id must be a non-empty string")
        if len(rows) == 0:
            return
        with self._lock:
            self._insert([subject_id] * len(rows), rows, threads=1)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Bulk load: row ``i`` of ``templates`` belongs to ``subject_ids[i]``.

        Inserts on every core, taking the lock per chunk of rows so that searches keep
        running during a long load (they may see part of it).
        """
        rows = self._check_templates(templates)
        if len(rows) != len(subject_ids):
            raise ValueError("one subject id per template row is needed")
        if not all(subject_ids):
            raise ValueError("subject ids must be non-empty strings")
        for start in range(0, len(rows), _BULK_CHUNK):
            stop = start + _BULK_CHUNK
            with self._lock:
                self._insert(list(subject_ids[start:stop]), rows[start:stop], threads=0)

    def remove(self, subject_id: str) -> int:
        with self._lock:
            number = self._subject_numbers.get(subject_id)
            if number is None:
                return 0
            self._make_writable()
            keys = np.flatnonzero(self._owners[: self._next_key] == number).astype(np.uint64)
            self._owners[keys.astype(np.intp)] = _REMOVED  # unreachable from here on
            removed = int(np.sum(self._index.remove(keys)))
            self._scrub(len(keys))
            del self._subject_numbers[subject_id]
            self._subject_ids[number] = ""
            self._counts[number] = 0
            self._free_numbers.append(number)
            self._live -= len(keys)
            return removed

    def subject_ids(self) -> list[str]:
        """The subjects with templates in the index."""
        with self._lock:
            return [s for s in self._subject_ids if s]

    def clear(self) -> None:
        with self._lock:
            # A fresh usearch index: the old one (or its file mapping) goes with its object.
            self._index = self._new_usearch_index()
            self._view = False
            next_key = self._next_key
            self._reset_tables()
            self._next_key = next_key  # keys stay unique across clears (see load)
            self._grow_owners(next_key)

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(q) == 0:
            return []
        if k <= 0:
            return [[] for _ in range(len(q))]
        q = np.ascontiguousarray(q)
        with self._lock:
            total = len(self._index)
            if self._live == 0:
                return [[] for _ in range(len(q))]
            # usearch explores max(count, expansion_search) candidates anyway; a subject
            # with many templates only costs its own queries a deeper retry below.
            want = min(total, max(k * min(self._max_templates, 4), self._expansion_search))
            keys, distances, counts = self._raw_search(q, want)
            results: list[list[IndexHit]] = []
            for row in range(len(q)):
                hits, complete = self._best_per_subject(
                    keys[row, : counts[row]], distances[row, : counts[row]], k)
                depth = want
                while not complete and counts[row] == depth and depth < total:
                    # Removed-subject scrub vectors or many templates per subject crowded
                    # the candidate list: ask deeper, for this query only.
                    depth = min(total, depth * 4)
                    more_keys, more_dist, more_counts = self._raw_search(q[row : row + 1], depth)
                    counts[row] = more_counts[0]
                    hits, complete = self._best_per_subject(
                        more_keys[0, : more_counts[0]], more_dist[0, : more_counts[0]], k)
                results.append(hits)
            return results

    def template_similarities(self, query: np.ndarray, subject_id: str) -> np.ndarray:
        """Cosine of ``query`` to each of the subject's stored templates, at the index's
        precision (rows re-normalised: ``i8``/``f16`` storage scales them)."""
        q = np.asarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock:
            number = self._subject_numbers.get(subject_id)
            if number is None:
                return np.zeros(0, dtype=np.float32)
            keys = np.flatnonzero(self._owners[: self._next_key] == number).astype(np.uint64)
            if keys.size == 0:
                return np.zeros(0, dtype=np.float32)
            rows = np.asarray(self._index.get(keys), dtype=np.float32).reshape(len(keys), -1)
        norms = np.linalg.norm(rows, axis=1)
        sims: np.ndarray = (rows @ q) / np.maximum(norms, 1e-12)
        return sims.astype(np.float32)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, checkpoint: int | None = None) -> None:
        """Write the index and its side table atomically (temp file, fsync, os.replace).

        ``checkpoint`` (e.g. the last change-feed sequence number applied to this index) is
        stored in the side table and comes back as ``HnswIndex.load(path).checkpoint``, so
        a restarted replica only replays the changes made after the save.
        """
        target = Path(path)
        side = _side_table_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_index = temp_beside(target)
        tmp_side = temp_beside(side)
        try:
            with self._lock:
                self._index.save(str(tmp_index))
                fsync_path(tmp_index)
                index_bytes = tmp_index.stat().st_size
                side_bytes = self._side_table_bytes(index_bytes, checkpoint)
            _write_synced(tmp_side, side_bytes)
            os.replace(tmp_index, target)
            os.replace(tmp_side, side)
            fsync_path(target.parent)
        except OSError as exc:
            raise StorageError(f"could not save the identity index to {target.name}") from exc
        finally:
            for tmp in (tmp_index, tmp_side):
                tmp.unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        view: bool = True,
        expansion_search: int | None = None,
    ) -> HnswIndex:
        """Open a saved index; ``view=True`` memory-maps the graph instead of reading it."""
        target = Path(path)
        side = _side_table_path(target)
        try:
            with np.load(side, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                owners = np.array(data["owners"], dtype=np.int32)
                blob = bytes(data["subject_blob"])
                offsets = np.array(data["subject_offsets"], dtype=np.int64)
                counts = np.array(data["counts"], dtype=np.int64)
            index_bytes = target.stat().st_size
        except (OSError, KeyError, ValueError) as exc:
            raise StorageError(f"could not read the identity index {target.name}") from exc
        if meta.get("format") != _FORMAT_VERSION:
            raise StorageError(f"identity index {target.name} has an unknown format")
        if meta["index_bytes"] != index_bytes:
            raise StorageError(
                f"identity index {target.name} does not match its side table (torn save?)")

        index = cls(
            int(meta["dim"]), dtype=str(meta["dtype"]), connectivity=int(meta["connectivity"]),
            expansion_add=int(meta["expansion_add"]),
            expansion_search=int(expansion_search or meta["expansion_search"]),
        )
        try:
            restored = _usearch_index_class().restore(
                str(target), view=view, connectivity=index.connectivity,
                expansion_add=index.expansion_add, expansion_search=index._expansion_search)
        except (OSError, RuntimeError, ValueError) as exc:
            raise StorageError(f"could not open the identity index {target.name}") from exc
        if restored is None or restored.ndim != index.dim:
            raise StorageError(f"identity index {target.name} has the wrong dimension")
        # Keys are never reused (not even across clear()), so the side table and the graph
        # come from the same save exactly when they hold the same set of keys.
        stored_keys = np.flatnonzero(owners != _REMOVED).astype(np.uint64)
        if (len(restored) != len(stored_keys) or len(stored_keys) != int(meta["stored"])
                or not bool(np.all(restored.contains(stored_keys)))):
            raise StorageError(
                f"identity index {target.name} does not match its side table (torn save?)")
        index._index = restored
        index._view = view

        ids = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]
        index._next_key = int(meta["next_key"])
        index._owners = np.full(max(1024, len(owners)), _REMOVED, dtype=np.int32)
        index._owners[: len(owners)] = owners
        index._subject_ids = ids
        index._counts = [int(c) for c in counts]
        index._subject_numbers = {sid: n for n, sid in enumerate(ids) if sid}
        index._free_numbers = [n for n, sid in enumerate(ids) if not sid]
        index._scrub_keys = [int(key) for key in np.flatnonzero(owners == _SCRUB)]
        index._live = int(meta["live"])
        index._max_templates = max([1, *index._counts])
        index.checkpoint = None if meta.get("checkpoint") is None else int(meta["checkpoint"])
        return index

    # -- diagnostics ----------------------------------------------------------------------

    @property
    def memory_usage(self) -> int:
        """Bytes held by the usearch graph and vectors (a view reports its mapped size)."""
        with self._lock:
            return int(self._index.memory_usage)

    @property
    def is_view(self) -> bool:
        return self._view

    # -- internals ------------------------------------------------------------------------

    def _check_templates(self, templates: np.ndarray) -> NDArray[np.float32]:
        rows = np.ascontiguousarray(np.asarray(templates, dtype=np.float32).reshape(-1, self.dim))
        if not np.all(np.isfinite(rows)):
            raise ValueError("templates must be finite")
        if np.any(np.linalg.norm(rows, axis=1) < 1e-6):
            raise ValueError("templates must be non-zero unit vectors")
        return rows

    def _make_writable(self) -> None:
        if self._view:
            self._index = self._index.copy()  # copy-on-write out of the memory map
            self._view = False

    def _grow_owners(self, needed: int) -> None:
        if needed > len(self._owners):
            grown = np.full(max(needed, 2 * len(self._owners)), _REMOVED, dtype=np.int32)
            grown[: len(self._owners)] = self._owners
            self._owners = grown

    def _subject_number(self, subject_id: str) -> int:
        number = self._subject_numbers.get(subject_id)
        if number is None:
            if self._free_numbers:
                number = self._free_numbers.pop()
                self._subject_ids[number] = subject_id
            else:
                number = len(self._subject_ids)
                self._subject_ids.append(subject_id)
                self._counts.append(0)
            self._subject_numbers[subject_id] = number
        return number

    def _insert(self, subject_ids: list[str], rows: NDArray[np.float32], *, threads: int) -> None:
        self._make_writable()
        # Recycle scrub slots first: removing them frees exactly those slots, and usearch
        # fills free slots before growing, so the index never keeps a free slot around.
        recycled = self._scrub_keys[-len(rows):] if self._scrub_keys else []
        if recycled:
            del self._scrub_keys[-len(recycled):]
            recycled_keys = np.asarray(recycled, dtype=np.uint64)
            self._owners[recycled_keys.astype(np.intp)] = _REMOVED
            self._index.remove(recycled_keys)
        numbers = np.fromiter((self._subject_number(s) for s in subject_ids), dtype=np.int32,
                              count=len(subject_ids))
        keys = np.arange(self._next_key, self._next_key + len(rows), dtype=np.uint64)
        self._grow_owners(self._next_key + len(rows))
        # The side table learns a key before usearch can return it.
        self._owners[self._next_key : self._next_key + len(rows)] = numbers
        self._next_key += len(rows)
        self._index.add(keys, rows, threads=threads)
        for number in numbers.tolist():
            self._counts[number] += 1
            if self._counts[number] > self._max_templates:
                self._max_templates = self._counts[number]
        self._live += len(rows)

    def _scrub(self, count: int) -> None:
        """Overwrite the ``count`` slots just freed by ``remove`` with random vectors."""
        if count == 0:
            return
        noise = self._rng.standard_normal((count, self.dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        keys = np.arange(self._next_key, self._next_key + count, dtype=np.uint64)
        self._grow_owners(self._next_key + count)
        self._owners[self._next_key : self._next_key + count] = _SCRUB
        self._next_key += count
        self._index.add(keys, noise, threads=1)
        self._scrub_keys.extend(int(key) for key in keys)

    def _raw_search(
        self, q: NDArray[np.float32], count: int
    ) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.intp]]:
        matches = self._index.search(q, count, threads=1 if len(q) == 1 else 0)
        keys = np.asarray(matches.keys, dtype=np.uint64).reshape(len(q), -1)
        distances = np.asarray(matches.distances, dtype=np.float32).reshape(len(q), -1)
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]]), dtype=np.intp)
        return keys, distances, counts.reshape(len(q)).copy()

    def _best_per_subject(
        self, keys: NDArray[np.uint64], distances: NDArray[np.float32], k: int
    ) -> tuple[list[IndexHit], bool]:
        """Each subject's best candidate, best first; ``complete`` when ``k`` were found."""
        owners = self._owners[keys.astype(np.intp)]
        valid = (owners >= 0) & np.isfinite(distances)
        owners, distances = owners[valid], distances[valid]
        _, first = np.unique(owners, return_index=True)  # results come sorted by distance
        first = np.sort(first)[:k]
        hits = [
            IndexHit(self._subject_ids[int(owners[i])],
                     float(np.clip(1.0 - distances[i], -1.0, 1.0)))
            for i in first
        ]
        return hits, len(hits) == k

    def _side_table_bytes(self, index_bytes: int, checkpoint: int | None) -> bytes:
        encoded = [sid.encode("utf-8") for sid in self._subject_ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            offsets[1:] = np.cumsum([len(e) for e in encoded])
        meta = {
            "format": _FORMAT_VERSION, "dim": self.dim, "dtype": self.dtype, "metric": "cos",
            "connectivity": self.connectivity, "expansion_add": self.expansion_add,
            "expansion_search": self._expansion_search, "next_key": self._next_key,
            "live": self._live, "stored": len(self._index), "index_bytes": index_bytes,
            "checkpoint": checkpoint,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            owners=self._owners[: self._next_key],
            subject_blob=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            subject_offsets=offsets,
            counts=np.asarray(self._counts, dtype=np.int64),
        )
        return buffer.getvalue()


def choose_index(dim: int, expected_size: int, threshold: int = EXACT_THRESHOLD) -> IdentityIndex:
    """Exact search below ``threshold`` expected templates, HNSW from there on."""
    if expected_size < threshold:
        return ExactIndex(dim)
    return HnswIndex(dim)


def _side_table_path(path: Path) -> Path:
    return path.with_name(path.name + SIDE_TABLE_SUFFIX)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
