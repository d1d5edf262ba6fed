"""Test-time views (issue 17): every face's vector averages its crop, zoomed crops of the
same face and all their mirrors; the check path embeds the crop alone first and
completes the rest only where it can change a reading. Fast fakes here; real photos in
``tests/real/test_recognition_research.py``."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from gate.pipeline import MAX_CACHED_CROP_BYTES, AnalysedFace, ImageAnalysis, cacheable
from gate.settings import Settings
from gate.vision.align import ARCFACE_TEMPLATE, align_face, zoom_views
from gate.vision.embed import FakeEmbedder, FlipAveragingEmbedder, mirror

LANDMARKS = np.array([[80.0, 90.0], [140.0, 88.0], [110.0, 125.0], [86.0, 160.0],
                      [136.0, 158.0]], dtype=np.float32)


def picture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (240, 220, 3), dtype=np.uint8)


def test_zoom_scales_the_template_about_its_centre() -> None:
    _, plain = align_face(picture(), LANDMARKS)
    _, wide = align_face(picture(), LANDMARKS, zoom=1.1)
    centre = ARCFACE_TEMPLATE.mean(axis=0)
    spread = np.linalg.norm(plain - centre, axis=1)
    assert np.allclose(np.linalg.norm(wide - centre, axis=1), 1.1 * spread, atol=0.05)
    assert np.allclose(wide.mean(axis=0), centre, atol=0.05)


def test_zoom_views_are_the_crops_at_each_zoom() -> None:
    views = zoom_views(picture(), LANDMARKS, (0.94, 1.06))
    assert len(views) == 2
    assert np.array_equal(views[1], align_face(picture(), LANDMARKS, zoom=1.06)[0])
    assert not np.array_equal(views[0], align_face(picture(), LANDMARKS)[0])
    assert zoom_views(picture(), LANDMARKS, ()) == ()


def test_views_average_every_view_and_mirror() -> None:
    base = FakeEmbedder()
    tta = FlipAveragingEmbedder(base)
    crops = [align_face(picture(s), LANDMARKS)[0] for s in (1, 2)]
    views = [[c, *zoom_views(picture(s), LANDMARKS, (0.94, 1.06))]
             for c, s in zip(crops, (1, 2), strict=True)]
    got = tta.embed_views(views)
    for row, face in zip(got, views, strict=True):
        expected = sum(base.embed([v])[0] + base.embed([mirror(v)])[0] for v in face)
        assert np.allclose(row, expected / np.linalg.norm(expected), atol=1e-6)
    # with the crop alone it is plain test-time flip
    assert np.allclose(tta.embed(crops), tta.embed_views([[c] for c in crops]))


def test_completing_known_single_vectors_gives_the_same_vector() -> None:
    tta = FlipAveragingEmbedder(FakeEmbedder())
    views = [[align_face(picture(s), LANDMARKS)[0],
              *zoom_views(picture(s), LANDMARKS, (0.94, 1.06))] for s in (3, 4, 5)]
    singles = tta.embed_single([face[0] for face in views])
    assert np.allclose(tta.complete(views, singles), tta.embed_views(views), atol=1e-6)
    flip_only = [[face[0]] for face in views]
    assert np.allclose(tta.complete(flip_only, singles), tta.embed_views(flip_only),
                       atol=1e-6)


@pytest.mark.parametrize("zooms", [(0.5,), (1.3,), (0.9, 0.95, 1.05, 1.1, 1.2)])
def test_zoom_views_setting_is_bounded(zooms: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError):
        Settings(zoom_views=zooms)


def test_zoom_views_can_be_switched_off() -> None:
    assert Settings(zoom_views=()).zoom_views == ()


def _analysis(faces: int, views: int) -> ImageAnalysis:
    crop = np.zeros((112, 112, 3), np.uint8)
    face = AnalysedFace(frame_index=0, bbox_px=(0.0, 0.0, 10.0, 10.0), landmarks_px=(),
                        det_score=0.9, size_px=10.0, quality=0.5,
                        vector=np.ones(4, np.float32), views=(crop,) * views)
    return ImageAnalysis(faces=(face,) * faces, with_age=False)


def test_the_cache_keeps_no_more_than_a_mebibyte_of_crops_per_image() -> None:
    """Deferred views are pixels held in memory: an image with many faces is analysed
    again when sent again rather than cached with all its crops."""
    per_face = 3 * 112 * 112 * 3
    fits = MAX_CACHED_CROP_BYTES // per_face
    assert cacheable(_analysis(fits, 3))
    assert not cacheable(_analysis(fits + 1, 3))
    assert cacheable(_analysis(500, 0))  # final vectors only: no pixels held
