"""Invisible watermark carrying a keyed 64-bit digest of the request id.

Why not a library: ``trustmark`` needs torch and downloads its weights at first use;
``invisible-watermark`` imports torch even for its DCT methods; ``blind-watermark``
takes seconds per image; and none of the three survives a border crop combined with a
resize, which is what a re-posted image goes through (figures in
``docs/incident-response.md``, produced by ``benchmarks/watermark.py``). This module is
the smallest scheme that does, in numpy and OpenCV only:

* **Geometry relative to the image.** The mark lives on a grid of chips sized to the
  image: ``CHIPS_SIDE`` x ``CHIPS_SIDE`` chips of area whatever its aspect ratio (8x8 px
  per chip on a 1024x1024 image, 4x4 px on 512x512), so a resized copy carries the same
  pattern at the same relative place, and every image carries the same evidence.
* **A tiled spread-spectrum pattern.** A 32x32-chip tile repeats over the whole image. A
  quarter of its chips form a fixed, keyed *sync* pattern; the rest carry the 64 payload
  bits, 12 chips per bit, each chip signed by a keyed pseudo-random sign. The tile is
  smoothed and added to the luma, scaled by the local texture (perceptual mask), so it
  hides in detail and stays faint on flat areas.
* **Blind resynchronisation on extraction.** Cropping moves the grid and shrinks the
  image; for each candidate fraction ``scale`` of the marked image's sides still present
  (1.02 down to 0.5 in 0.5 % steps) the suspect is resampled to the working grid,
  high-passed, whitened and folded modulo the tile; one FFT correlation with the sync
  tile then tests every tile offset at once. The best peak gives scale and offset; the
  payload chips are read at that alignment.
* **Presence is explicit.** ``Extraction.present`` says whether the de-spread sync chips
  at the chosen alignment average far above zero (``sync_z``, their t-statistic); the
  payload bits mean nothing otherwise. :class:`MarkMatcher` then only accepts an issued
  digest within ``max_distance`` bits, and only when it is the unique nearest one, so an unmarked
  photo gives *not found*, never somebody else's record (analysis in the docs).

Keys: one 32-byte secret per deployment. :func:`mark_digest` derives the payload from it
and the request id (HMAC-SHA256, truncated to 64 bits: a person's id never enters the
mark); :class:`TiledWatermarker` derives its sync and chip patterns from it, so another
deployment's marks (or ours read with another key) are not found.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from gate.errors import InvalidImage

__all__ = [
    "MARK_BITS",
    "MARK_BYTES",
    "Extraction",
    "FakeWatermarker",
    "IssuedMarks",
    "MarkIndex",
    "MarkMatch",
    "MarkMatcher",
    "TiledWatermarker",
    "Watermarker",
    "mark_bands",
    "mark_digest",
]

Pixels = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

MARK_BITS: Final = 64
MARK_BYTES: Final = MARK_BITS // 8

# Geometry (working grid: the image resampled to an area of WORK_SIDE**2 pixels).
CHIP_PX: Final = 4  # working pixels per chip
TILE_CHIPS: Final = 32  # chips per tile side
CHIPS_SIDE: Final = 128  # chips along the side of a square of the image's area: 16 tiles
WORK_SIDE: Final = CHIPS_SIDE * CHIP_PX  # 512 working pixels
PERIOD: Final = TILE_CHIPS * CHIP_PX  # 128 working pixels per tile
SYNC_CHIPS: Final = 256  # of the 1024 chips of a tile; the other 768 carry the payload
CHIPS_PER_BIT: Final = (TILE_CHIPS * TILE_CHIPS - SYNC_CHIPS) // MARK_BITS  # 12

#: Smallest image that can be marked (shorter side, longer side), in pixels.
MIN_SIDES_PX: Final = (128, 256)

_DIGEST_LABEL: Final = b"consent-gate/mark-digest/v1\x00"
_PATTERN_LABEL: Final = b"consent-gate/mark-pattern/v1\x00"


def mark_digest(key: bytes, request_id: str) -> bytes:
    """The 8-byte payload for ``request_id``: HMAC-SHA256 under ``key``, truncated.

    Keyed, so nobody without the key can tell which request an image came from or forge
    the mark of a given request; a person's id is never part of it.
    """
    if len(key) < 16:
        raise ValueError("the watermark key must be at least 16 bytes")
    if not request_id:
        raise ValueError("request_id must not be empty")
    mac = hmac.new(key, _DIGEST_LABEL + request_id.encode("utf-8"), hashlib.sha256)
    return mac.digest()[:MARK_BYTES]


@dataclass(frozen=True, slots=True)
class Extraction:
    """What one read of an image found. ``bits`` mean nothing unless ``present``.

    ``soft`` holds one z-score per payload bit (its sign is the bit, its size the
    evidence); ``sync_z`` is the t-statistic of the de-spread sync chips at the best
    alignment (about 4-6 on unmarked images, 13-30 on marked ones); ``scale`` is the
    fraction of the marked image's sides found in the suspect (1.0: not cropped) and
    ``offset_px`` the tile phase (y, x) on the working grid.
    """

    present: bool
    bits: bytes
    soft: tuple[float, ...]
    sync_z: float
    scale: float = 1.0
    offset_px: tuple[int, int] = (0, 0)

    @property
    def weakest_bit_z(self) -> float:
        """The least certain payload bit, in standard deviations (0 when nothing found)."""
        return min((abs(v) for v in self.soft), default=0.0)


@runtime_checkable
class Watermarker(Protocol):
    """Puts an 8-byte payload into pixels and reads it back blind."""

    def embed(self, image_bgr: Pixels, payload: bytes) -> Pixels:
        """A marked copy of ``image_bgr`` (``HxWx3`` ``uint8``); the input is not changed."""
        ...

    def extract(self, image_bgr: Pixels) -> Extraction:
        """Search ``image_bgr`` for a mark; never raises for an unmarked image."""
        ...


# --------------------------------------------------------------------------- checks


def _check_image(image_bgr: object) -> Pixels:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 \
            or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise InvalidImage("the watermark works on HxWx3 uint8 BGR pixels")
    return image_bgr


def _check_payload(payload: object) -> bytes:
    if not isinstance(payload, bytes) or len(payload) != MARK_BYTES:
        raise ValueError(f"the watermark payload must be {MARK_BYTES} bytes")
    return payload


def _bits_of(payload: bytes) -> npt.NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8))


def _luma(image_bgr: Pixels) -> Floats:
    """BT.601 luma, float32 (the weights sum to 1: adding d to B, G and R adds d to it)."""
    weights = np.array([0.114, 0.587, 0.299], dtype=np.float32)
    luma: Floats = image_bgr.astype(np.float32) @ weights
    return luma


# --------------------------------------------------------------------------- the scheme


class TiledWatermarker:
    """The keyed, tiled spread-spectrum watermark described in the module docstring.

    ``strength`` is the mark's amplitude in grey levels on an area of average texture;
    ``min_sync_z`` the presence threshold. Both defaults come from
    ``benchmarks/watermark.py``: PSNR about 43 dB, ``sync_z`` medians of 13-21 on marked
    images after re-encoding, resizing and cropping, against at most 6.3 on 300 unmarked
    photos.
    """

    def __init__(self, key: bytes, *, strength: float = 2.2, min_sync_z: float = 9.0) -> None:
        if len(key) < 16:
            raise ValueError("the watermark key must be at least 16 bytes")
        if not 0.0 < strength <= 16.0:
            raise ValueError("strength must be in (0, 16] grey levels")
        seed = hmac.new(key, _PATTERN_LABEL, hashlib.sha256).digest()
        rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32).tolist())
        chips = TILE_CHIPS * TILE_CHIPS
        order = rng.permutation(chips)
        self._sync_idx = np.sort(order[:SYNC_CHIPS])
        self._data_idx = order[SYNC_CHIPS:].reshape(MARK_BITS, CHIPS_PER_BIT)
        self._signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=chips)
        self.strength = strength
        self.min_sync_z = min_sync_z
        sync = np.zeros(chips, dtype=np.float32)
        sync[self._sync_idx] = self._signs[self._sync_idx]
        self._sync_tile = _render(sync.reshape(TILE_CHIPS, TILE_CHIPS))
        self._sync_fft = np.conj(np.fft.rfft2(self._sync_tile - self._sync_tile.mean()))

    # ------------------------------------------------------------------ embed

    def _chip_tile(self, payload: bytes) -> Floats:
        values = self._signs.copy()
        bit_signs = _bits_of(payload).astype(np.float32) * 2.0 - 1.0
        values[self._data_idx] *= bit_signs[:, None]
        return values.reshape(TILE_CHIPS, TILE_CHIPS)

    def embed(self, image_bgr: Pixels, payload: bytes) -> Pixels:
        image = _check_image(image_bgr)
        bits = _check_payload(payload)
        height, width = image.shape[:2]
        if min(height, width) < MIN_SIDES_PX[0] or max(height, width) < MIN_SIDES_PX[1]:
            raise InvalidImage("the image is too small to carry a watermark")
        work_w, work_h = _work_size(width, height, 1.0)
        luma = np.asarray(cv2.resize(_luma(image), (work_w, work_h),
                                     interpolation=cv2.INTER_AREA), dtype=np.float32)
        tile = _render(self._chip_tile(bits))
        reps = (-(-work_h // PERIOD), -(-work_w // PERIOD))
        pattern = np.tile(tile, reps)[:work_h, :work_w]
        delta = (self.strength * _texture_mask(luma)) * pattern
        full = cv2.resize(delta, (width, height), interpolation=cv2.INTER_LINEAR)
        marked = cv2.add(image, cv2.merge([full, full, full]), dtype=cv2.CV_8U)
        return np.asarray(marked, dtype=np.uint8)

    # ------------------------------------------------------------------ extract

    def extract(self, image_bgr: Pixels) -> Extraction:
        image = _check_image(image_bgr)
        height, width = image.shape[:2]
        if min(height, width) < 32:
            return _nothing()
        luma = _luma(image)
        side = float(np.sqrt(height * width))
        if side > 2 * WORK_SIDE:  # one shrink up front; every candidate starts from it
            ratio = 2 * WORK_SIDE / side
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            luma = np.asarray(cv2.resize(luma, size, interpolation=cv2.INTER_AREA),
                              dtype=np.float32)
        best: tuple[float, float, tuple[int, int], Floats] | None = None
        for scale in _SCALES:
            folded = _fold(luma, scale)
            if folded is None:
                continue
            z, offset = self._sync_peak(folded)
            if best is None or z > best[0]:
                best = (z, scale, offset, folded)
        if best is None:
            return _nothing()
        _, scale, offset, folded = best
        presence, soft = self._read(folded, offset)
        bits = np.packbits((np.asarray(soft) > 0).astype(np.uint8)).tobytes()
        return Extraction(present=presence >= self.min_sync_z, bits=bits, soft=soft,
                          sync_z=round(presence, 3), scale=round(scale, 4), offset_px=offset)

    def _sync_peak(self, folded: Floats) -> tuple[float, tuple[int, int]]:
        """Best circular offset of the sync tile in ``folded``, and its peak-to-surface z.

        Only ranks candidates: the pattern's own data chips limit this z to about 16.
        """
        surface = np.fft.irfft2(np.fft.rfft2(folded) * self._sync_fft, s=folded.shape)
        flat = surface.ravel()
        peak = int(np.argmax(flat))
        centre = float(np.median(flat))
        spread = 1.4826 * float(np.median(np.abs(flat - centre))) + 1e-12
        z = (float(flat[peak]) - centre) / spread
        return z, (peak // PERIOD, peak % PERIOD)

    def _read(self, folded: Floats, offset: tuple[int, int]) -> tuple[float, tuple[float, ...]]:
        """Presence t-statistic of the sync chips at ``offset`` and the payload z-scores.

        Chip values are de-spread (multiplied by their keyed signs): sync chips then
        average ``a > 0`` on a marked image and 0 on any other. The noise is what the sync
        chips scatter around their mean, so both figures measure the mark against the
        image, not against the pattern's own data chips.
        """
        aligned = np.roll(folded, (-offset[0], -offset[1]), axis=(0, 1))
        cells = aligned.reshape(TILE_CHIPS, CHIP_PX, TILE_CHIPS, CHIP_PX).sum(axis=(1, 3))
        chips = cells.ravel() * self._signs
        sync = chips[self._sync_idx]
        noise = float(np.std(sync, ddof=1)) + 1e-9
        presence = float(np.mean(sync)) * np.sqrt(SYNC_CHIPS) / noise
        sums = chips[self._data_idx].sum(axis=1) / (noise * np.sqrt(CHIPS_PER_BIT))
        return presence, tuple(round(float(v), 3) for v in sums)


def _nothing() -> Extraction:
    return Extraction(present=False, bits=bytes(MARK_BYTES), soft=(0.0,) * MARK_BITS,
                      sync_z=0.0)


# Fractions of the marked image's sides to try, 1.02 (a sliver added) down to 0.5 (half
# of each side cropped away), 0.5 % apart (144 candidates): folding four tiles across
# tolerates about 0.3 % of scale error. 1.0 comes first, as the most common case.
_SCALES: Final = (1.0, *(float(v) for v in 1.02 * 0.995 ** np.arange(144) if abs(v - 1) > 1e-3))


def _work_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Working-grid size (area ``WORK_SIDE**2``) of an image whose sides are ``scale``
    of the marked image's sides."""
    ratio = WORK_SIDE * scale / float(np.sqrt(width * height))
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _render(chips: Floats) -> Floats:
    """Chips to working pixels: each chip a CHIP_PX square, edges softened (periodic)."""
    pixels = np.repeat(np.repeat(chips, CHIP_PX, axis=0), CHIP_PX, axis=1)
    margin = 4 * CHIP_PX
    wrapped = np.pad(pixels.astype(np.float32), margin, mode="wrap")
    smooth = cv2.GaussianBlur(wrapped, (0, 0), 1.0)[margin:-margin, margin:-margin]
    return np.asarray(smooth, dtype=np.float32)


def _texture_mask(luma: Floats) -> Floats:
    """Relative strength per working pixel: more in texture, less on flat areas."""
    mean = cv2.blur(luma, (7, 7))
    var = np.maximum(cv2.blur(luma * luma, (7, 7)) - mean * mean, 0.0)
    mask = np.clip(np.sqrt(var) / 6.0, 0.6, 2.5)
    # fade on pure black and white only, where clipping would cut the mark off anyway
    headroom = np.clip(np.minimum(luma, 255.0 - luma) / 3.0, 0.5, 1.0)
    return np.asarray(cv2.GaussianBlur(mask * headroom, (0, 0), 2.0), dtype=np.float32)


def _fold(luma: Floats, scale: float) -> Floats | None:
    """High-passed, whitened working-grid luma, summed modulo the tile (PERIOD square)."""
    height, width = luma.shape
    work_w, work_h = _work_size(width, height, scale)
    if min(work_w, work_h) < PERIOD // 2:
        return None
    shrink = work_w < width
    work = cv2.resize(luma, (work_w, work_h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    residual = work - cv2.GaussianBlur(work, (0, 0), 3.0)
    energy = cv2.GaussianBlur(residual * residual, (0, 0), 6.0)
    white = residual / (np.sqrt(energy) + 1.0)
    pad_h, pad_w = -work_h % PERIOD, -work_w % PERIOD
    padded = np.pad(white, ((0, pad_h), (0, pad_w)))
    rows, cols = padded.shape[0] // PERIOD, padded.shape[1] // PERIOD
    folded = padded.reshape(rows, PERIOD, cols, PERIOD).sum(axis=(0, 2))
    return np.asarray(folded, dtype=np.float32)


# --------------------------------------------------------------------------- fake


class FakeWatermarker:
    """For fast unit tests: writes the payload into the low bits of the first pixels.

    It survives lossless copies only, and ``extract`` of an image it did not mark gives
    ``present=False``. Never use it outside tests.
    """

    _MAGIC: Final = b"FAKEMARK"

    def embed(self, image_bgr: Pixels, payload: bytes) -> Pixels:
        image = _check_image(image_bgr)
        bits = np.unpackbits(np.frombuffer(self._MAGIC + _check_payload(payload), np.uint8))
        flat = image.copy().reshape(-1)
        if flat.size < bits.size:
            raise InvalidImage("the image is too small to carry a watermark")
        flat[:bits.size] = (flat[:bits.size] & 0xFE) | bits
        return flat.reshape(image.shape)

    def extract(self, image_bgr: Pixels) -> Extraction:
        flat = _check_image(image_bgr).reshape(-1)
        size = (len(self._MAGIC) + MARK_BYTES) * 8
        if flat.size < size:
            return _nothing()
        data = np.packbits(flat[:size] & 1).tobytes()
        if data[:len(self._MAGIC)] != self._MAGIC:
            return _nothing()
        payload = data[len(self._MAGIC):]
        soft = tuple(10.0 if b else -10.0 for b in _bits_of(payload))
        return Extraction(present=True, bits=payload, soft=soft, sync_z=99.0)


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class MarkMatch:
    """An issued digest and its Hamming distance (bits) to what was read."""

    digest: bytes
    distance: int


@runtime_checkable
class MarkIndex(Protocol):
    """The digests the gate issued, searchable by Hamming distance.

    An SQL implementation stores :func:`mark_bands` of each digest in indexed columns:
    a digest within ``d`` bits of the query shares at least one of ``d + 1`` bands with
    it exactly (pigeonhole), so ``d + 1`` indexed equality lookups find every candidate.
    """

    def within(self, bits: bytes, max_distance: int) -> list[MarkMatch]:
        """Issued digests within ``max_distance`` bits of ``bits``, nearest first."""
        ...


def mark_bands(digest: bytes, parts: int = 5) -> tuple[int, ...]:
    """``digest`` split into ``parts`` contiguous bit bands (as ints), for indexing."""
    if len(digest) != MARK_BYTES or not 1 <= parts <= MARK_BITS:
        raise ValueError("a digest is 8 bytes and splits into 1 to 64 bands")
    value = int.from_bytes(digest, "big")
    edges = [round(i * MARK_BITS / parts) for i in range(parts + 1)]
    return tuple((value >> (MARK_BITS - hi)) & ((1 << (hi - lo)) - 1)
                 for lo, hi in itertools.pairwise(edges))


class IssuedMarks:
    """In-memory :class:`MarkIndex`: XOR and popcount over a uint64 array.

    About 10 ms per query per million digests on one core (8 MB per million); an SQL
    table with :func:`mark_bands` columns takes over beyond a few million.
    """

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._chunks: list[npt.NDArray[np.uint64]] = []
        self._pending: list[int] = []
        for digest in digests:
            self.add(digest)

    def add(self, digest: bytes) -> None:
        if len(digest) != MARK_BYTES:
            raise ValueError(f"a mark digest is {MARK_BYTES} bytes")
        self._pending.append(int.from_bytes(digest, "big"))

    def __len__(self) -> int:
        return sum(c.size for c in self._chunks) + len(self._pending)

    def _values(self) -> npt.NDArray[np.uint64]:
        if self._pending:
            self._chunks.append(np.array(self._pending, dtype=np.uint64))
            self._pending = []
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.uint64)

    def within(self, bits: bytes, max_distance: int) -> list[MarkMatch]:
        if len(bits) != MARK_BYTES:
            raise ValueError(f"a mark is {MARK_BYTES} bytes")
        values = self._values()
        query = np.uint64(int.from_bytes(bits, "big"))
        distances = np.bitwise_count(values ^ query)
        hits = np.flatnonzero(distances <= max_distance)
        order = hits[np.argsort(distances[hits], kind="stable")]
        return [MarkMatch(int(values[i]).to_bytes(MARK_BYTES, "big"), int(distances[i]))
                for i in order]


class MarkMatcher:
    """Maps an extraction to exactly one issued digest, or to nothing.

    Accepts only when the sync was found (``present``), the nearest issued digest is
    within ``max_distance`` bits, and no other issued digest is as near: a tie means the
    image cannot be attributed, and "not found" is the only safe answer.
    """

    def __init__(self, index: MarkIndex, *, max_distance: int = 4) -> None:
        if not 0 <= max_distance <= 8:
            raise ValueError("max_distance must be between 0 and 8 bits")
        self.index = index
        self.max_distance = max_distance

    def match(self, extraction: Extraction) -> MarkMatch | None:
        if not extraction.present:
            return None
        candidates = self.index.within(extraction.bits, self.max_distance)
        if not candidates:
            return None
        if len(candidates) > 1 and candidates[1].distance == candidates[0].distance:
            return None
        return candidates[0]

    def match_any(self, extractions: Sequence[Extraction]) -> MarkMatch | None:
        """The first extraction (e.g. one per key of a keyring) that matches."""
        for extraction in extractions:
            found = self.match(extraction)
            if found is not None:
                return found
        return None
