"""The engine on the shared Milvus index (``GATE_INDEX=milvus``, Milvus Lite here).

Wiring (settings -> factory -> follower), the change feed applied idempotently, erasure
before the call returns, a replica that was down catching up (including an erasure it
only learns of from the feed), constant-time start from the index's checkpoint, key
rotation, readiness, and real photos deciding exactly as on the default index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra [milvus])")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra [milvus])")

from gate.engine import FaceGate
from gate.identity.index import ExactIndex, SharedIndex
from gate.identity.milvus import MilvusIndex
from gate.types import Decision, GateRequest, ImageInput, Requester
from tests.conftest import noise_png

ADA, BOB, CAROL = (noise_png(i) for i in (1, 2, 3))
STUDIO = Requester(app_id="studio", user_id="u1")


def swap(*images: bytes) -> GateRequest:
    return GateRequest(operation="face_swap", requester=STUDIO,
                       images=[ImageInput(role="target", data=i) for i in images])


def open_fake(data_dir: Path, **overrides: Any) -> FaceGate:
    overrides.setdefault("index", "milvus")
    return FaceGate.open(data_dir, detector="fake", embedder="fake", match_threshold=0.9,
                         **overrides)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def gate(data_dir: Path) -> Iterator[FaceGate]:
    g = open_fake(data_dir)
    yield g
    g.close()


def vector_of(gate: FaceGate, image: bytes) -> np.ndarray:
    found = gate.largest_face_vector(image)
    assert found is not None
    return found[0]


def milvus_of(gate: FaceGate) -> MilvusIndex:
    index = gate.follower.index
    assert isinstance(index, MilvusIndex) and isinstance(index, SharedIndex)
    return index


def test_settings_choose_milvus_lite_in_the_data_dir(gate: FaceGate, data_dir: Path) -> None:
    index = milvus_of(gate)
    assert index.is_lite and Path(index.uri) == (data_dir / "milvus.db").resolve()
    assert gate.readiness()["index"] is True
    assert gate.settings.index == "milvus"


def test_enrol_grant_check_erase_through_milvus(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"], content=["general"])
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    assert gate.check(swap(BOB)).verdict == "allow"
    assert gate.check(swap(ADA)).verdict == "deny"
    index = milvus_of(gate)
    vector = vector_of(gate, ADA)
    assert index.search(vector[None, :], 3)[0][0].subject_id == ada.subject_id
    assert gate.erase(ada.subject_id)
    # erased from Milvus before erase() returned: a search no longer finds the vectors
    assert all(h.subject_id != ada.subject_id for h in index.search(vector[None, :], 3)[0])
    assert len(index.template_similarities(vector, ada.subject_id)) == 0
    d = gate.check(swap(ADA))
    assert d.faces[0].identity == "unknown"


def test_the_feed_applied_twice_or_from_the_start_changes_nothing(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    carol = gate.enroll([CAROL], display_name="Carol", status="protected")
    gate.erase(carol.subject_id)
    index = milvus_of(gate)
    before = len(index)
    # re-delivery: replay the whole feed from the beginning
    gate.follower._state.seq = 0
    gate.follower.sync()
    assert len(index) == before == 1
    vector = vector_of(gate, BOB)
    assert index.search(vector[None, :], 3)[0][0].subject_id == bob.subject_id


def test_an_erasure_racing_a_replay_leaves_no_vectors(gate: FaceGate,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica B read Bob's templates for a replay just before replica A erased him, and
    writes them after A cleared Milvus: B must notice and remove them again."""
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    store, pack = gate.follower.store, gate.follower.pack_id
    stale = store.subject_templates(bob.subject_id, pack)
    assert gate.erase(bob.subject_id)
    index = milvus_of(gate)
    assert len(index) == 0
    real = store.subject_templates
    reads = iter([stale])
    monkeypatch.setattr(store, "subject_templates",
                        lambda subject_id, model_pack: next(reads, None) or real(subject_id,
                                                                                model_pack))
    gate.follower._add(bob.subject_id)  # the replay, with the read made before the erasure
    assert len(index) == 0
    assert all(h.subject_id != bob.subject_id
               for h in index.search(vector_of(gate, BOB)[None], 3)[0])


def test_a_replica_that_was_down_catches_up_and_starts_without_a_rebuild(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = open_fake(data_dir)
    ada = first.enroll([ADA], display_name="Ada", status="protected")
    first.close()
    # While the Milvus replica is down, another process (default in-process index, same
    # database) enrols Bob and erases Ada: the feed names Ada's erasure by digest only.
    other = open_fake(data_dir, index="exact")
    bob = other.enroll([BOB], display_name="Bob", status="consenting")
    other.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                content=["general"])
    assert other.erase(ada.subject_id)
    other.close()

    from gate.consent.store import SqlConsentStore

    def no_rebuild(*_: object, **__: object) -> Iterator[tuple[str, bytes]]:
        raise AssertionError("a replica on Milvus must not rebuild the index at start")

    monkeypatch.setattr(SqlConsentStore, "iter_templates", no_rebuild)
    again = open_fake(data_dir)
    try:
        index = milvus_of(again)
        assert index.checkpoint() == again.follower.seq == again.parts.store.epoch()
        vector_ada = vector_of(again, ADA)
        assert all(h.subject_id != ada.subject_id for h in index.search(vector_ada[None], 3)[0])
        assert again.check(swap(BOB)).verdict == "allow"
        assert again.check(swap(ADA)).faces[0].identity == "unknown"
    finally:
        again.close()


def test_a_new_collection_is_built_from_the_store_once(data_dir: Path) -> None:
    first = open_fake(data_dir, index="exact")
    bob = first.enroll([BOB], display_name="Bob", status="consenting")
    first.close()
    gate = open_fake(data_dir)  # Milvus for the first time: built from the store
    try:
        index = milvus_of(gate)
        assert len(index) == 1 and index.checkpoint() == gate.parts.store.epoch()
        vector = vector_of(gate, BOB)
        assert index.search(vector[None], 1)[0][0].subject_id == bob.subject_id
    finally:
        gate.close()


def test_closing_a_replica_keeps_the_shared_index(data_dir: Path) -> None:
    gate = open_fake(data_dir)
    gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.close()
    again = open_fake(data_dir)
    try:
        assert len(milvus_of(again)) == 1
    finally:
        again.close()


def test_key_rotation_reprojects_and_decisions_stay(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"], content=["general"])
    gate.enroll([ADA], display_name="Ada", status="protected")
    index = milvus_of(gate)
    old = index.collection
    assert gate.rotate_template_key() == 2
    assert index.collection != old and len(index) == 2
    assert not index._client.has_collection(old)
    assert gate.check(swap(BOB)).verdict == "allow"
    assert gate.check(swap(ADA)).verdict == "deny"


def test_milvus_down_fails_closed(gate: FaceGate) -> None:
    gate.enroll([BOB], display_name="Bob", status="consenting")
    index = milvus_of(gate)
    index._client.drop_collection(index.collection)
    d = gate.check(swap(BOB))
    assert d.verdict == "deny" and "core.fail_closed" in d.rule_ids
    assert gate.readiness()["index"] is False


# -- real photos: the same decisions as the default index --------------------------------------

def _identities(faces_dir: Path, count: int) -> list[tuple[str, list[Path]]]:
    root = faces_dir / "natural_small"
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(folder.iterdir())
        if len(photos) >= 4:
            found.append((folder.name, photos[:4]))
    return found[:count]


def _summary(d: Decision) -> tuple[Any, ...]:
    return (d.verdict, tuple(d.rule_ids),
            tuple((f.identity, f.subject_id and f.subject_id.split("_")[0],
                   None if f.similarity is None else round(f.similarity, 4))
                  for f in d.faces))


@pytest.mark.real
def test_real_photos_decide_exactly_as_on_the_default_index(faces_dir: Path,
                                                            tmp_path: Path) -> None:
    """Enrol one photo of each of eight people (protected / consenting with a grant /
    consenting without), check the others (clean and turned upside down): verdicts, rules,
    identities and similarities equal on Milvus (protected templates) and ExactIndex."""
    import cv2

    people = _identities(faces_dir, 8)
    assert len(people) >= 6
    gates = {name: FaceGate.open(tmp_path / name, index=name) for name in ("exact", "milvus")}
    try:
        assert isinstance(gates["exact"].follower.index, ExactIndex)
        names: dict[str, dict[str, str]] = {"exact": {}, "milvus": {}}
        for i, (identity, photos) in enumerate(people):
            status = "protected" if i % 3 == 0 else "consenting"
            for kind, g in gates.items():
                s = g.enroll([photos[0].read_bytes()], identity, status=status)
                names[kind][s.subject_id] = identity
                if i % 3 == 1:
                    g.grant(s.subject_id, app_id="studio", operations=["face_swap"],
                            content=["general"])
        compared = 0
        for _, photos in people:
            for photo in photos[1:]:
                data = photo.read_bytes()
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                ok, turned = cv2.imencode(".jpg", cv2.rotate(image, cv2.ROTATE_180))
                assert ok
                for probe in (data, turned.tobytes()):
                    got = {k: g.check(swap(probe)) for k, g in gates.items()}
                    exact, milvus = got["exact"], got["milvus"]
                    assert exact.verdict == milvus.verdict
                    assert exact.rule_ids == milvus.rule_ids
                    assert len(exact.faces) == len(milvus.faces)
                    for fe, fm in zip(exact.faces, milvus.faces, strict=True):
                        assert fe.identity == fm.identity
                        assert (fe.subject_id and names["exact"][fe.subject_id]) == \
                            (fm.subject_id and names["milvus"][fm.subject_id])
                        if fe.similarity is not None:
                            assert fm.similarity == pytest.approx(fe.similarity, abs=1e-4)
                    compared += 1
        assert compared >= 30
    finally:
        for g in gates.values():
            g.close()
