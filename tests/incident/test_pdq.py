"""PDQ hashing, distance, quality handling and the blocklist matcher."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gate.errors import InvalidImage
from gate.incident.pdq import (
    PDQ_MATCH_THRESHOLD,
    FrameHash,
    InvalidHash,
    PdqBlocklist,
    PdqMatch,
    PdqUnavailable,
    normalize_pdq,
    pdq_distance,
    pdq_hash,
    pdq_hashes,
)

from .conftest import jpeg, load, textured

ZERO = "0" * 64
ONES = "f" * 64


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _with_bits(value: str, count: int) -> str:
    """``value`` with its first ``count`` bits flipped."""
    number = int(value, 16) ^ (((1 << count) - 1) << (256 - count))
    return f"{number:064x}"


def test_normalize_and_distance() -> None:
    assert normalize_pdq(" " + "AB" * 32 + "\n") == "ab" * 32
    assert pdq_distance(ZERO, ONES) == 256
    assert pdq_distance(ZERO, _with_bits(ZERO, 31)) == 31
    for bad in ("", "xyz", "0" * 63, "g" * 64, 12):
        with pytest.raises(InvalidHash, match="64 hexadecimal"):
            normalize_pdq(bad)  # type: ignore[arg-type]


def test_hash_of_pixels_and_of_bytes_agree_and_use_threatexchange_bit_order() -> None:
    import pdqhash

    image = textured(11, (400, 440))  # below HASH_SIDE_PX: hashed as is
    digest, quality = pdq_hash(image)
    assert len(digest) == 64 and 0 <= quality <= 100
    assert pdq_hash(_png(image)) == (digest, quality)
    # python-threatexchange: the bits in vector order, read as one big-endian number
    vector, _ = pdqhash.compute(np.ascontiguousarray(image[:, :, ::-1]))
    assert digest == f"{int(''.join(str(int(b)) for b in vector), 2):064x}"


def test_large_images_are_shrunk_first_and_stay_close_to_the_full_size_hash() -> None:
    import pdqhash

    image = textured(12, (1024, 1280))
    vector, _ = pdqhash.compute(np.ascontiguousarray(image[:, :, ::-1]))
    full = f"{int(''.join(str(int(b)) for b in vector), 2):064x}"
    assert pdq_distance(pdq_hash(image)[0], full) <= 16


def test_flat_images_have_low_quality_and_are_not_matched() -> None:
    flat = np.full((300, 300, 3), 120, np.uint8)
    [frame] = pdq_hashes(_png(flat))
    assert not frame.usable
    blocklist = PdqBlocklist([("flat", frame.hash)])
    assert blocklist.match_frames([frame]) == []
    assert blocklist.match(frame.hash)[0].entry_id == "flat"  # raw match still works


def test_every_frame_of_an_animation_is_hashed() -> None:
    frames = [Image.fromarray(textured(20 + i, (200, 200))[:, :, ::-1]) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    hashes = pdq_hashes(buf.getvalue())
    assert [h.frame_index for h in hashes] == [0, 1, 2]
    assert len({h.hash for h in hashes}) == 3


@pytest.mark.parametrize("bad", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_bad_bytes_are_invalid_images(bad: bytes) -> None:
    with pytest.raises(InvalidImage):
        pdq_hashes(bad)
    with pytest.raises(InvalidImage):
        pdq_hash(bad)


def test_missing_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pdqhash", None)  # import now raises ImportError
    with pytest.raises(PdqUnavailable, match="pdqhash") as caught:
        pdq_hash(textured(13))
    assert caught.value.code == "pdq_unavailable"


def test_bad_pixels_are_refused() -> None:
    with pytest.raises(InvalidImage, match="HxWx3 uint8"):
        pdq_hash(np.zeros((10, 10), np.uint8))


def test_blocklist_threshold_remove_and_dedup() -> None:
    blocklist = PdqBlocklist([("a", ZERO), ("a", _with_bits(ZERO, 10)), ("b", ONES)])
    assert len(blocklist) == 3
    assert blocklist.match(_with_bits(ZERO, PDQ_MATCH_THRESHOLD)) == [
        PdqMatch("a", _with_bits(ZERO, 10), PDQ_MATCH_THRESHOLD - 10)]
    assert blocklist.match(_with_bits(ZERO, PDQ_MATCH_THRESHOLD + 1))[0].distance == 22
    assert blocklist.match(_with_bits(ONES, 128)) == []
    assert [m.entry_id for m in blocklist.match_many([ZERO, ONES])] == ["a", "b"]
    assert blocklist.remove("a") == 2
    assert blocklist.match(ZERO) == [] and len(blocklist) == 1
    usable = FrameHash(ONES, 90, 0)
    assert blocklist.match_frames([usable])[0].entry_id == "b"
    with pytest.raises(InvalidHash):
        blocklist.add("c", "nope")
    with pytest.raises(ValueError, match="threshold"):
        PdqBlocklist(threshold=128)


@pytest.mark.real
def test_reported_photo_reused_matches_but_another_photo_of_the_person_does_not(
        photos: list[Path]) -> None:
    by_person: dict[str, list[Path]] = {}
    for path in photos:
        by_person.setdefault(path.parent.name, []).append(path)
    person = sorted(p for p in by_person.values() if len(p) >= 5)[0]
    reported = load(person[0], 1024)
    blocklist = PdqBlocklist([("report-1", pdq_hash(reported)[0])])
    reused = jpeg(cv2.resize(reported, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), 70)
    [frame] = pdq_hashes(_png(reused))
    assert frame.usable
    assert [m.entry_id for m in blocklist.match_frames([frame])] == ["report-1"]
    for other in person[2:5]:
        assert blocklist.match_frames(pdq_hashes(_png(load(other, 1024)))) == [], other.name
