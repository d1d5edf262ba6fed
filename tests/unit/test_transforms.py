"""Evasion transforms on synthetic images: output shapes, geometry and determinism."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from gate.evaluation.transforms import (
    CROWD_CELL_PX,
    NEUTRAL,
    SCENE_CANVAS,
    SHRINK_CANVAS,
    TRANSFORMS,
    FaceGeometry,
    TransformContext,
    apply,
    decode_bgr,
    face_box,
    locate_face,
    png,
    resolve,
)
from gate.vision.detect import Detection

H, W = 90, 120


def photo(seed: int = 0, h: int = H, w: int = W) -> bytes:
    """A synthetic 'photo' whose pixels never equal the neutral grey (0..100)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 101, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


FACE = FaceGeometry(bbox=(30.0, 15.0, 90.0, 75.0), eyes=((45.0, 35.0), (75.0, 35.0)))
OTHERS = tuple(photo(100 + i, 80, 80) for i in range(4))


def ctx(seed: int = 1, face: FaceGeometry | None = FACE) -> TransformContext:
    return TransformContext(seed=seed, face=face, others=OTHERS)


def shape(data: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as im:
        return (im.height, im.width, len(im.getbands()))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_transform_returns_a_decodable_image_deterministically(name: str) -> None:
    data = photo()
    first = apply(name, data, ctx())
    assert first == apply(name, data, ctx())  # same input, same seed: same bytes
    assert decode_bgr(first).dtype == np.uint8


@pytest.mark.parametrize("name", ["noise12", "shrink48", "shrink32", "in_scene", "crowd"])
def test_seeded_transforms_change_with_the_seed(name: str) -> None:
    data = photo()
    assert apply(name, data, ctx(seed=1)) != apply(name, data, ctx(seed=2))


def test_registry_names_and_resolve() -> None:
    assert list(TRANSFORMS)[:1] == ["clean"]
    assert {"clean", "jpeg20", "blur2", "grayscale", "hflip", "rot90", "rot180", "rot30",
            "noise12", "up2x_jpeg50", "shrink48", "shrink32", "eyes_band", "tight_crop",
            "in_scene", "crowd"} == set(TRANSFORMS)
    assert resolve("all") == list(TRANSFORMS)
    assert resolve("hflip, clean,hflip") == ["hflip", "clean"]
    with pytest.raises(ValueError, match="unknown transforms"):
        resolve("clean,rot45")


def test_clean_is_the_same_bytes() -> None:
    data = photo()
    assert apply("clean", data) is data


def test_shapes_of_the_geometric_transforms() -> None:
    data = photo()
    assert shape(apply("hflip", data)) == (H, W, 3)
    assert shape(apply("rot90", data)) == (W, H, 3)
    assert shape(apply("rot180", data)) == (H, W, 3)
    assert shape(apply("grayscale", data)) == (H, W, 1)
    assert shape(apply("up2x_jpeg50", data)) == (2 * H, 2 * W, 3)
    assert shape(apply("jpeg20", data))[:2] == (H, W)
    rad = np.deg2rad(30)
    expected = (int(np.ceil(W * np.sin(rad) + H * np.cos(rad))),
                int(np.ceil(H * np.sin(rad) + W * np.cos(rad))))
    assert shape(apply("rot30", data))[:2] == expected


def test_pixel_exact_flips_and_rotations() -> None:
    original = decode_bgr(photo())
    assert np.array_equal(decode_bgr(apply("hflip", photo())), original[:, ::-1])
    twice = apply("rot180", apply("rot180", photo()))
    assert np.array_equal(decode_bgr(twice), original)
    quarter = apply("rot90", apply("rot90", apply("rot90", apply("rot90", photo()))))
    assert np.array_equal(decode_bgr(quarter), original)


def test_rot30_keeps_every_pixel_on_the_canvas() -> None:
    white = png(np.full((H, W, 3), 255, np.uint8))
    out = decode_bgr(apply("rot30", white))
    # The rotated rectangle's area survives (nothing cut), corners are black.
    assert abs(int(np.count_nonzero(out[:, :, 0] > 127)) - H * W) < 0.03 * H * W
    assert out[0, 0].tolist() == [0, 0, 0]


def test_noise12_has_sigma_12() -> None:
    flat = png(np.full((200, 200, 3), 128, np.uint8))
    out = decode_bgr(apply("noise12", flat, ctx())).astype(np.float64)
    assert 11.0 < float(out.std()) < 13.0
    assert abs(float(out.mean()) - 128.0) < 0.5


def test_blur2_smooths() -> None:
    data = photo()
    assert decode_bgr(apply("blur2", data)).std() < 0.5 * decode_bgr(data).std()


@pytest.mark.parametrize(("name", "face_px"), [("shrink48", 48), ("shrink32", 32)])
def test_shrink_scales_the_face_box_into_a_neutral_canvas(name: str, face_px: int) -> None:
    out = decode_bgr(apply(name, photo(), ctx()))
    assert out.shape == (SHRINK_CANVAS[1], SHRINK_CANVAS[0], 3)
    factor = face_px / 60.0  # the face box is 60 px on its shorter side
    pasted = np.count_nonzero(np.any(out != NEUTRAL, axis=2))
    assert abs(pasted - round(H * factor) * round(W * factor)) <= 2


def test_shrink_without_geometry_assumes_a_centred_face_crop() -> None:
    out = decode_bgr(apply("shrink48", photo(), ctx(face=None)))
    factor = 48 / (0.6 * H)
    pasted = np.count_nonzero(np.any(out != NEUTRAL, axis=2))
    assert abs(pasted - round(H * factor) * round(W * factor)) <= 2


def test_eyes_band_blacks_out_the_eye_line() -> None:
    out = decode_bgr(apply("eyes_band", photo(), ctx()))
    assert out[35, 45].tolist() == [0, 0, 0] and out[35, 75].tolist() == [0, 0, 0]
    assert out[35, 60].tolist() == [0, 0, 0]
    assert np.any(out[70] != 0)  # the mouth is untouched
    # Without landmarks: a band across the upper part of the face box.
    plain = decode_bgr(apply("eyes_band", photo(), ctx(face=None)))
    x1, y1, x2, y2 = face_box(plain, None)
    band_row = y1 + int(0.3 * (y2 - y1))
    assert not np.any(plain[band_row, x1:x2])


def test_tight_crop_is_the_box_plus_margin() -> None:
    h, w, _ = shape(apply("tight_crop", photo(), ctx()))
    assert (h, w) == (60 + 2 * 3, 60 + 2 * 3)


def test_in_scene_pastes_the_face_into_a_large_scene() -> None:
    out = decode_bgr(apply("in_scene", photo(), ctx()))
    assert out.shape == (SCENE_CANVAS[1], SCENE_CANVAS[0], 3)


def test_crowd_needs_other_people_and_makes_a_grid() -> None:
    out = decode_bgr(apply("crowd", photo(), ctx()))
    assert out.shape[1] == 3 * CROWD_CELL_PX and out.shape[0] % CROWD_CELL_PX == 0
    with pytest.raises(ValueError, match="other people"):
        apply("crowd", photo(), TransformContext(seed=1))


class _ScriptedDetector:
    """Finds a face only when the image has a grey border (like a tight-crop miss)."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        if image[0, 0].tolist() != [NEUTRAL] * 3:
            return []
        h, w = image.shape[:2]
        return [Detection(bbox=(w / 3, h / 3, 2 * w / 3, 2 * h / 3),
                          landmarks=((w * 0.4, h * 0.45), (w * 0.6, h * 0.45), (w / 2, h / 2),
                                     (w * 0.42, h * 0.6), (w * 0.58, h * 0.6)), score=0.9)]


def test_locate_face_retries_on_a_padded_copy_and_maps_back() -> None:
    image = decode_bgr(photo(h=100, w=100))
    det = _ScriptedDetector()
    geo = locate_face(det, image, pad_fraction=0.5)
    assert det.calls == 2 and geo is not None
    # Padded image is 200x200 with the face box at 66.7..133.3 -> 16.7..83.3 in the image.
    assert geo.bbox == pytest.approx((200 / 3 - 50, 200 / 3 - 50, 400 / 3 - 50, 400 / 3 - 50))
    assert geo.eyes is not None and geo.eyes[0] == pytest.approx((30.0, 40.0))
    assert locate_face(det, image, pad_fraction=0.0) is None


def test_transforms_take_any_input_format() -> None:
    rgba = np.dstack([np.full((50, 60, 3), 90, np.uint8), np.full((50, 60), 255, np.uint8)])
    ok, buf = cv2.imencode(".png", rgba)
    assert ok
    for name in TRANSFORMS:
        assert decode_bgr(apply(name, buf.tobytes(), ctx(face=None))).ndim == 3
