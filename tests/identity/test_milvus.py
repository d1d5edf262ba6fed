"""MilvusIndex on Milvus Lite (a .db file in a temp dir): the IdentityIndex Protocol,
idempotent change-feed application, erasure, the checkpoint, restarts, protected
templates and key rotation. The real-photo test checks decisions against ExactIndex on
embeddings from the gate's own pipeline."""

from __future__ import annotations

import itertools
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install pymilvus==3.0.2)")
pytest.importorskip("milvus_lite",
                    reason="milvus-lite is not installed (pip install milvus-lite==3.2.2)")

from gate.errors import StorageError
from gate.identity.index import ExactIndex, IdentityIndex
from gate.identity.milvus import MilvusIndex, collection_name, resolve_uri
from gate.identity.protection import TemplateProtector

DIM = 128
_PREFIXES = itertools.count()


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def templates(seed: int, count: int = 1) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((count, DIM)))


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite database per module; each test gets its own collections."""
    return str(tmp_path_factory.mktemp("milvus") / "gate.db")


@pytest.fixture
def protector() -> TemplateProtector:
    return TemplateProtector(secrets.token_bytes(32), DIM)


@pytest.fixture
def prefix() -> str:
    return f"t{next(_PREFIXES)}"


@pytest.fixture
def index(lite_uri: str, protector: TemplateProtector, prefix: str) -> Iterator[MilvusIndex]:
    idx = MilvusIndex(lite_uri, DIM, protector, pack_id="test-pack", prefix=prefix)
    yield idx
    idx.close()


def stored_rows(index: MilvusIndex, subject_id: str | None = None) -> list[dict[str, Any]]:
    """What Milvus itself holds (as a dump would show it)."""
    where = "" if subject_id is None else f'subject_id == "{subject_id}"'
    rows: list[dict[str, Any]] = index._client.query(
        index.collection, filter=where, output_fields=["pk", "subject_id", "vector"],
        limit=16_384, consistency_level="Strong")
    return rows


# -- the Protocol -----------------------------------------------------------------------------


def test_satisfies_the_identity_index_protocol(index: MilvusIndex) -> None:
    assert isinstance(index, IdentityIndex)
    assert len(index) == 0
    assert index.search(templates(1), 3) == [[]]
    assert index.search(np.zeros((0, DIM), dtype=np.float32), 3) == []
    assert index.search(templates(1), 0) == [[]]


def test_batched_search_returns_each_subjects_best_template(index: MilvusIndex) -> None:
    alice, bob, carol = templates(1, 3), templates(2, 2), templates(3, 1)
    index.add("alice", alice)
    index.add("bob", bob)
    index.add("carol", carol)
    assert len(index) == 6
    queries = unit(np.stack([alice[2] + 0.05 * bob[0], bob[1], carol[0]]))
    hits = index.search(queries, k=3)
    assert [h[0].subject_id for h in hits] == ["alice", "bob", "carol"]
    exact = ExactIndex(DIM)
    for name, rows in (("alice", alice), ("bob", bob), ("carol", carol)):
        exact.add(name, rows)
    for got, want in zip(hits, exact.search(queries, k=3), strict=True):
        assert [h.subject_id for h in got] == [h.subject_id for h in want]  # one per subject
        assert np.allclose([h.similarity for h in got], [h.similarity for h in want], atol=1e-5)


def test_adding_the_same_templates_twice_changes_nothing(index: MilvusIndex) -> None:
    rows = templates(4, 3)
    index.add("sub_a", rows)
    before = index.search(rows, k=2)
    index.add("sub_a", rows)  # the change feed delivered the enrolment again
    index.add_many(["sub_a"] * 3, rows)
    assert len(index) == 3
    assert index.search(rows, k=2) == before


def test_remove_of_an_absent_subject_is_harmless(index: MilvusIndex) -> None:
    index.add("sub_a", templates(5))
    assert index.remove("sub_nobody") == 0
    assert index.remove("sub_a") == 1
    assert index.remove("sub_a") == 0  # re-delivered erasure
    assert len(index) == 0


def test_remove_then_add_out_of_order_ends_with_the_subject_present(index: MilvusIndex) -> None:
    rows = templates(6, 2)
    index.remove("sub_late")  # a delete applied before the add it follows
    index.add("sub_late", rows)
    assert index.search(rows[:1], k=1)[0][0].subject_id == "sub_late"


def test_erased_vectors_are_never_returned_again(index: MilvusIndex) -> None:
    victim, other = templates(7, 3), templates(8, 2)
    index.add("sub_victim", victim)
    index.add("sub_other", other)
    assert index.search(victim[:1], k=1)[0][0].subject_id == "sub_victim"

    assert index.remove("sub_victim") == 3
    # Visible to search before remove returned: even the victim's own templates as the
    # query, asking for every row there is, never bring them back.
    for hits in index.search(victim, k=len(index) + 5):
        assert all(h.subject_id != "sub_victim" for h in hits)
    assert stored_rows(index, "sub_victim") == []
    assert len(index) == 2


def test_replace_leaves_exactly_the_new_templates(index: MilvusIndex) -> None:
    old, new = templates(9, 3), templates(10, 2)
    index.add("sub_r", old)
    assert index.replace("sub_r", new) == 3
    assert len(index) == 2
    assert index.replace("sub_r", new) == 0  # again: idempotent
    stored = {r["pk"] for r in stored_rows(index, "sub_r")}
    assert len(stored) == 2
    # The store says the subject has no templates any more (erased meanwhile): replace
    # with nothing is a remove.
    assert index.replace("sub_r", np.zeros((0, DIM), dtype=np.float32)) == 2
    assert len(index) == 0


def test_clear_empties_the_index_and_forgets_the_checkpoint(index: MilvusIndex) -> None:
    index.add("sub_a", templates(11, 2))
    index.set_checkpoint(9)
    index.clear()
    assert len(index) == 0
    assert index.checkpoint() is None
    index.add("sub_b", templates(12))
    assert len(index) == 1


# -- checkpoint and restart -------------------------------------------------------------------


def test_checkpoint_round_trip(index: MilvusIndex) -> None:
    assert index.checkpoint() is None
    index.set_checkpoint(0)
    assert index.checkpoint() == 0
    index.set_checkpoint(41)
    index.set_checkpoint(41)
    assert index.checkpoint() == 41
    with pytest.raises(ValueError):
        index.set_checkpoint(-1)


def test_a_restarted_replica_finds_templates_removals_and_checkpoint(
        tmp_path: Path, protector: TemplateProtector) -> None:
    uri = str(tmp_path / "replica.db")
    kept, erased = templates(13, 2), templates(14, 1)
    first = MilvusIndex(uri, DIM, protector, pack_id="p")
    first.add("sub_kept", kept)
    first.add("sub_erased", erased)
    first.remove("sub_erased")
    first.set_checkpoint(17)
    first.close()
    first.close()  # idempotent

    # The Lite server of that path stopped with the last index on it: this opens the
    # database from disk, as a new process would.
    second = MilvusIndex(uri, DIM, protector, pack_id="p")
    try:
        assert second.checkpoint() == 17
        assert len(second) == 2
        assert second.search(kept[:1], k=1)[0][0].subject_id == "sub_kept"
        assert all(h.subject_id != "sub_erased" for h in second.search(erased, k=5)[0])
    finally:
        second.close()


def test_two_indexes_on_one_collection_see_each_others_writes(
        lite_uri: str, protector: TemplateProtector, prefix: str) -> None:
    a = MilvusIndex(lite_uri, DIM, protector, pack_id="shared", prefix=prefix)
    b = MilvusIndex(lite_uri, DIM, protector, pack_id="shared", prefix=prefix)
    try:
        rows = templates(15)
        a.add("sub_s", rows)
        b.add("sub_s", rows)  # both replicas apply the same change
        assert len(a) == len(b) == 1
        b.remove("sub_s")
        assert a.search(rows, k=1) == [[]]
    finally:
        a.close()
        b.close()


def test_a_closed_index_refuses_work(lite_uri: str, protector: TemplateProtector,
                                     prefix: str) -> None:
    idx = MilvusIndex(lite_uri, DIM, protector, prefix=prefix)
    idx.ping()
    idx.close()
    with pytest.raises(StorageError, match="closed"):
        idx.search(templates(16), 1)
    with pytest.raises(StorageError):
        idx.ping()


def test_a_dropped_collection_fails_ping_and_search(index: MilvusIndex) -> None:
    """Someone dropped the collection under a running replica: checks fail (the engine
    denies), they never run against nothing."""
    index._client.drop_collection(index.collection)
    with pytest.raises(StorageError, match="missing"):
        index.ping()
    with pytest.raises(StorageError, match="search"):
        index.search(templates(17), 1)


# -- protected templates ----------------------------------------------------------------------


def test_milvus_holds_protected_vectors_never_raw_ones(index: MilvusIndex,
                                                       protector: TemplateProtector) -> None:
    raw = templates(17, 4)
    index.add("sub_p", raw)
    stored = np.asarray([r["vector"] for r in stored_rows(index, "sub_p")], dtype=np.float32)
    assert stored.shape == raw.shape
    # No stored row is (close to) any raw template...
    assert np.max(np.abs(stored @ raw.T)) < 0.5
    # ...each is the protected image of one of them...
    expected = protector.protect(raw)
    assert np.allclose(np.sort(stored @ expected.T, axis=1)[:, -1], 1.0, atol=1e-5)
    # ...and the primary keys are hashes, not the vector.
    assert all(len(r["pk"]) == 32 and int(r["pk"], 16) >= 0 for r in stored_rows(index, "sub_p"))


def test_search_similarities_equal_raw_cosines(index: MilvusIndex) -> None:
    gallery, queries = templates(18, 20), templates(19, 5)
    for i, row in enumerate(gallery):
        index.add(f"sub_{i}", row[None, :])
    raw = queries @ gallery.T
    for q, hits in enumerate(index.search(queries, k=5)):
        best = np.argsort(-raw[q])[:5]
        assert [h.subject_id for h in hits] == [f"sub_{i}" for i in best]
        assert np.allclose([h.similarity for h in hits], raw[q, best], atol=1e-5)


def test_another_key_is_another_collection(lite_uri: str, prefix: str,
                                           index: MilvusIndex) -> None:
    index.add("sub_k", templates(20))
    other = MilvusIndex(lite_uri, DIM, TemplateProtector(secrets.token_bytes(32), DIM),
                        pack_id="test-pack", prefix=prefix)
    try:
        assert other.collection != index.collection
        assert len(other) == 0 and other.checkpoint() is None  # the engine rebuilds it
    finally:
        other.close()


def test_key_rotation_reprojects_every_template(index: MilvusIndex,
                                                protector: TemplateProtector) -> None:
    raw = {f"sub_{i}": templates(30 + i, 2) for i in range(5)}
    for subject, rows in raw.items():
        index.add(subject, rows)
    index.set_checkpoint(12)
    queries = unit(np.stack([rows[0] for rows in raw.values()]) + 0.01)
    before = index.search(queries, k=3)
    old_collection = index.collection

    rotated = TemplateProtector(secrets.token_bytes(32), DIM)
    assert index.rotate_key(rotated) == 10
    assert index.collection != old_collection and index.key_id == rotated.key_id
    assert not index._client.has_collection(old_collection)  # old frame dropped
    assert index.checkpoint() == 12
    after = index.search(queries, k=3)
    for got, want in zip(after, before, strict=True):
        assert [h.subject_id for h in got] == [h.subject_id for h in want]
        assert np.allclose([h.similarity for h in got], [h.similarity for h in want],
                           atol=1e-5)
    stored = np.asarray([r["vector"] for r in stored_rows(index, "sub_0")], dtype=np.float32)
    assert np.allclose(np.sort(stored @ rotated.protect(raw["sub_0"]).T, axis=1)[:, -1], 1.0,
                       atol=1e-5)
    assert np.max(np.abs(stored @ protector.protect(raw["sub_0"]).T)) < 0.5
    index.add("sub_0", raw["sub_0"])  # replaying the feed after rotation: same rows
    assert len(index) == 10


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("subject_id", ['sub" || subject_id != "', "", "x" * 129, "a b", "ü"])
def test_subject_ids_that_could_escape_a_filter_are_refused(index: MilvusIndex,
                                                           subject_id: str) -> None:
    with pytest.raises(ValueError, match="subject ids"):
        index.add(subject_id, templates(40))
    with pytest.raises(ValueError, match="subject ids"):
        index.remove(subject_id)


def test_bad_templates_are_refused(index: MilvusIndex) -> None:
    with pytest.raises(ValueError, match="finite"):
        index.add("sub_a", np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="non-zero"):
        index.add("sub_a", np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("sub_a", np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full((1, DIM), np.inf, dtype=np.float32), 1)
    with pytest.raises(ValueError, match="one subject id per"):
        index.add_many(["sub_a"], templates(41, 2))


@pytest.mark.parametrize("uri", ["", "   ", "ftp://host/x", "/tmp/milvus-no-suffix"])
def test_bad_uris_are_refused_clearly(uri: str) -> None:
    with pytest.raises(ValueError, match="GATE_MILVUS_URI"):
        resolve_uri(uri)


def test_uri_forms(tmp_path: Path) -> None:
    assert resolve_uri("http://milvus:19530") == "http://milvus:19530"
    assert resolve_uri("https://u:p@example:443") == "https://u:p@example:443"
    path = tmp_path / "deep" / "dir" / "gate.db"
    assert resolve_uri(f"file://{path}") == str(path)
    assert path.parent.is_dir()


def test_an_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="could not connect"):
        MilvusIndex("http://127.0.0.1:1", 8, TemplateProtector(bytes(32), 8), timeout_s=1.0)


def test_dimension_mismatches_are_refused(lite_uri: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="dimension"):
        MilvusIndex(lite_uri, DIM, TemplateProtector(bytes(32), 64), prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        collection_name("bad-prefix", "p", "k", DIM)


# -- real photos ------------------------------------------------------------------------------


def _real_vectors(faces_dir: Path, per_identity: int = 4,
                  identities: int = 6) -> tuple[list[str], np.ndarray]:
    from gate.engine import FaceGate

    names: list[str] = []
    vectors: list[np.ndarray] = []
    folders = sorted(p for p in (faces_dir / "glint24").iterdir() if p.is_dir())[:identities]
    with tempfile.TemporaryDirectory() as tmp, FaceGate.open(Path(tmp)) as gate:
        for folder in folders:
            for photo in sorted(folder.iterdir())[:per_identity]:
                data = photo.read_bytes()
                faces = getattr(gate, "faces", None)
                if faces is not None and hasattr(faces, "largest_face"):
                    face = faces.largest_face(data)
                    vector = None if face is None else face.vector
                else:
                    found = gate.largest_face_vector(data)
                    vector = None if found is None else found[0]
                if vector is not None:
                    names.append(folder.name)
                    vectors.append(np.asarray(vector, dtype=np.float32))
    return names, unit(np.stack(vectors))


@pytest.mark.real
def test_real_faces_decide_exactly_as_the_exact_index(faces_dir: Path, lite_uri: str,
                                                      prefix: str) -> None:
    """Enrol one photo per identity, query with the others: the same best subject and the
    same similarities (within float tolerance) as ExactIndex on raw embeddings, so the
    same decision at any threshold; the stored vectors are not the embeddings."""
    names, vectors = _real_vectors(faces_dir)
    protector = TemplateProtector(secrets.token_bytes(32), vectors.shape[1])
    milvus = MilvusIndex(lite_uri, vectors.shape[1], protector, prefix=prefix)
    exact = ExactIndex(vectors.shape[1])
    try:
        enrolled: dict[str, int] = {}
        for row, name in enumerate(names):
            if name not in enrolled:
                enrolled[name] = row
                milvus.add(f"sub_{name}", vectors[row][None, :])
                exact.add(f"sub_{name}", vectors[row][None, :])
        probes = [row for row in range(len(names)) if row not in enrolled.values()]
        got = milvus.search(vectors[probes], k=3)
        want = exact.search(vectors[probes], k=3)
        for g, w in zip(got, want, strict=True):
            assert [h.subject_id for h in g] == [h.subject_id for h in w]
            assert np.allclose([h.similarity for h in g], [h.similarity for h in w], atol=1e-5)
        assert sum(g[0].subject_id == f"sub_{names[p]}" for g, p in zip(got, probes,
                                                                        strict=True)) > 0
        stored = np.asarray([r["vector"] for r in stored_rows(milvus)], dtype=np.float32)
        assert np.max(np.abs(stored @ vectors.T)) < 0.6  # no stored row is an embedding
    finally:
        milvus.close()
