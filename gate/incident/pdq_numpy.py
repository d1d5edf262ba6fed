"""PDQ in numpy: Meta's reference algorithm, without a C++ build.

This follows the reference implementation of ThreatExchange's ``pdq/`` (the C++ in
``pdq/cpp/hashing/pdqhashing.cpp`` and ``pdq/cpp/downscaling/downscaling.cpp``, which the
``pdqhash`` package wraps, and the Java and Python ports), step by step:

1. **Luma**: ``0.299 R + 0.587 G + 0.114 B`` in float32.
2. **Jarosz filter**: two passes of a box filter along rows then columns; the window
   along an axis of ``n`` pixels is ``ceil(n / 128)`` (half of ``n / 64`` per pass), the
   box covers ``[i - (w - h), i + h - 1]`` with ``h = (w + 2) // 2``, and at the edges it
   is truncated and averages only the pixels it covers (the reference's four phases).
3. **Decimation** to 64 x 64 by sampling pixel ``int((k + 0.5) * n / 64)`` (centres).
4. **Quality**: the sum over horizontal and vertical neighbours of the 64 x 64 image of
   ``int((u - v) * 100 / 255)`` in absolute value, divided by 90 (integer), at most 100.
5. **DCT**: ``D A D^T`` with the reference's 16 x 64 matrix
   ``D[i, j] = sqrt(2 / 64) cos(pi / 128 (i + 1) (2 j + 1))`` (frequencies 1-16, the
   constant term dropped).
6. **Bits**: bit ``16 i + j`` is set when ``B[i, j]`` is greater than the median of the
   256 values (the lower median, as Torben's method returns for an even count).
7. **Hex**: ``Hash256``'s text form, sixteen 16-bit words from word 15 to word 0, so bit
   ``k`` is bit ``k`` of the 256-bit number the 64 hex characters spell. That is also
   python-threatexchange's form (``pdqhash``'s vector, bit 255 first, read big-endian).

Steps 1-3 are linear and separable, and only 64 rows and 64 columns of the filtered
image are ever read. So each of the 64 samples along an axis is one weighted sum over a
band of about ``n / 64`` pixels (the two box passes make a tent; :func:`_bands`, cached
per size), and the image is reduced to ``64 x W`` by the row bands, straight from the
uint8 colour rows, then to luma, then to ``64 x 64`` by the column bands: each pixel is
read about once instead of in four full-image passes, about 1 ms for a 1024 x 1024 frame
on one core (``benchmarks/pdq.py cost``). The result is the reference's arithmetic up to
float rounding (the reference keeps running float32 sums): on the same pixels the hashes
and qualities equal ``pdqhash``'s on every real photo measured (1,554 hashes, including
resized, re-encoded and blurred copies); on random-noise images, where coefficients
crowd the median, one in 40 differed by 2 bits (``benchmarks/pdq.py parity``).

Images with a side below 5 pixels hash to all zeros with quality 0, as in the reference.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_HASHABLE_DIM", "pdq_from_bgr", "pdq_from_luma"]

Pixels = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

#: Images with a side below this many pixels are not hashed (reference: zero hash).
MIN_HASHABLE_DIM: Final = 5
_SIDE: Final = 64  # the downsample PDQ hashes
_DCT_SIDE: Final = 16  # DCT coefficients kept per axis
#: Luma weights in BGR order (reference: R 0.299, G 0.587, B 0.114).
_BGR_TO_LUMA: Final = np.array([0.114, 0.587, 0.299], dtype=np.float32)
_ZERO_HASH: Final = "0" * 64


def _dct_matrix() -> Floats:
    """The reference's 16 x 64 DCT-II rows 1-16 (float scale times double cosine)."""
    scale = float(np.float32(math.sqrt(2.0 / _SIDE)))
    i = np.arange(1, _DCT_SIDE + 1, dtype=np.float64)[:, None]
    j = np.arange(_SIDE, dtype=np.float64)[None, :]
    return (scale * np.cos((math.pi / 2.0 / _SIDE) * i * (2 * j + 1))).astype(np.float32)


_DCT: Final = _dct_matrix()


def _window(length: int) -> int:
    """Reference ``computeJaroszFilterWindowSize(length, 64)``: ceil(length / 128)."""
    return (length + 2 * _SIDE - 1) // (2 * _SIDE)


def _quality(block: Floats) -> int:
    """Reference quality: gradients of the 64 x 64 image, quantised, scaled to 0-100."""
    hundred, full = np.float32(100), np.float32(255)
    down = np.trunc((block[:-1, :] - block[1:, :]) * hundred / full)
    across = np.trunc((block[:, :-1] - block[:, 1:]) * hundred / full)
    gradient_sum = int(np.abs(down).astype(np.int64).sum() + np.abs(across).astype(np.int64).sum())
    return min(100, gradient_sum // 90)


def _bits_hex(coefficients: Floats) -> str:
    """Bit ``k`` (row-major ``16 i + j``) set when above the lower median, as hex."""
    flat = coefficients.reshape(-1)
    median = np.partition(flat, 127)[127]
    bits = (flat > median).astype(np.uint8)
    return np.packbits(bits[::-1]).tobytes().hex()  # bit 255 first: Hash256's text form


@lru_cache(maxsize=256)
def _bands(length: int) -> tuple[tuple[int, int, Floats], ...]:
    """Steps 2 and 3 along an axis of ``length`` pixels, as 64 ``(start, stop, weights)``.

    Sample ``s`` of the two box passes is ``e_s^T B B x``, where row ``m`` of the box
    filter ``B`` is the mean over ``[lo[m], hi[m]]``: the weight of pixel ``k`` is
    ``w[s] * sum(w[m] for m in [lo[s], hi[s]] if lo[m] <= k <= hi[m])``, a tent about
    ``length / 64`` pixels wide, built from the interval end points (a difference array
    and a cumulative sum). Applying the 64 bands reads each pixel about once.
    """
    full = _window(length)
    half = (full + 2) // 2
    index = np.arange(length)
    lo = np.maximum(0, index - (full - half))
    hi = np.minimum(length - 1, index + half - 1)
    weight = 1.0 / (hi - lo + 1)  # the truncated window's mean (float64 here)
    bands = []
    for sample in ((np.arange(_SIDE) + 0.5) * length / _SIDE).astype(np.int64):
        middle = np.arange(lo[sample], hi[sample] + 1)  # first-pass pixels read by s
        start, stop = int(lo[middle[0]]), int(hi[middle[-1]]) + 1
        diff = np.zeros(stop - start + 1, dtype=np.float64)
        np.add.at(diff, lo[middle] - start, weight[middle])
        np.add.at(diff, hi[middle] + 1 - start, -weight[middle])
        weights = (weight[sample] * np.cumsum(diff)[:-1]).astype(np.float32)
        weights.setflags(write=False)
        bands.append((start, stop, weights))
    return tuple(bands)


def _finish(rows: Floats, width: int) -> tuple[str, int]:
    """Column pass of ``rows`` (``64 x width`` luma), then quality, DCT and bits."""
    block = np.empty((_SIDE, _SIDE), dtype=np.float32)
    for column, (start, stop, weights) in enumerate(_bands(width)):
        np.matmul(rows[:, start:stop], weights, out=block[:, column])
    quality = _quality(block)
    coefficients = np.asarray(_DCT @ block @ _DCT.T, dtype=np.float32)  # 16 x 16
    return _bits_hex(coefficients), quality


def pdq_from_luma(luma: Floats) -> tuple[str, int]:
    """``(hash as 64 hex chars, quality 0-100)`` of a float32 ``H x W`` luma image.

    The reference's entry point (``pdqHash256FromFloatLuma``): luma computed elsewhere
    (e.g. by another implementation, to compare) hashes exactly as it would there.
    """
    height, width = luma.shape
    if min(height, width) < MIN_HASHABLE_DIM:
        return _ZERO_HASH, 0
    rows = np.empty((_SIDE, width), dtype=np.float32)
    for out, (start, stop, weights) in zip(rows, _bands(height), strict=True):
        np.matmul(weights, luma[start:stop], out=out)
    return _finish(rows, width)


def pdq_from_bgr(bgr: Pixels) -> tuple[str, int]:
    """``(hash, quality)`` of ``H x W x 3`` uint8 BGR pixels (reference luma weights).

    The row pass runs on the colour channels (luma is linear, so this equals filtering
    the luma image), band by band on the uint8 rows: no full-size float copy.
    """
    height, width = bgr.shape[:2]
    if min(height, width) < MIN_HASHABLE_DIM:
        return _ZERO_HASH, 0
    flat = bgr.reshape(height, width * 3)
    rows = np.empty((_SIDE, width * 3), dtype=np.float32)
    for out, (start, stop, weights) in zip(rows, _bands(height), strict=True):
        np.matmul(weights, flat[start:stop], out=out)
    return _finish(rows.reshape(_SIDE, width, 3) @ _BGR_TO_LUMA, width)
