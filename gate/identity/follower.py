"""The 1:N index follows the consent store: built at start, kept in step by the change feed.

The store is the source of truth. ``IndexFollower.load`` fills the index (or opens a
persisted one and replays only the changes after its checkpoint); ``sync`` applies the
change feed after the last sequence number applied, so nothing is lost and applying a
change twice is harmless (a subject's entries are replaced, never appended twice).
``forget`` is erasure's part: the entries, and any persisted copy of the index, are gone
before it returns; ``on_forget`` callbacks (the analysis cache) run too.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gate.consent.store import ConsentStore, erasure_digest
from gate.errors import GateError
from gate.identity.index import IdentityIndex, IndexHit, SharedIndex
from gate.identity.templates import TemplateCipher

log = logging.getLogger("gate")
#: Templates per bulk write when a shared index is built from the store.
_BULK_ROWS = 2_000


@dataclasses.dataclass(slots=True)
class _State:
    index: IdentityIndex
    cipher: TemplateCipher
    seq: int = 0
    foreign_packs: frozenset[str] = frozenset()
    #: ``index`` when it is shared by every replica (Milvus), decided once, not per sync
    shared: SharedIndex | None = None


class IndexFollower:
    """Owns the index's view of the store (see module doc). Thread-safe."""

    def __init__(self, store: ConsentStore, index: IdentityIndex, cipher: TemplateCipher, *,
                 pack_id: str, index_file: Path | None = None,
                 previous: IndexFollower | None = None) -> None:
        self.store = store
        self.pack_id = pack_id
        self.index_file = index_file
        self._state = _State(index, cipher,
                             shared=index if isinstance(index, SharedIndex) else None)
        #: erasure digest -> subject id, for the subjects this index holds
        self._digests: dict[str, str] = {}
        if previous is not None and previous.index is index:
            # The same index, rewired (e.g. parts swapped): keep what it already applied.
            self._state.seq = previous.seq
            self._state.foreign_packs = previous.foreign_packs
            self._digests = previous._digests
        self._lock = threading.RLock()
        self._on_forget: list[Callable[[], None]] = []
        self._on_change: dict[str, list[Callable[[], object]]] = {}

    # -- what others read ----------------------------------------------------------------
    @property
    def index(self) -> IdentityIndex:
        return self._state.index

    @property
    def cipher(self) -> TemplateCipher:
        return self._state.cipher

    @property
    def seq(self) -> int:
        """The last change-feed sequence number applied."""
        return self._state.seq

    @property
    def shared(self) -> SharedIndex | None:
        """The index when it is shared by every replica (Milvus), else None."""
        return self._state.shared

    @property
    def foreign_packs(self) -> frozenset[str]:
        """Model packs of stored templates this gate cannot read (re-enrolment needed)."""
        return self._state.foreign_packs

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]:
        """1:N search on the current index (best template per subject, best first)."""
        return self._state.index.search(queries, k)

    def template_similarities(self, queries: np.ndarray, hits: list[list[IndexHit]],
                              min_similarity: float) -> list[dict[str, list[float]]]:
        """Per query: for each hit at ``min_similarity`` or more, the query's cosine to
        each of that subject's templates (the permissive ``top2`` rule reads them)."""
        index = self._state.index
        return [{h.subject_id: [float(v) for v in
                                index.template_similarities(query, h.subject_id)]
                 for h in row if h.similarity >= min_similarity}
                for query, row in zip(queries, hits, strict=True)]

    def on_forget(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` whenever a subject is erased (here or on another replica)."""
        self._on_forget.append(callback)

    def on_change(self, kind: str, callback: Callable[[], object]) -> None:
        """Run ``callback`` (once per ``sync``) when the feed carries a change of ``kind``
        that another module owns (e.g. ``blocklist``)."""
        self._on_change.setdefault(kind, []).append(callback)

    def set_cipher(self, cipher: TemplateCipher) -> None:
        with self._lock:
            self._state.cipher = cipher

    # -- building and following ------------------------------------------------------------
    def load(self) -> None:
        """Build the index from the store, then follow the change feed from its head.

        A shared index (Milvus) is not rebuilt: it keeps its own checkpoint, so opening it
        replays only the feed after that (start-up does not grow with the number of
        people); it is built from the store only when new or from another database.
        """
        with self._lock:
            self._state.seq = self.store.epoch()
            others = frozenset(self.store.template_packs() - {self.pack_id})
            if others:
                log.warning("templates from other model packs need re-enrolment",
                            extra={"packs": sorted(others)})
            self._state.foreign_packs = others
            if self._state.shared is not None:
                self._load_shared(self._state.shared)
                return
            if self._load_persisted():
                return
            index = self._state.index
            index.clear()
            self._digests.clear()
            for subject_id, blob in self.store.iter_templates(self.pack_id):
                vec = self.cipher.decrypt(blob, subject_id=subject_id, pack_id=self.pack_id)
                index.add(subject_id, vec[None, :])
                self._digests[erasure_digest(subject_id)] = subject_id

    def _load_shared(self, index: SharedIndex) -> None:
        head = self._state.seq
        checkpoint = index.checkpoint()
        if checkpoint is not None and checkpoint <= head:
            self._state.seq = checkpoint
            self.sync()
            return
        if checkpoint is not None:
            log.warning("the shared identity index is ahead of this database's change feed "
                        "(another database?): rebuilding it from the store")
        index.clear()
        ids: list[str] = []
        vectors: list[np.ndarray] = []
        for subject_id, blob in self.store.iter_templates(self.pack_id):
            ids.append(subject_id)
            vectors.append(self.cipher.decrypt(blob, subject_id=subject_id,
                                               pack_id=self.pack_id))
            if len(ids) >= _BULK_ROWS:
                index.add_many(ids, np.stack(vectors))
                ids, vectors = [], []
        if ids:
            index.add_many(ids, np.stack(vectors))
        index.set_checkpoint(head)
        self.sync()

    def _load_persisted(self) -> bool:
        """Opt-in (``index_file``): open the saved HNSW index; ``sync`` replays the rest."""
        from gate.identity.ann import HnswIndex

        path = self.index_file
        if path is None or not path.is_file() or not isinstance(self._state.index, HnswIndex):
            return False
        try:
            saved = HnswIndex.load(path, view=True)
        except GateError:
            log.warning("the saved identity index is unusable; rebuilding from the store")
            return False
        if saved.checkpoint is None or saved.checkpoint > self._state.seq or \
                saved.dim != self._state.index.dim:
            return False
        self._state.index = saved
        self._state.seq = saved.checkpoint
        self._digests = {erasure_digest(s): s for s in saved.subject_ids()}
        self.sync()
        return True

    def sync(self) -> int:
        """Apply consent changes made elsewhere; returns the number applied."""
        with self._lock:
            changes = self.store.changes_since(self._state.seq)
            index, shared = self._state.index, self._state.shared
            others: set[str] = set()
            for seq, kind, named in changes:
                if kind in self._on_change:
                    others.add(kind)
                if kind == "subject_delete":
                    self._forgotten()
                    # an erasure names a digest (older databases: the id itself)
                    subject_id = self._digests.pop(named, None) if named else None
                    if subject_id is None and named and not named.startswith("erased:"):
                        subject_id = named
                    if subject_id is not None:
                        index.remove(subject_id)
                    elif shared is not None and named:
                        shared.remove_erased(named)
                elif kind == "subject_add" and named is not None:
                    self._add(named)
                self._state.seq = seq
            if shared is not None and changes:
                shared.set_checkpoint(self._state.seq)
            for kind in others:
                for callback in self._on_change[kind]:
                    callback()
            return len(changes)

    def _add(self, subject_id: str) -> None:
        """The subject's templates as the store has them now (none: removed)."""
        blobs = self.store.subject_templates(subject_id, self.pack_id)
        vectors = [self.cipher.decrypt(b, subject_id=subject_id, pack_id=self.pack_id)
                   for b in blobs]
        index, shared = self._state.index, self._state.shared
        if shared is not None:
            # upsert, then drop the rest: other replicas never see the subject missing
            shared.replace(subject_id, np.stack(vectors) if vectors
                           else np.zeros((0, shared.dim), dtype=np.float32))
            if vectors and not self.store.subject_templates(subject_id, self.pack_id):
                # Erased (on another replica) between the read above and the write: its
                # erasure may already have cleared Milvus, so undo this write now.
                shared.remove(subject_id)
                return
        else:
            index.remove(subject_id)
            if vectors:
                index.add(subject_id, np.stack(vectors))
        if vectors:
            self._digests[erasure_digest(subject_id)] = subject_id

    def forget(self, subject_id: str) -> None:
        """Erasure: the subject's entries, the persisted index and the caches, now."""
        with self._lock:
            self._state.index.remove(subject_id)
            self._digests.pop(erasure_digest(subject_id), None)
            self._forgotten()

    def _forgotten(self) -> None:
        self._drop_persisted()
        for callback in self._on_forget:
            callback()

    def _drop_persisted(self) -> None:
        """A saved index may hold an erased person's templates: delete it (it is written
        again, without them, at close)."""
        from gate.identity.ann import SIDE_TABLE_SUFFIX

        path = self.index_file
        if path is not None:
            for victim in (path, path.with_name(path.name + SIDE_TABLE_SUFFIX)):
                victim.unlink(missing_ok=True)

    def save(self) -> None:
        from gate.identity.ann import HnswIndex

        path = self.index_file
        with self._lock:
            if path is not None and isinstance(self._state.index, HnswIndex):
                self._state.index.save(path, checkpoint=self._state.seq)

    def close(self) -> None:
        with self._lock:
            if self._state.shared is not None:
                self._state.shared.close()  # disconnect: other replicas share what it holds
                return
            self.save()
            self._state.index.clear()
