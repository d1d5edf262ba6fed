"""``template_similarities``: one query's cosine to each template of one subject, the same
on every index (what the permissive ``top2`` rule of ``gate.identity.classify`` reads)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gate.identity.index import DictIndex, ExactIndex, IdentityIndex

DIM = 128


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def vectors(seed: int, count: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((count, DIM)))


def _milvus(tmp_path: Path) -> IdentityIndex:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from gate.identity.milvus import MilvusIndex
    from gate.identity.protection import TemplateProtector

    return MilvusIndex(str(tmp_path / "sims.db"), DIM,
                       TemplateProtector(secrets.token_bytes(32), DIM), pack_id="test")


def _hnsw(dtype: str) -> IdentityIndex:
    from gate.identity.ann import HnswIndex

    return HnswIndex(DIM, dtype=dtype, seed=1)


KINDS = ("exact", "dict", "hnsw-f16", "hnsw-i8", "hnsw-f32", "milvus")
#: Stored precision: f16 and i8 quantise the templates.
TOLERANCE = {"hnsw-f16": 2e-3, "hnsw-i8": 2e-2}


@pytest.fixture(params=KINDS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, IdentityIndex]]:
    kind: str = request.param
    built: IdentityIndex
    if kind == "exact":
        built = ExactIndex(DIM)
    elif kind == "dict":
        built = DictIndex()
    elif kind == "milvus":
        built = _milvus(tmp_path)
    else:
        built = _hnsw(kind.split("-")[1])
    yield kind, built
    close = getattr(built, "close", None)
    if close is not None:
        close()


def test_each_template_of_the_subject_and_nobody_elses(
        index: tuple[str, IdentityIndex]) -> None:
    kind, idx = index
    assert isinstance(idx, IdentityIndex)
    gallery = vectors(1, 6)
    query = vectors(2, 1)[0]
    idx.add("sub_a", gallery[:2])
    idx.add("sub_b", gallery[2:3])
    idx.add("sub_a", gallery[3:4])  # a later enrolment adds to the same subject
    idx.add("sub_c", gallery[4:6])
    atol = TOLERANCE.get(kind, 1e-5)
    got = np.sort(idx.template_similarities(query, "sub_a"))
    assert np.allclose(got, np.sort(gallery[[0, 1, 3]] @ query), atol=atol)
    assert np.allclose(idx.template_similarities(query, "sub_b"), gallery[2:3] @ query,
                       atol=atol)
    # The best of them is what search reports for the subject.
    [hits] = idx.search(query[None, :], 3)
    best = {h.subject_id: h.similarity for h in hits}
    assert float(np.max(got)) == pytest.approx(best["sub_a"], abs=atol)


def test_unknown_and_removed_subjects_have_no_templates(
        index: tuple[str, IdentityIndex]) -> None:
    _, idx = index
    gallery = vectors(3, 3)
    idx.add("sub_a", gallery[:2])
    idx.add("sub_b", gallery[2:])
    assert idx.remove("sub_a") == 2
    assert idx.template_similarities(gallery[0], "sub_a").size == 0
    assert idx.template_similarities(gallery[0], "sub_nobody").size == 0
    assert idx.template_similarities(gallery[2], "sub_b") == pytest.approx([1.0], abs=2e-2)
    idx.clear()
    assert idx.template_similarities(gallery[2], "sub_b").size == 0


def test_a_saved_hnsw_index_opened_as_a_view_answers_too(tmp_path: Path) -> None:
    from gate.identity.ann import HnswIndex

    gallery, query = vectors(4, 3), vectors(5, 1)[0]
    idx = HnswIndex(DIM, seed=1)
    idx.add("sub_a", gallery)
    idx.save(tmp_path / "index.usearch", checkpoint=1)
    view = HnswIndex.load(tmp_path / "index.usearch", view=True)
    assert np.allclose(np.sort(view.template_similarities(query, "sub_a")),
                       np.sort(gallery @ query), atol=2e-3)
