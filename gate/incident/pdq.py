"""PDQ perceptual hashes of images, and a blocklist matched by Hamming distance.

PDQ (Meta, ThreatExchange) turns an image into 256 bits and a quality score (0-100,
the image's gradient energy). Two images whose hashes differ in at most
:data:`PDQ_MATCH_THRESHOLD` = 31 bits are taken as the same picture: that is
``PDQ_CONFIDENT_MATCH_THRESHOLD`` of python-threatexchange, the distance its PDQ index
and Hasher-Matcher-Actioner (HMA) match at. Hashes are 64 lowercase hex characters in
the reference's text form (python-threatexchange's bit order: bit 0 of the hash vector is
the most significant bit of the first character), so they compare with hashes exchanged
through ThreatExchange, HMA banks and StopNCII.

Backends: hashing runs in :mod:`gate.incident.pdq_numpy`, a numpy port of Meta's
reference algorithm (no compiler, no extra package). On the same pixels it gives the
hashes and qualities of the reference C++ code (``pdqhash``) bit for bit on real photos
(``benchmarks/pdq.py parity``), and it is faster than it. Setting the environment variable
``GATE_PDQ_BACKEND=pdqhash`` hashes with the ``pdqhash`` package instead (the C++
reference itself, for audits and parity checks; ``pip install pdqhash``, which builds
from source). :func:`pdq_backend` names the backend in use; call it at start-up so a
missing ``pdqhash`` or a misspelt backend fails early with :class:`PdqUnavailable`.

Frames are hashed at the resolution the gate decoded them (at most 2048 px on the long
side by default), with no extra shrinking: the reference tools hash full images, so
a hash here is exactly what another platform computes from the same pixels.

Quality: a frame whose quality is below :data:`PDQ_QUALITY_THRESHOLD` = 50
(ThreatExchange's ``PdqSignal.QUALITY_THRESHOLD``, "too unreliable to match on") is
hashed but never matched and never added to a blocklist: near-uniform images (flat
colour, heavy blur, a dark frame) all hash alike, and matching them would block harmless
images. Such frames are reported as ``usable=False``; the rest of the gate (face
detection and policy) still judges them.

Every frame is hashed: :func:`pdq_hashes` decodes with :func:`gate.imaging.decode.
decode_image` (safe, bounded, every frame of an animation, plus the over-white and
over-black composites of translucent frames) and hashes each decoded frame.

:class:`PdqBlocklist` is a brute-force matcher over packed bits (XOR + popcount in
numpy, in cache-sized chunks): about 2 ms per query per 100,000 hashes on one core, 11-25 ms
at one million (``benchmarks/pdq.py blocklist``). Beyond a few million, or for long
animations (one query per frame), a multi-index hash (PDQ's own MIH, or the faiss binary
indexes python-threatexchange uses) is the next step.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gate.errors import GateError, InvalidImage
from gate.imaging.decode import DEFAULT_LIMITS, DecodedImage, DecodeLimits, decode_image
from gate.incident.pdq_numpy import pdq_from_bgr

__all__ = [
    "PDQ_BACKENDS",
    "PDQ_BACKEND_ENV",
    "PDQ_BITS",
    "PDQ_MATCH_THRESHOLD",
    "PDQ_QUALITY_THRESHOLD",
    "FrameHash",
    "InvalidHash",
    "PdqBlocklist",
    "PdqMatch",
    "PdqUnavailable",
    "hash_frames",
    "normalize_pdq",
    "pdq_backend",
    "pdq_distance",
    "pdq_hash",
    "pdq_hashes",
]

Pixels = npt.NDArray[np.uint8]

PDQ_BITS: Final = 256
#: Hamming distance (bits of 256) at or below which two PDQ hashes match
#: (python-threatexchange ``PDQ_CONFIDENT_MATCH_THRESHOLD``; HMA's default).
PDQ_MATCH_THRESHOLD: Final = 31
#: Quality below which a hash is not matched nor banked (ThreatExchange's PdqSignal).
PDQ_QUALITY_THRESHOLD: Final = 50

#: Environment variable choosing the PDQ backend, one of :data:`PDQ_BACKENDS`.
PDQ_BACKEND_ENV: Final = "GATE_PDQ_BACKEND"
#: ``numpy`` (the default: :mod:`gate.incident.pdq_numpy`) or ``pdqhash`` (the C++
#: reference through the optional ``pdqhash`` package).
PDQ_BACKENDS: Final = ("numpy", "pdqhash")

_HEX: Final = re.compile(r"[0-9a-f]{64}")


class PdqUnavailable(GateError):
    """The PDQ backend asked for (``GATE_PDQ_BACKEND``) is unknown or not installed."""

    code = "pdq_unavailable"


def _reference() -> Any:
    """The ``pdqhash`` module (Meta's C++ reference code), imported on first use."""
    try:
        return importlib.import_module("pdqhash")
    except ImportError as exc:
        raise PdqUnavailable(f"{PDQ_BACKEND_ENV}=pdqhash needs the pdqhash package (pip "
                             "install pdqhash==0.2.8; it builds from source with a C++ "
                             "compiler), or unset it to use the built-in numpy PDQ"
                             ) from exc


def pdq_backend() -> str:
    """The PDQ backend in use: ``"numpy"`` unless ``GATE_PDQ_BACKEND=pdqhash``.

    Call it once at start-up: a misspelt value, or ``pdqhash`` asked for but not
    installed, raises :class:`PdqUnavailable` there rather than on the first check.
    """
    name = os.environ.get(PDQ_BACKEND_ENV, "").strip().lower() or PDQ_BACKENDS[0]
    if name not in PDQ_BACKENDS:
        raise PdqUnavailable(f"{PDQ_BACKEND_ENV} must be one of: {', '.join(PDQ_BACKENDS)}")
    if name == "pdqhash":
        _reference()
    return name


class InvalidHash(GateError):
    """A PDQ hash is not 64 hexadecimal characters."""

    code = "invalid_hash"


def normalize_pdq(value: str) -> str:
    """``value`` as 64 lowercase hex characters, or :class:`InvalidHash`."""
    if not isinstance(value, str):
        raise InvalidHash("a PDQ hash must be a string of 64 hexadecimal characters")
    text = value.strip().lower()
    if not _HEX.fullmatch(text):
        raise InvalidHash("a PDQ hash must be 64 hexadecimal characters")
    return text


def _words(hex_hash: str) -> npt.NDArray[np.uint64]:
    return np.frombuffer(bytes.fromhex(hex_hash), dtype=">u8").astype(np.uint64)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance in bits (0-256) between two PDQ hashes."""
    return int(np.bitwise_count(_words(normalize_pdq(a)) ^ _words(normalize_pdq(b))).sum())


def _compute(bgr: Pixels) -> tuple[str, int]:
    """PDQ of BGR pixels, with the backend :func:`pdq_backend` names."""
    if pdq_backend() == "numpy":
        return pdq_from_bgr(bgr)
    vector, quality = _reference().compute(np.ascontiguousarray(bgr[:, :, ::-1]))
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex(), int(quality)


def pdq_hash(image: Pixels | bytes) -> tuple[str, int]:
    """``(hash as 64 hex chars, quality 0-100)`` of one image.

    ``image`` is ``HxWx3`` ``uint8`` BGR pixels (as the gate decodes them) or encoded
    image bytes, decoded safely; for an animation this is its first frame (use
    :func:`pdq_hashes` for all of them). Raises ``InvalidImage`` for bad input.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        hashes = pdq_hashes(bytes(image))
        return hashes[0].hash, hashes[0].quality
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InvalidImage("PDQ hashes HxWx3 uint8 BGR pixels or encoded image bytes")
    return _compute(image)


@dataclass(frozen=True, slots=True)
class FrameHash:
    """The PDQ hash of one decoded frame (``frame_index`` as in the decoded image)."""

    hash: str
    quality: int  # 0-100
    frame_index: int

    @property
    def usable(self) -> bool:
        """Quality high enough to match or to bank (>= :data:`PDQ_QUALITY_THRESHOLD`)."""
        return self.quality >= PDQ_QUALITY_THRESHOLD


def pdq_hashes(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> list[FrameHash]:
    """The PDQ hash of every decoded frame of ``data`` (see :func:`hash_frames`)."""
    return hash_frames(decode_image(data, limits))


def hash_frames(decoded: DecodedImage) -> list[FrameHash]:
    """The PDQ hash of every frame of an already decoded image, duplicates removed.

    The engine, which decodes every input once, calls this on its own
    :class:`~gate.imaging.decode.DecodedImage` instead of decoding twice.
    """
    seen: set[tuple[str, int]] = set()
    out: list[FrameHash] = []
    for frame in decoded.frames:
        digest, quality = _compute(frame.pixels)
        if (digest, frame.index) not in seen:
            seen.add((digest, frame.index))
            out.append(FrameHash(digest, quality, frame.index))
    return out


# --------------------------------------------------------------------------- blocklist


_CHUNK_ROWS: Final = 1 << 15  # 1 MB of hashes: the temporaries stay in cache


def _within(hashes: npt.NDArray[np.uint64], query: npt.NDArray[np.uint64],
            threshold: int) -> list[tuple[int, int]]:
    """``(row, distance)`` of every row within ``threshold`` bits of ``query``.

    Chunked, with per-word popcounts summed in uint16: about 6x faster at a million rows
    than one pass over the whole array (whose temporaries spill out of the caches).
    """
    found: list[tuple[int, int]] = []
    for start in range(0, len(hashes), _CHUNK_ROWS):
        counts = np.bitwise_count(hashes[start:start + _CHUNK_ROWS] ^ query)
        distances = np.add(counts[:, 0], counts[:, 1], dtype=np.uint16)
        distances += counts[:, 2]
        distances += counts[:, 3]
        for row in np.flatnonzero(distances <= threshold):
            found.append((start + int(row), int(distances[row])))
    return found


@dataclass(frozen=True, slots=True)
class PdqMatch:
    """A blocklist entry within the threshold of a query hash."""

    entry_id: str
    hash: str
    distance: int  # bits of 256


class PdqBlocklist:
    """Reported-image hashes, matched at ``threshold`` bits (thread-safe).

    Entries are ``(entry_id, hash)``; one id may hold several hashes (every frame of a
    reported animation). Adding or removing rebuilds nothing: rows live in growing numpy
    chunks compacted on the next query.
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = (), *,
                 threshold: int = PDQ_MATCH_THRESHOLD) -> None:
        if not 0 <= threshold < PDQ_BITS // 2:
            raise ValueError("the PDQ threshold must be between 0 and 127 bits")
        self.threshold = threshold
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._hashes = np.zeros((0, 4), dtype=np.uint64)
        self._pending: list[npt.NDArray[np.uint64]] = []
        self._pending_ids: list[str] = []
        for entry_id, value in entries:
            self.add(entry_id, value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids) + len(self._pending_ids)

    def add(self, entry_id: str, value: str) -> None:
        words = _words(normalize_pdq(value))
        with self._lock:
            self._pending.append(words)
            self._pending_ids.append(entry_id)

    def remove(self, entry_id: str) -> int:
        """Drop every hash of ``entry_id``; returns how many were dropped."""
        with self._lock:
            self._compact()
            keep = np.array([i != entry_id for i in self._ids], dtype=bool)
            dropped = int((~keep).sum())
            self._hashes = self._hashes[keep]
            self._ids = [i for i in self._ids if i != entry_id]
            return dropped

    def _compact(self) -> None:
        if self._pending:
            self._hashes = np.concatenate([self._hashes, np.stack(self._pending)])
            self._ids.extend(self._pending_ids)
            self._pending, self._pending_ids = [], []

    def match(self, value: str) -> list[PdqMatch]:
        """Entries within the threshold of ``value``, nearest first."""
        return self.match_many([value])

    def match_many(self, values: Sequence[str]) -> list[PdqMatch]:
        """Entries within the threshold of any of ``values`` (e.g. every frame), nearest
        first, each entry once at its smallest distance."""
        queries = [_words(v) for v in dict.fromkeys(normalize_pdq(v) for v in values)]
        with self._lock:
            self._compact()
            hashes, ids = self._hashes, self._ids
        best: dict[str, PdqMatch] = {}
        for query in queries:
            for row, distance in _within(hashes, query, self.threshold):
                found = PdqMatch(ids[row], hashes[row].astype(">u8").tobytes().hex(),
                                 distance)
                known = best.get(found.entry_id)
                if known is None or found.distance < known.distance:
                    best[found.entry_id] = found
        return sorted(best.values(), key=lambda m: (m.distance, m.entry_id))

    def match_frames(self, frames: Sequence[FrameHash]) -> list[PdqMatch]:
        """:meth:`match_many` over the usable frames (quality >= the threshold) only."""
        return self.match_many([f.hash for f in frames if f.usable])
