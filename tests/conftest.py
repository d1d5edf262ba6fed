"""Shared fixtures: test data locations and gates built from fakes or real models."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared(env: str, sub: str) -> Path:
    return Path(os.environ.get(env, REPO.parent / "shared" / sub))


def _require(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    if os.environ.get("GATE_REQUIRE_TEST_FACES") == "1":
        pytest.fail(f"{what} not found at {path} (GATE_REQUIRE_TEST_FACES=1)")
    pytest.skip(f"{what} not found at {path}")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """``../shared/faces`` (or $GATE_TEST_FACES_DIR): labelled real photos."""
    return _require(_shared("GATE_TEST_FACES_DIR", "faces"), "labelled test faces")


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """``../shared/models`` (or $GATE_TEST_MODELS_DIR): extra real weights (SCRFD)."""
    return _require(_shared("GATE_TEST_MODELS_DIR", "models"), "shared test models")


def template_face(centre: tuple[float, float], scale: float, score: float,
                  shift: float = 0.0) -> Any:
    """A scripted upright ``Detection``: landmarks on the ArcFace template scaled by
    ``scale`` around ``centre`` (moved ``shift`` px right), box 112 * ``scale`` wide."""
    from gate.vision.align import ARCFACE_TEMPLATE
    from gate.vision.detect import Detection

    pts = (ARCFACE_TEMPLATE - 56.0) * scale + np.asarray(centre) + (shift, 0.0)
    half = 56.0 * scale
    return Detection(bbox=(centre[0] - half, centre[1] - half, centre[0] + half,
                           centre[1] + half),
                     landmarks=tuple((float(x), float(y)) for x, y in pts), score=score)


def noise_png(seed: int, size: int = 112) -> bytes:
    """A distinct, sharp synthetic 'person' for the fake detector/embedder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def picture_png(seed: int, size: tuple[int, int] = (640, 800)) -> bytes:
    """A photo-like PNG (smooth colour field and discs): what a generator might output."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 16, size[1] // 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        centre = (int(rng.integers(0, size[1])), int(rng.integers(0, size[0])))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(20, 120)), colour, -1)
    noisy = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", noisy)
    assert ok
    return buf.tobytes()


@pytest.fixture
def fake_gate(tmp_path: Path) -> Iterator[object]:
    """A FaceGate on fake detector/embedder, real SQLite store, real policy and audit."""
    from gate.engine import FaceGate

    gate = FaceGate.open(tmp_path / "data", detector="fake", embedder="fake",
                         match_threshold=0.9)
    yield gate
    gate.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gate.settings import Settings

    return Settings().resolved_model_cache()


@pytest.fixture(scope="session", autouse=True)
def _milvus_pass(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """CI's second pass runs the engine suites with ``GATE_INDEX=milvus`` (the Makefile's
    ``test-milvus``). Every gate of the session shares one Milvus Lite server, kept up by
    this fixture, so a gate opens in milliseconds, not the server's 1.7 s start; each gate
    still has its own collection (named after its own, random, template key)."""
    if os.environ.get("GATE_INDEX") != "milvus" or os.environ.get("GATE_MILVUS_URI"):
        yield
        return
    from gate.identity.milvus import MilvusIndex
    from gate.identity.protection import TemplateProtector

    uri = str(tmp_path_factory.mktemp("milvus") / "session.db")
    patch = pytest.MonkeyPatch()
    patch.setenv("GATE_MILVUS_URI", uri)
    keepalive = MilvusIndex(uri, 2, TemplateProtector(os.urandom(32), 2),
                            prefix="session_keepalive")
    try:
        yield
    finally:
        keepalive.close()
        patch.undo()
