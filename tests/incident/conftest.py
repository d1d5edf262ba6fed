"""Fixtures for the incident-response tests: real photos, synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photos of ``../shared/faces/natural_small`` (or $GATE_TEST_FACES_DIR)."""
    root = Path(os.environ.get("GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces"))
    folder = root / "natural_small"
    if not folder.is_dir():
        pytest.skip(f"real photos not found at {folder}: set GATE_TEST_FACES_DIR to the "
                    "labelled faces folder")
    return sorted(p for p in folder.glob("*/*") if p.suffix.lower() in {".jpg", ".png"})


def load(path: Path, longest: int) -> np.ndarray:
    """A photo scaled so its long side is ``longest`` (cubic up, area down)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    height, width = image.shape[:2]
    ratio = longest / max(height, width)
    size = (round(width * ratio), round(height * ratio))
    return cv2.resize(image, size,
                      interpolation=cv2.INTER_CUBIC if ratio > 1 else cv2.INTER_AREA)


def textured(seed: int, size: tuple[int, int] = (512, 512)) -> np.ndarray:
    """A smooth, photo-like synthetic image (blurred coloured noise plus shapes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 16, size[1] // 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    cv2.circle(image, (size[1] // 3, size[0] // 2), size[0] // 5, (30, 60, 200), -1)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)
