"""1:N identity index on Milvus (``pymilvus``): one shared index for many replicas.

``MilvusIndex`` satisfies :class:`gate.identity.index.IdentityIndex`. ``GATE_MILVUS_URI``
chooses the engine: a file path ending in ``.db`` runs **Milvus Lite** in this process
(``milvus-lite``, for tests and a local trial); ``http://`` or ``https://`` reaches a
Milvus standalone server or cluster (``http://user:password@host:19530`` carries
credentials).

What Milvus holds. One collection of templates per (model pack, protection key, dim),
named ``<prefix>_<digest>``: primary key ``pk`` (a hash of subject id and template bytes,
so adding the same template twice writes the same row), ``subject_id``, ``erasure`` (the
subject's erasure digest, by which a replica applies an erasure the feed announces) and
``vector``, the template *protected* by
:class:`gate.identity.protection.TemplateProtector` (a secret rotation: Milvus never sees
a raw embedding). A small ``<name>_meta`` collection holds the change-feed checkpoint.
Nothing else: no names, no images, no grants.

Following the consent store. PostgreSQL stays the source of truth; every replica applies
the change feed to this shared index, so every write here is idempotent: ``add`` upserts
deterministic keys (re-delivery writes the same rows), ``replace`` upserts a subject's
templates and then deletes its other rows (never a moment without them), ``remove`` of an
absent subject removes nothing. ``checkpoint()`` / ``set_checkpoint(seq)`` keep, in
Milvus, the last feed sequence number whose changes are all applied, so a replica that
opens the index replays only the feed after it: start-up does not grow with N.

Consistency. Searches use Milvus's *Session* level: a client sees its own writes at once.
Because each replica applies every change of the feed itself (the same idempotent rows),
each replica's searches see every change it has applied, and ``remove`` is visible to this
client's searches before it returns. The reads that decide what to delete, the row count
and the first read after opening use *Strong* level (they see every acknowledged write).

Deletion in Milvus is logical first: a removed row is never returned again, but its bytes
stay in segment files until compaction rewrites them (and, on a server, until garbage
collection removes old object-store files). They are protected vectors; see
docs/template-protection.md for what that leaves exposed.

Errors. A failing Milvus call raises :class:`gate.errors.StorageError` (``storage_unavailable``)
whose message names the operation only; the engine turns it into a deny.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from gate.consent.store import erasure_digest
from gate.errors import StorageError
from gate.identity.index import IndexHit
from gate.identity.protection import TemplateProtector

DEFAULT_PREFIX: Final = "gate_templates"
#: Subject ids go into filter expressions: only these characters, so no quoting is needed.
SUBJECT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_PK_HEX: Final = 32  # 128 bits of sha256
#: Each row carries its subject's erasure digest, so a replica can apply an erasure it
#: learns of only from the change feed (which names the digest, never the id).
ERASURE_PATTERN: Final = re.compile(r"erased:[0-9a-f]{40}")
_ERASURE_CHARS: Final = 47
_CHECKPOINT_KEY: Final = "checkpoint"
_WRITE_BATCH: Final = 2_000
_QUERY_LIMIT: Final = 16_384  # Milvus's largest offset+limit window per query
_STRONG: Final = "Strong"
_SESSION: Final = "Session"


@dataclass(frozen=True, slots=True)
class MilvusParams:
    """Vector index and search parameters of the templates collection (cosine metric).

    ``for_uri`` gives the measured defaults (benchmarks/match_recall.py, docs/scaling.md):
    a server gets HNSW; Milvus Lite 2.5, which builds only FLAT, IVF_FLAT and AUTOINDEX,
    gets FLAT (exact search).
    """

    index_type: str = "HNSW"
    build_params: dict[str, Any] = field(
        default_factory=lambda: {"M": 32, "efConstruction": 128})
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})

    @classmethod
    def for_uri(cls, uri: str) -> MilvusParams:
        if is_server_uri(uri):
            return cls()
        return cls(index_type="FLAT", build_params={}, search_params={})


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def resolve_uri(uri: str) -> str:
    """``uri`` as pymilvus wants it: a server URL, or an absolute Milvus Lite ``.db`` path."""
    text = uri.strip()
    if not text:
        raise ValueError("GATE_MILVUS_URI is empty: give http(s)://host:19530 or a path "
                         "ending in .db (Milvus Lite)")
    if is_server_uri(text):
        return text
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" in text:
        raise ValueError("GATE_MILVUS_URI must be http://, https:// or a file path")
    path = Path(text).expanduser().resolve()
    if path.suffix != ".db":
        raise ValueError("a Milvus Lite GATE_MILVUS_URI must be a file path ending in .db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def collection_name(prefix: str, pack_id: str, key_id: str, dim: int) -> str:
    """The templates collection of one (model pack, protection key, dimension)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", prefix):
        raise ValueError("the collection prefix must be letters, digits and underscores")
    digest = hashlib.sha256(f"{pack_id}\x00{key_id}\x00{dim}".encode()).hexdigest()[:16]
    return f"{prefix}_{digest}"


def template_pk(subject_id: str, row: np.ndarray) -> str:
    """Deterministic primary key of one template: the same template is the same row."""
    data = subject_id.encode("utf-8") + b"\x00" + np.asarray(row, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()[:_PK_HEX]


class _LiteServers:
    """Reference counts of the in-process Milvus Lite servers, so closing the last index
    on a ``.db`` path stops its server and releases the directory lock (a restart then
    really reads from disk)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            left = self._users.get(path, 0) - 1
            if left > 0:
                self._users[path] = left
                return
            self._users.pop(path, None)
        manager = importlib.import_module("milvus_lite.server_manager")
        manager.server_manager_instance.release_server(path)


_LITE = _LiteServers()


def _pymilvus() -> Any:
    """``pymilvus``, imported lazily: deployments on the in-process index need none of it."""
    try:
        return importlib.import_module("pymilvus")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StorageError("GATE_INDEX=milvus needs pymilvus (and milvus-lite for a .db "
                           "path): pip install 'pymilvus==3.0.2' 'milvus-lite==3.2.2'") from exc


@dataclass(frozen=True, slots=True)
class _Frame:
    """The collection searched and the protector of its vectors, swapped as one."""

    name: str
    protector: TemplateProtector


class MilvusIndex:
    """Protected templates in Milvus, several per subject; best template per subject."""

    def __init__(
        self,
        uri: str,
        dim: int,
        protector: TemplateProtector,
        *,
        pack_id: str = "",
        prefix: str = DEFAULT_PREFIX,
        params: MilvusParams | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        if protector.dim != dim:
            raise ValueError("the protector's dimension differs from the index's")
        self.dim = dim
        self.uri = resolve_uri(uri)
        self.pack_id = pack_id
        self.prefix = prefix
        self.params = params or MilvusParams.for_uri(self.uri)
        self.timeout_s = timeout_s
        self._lite_path = None if is_server_uri(self.uri) else self.uri
        self._lock = threading.RLock()  # serialises writes that read-then-write
        self._closed = False
        self._frame = _Frame(collection_name(prefix, pack_id, protector.key_id, dim), protector)
        pymilvus = _pymilvus()
        try:
            self._client: Any = pymilvus.MilvusClient(uri=self.uri, timeout=timeout_s)
        except Exception as exc:
            raise StorageError("could not connect to Milvus (GATE_MILVUS_URI)") from exc
        if self._lite_path is not None:
            _LITE.acquire(self._lite_path)
        try:
            self._ensure_collections(self._frame.name)
            self._count(self._frame.name, consistency=_STRONG)  # see everything acknowledged
        except BaseException:
            self.close()
            raise

    # -- identity -------------------------------------------------------------------------

    @property
    def collection(self) -> str:
        return self._frame.name

    @property
    def key_id(self) -> str:
        return self._frame.protector.key_id

    @property
    def is_lite(self) -> bool:
        return self._lite_path is not None

    def __repr__(self) -> str:
        where = "milvus-lite" if self.is_lite else "milvus"
        return f"MilvusIndex({where}, collection={self.collection!r}, dim={self.dim})"

    # -- Protocol -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count(self._frame.name, consistency=_STRONG)

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        """Upsert ``templates`` for ``subject_id``; adding them again changes nothing."""
        self._check_subject(subject_id)
        rows = self._check_templates(templates)
        if len(rows):
            self._upsert([subject_id] * len(rows), rows)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Bulk load: row ``i`` of ``templates`` belongs to ``subject_ids[i]``."""
        rows = self._check_templates(templates)
        if len(rows) != len(subject_ids):
            raise ValueError("one subject id per template row is needed")
        for subject_id in set(subject_ids):
            self._check_subject(subject_id)
        self._upsert(list(subject_ids), rows)

    def replace(self, subject_id: str, templates: np.ndarray) -> int:
        """Make ``templates`` the subject's only templates; returns rows deleted.

        Upserts first and deletes the subject's other rows after, so a search never
        finds the subject without templates in between (unlike ``remove`` + ``add``).
        """
        self._check_subject(subject_id)
        rows = self._check_templates(templates)
        keep = {template_pk(subject_id, row) for row in rows}
        with self._lock:
            if len(rows):
                self._upsert([subject_id] * len(rows), rows)
            stale = [pk for pk in self._subject_pks(subject_id) if pk not in keep]
            self._delete_pks(stale)
        return len(stale)

    def remove(self, subject_id: str) -> int:
        """Delete every template of the subject; visible to this client's searches at once."""
        self._check_subject(subject_id)
        with self._lock:
            pks = self._subject_pks(subject_id)
            self._delete_pks(pks)
        return len(pks)

    def remove_erased(self, digest: str) -> int:
        """Delete every template of the subject whose erasure digest (what the change feed
        says of an erased subject, ``gate.consent.store.erasure_digest``) is ``digest``:
        how a replica that did not hold the id applies another replica's erasure."""
        if not isinstance(digest, str) or not ERASURE_PATTERN.fullmatch(digest):
            raise ValueError("not an erasure digest")
        with self._lock:
            rows = self._call("read", self._client.query, self._frame.name,
                              filter=f'erasure == "{digest}"', output_fields=["pk"],
                              limit=_QUERY_LIMIT, consistency_level=_STRONG)
            pks = [str(r["pk"]) for r in rows]
            self._delete_pks(pks)
        return len(pks)

    def clear(self) -> None:
        """Drop every template and the checkpoint (a fresh, empty collection)."""
        with self._lock:
            name = self._frame.name
            self._call("clear", self._client.drop_collection, name)
            self._call("clear", self._client.drop_collection, _meta_name(name))
            self._ensure_collections(name)

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(q) == 0:
            return []
        if k <= 0:
            return [[] for _ in range(len(q))]
        if not np.all(np.isfinite(q)):
            raise ValueError("queries must be finite")
        frame = self._frame
        protected = frame.protector.protect(q)
        params = dict(self.params.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), k)
        result = self._call(
            "search", self._client.search, frame.name, data=list(protected), limit=k,
            group_by_field="subject_id", output_fields=["subject_id"],
            search_params={"metric_type": "COSINE", "params": params},
            consistency_level=_SESSION)
        return [self._hits(row, k) for row in result]

    def template_similarities(self, query: np.ndarray, subject_id: str) -> np.ndarray:
        """Cosine of ``query`` to each of the subject's templates (what ``search`` would
        score them), read at the same *Session* level as ``search``. The query is
        protected like a search's; the rotation keeps cosines."""
        self._check_subject(subject_id)
        q = np.asarray(query, dtype=np.float32).reshape(self.dim)
        if not np.all(np.isfinite(q)):
            raise ValueError("queries must be finite")
        frame = self._frame
        rows = self._call("read", self._client.query, frame.name,
                          filter=f'subject_id == "{subject_id}"', output_fields=["vector"],
                          limit=_QUERY_LIMIT, consistency_level=_SESSION)
        if not rows:
            return np.zeros(0, dtype=np.float32)
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        protected = frame.protector.protect(q)[0]
        norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(protected)), 1e-12)
        sims: np.ndarray = np.clip((vectors @ protected) / np.maximum(norms, 1e-12), -1.0, 1.0)
        return sims.astype(np.float32)

    # -- change-feed checkpoint -----------------------------------------------------------

    def checkpoint(self) -> int | None:
        """The last change-feed sequence number applied to this index, if one was set."""
        return self._read_checkpoint(self._frame.name)

    def set_checkpoint(self, seq: int) -> None:
        """Record that every change up to ``seq`` is applied (call after applying them)."""
        if seq < 0:
            raise ValueError("a change-feed sequence number is never negative")
        self._write_checkpoint(self._frame.name, int(seq))

    def _read_checkpoint(self, name: str) -> int | None:
        meta = self._meta(name, create=False)
        if meta is None:
            return None
        rows = self._call("checkpoint", self._client.query, meta,
                          filter=f'key == "{_CHECKPOINT_KEY}"', output_fields=["seq"],
                          consistency_level=_STRONG)
        return int(rows[0]["seq"]) if rows else None

    def _write_checkpoint(self, name: str, seq: int) -> None:
        meta = self._meta(name, create=True)
        self._call("checkpoint", self._client.upsert, meta,
                   [{"key": _CHECKPOINT_KEY, "seq": seq, "vector": [1.0, 0.0]}])

    # -- key rotation ---------------------------------------------------------------------

    def rotate_key(self, protector: TemplateProtector) -> int:
        """Re-project every template under ``protector`` into its own collection, carry the
        checkpoint over, switch searches to it and drop the old collection.

        Returns the number of templates re-projected. Rows keep their keys (they do not
        depend on the key), so replaying the feed afterwards writes the same rows.
        """
        if protector.dim != self.dim:
            raise ValueError("the new protector's dimension differs from the index's")
        with self._lock:
            old = self._frame
            new = _Frame(collection_name(self.prefix, self.pack_id, protector.key_id,
                                         self.dim), protector)
            if new.name == old.name:
                return 0
            self._call("rotate", self._client.drop_collection, new.name)
            self._call("rotate", self._client.drop_collection, _meta_name(new.name))
            self._ensure_collections(new.name)
            checkpoint = self.checkpoint()
            moved = 0
            for pks, subjects, vectors in self._iterate(old.name):
                rows = old.protector.reproject_to(protector, vectors)
                self._write(new.name, pks, subjects, rows)
                moved += len(pks)
            if checkpoint is not None:
                self._write_checkpoint(new.name, checkpoint)
            self._count(new.name, consistency=_STRONG)
            self._frame = new
            self._call("rotate", self._client.drop_collection, old.name)
            self._call("rotate", self._client.drop_collection, _meta_name(old.name))
            return moved

    # -- lifecycle ------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise ``StorageError`` unless Milvus answers and the collection is there (for
        readiness checks)."""
        if not self._call("ping", self._client.has_collection, self._frame.name):
            raise StorageError("the Milvus templates collection is missing")

    def close(self) -> None:
        """Close the connection (the data stays in Milvus). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client.close()
            finally:
                if self._lite_path is not None:
                    _LITE.release(self._lite_path)

    # -- internals ------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StorageError("the Milvus identity index is closed")
        try:
            return fn(*args, timeout=self.timeout_s, **kwargs)
        except StorageError:
            raise
        except Exception as exc:  # pymilvus and gRPC errors: safe message, cause chained
            raise StorageError(f"the Milvus identity index failed ({what})") from exc

    def _ensure_collections(self, name: str) -> None:
        pymilvus = _pymilvus()
        data_type = pymilvus.DataType
        client = self._client
        if not self._call("open", client.has_collection, name):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", data_type.VARCHAR, is_primary=True, max_length=_PK_HEX)
            schema.add_field("subject_id", data_type.VARCHAR, max_length=128)
            schema.add_field("erasure", data_type.VARCHAR, max_length=_ERASURE_CHARS)
            schema.add_field("vector", data_type.FLOAT_VECTOR, dim=self.dim)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type=self.params.index_type,
                            metric_type="COSINE", params=dict(self.params.build_params))
            # The per-subject reads of every check (the top-2 rule, replace, erasure)
            # filter on these: without an index each would scan the collection.
            index.add_index(field_name="subject_id", index_type="INVERTED")
            index.add_index(field_name="erasure", index_type="INVERTED")
            self._create(name, schema, index)
        else:
            self._check_existing(name)
        self._call("open", client.load_collection, name)

    def _meta(self, name: str, *, create: bool) -> str | None:
        """The checkpoint collection of ``name``; made on the first checkpoint only."""
        meta = _meta_name(name)
        client = self._client
        if self._call("open", client.has_collection, meta):
            self._call("open", client.load_collection, meta)
            return meta
        if not create:
            return None
        data_type = _pymilvus().DataType
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", data_type.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("seq", data_type.INT64)
        schema.add_field("vector", data_type.FLOAT_VECTOR, dim=2)  # Milvus needs one
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        self._create(meta, schema, index)
        self._call("open", client.load_collection, meta)
        return meta

    def _create(self, name: str, schema: Any, index: Any) -> None:
        try:
            self._call("create", self._client.create_collection, name, schema=schema,
                       consistency_level=_STRONG)
            # The index of an empty collection: not waited for (pymilvus would poll it
            # every 0.5 s); a parameter this Milvus refuses still fails here, and
            # ``load_collection`` after it waits until the collection can be searched.
            self._call("create", self._client.create_index, name, index, _async=True)
        except StorageError:
            # Another replica may have created it at the same moment: that is fine, once
            # it has its vector index. Anything else (e.g. an index type this Milvus does
            # not build) is an error, and the half-made collection is dropped.
            if not self._call("open", self._client.has_collection, name):
                raise
            if "vector" not in self._call("open", self._client.list_indexes, name):
                try:  # finish what the other replica (or this failed call) began
                    self._call("create", self._client.create_index, name, index)
                except StorageError:
                    self._call("create", self._client.drop_collection, name)
                    raise

    def _check_existing(self, name: str) -> None:
        info = self._call("open", self._client.describe_collection, name)
        fields = {f["name"]: f for f in info.get("fields", [])}
        vector = fields.get("vector")
        if vector is None or not {"subject_id", "pk", "erasure"} <= set(fields):
            raise StorageError(f"Milvus collection {name} is not a gate templates collection")
        if int(vector.get("params", {}).get("dim", -1)) != self.dim:
            raise StorageError(f"Milvus collection {name} has the wrong dimension")

    def _count(self, name: str, *, consistency: str) -> int:
        rows = self._call("count", self._client.query, name, filter="",
                          output_fields=["count(*)"], consistency_level=consistency)
        return int(rows[0]["count(*)"]) if rows else 0

    def _check_subject(self, subject_id: str) -> None:
        if not isinstance(subject_id, str) or not SUBJECT_ID_PATTERN.fullmatch(subject_id):
            raise ValueError("subject ids must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")

    def _check_templates(self, templates: np.ndarray) -> NDArray[np.float32]:
        rows = np.ascontiguousarray(np.asarray(templates, dtype=np.float32).reshape(-1, self.dim))
        if not np.all(np.isfinite(rows)):
            raise ValueError("templates must be finite")
        if np.any(np.linalg.norm(rows, axis=1) < 1e-6):
            raise ValueError("templates must be non-zero unit vectors")
        return rows

    def _upsert(self, subject_ids: list[str], rows: NDArray[np.float32]) -> None:
        frame = self._frame
        pks = [template_pk(s, row) for s, row in zip(subject_ids, rows, strict=True)]
        self._write(frame.name, pks, subject_ids, frame.protector.protect(rows))

    def _write(self, name: str, pks: Sequence[str], subject_ids: Sequence[str],
               protected: NDArray[np.float32]) -> None:
        for start in range(0, len(pks), _WRITE_BATCH):
            stop = start + _WRITE_BATCH
            batch = [{"pk": pk, "subject_id": sid, "erasure": erasure_digest(sid),
                      "vector": vec} for pk, sid, vec in
                     zip(pks[start:stop], subject_ids[start:stop], protected[start:stop],
                         strict=True)]
            self._call("write", self._client.upsert, name, batch)

    def _subject_pks(self, subject_id: str) -> list[str]:
        rows = self._call("read", self._client.query, self._frame.name,
                          filter=f'subject_id == "{subject_id}"', output_fields=["pk"],
                          limit=_QUERY_LIMIT, consistency_level=_STRONG)
        return [str(r["pk"]) for r in rows]

    def _delete_pks(self, pks: list[str]) -> None:
        for start in range(0, len(pks), _WRITE_BATCH):
            self._call("delete", self._client.delete, self._frame.name,
                       ids=pks[start : start + _WRITE_BATCH])

    def _iterate(self, name: str) -> Iterator[tuple[list[str], list[str], NDArray[np.float32]]]:
        iterator = self._call("read", self._client.query_iterator, name,
                              batch_size=_WRITE_BATCH, filter="",
                              output_fields=["pk", "subject_id", "vector"],
                              consistency_level=_STRONG)
        try:
            while True:
                batch = self._call_plain("read", iterator.next)
                if not batch:
                    return
                yield ([str(r["pk"]) for r in batch], [str(r["subject_id"]) for r in batch],
                       np.asarray([r["vector"] for r in batch], dtype=np.float32))
        finally:
            iterator.close()

    def _call_plain(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            raise StorageError(f"the Milvus identity index failed ({what})") from exc

    @staticmethod
    def _hits(row: Any, k: int) -> list[IndexHit]:
        hits: list[IndexHit] = []
        seen: set[str] = set()
        for hit in row:
            subject = str(hit["entity"]["subject_id"])
            if subject in seen:  # group_by returns one per subject; be sure of it
                continue
            seen.add(subject)
            hits.append(IndexHit(subject, float(np.clip(hit["distance"], -1.0, 1.0))))
        hits.sort(key=lambda h: -h.similarity)
        return hits[:k]


def _meta_name(name: str) -> str:
    return f"{name}_meta"
