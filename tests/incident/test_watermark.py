"""The invisible watermark: payload digest, embed/extract, matching, and the fake."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gate.errors import InvalidImage
from gate.marking.watermark import (
    MARK_BYTES,
    Extraction,
    FakeWatermarker,
    IssuedMarks,
    MarkIndex,
    MarkMatch,
    MarkMatcher,
    TiledWatermarker,
    Watermarker,
    mark_bands,
    mark_digest,
)

from .conftest import jpeg, load, textured

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def marker() -> TiledWatermarker:
    return TiledWatermarker(KEY)


def _extraction(bits: bytes, *, present: bool = True) -> Extraction:
    return Extraction(present=present, bits=bits, soft=(5.0,) * 64, sync_z=30.0)


def _flip(digest: bytes, *positions: int) -> bytes:
    value = int.from_bytes(digest, "big")
    for p in positions:
        value ^= 1 << p
    return value.to_bytes(MARK_BYTES, "big")


# --------------------------------------------------------------------------- digest


def test_mark_digest_is_keyed_truncated_hmac() -> None:
    one = mark_digest(KEY, "req-1")
    assert len(one) == MARK_BYTES
    assert one == mark_digest(KEY, "req-1")
    assert one != mark_digest(KEY, "req-2")
    assert one != mark_digest(bytes(32), "req-1")


@pytest.mark.parametrize(("key", "request_id"), [(b"short", "r"), (KEY, "")])
def test_mark_digest_rejects_weak_key_and_empty_id(key: bytes, request_id: str) -> None:
    with pytest.raises(ValueError, match=r"key|request_id"):
        mark_digest(key, request_id)


# --------------------------------------------------------------------------- embed/extract


def test_embed_keeps_shape_and_input_and_is_faint(marker: TiledWatermarker) -> None:
    image = textured(1)
    before = image.copy()
    marked = marker.embed(image, mark_digest(KEY, "r"))
    assert marked.shape == image.shape and marked.dtype == np.uint8
    assert np.array_equal(image, before)
    mse = float(np.mean((marked.astype(float) - image) ** 2))
    assert 10 * np.log10(255**2 / mse) > 36  # PSNR, dB


def test_marked_image_reads_back(marker: TiledWatermarker) -> None:
    payload = mark_digest(KEY, "req-read")
    found = marker.extract(marker.embed(textured(2), payload))
    assert found.present and found.bits == payload
    assert found.scale == 1.0 and found.weakest_bit_z > 1


def test_mark_survives_crop_resize_and_jpeg(marker: TiledWatermarker) -> None:
    payload = mark_digest(KEY, "req-attacked")
    marked = marker.embed(textured(3, (640, 800)), payload)
    attacked = jpeg(cv2.resize(marked[64:, 80:], None, fx=0.6, fy=0.6,
                               interpolation=cv2.INTER_AREA), 70)
    found = marker.extract(attacked)
    match = MarkMatcher(IssuedMarks([payload, mark_digest(KEY, "other")])).match(found)
    assert found.present and match is not None and match.digest == payload
    assert found.scale < 0.95  # the crop was found, not assumed


def test_unmarked_and_foreign_key_images_are_not_present(marker: TiledWatermarker) -> None:
    assert not marker.extract(textured(4)).present
    other = TiledWatermarker(bytes(32))
    foreign = other.embed(textured(5), mark_digest(bytes(32), "theirs"))
    assert other.extract(foreign).present
    assert not marker.extract(foreign).present


@pytest.mark.parametrize("bad", [
    np.zeros((512, 512), np.uint8),
    np.zeros((512, 512, 4), np.uint8),
    np.zeros((512, 512, 3), np.float32),
    "not pixels",
])
def test_bad_pixels_are_refused(marker: TiledWatermarker, bad: object) -> None:
    with pytest.raises(InvalidImage, match="HxWx3 uint8"):
        marker.embed(bad, bytes(8))  # type: ignore[arg-type]
    with pytest.raises(InvalidImage, match="HxWx3 uint8"):
        marker.extract(bad)  # type: ignore[arg-type]


def test_too_small_image_and_bad_payload_are_refused(marker: TiledWatermarker) -> None:
    with pytest.raises(InvalidImage, match="too small"):
        marker.embed(np.zeros((100, 400, 3), np.uint8), bytes(8))
    with pytest.raises(ValueError, match="8 bytes"):
        marker.embed(textured(6), b"1234")
    assert not marker.extract(np.zeros((20, 20, 3), np.uint8)).present


def test_watermarker_options_are_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TiledWatermarker(b"short")
    with pytest.raises(ValueError, match="strength"):
        TiledWatermarker(KEY, strength=0)


def test_both_implementations_satisfy_the_protocol(marker: TiledWatermarker) -> None:
    assert isinstance(marker, Watermarker)
    assert isinstance(FakeWatermarker(), Watermarker)
    assert isinstance(IssuedMarks(), MarkIndex)


# --------------------------------------------------------------------------- matching


def test_matcher_accepts_the_unique_nearest_issued_digest() -> None:
    digest = mark_digest(KEY, "a")
    issued = IssuedMarks([digest, mark_digest(KEY, "b")])
    matcher = MarkMatcher(issued, max_distance=4)
    assert matcher.match(_extraction(digest)) == MarkMatch(digest, 0)
    assert matcher.match(_extraction(_flip(digest, 1, 9, 40))) == MarkMatch(digest, 3)
    assert matcher.match(_extraction(_flip(digest, 1, 9, 40, 50, 63))) is None


def test_matcher_refuses_absent_marks_and_ties() -> None:
    digest = mark_digest(KEY, "a")
    twin = _flip(digest, 0, 1)
    matcher = MarkMatcher(IssuedMarks([digest, twin]))
    assert matcher.match(_extraction(digest, present=False)) is None
    assert matcher.match(_extraction(_flip(digest, 0))) is None  # 1 bit from both
    assert matcher.match(_extraction(digest)) == MarkMatch(digest, 0)
    assert matcher.match_any([_extraction(digest, present=False),
                              _extraction(twin)]) == MarkMatch(twin, 0)
    with pytest.raises(ValueError, match="max_distance"):
        MarkMatcher(IssuedMarks(), max_distance=9)


def test_issued_marks_search_and_validation() -> None:
    digests = [mark_digest(KEY, str(i)) for i in range(100)]
    issued = IssuedMarks(digests[:50])
    for d in digests[50:]:
        issued.add(d)
    assert len(issued) == 100
    hits = issued.within(_flip(digests[7], 3, 4), 2)
    assert hits[0] == MarkMatch(digests[7], 2)
    assert IssuedMarks().within(digests[0], 4) == []
    with pytest.raises(ValueError, match="8 bytes"):
        issued.add(b"123")
    with pytest.raises(ValueError, match="8 bytes"):
        issued.within(b"123", 1)


def test_mark_bands_pigeonhole() -> None:
    """A digest within d bits of another shares one of d + 1 bands with it exactly."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        digest = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        near = _flip(digest, *rng.choice(64, 4, replace=False).tolist())
        bands, other = mark_bands(digest, 5), mark_bands(near, 5)
        assert any(a == b for a, b in zip(bands, other, strict=True))
    assert sum(1 for _ in mark_bands(bytes(8), 4)) == 4
    assert mark_bands(b"\xff" * 8, 4) == (0xFFFF,) * 4
    with pytest.raises(ValueError, match="8 bytes"):
        mark_bands(b"x", 4)


# --------------------------------------------------------------------------- fake


def test_fake_watermarker_round_trip() -> None:
    fake = FakeWatermarker()
    payload = mark_digest(KEY, "fake")
    found = fake.extract(fake.embed(textured(7, (64, 64)), payload))
    assert found.present and found.bits == payload
    assert not fake.extract(textured(8, (64, 64))).present
    assert not fake.extract(np.zeros((2, 2, 3), np.uint8)).present
    with pytest.raises(InvalidImage, match="too small"):
        fake.embed(np.zeros((4, 4, 3), np.uint8), payload)


# --------------------------------------------------------------------------- real photos


@pytest.mark.real
def test_real_photos_traced_after_reencode_resize_and_crop(
        marker: TiledWatermarker, photos: list[Path]) -> None:
    large = [p for p in photos if max(cv2.imread(str(p)).shape[:2]) >= 400][:3]
    payloads = [mark_digest(KEY, f"real-{i}") for i in range(len(large))]
    matcher = MarkMatcher(IssuedMarks(payloads))
    for path, payload in zip(large, payloads, strict=True):
        marked = marker.embed(load(path, 1024), payload)
        height, width = marked.shape[:2]
        attacked = jpeg(cv2.resize(marked[height // 10:, width // 10:], None, fx=0.5,
                                   fy=0.5, interpolation=cv2.INTER_AREA), 70)
        assert matcher.match(marker.extract(attacked)) == MarkMatch(payload, 0), path.name


@pytest.mark.real
def test_unmarked_real_photos_give_no_trace(marker: TiledWatermarker,
                                            photos: list[Path]) -> None:
    matcher = MarkMatcher(IssuedMarks(mark_digest(KEY, str(i)) for i in range(1000)))
    for path in photos[::20]:
        found = marker.extract(load(path, 512))
        assert not found.present, path.name
        assert matcher.match(found) is None
