"""HnswIndex (usearch HNSW) against ExactIndex on a few thousand synthetic templates."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from gate.errors import StorageError
from gate.identity.ann import EXACT_THRESHOLD, SIDE_TABLE_SUFFIX, HnswIndex, choose_index
from gate.identity.index import ExactIndex, IdentityIndex

DIM = 128
N_SUBJECTS = 1200


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _people(seed: int = 0, n_subjects: int = N_SUBJECTS) -> dict[str, np.ndarray]:
    """Subjects with 1-3 templates each near their own random centre (cos ~0.85)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((n_subjects, DIM)))
    people = {}
    for i, centre in enumerate(centres):
        n = int(rng.integers(1, 4))
        noise = rng.standard_normal((n, DIM)) * 0.6 / np.sqrt(DIM)
        people[f"subject-{i:05d}"] = _unit(centre + noise)
    return people


def _queries(people: dict[str, np.ndarray], n: int, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    names = sorted(people)
    picked = [names[int(i)] for i in rng.choice(len(names), size=n, replace=False)]
    rows = [people[s][int(rng.integers(len(people[s])))] for s in picked]
    noise = rng.standard_normal((n, DIM)) * 0.6 / np.sqrt(DIM)
    return _unit(np.stack(rows) + noise), picked


def _fill(index: IdentityIndex, people: dict[str, np.ndarray]) -> None:
    for subject, templates in people.items():
        index.add(subject, templates)


@pytest.fixture(scope="module")
def people() -> dict[str, np.ndarray]:
    return _people()


@pytest.fixture(scope="module")
def exact(people: dict[str, np.ndarray]) -> ExactIndex:
    index = ExactIndex(DIM)
    _fill(index, people)
    return index


@pytest.fixture(scope="module")
def saved(people: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once through the Protocol's add(), saved; each test gets its own loaded copy."""
    index = HnswIndex(DIM, seed=7)
    _fill(index, people)
    path = tmp_path_factory.mktemp("hnsw") / "people.usearch"
    index.save(path)
    return path


@pytest.fixture()
def hnsw(saved: Path) -> HnswIndex:
    return HnswIndex.load(saved, view=False)


def test_satisfies_the_protocol() -> None:
    assert isinstance(HnswIndex(DIM), IdentityIndex)


def test_recall_at_1_matches_exact_search(
    hnsw: HnswIndex, exact: ExactIndex, people: dict[str, np.ndarray]
) -> None:
    queries, truth = _queries(people, 400)
    approx = hnsw.search(queries, 5)
    expected = exact.search(queries, 5)
    agree = np.mean([a[0].subject_id == e[0].subject_id for a, e in zip(approx, expected,
                                                                           strict=True)])
    assert agree >= 0.995
    assert np.mean([a[0].subject_id == t for a, t in zip(approx, truth, strict=True)]) >= 0.99
    # f16 storage: similarities agree with float32 exact search to ~1e-3.
    gaps = [abs(a[0].similarity - e[0].similarity) for a, e in zip(approx, expected, strict=True)
            if a[0].subject_id == e[0].subject_id]
    assert max(gaps) < 5e-3
    assert len(hnsw) == len(exact) == sum(len(t) for t in people.values())


def test_int8_storage_also_finds_the_right_subject(people: dict[str, np.ndarray]) -> None:
    index = HnswIndex(DIM, dtype="i8")
    few = dict(list(people.items())[:300])
    _fill(index, few)
    queries, truth = _queries(few, 100)
    hits = index.search(queries, 1)
    assert np.mean([h[0].subject_id == t for h, t in zip(hits, truth, strict=True)]) >= 0.98


def test_one_hit_per_subject_even_with_many_templates(people: dict[str, np.ndarray]) -> None:
    index = HnswIndex(DIM)
    _fill(index, dict(list(people.items())[:200]))
    rng = np.random.default_rng(3)
    query = _unit(rng.standard_normal(DIM))
    # One subject owns 100 templates right around the query: they fill the candidate list.
    crowd = _unit(query + rng.standard_normal((100, DIM)) * 0.2 / np.sqrt(DIM))
    index.add("crowd", crowd)
    hits = index.search(query, 10)[0]
    ids = [h.subject_id for h in hits]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert ids[0] == "crowd"
    assert hits[0].similarity == pytest.approx(float(np.max(crowd @ query)), abs=5e-3)
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True)


def test_remove_really_removes(hnsw: HnswIndex, people: dict[str, np.ndarray],
                               tmp_path: Path) -> None:
    victim = "subject-00042"
    templates = people[victim]
    before = len(hnsw)
    assert hnsw.search(templates[:1], 1)[0][0].subject_id == victim

    assert hnsw.remove(victim) == len(templates)
    assert hnsw.remove(victim) == 0
    assert hnsw.remove("never-enrolled") == 0
    assert len(hnsw) == before - len(templates)
    for hits in hnsw.search(templates, 50):
        assert victim not in {h.subject_id for h in hits}
    # The stored f16 bytes of the removed templates are overwritten, not just unlinked:
    # they are in no saved file.
    hnsw.save(tmp_path / "ids.usearch")
    stored = (tmp_path / "ids.usearch").read_bytes()
    for row in templates:
        assert row.astype(np.float16).tobytes() not in stored
    assert people["subject-00043"][0].astype(np.float16).tobytes() in stored  # sanity


def test_re_adding_after_removal_reuses_slots(hnsw: HnswIndex,
                                              people: dict[str, np.ndarray]) -> None:
    stored_before = len(hnsw._index)
    removed = sum(hnsw.remove(f"subject-{i:05d}") for i in range(10))
    assert len(hnsw._index) == stored_before  # scrub vectors took the freed slots
    rng = np.random.default_rng(5)
    fresh = _unit(rng.standard_normal((removed, DIM)))
    hnsw.add("newcomer", fresh)
    assert len(hnsw._index) == stored_before  # ...and the newcomer recycled them
    assert hnsw.search(fresh[:1], 1)[0][0].subject_id == "newcomer"
    hnsw.add("subject-00001", people["subject-00001"])
    assert hnsw.search(people["subject-00001"][:1], 1)[0][0].subject_id == "subject-00001"


@pytest.mark.parametrize("view", [True, False])
def test_save_and_load_round_trip(hnsw: HnswIndex, people: dict[str, np.ndarray],
                                  tmp_path: Path, view: bool) -> None:
    hnsw.remove("subject-00007")  # scrubs and removed keys survive the round trip too
    path = tmp_path / "ids.usearch"
    hnsw.save(path, checkpoint=1234)
    assert path.is_file() and (tmp_path / ("ids.usearch" + SIDE_TABLE_SUFFIX)).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.iterdir())  # 0600: templates

    loaded = HnswIndex.load(path, view=view)
    assert loaded.is_view is view
    assert loaded.checkpoint == 1234
    assert len(loaded) == len(hnsw)
    queries, _ = _queries(people, 200, seed=9)
    assert loaded.search(queries, 5) == hnsw.search(queries, 5)

    # Writing to a memory-mapped index copies it into memory first; the file is untouched.
    loaded.add("late", _unit(np.ones((1, DIM))))
    assert loaded.remove("subject-00003") == len(people["subject-00003"])
    assert loaded.is_view is False
    assert loaded.search(_unit(np.ones(DIM)), 1)[0][0].subject_id == "late"
    again = HnswIndex.load(path)
    assert len(again) == len(hnsw)
    hnsw.save(path)
    assert HnswIndex.load(path).checkpoint is None
    assert again.search(queries, 5) == hnsw.search(queries, 5)


def test_load_refuses_a_torn_or_missing_save(hnsw: HnswIndex, tmp_path: Path) -> None:
    first, second = tmp_path / "a.usearch", tmp_path / "b.usearch"
    hnsw.save(first)
    hnsw.remove("subject-00011")
    hnsw.add("extra", _unit(np.ones((3, DIM))))
    hnsw.save(second)
    # The index file of one save with the side table of another: refused.
    (tmp_path / ("a.usearch" + SIDE_TABLE_SUFFIX)).write_bytes(
        (tmp_path / ("b.usearch" + SIDE_TABLE_SUFFIX)).read_bytes())
    with pytest.raises(StorageError):
        HnswIndex.load(first)
    with pytest.raises(StorageError):
        HnswIndex.load(tmp_path / "missing.usearch")


def test_keys_stay_unique_across_clear(tmp_path: Path) -> None:
    index = HnswIndex(DIM)
    rng = np.random.default_rng(17)
    index.add("a", _unit(rng.standard_normal((2, DIM))))
    index.save(tmp_path / "before.usearch")
    index.clear()
    index.add("b", _unit(rng.standard_normal((2, DIM))))  # same count, new keys
    index.save(tmp_path / "after.usearch")
    (tmp_path / ("before.usearch" + SIDE_TABLE_SUFFIX)).write_bytes(
        (tmp_path / ("after.usearch" + SIDE_TABLE_SUFFIX)).read_bytes())
    with pytest.raises(StorageError):
        HnswIndex.load(tmp_path / "before.usearch")
    assert [h.subject_id for h in HnswIndex.load(tmp_path / "after.usearch").search(
        _unit(rng.standard_normal((1, DIM))), 5)[0]] == ["b"]


def test_clear_and_empty_index(hnsw: HnswIndex, people: dict[str, np.ndarray]) -> None:
    queries, _ = _queries(people, 3)
    hnsw.clear()
    assert len(hnsw) == 0
    assert hnsw.search(queries, 5) == [[], [], []]
    hnsw.add("only", people["subject-00000"])
    assert [h.subject_id for h in hnsw.search(queries[:1], 5)[0]] == ["only"]


def test_input_checks() -> None:
    index = HnswIndex(DIM)
    with pytest.raises(ValueError):
        index.add("s", np.ones((2, DIM - 1), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("s", np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("s", np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add_many(["a"], np.ones((2, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("", _unit(np.ones((1, DIM))))
    index.add("s", _unit(np.ones((1, DIM))))
    assert index.search(np.ones((1, DIM), dtype=np.float32), 0) == [[]]
    assert index.search(np.zeros((0, DIM), dtype=np.float32), 3) == []


def test_add_many_matches_add(people: dict[str, np.ndarray]) -> None:
    few = dict(list(people.items())[:300])
    ids = [s for s, t in few.items() for _ in range(len(t))]
    bulk = HnswIndex(DIM)
    bulk.add_many(ids, np.concatenate(list(few.values())))
    queries, truth = _queries(few, 100)
    assert len(bulk) == len(ids)
    hits = bulk.search(queries, 3)
    assert np.mean([h[0].subject_id == t for h, t in zip(hits, truth, strict=True)]) >= 0.99
    assert all(len({x.subject_id for x in h}) == len(h) == 3 for h in hits)


def test_concurrent_searches_adds_and_removes(hnsw: HnswIndex,
                                              people: dict[str, np.ndarray]) -> None:
    queries, _ = _queries(people, 200, seed=11)
    errors: list[BaseException] = []
    removed: list[str] = []  # appended only after remove() returned
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                gone = set(removed[:])  # removed before this search started
                for hits in hnsw.search(queries[:20], 5):
                    assert len({h.subject_id for h in hits}) == len(hits)
                    assert not gone & {h.subject_id for h in hits}
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            rng = np.random.default_rng(13)
            for i in range(60):
                hnsw.add(f"new-{i}", _unit(rng.standard_normal((2, DIM))))
                subject = f"subject-{i:05d}"
                hnsw.remove(subject)
                removed.append(subject)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    write = threading.Thread(target=writer)
    write.start()
    write.join(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    expected = sum(len(t) for t in people.values()) + 120 - sum(
        len(people[f"subject-{i:05d}"]) for i in range(60))
    assert len(hnsw) == expected
    for hits in hnsw.search(queries, 5):
        assert not set(removed) & {h.subject_id for h in hits}


def test_choose_index_switches_at_the_threshold() -> None:
    assert isinstance(choose_index(DIM, 10), ExactIndex)
    assert isinstance(choose_index(DIM, EXACT_THRESHOLD - 1), ExactIndex)
    assert isinstance(choose_index(DIM, EXACT_THRESHOLD), HnswIndex)
    assert isinstance(choose_index(DIM, 100, threshold=50), HnswIndex)
