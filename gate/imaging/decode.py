"""Safe image decoding: the only way image bytes reach a face model.

:func:`decode_image` accepts JPEG (and MPO, as its primary image), PNG (and APNG), WebP
(still and animated), GIF (still and animated) and BMP. It:

* decides the format from magic bytes and checks that Pillow, restricted to that one
  format, agrees (polyglots and wrong extensions cannot steer it to another decoder);
* reads dimensions and frame counts with its own bounded header parser *before* Pillow
  sees the bytes, so decompression bombs are rejected without allocating pixels;
* fails closed on truncated or corrupt files and maps every unexpected exception to
  :class:`~gate.errors.InvalidImage` with a generic message (no exception text, which
  could carry image bytes, ever leaves this module);
* returns upright (EXIF-oriented) BGR ``uint8`` frames, downscaled on decode, plus a
  composited-over-white copy of any frame whose alpha channel is not fully opaque, so
  a face hidden under ``alpha=0`` is seen either way;
* returns every frame of an animation, skipping only frames that are exactly equal to
  the frame before them.

Pillow's module-level settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``) are read, never written: the pixel limit is lowered
to Pillow's bomb threshold so Pillow never warns about size, and decoding refuses to run
if truncated images are set to load. Other Pillow warnings (e.g. corrupt EXIF seen by
its JPEG opener) are not intercepted, because swapping the process-wide warning filters
is not thread-safe: under ``-W error`` they fail closed as ``InvalidImage``, otherwise
Pillow reports them and decoding goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile

from gate.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_LIMITS",
    "DecodeLimits",
    "DecodedImage",
    "Frame",
    "decode_image",
    "sniff_format",
]

Pixels = npt.NDArray[np.uint8]

#: Formats :func:`decode_image` decodes; everything else is ``UnsupportedMediaType``.
ACCEPTED_FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})

# ``im.format`` values Pillow may report when opened with ``formats=[<sniffed format>]``.
_PILLOW_AGREES: Final = {"JPEG": frozenset({"JPEG", "MPO"}), "PNG": frozenset({"PNG"}),
                         "WEBP": frozenset({"WEBP"}), "GIF": frozenset({"GIF"}),
                         "BMP": frozenset({"BMP"})}

_CORRUPT: Final = "image is truncated or corrupt"
_EIGHT_BIT_MODES: Final = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}
)
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_BMP_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD9)})
_NOT_FF: Final = re.compile(rb"[^\xff]")
# Bounded work: real files stay far below these; floods of tiny blocks are refused.
_JPEG_MAX_SEGMENTS: Final = 4096
_JPEG_MAX_SCANS: Final = 256
_PNG_MAX_CHUNKS: Final = 16384
_GIF_MAX_EXTENSIONS: Final = 4096
_GIF_MAX_JUNK: Final = 4096
_GIF_TINY_BLOCKS: Final = 32
_BMP_RLE: Final = frozenset({1, 2})
_BMP_RLE_MAX_PIXELS: Final = 4_000_000
_EXIF_ORIENTATION_TAG: Final = 0x0112
_EXIF_MAX_ENTRIES: Final = 1024
# EXIF field type -> struct code for the first value of the tag (all fit in 4 bytes).
_EXIF_TYPES: Final = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i"}


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on the work and memory one decode may use.

    ``max_total_pixels`` bounds animations: ``frames x canvas pixels`` (the pixels
    Pillow composites) must stay below it; it also bounds the memory of the returned
    frames. Every limit is checked from the file header before pixels are decoded.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side_px: int = 20_000
    max_frames: int = 200
    target_side_px: int | None = 2048
    max_total_pixels: int = 200_000_000

    def __post_init__(self) -> None:
        values = (self.max_bytes, self.max_pixels, self.max_side_px, self.max_frames,
                  self.max_total_pixels, 1 if self.target_side_px is None
                  else self.target_side_px)
        if any(v < 1 for v in values):
            raise ValueError("decode limits must be positive")


DEFAULT_LIMITS: Final = DecodeLimits()


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    ``pixels`` is ``uint8`` BGR, ``HxWx3``, C-contiguous and upright. ``scale`` is
    pixels per original pixel (``<= 1``): ``bbox_in_original = bbox / scale``.
    """

    pixels: Pixels
    index: int
    scale: float


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A safely decoded image: its frames and facts about the file.

    ``width``/``height`` are the upright original size. A frame index can appear twice:
    the raw colour channels and, when alpha is not fully opaque, the image composited
    over white.
    """

    frames: tuple[Frame, ...]
    format: str
    width: int
    height: int
    frame_count: int
    sha256: str


@dataclass(frozen=True, slots=True)
class _Header:
    """What the bounded header parser learned before any decoding."""

    size: tuple[int, int]  # stored width, height as the header states it
    canvas: tuple[int, int]  # largest canvas any frame can grow it to (GIF), else size
    frames: int


# --------------------------------------------------------------------------- sniffing

_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"%PDF-", "PDF"),
    (b"%!PS", "PS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"gimp xcf", "XCF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JP2"),
    (b"\xff\x4f\xff\x51", "J2K"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),
    (b"\xff\x0a", "JXL"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"#?RADIANCE", "HDR"),
    (b"v/1\x01", "EXR"),
    (b"\x1aE\xdf\xa3", "WEBM"),
    (b"OggS", "OGG"),
    (b"ID3", "MP3"),
    (b"fLaC", "FLAC"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "GZIP"),
)
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
)
_RIFF_KINDS: Final = {b"WEBP": "WEBP", b"AVI ": "AVI", b"WAVE": "WAV"}


def sniff_format(data: bytes) -> str | None:
    """Name the file format from its magic bytes, or ``None`` if unrecognised.

    Returns ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"GIF"`` or ``"BMP"`` for accepted
    formats and names such as ``"SVG"``, ``"PDF"``, ``"HEIC"``, ``"AVIF"``, ``"TIFF"``,
    ``"MP4"`` or ``"WEBM"`` for formats the gate refuses.
    """
    head = bytes(data[:1024])
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return _sniff_container(head) or _sniff_bmp(head) or _sniff_text(head)


def _sniff_container(head: bytes) -> str | None:
    """RIFF (WebP, AVI, WAV) and ISO-BMFF (HEIC, AVIF, MP4, MOV) containers."""
    if head.startswith(b"RIFF") and len(head) >= 12:
        return _RIFF_KINDS.get(head[8:12], "RIFF")
    if head[4:8] != b"ftyp" or len(head) < 12:
        return None
    box_end = min(len(head), max(16, int.from_bytes(head[:4], "big")))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    if brands & {b"avif", b"avis"}:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIC"
    return "MOV" if head[8:12] == b"qt  " else "MP4"


def _sniff_bmp(head: bytes) -> str | None:
    """``BM`` is a weak magic (it starts English words), so check the DIB header too."""
    if head.startswith(b"BM") and len(head) >= 18:
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size in _BMP_HEADER_SIZES:
            return "BMP"
    return None


def _sniff_text(head: bytes) -> str | None:
    """Markup formats: SVG, HTML, XML."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text.startswith(b"<"):
        return None
    if b"<svg" in text:
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    return "XML" if text.startswith(b"<?xml") else None


# --------------------------------------------------------------------------- headers


def _u16le(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from("<H", buf, pos)[0])


def _u32le(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from("<I", buf, pos)[0])


def _u16be(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from(">H", buf, pos)[0])


def _u32be(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from(">I", buf, pos)[0])


def _need(buf: bytes, end: int) -> None:
    """Raise ``InvalidImage`` unless ``buf`` holds at least ``end`` bytes."""
    if len(buf) < end:
        raise InvalidImage(_CORRUPT)


def _too_many_frames() -> ImageTooLarge:
    return ImageTooLarge("image has too many frames")


def _read_header(buf: bytes, fmt: str, limits: DecodeLimits) -> _Header:
    """Parse the header of an accepted format without decoding any pixel."""
    parsers = {"JPEG": _jpeg_header, "PNG": _png_header, "GIF": _gif_header,
               "WEBP": _webp_header, "BMP": _bmp_header}
    return parsers[fmt](buf, limits.max_frames)


def _jpeg_header(buf: bytes, max_frames: int) -> _Header:
    """Walk JPEG markers up to the first scan; every SOF is checked, the last one wins.

    Also fails closed on a scan without an end (truncation) and bounds the number of
    header segments and progressive scans (each scan is a pass over the whole image).
    """
    sizes: list[tuple[int, int]] = []
    pos = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        pos = _next_jpeg_marker(buf, pos)
        marker = buf[pos + 1]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        _need(buf, pos + 4)
        if marker == 0xD9:
            raise InvalidImage(_CORRUPT)
        if marker == 0xDA:
            break
        if marker in _JPEG_SOF:
            _need(buf, pos + 9)
            sizes.append((_u16be(buf, pos + 7), _u16be(buf, pos + 5)))
        length = _u16be(buf, pos + 2)
        if length < 2:
            raise InvalidImage(_CORRUPT)
        pos += 2 + length
    else:
        raise InvalidImage(_CORRUPT)
    end = buf.find(b"\xff\xd9", pos + 4)
    if not sizes or end < 0:
        raise InvalidImage(_CORRUPT)  # no frame header, or the scans never end: truncated
    if buf.count(b"\xff\xda", pos, end) > _JPEG_MAX_SCANS:
        raise ImageTooLarge("image has too many scans")
    canvas = (max(w for w, _ in sizes), max(h for _, h in sizes))
    return _Header(sizes[-1], canvas, 1)


def _next_jpeg_marker(buf: bytes, pos: int) -> int:
    """Index of the ``0xFF`` just before the next marker code (skips junk and fill)."""
    start = buf.find(b"\xff", pos)
    found = _NOT_FF.search(buf, start) if start >= 0 else None
    if found is None:
        raise InvalidImage(_CORRUPT)
    return found.start() - 1


def _png_header(buf: bytes, max_frames: int) -> _Header:
    """IHDR size, plus the APNG frame count from an ``acTL`` chunk before the IDAT."""
    chunks = _png_chunks(buf)
    kind, pos, length = next(chunks)
    if kind != b"IHDR" or length != 13:
        raise InvalidImage(_CORRUPT)
    size = (_u32be(buf, pos), _u32be(buf, pos + 4))
    actl: int | None = None
    idat = fctl_first = False
    for kind, pos, length in chunks:
        if kind == b"acTL" and not idat:
            if actl is not None or length < 8:
                raise InvalidImage(_CORRUPT)  # ambiguous animation: fail closed
            actl = _u32be(buf, pos)
        fctl_first = fctl_first or (kind == b"fcTL" and not idat)
        idat = idat or kind == b"IDAT"
    if not idat:
        raise InvalidImage(_CORRUPT)
    if actl is None:
        return _Header(size, size, 1)
    if actl == 0:
        raise InvalidImage(_CORRUPT)
    if actl > max_frames:
        raise _too_many_frames()
    # An IDAT image without its own fcTL is a default image outside the animation:
    # non-APNG decoders show it, so it counts as a frame (Pillow agrees).
    return _Header(size, size, actl + (0 if fctl_first else 1))


def _png_chunks(buf: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, data offset, length)`` of every chunk up to IEND, which must exist."""
    pos = 8
    for _ in range(_PNG_MAX_CHUNKS):
        _need(buf, pos + 12)
        length, kind = struct.unpack_from(">I4s", buf, pos)
        _need(buf, pos + 12 + length)
        yield kind, pos + 8, length
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ImageTooLarge("image has too many chunks")


def _gif_header(buf: bytes, max_frames: int) -> _Header:
    """Walk GIF blocks: count frames and find the canvas every frame can grow to."""
    _need(buf, 13)
    width, height, flags = struct.unpack_from("<HHB", buf, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames, canvas_w, canvas_h = 0, width, height
    for x, y, w, h in _gif_frames(buf, pos):
        frames += 1
        if frames > max_frames:
            raise _too_many_frames()
        canvas_w, canvas_h = max(canvas_w, x + w), max(canvas_h, y + h)
    if frames == 0:
        raise InvalidImage(_CORRUPT)
    return _Header((width, height), (canvas_w, canvas_h), frames)


def _gif_frames(buf: bytes, pos: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(x, y, w, h)`` of each image descriptor, with bounded work.

    Like Pillow, a few unknown bytes between blocks are skipped; floods of junk bytes or
    extension blocks (which Pillow would walk one Python call at a time) are refused.
    """
    end, junk, extensions = len(buf), 0, 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == 0x3B:
            return
        if tag == 0x21:
            extensions += 1
            if extensions > _GIF_MAX_EXTENSIONS:
                raise ImageTooLarge("image has too many blocks")
            pos = _skip_sub_blocks(buf, pos + 1)
        elif tag == 0x2C:
            _need(buf, pos + 9)
            x, y, w, h, flags = struct.unpack_from("<HHHHB", buf, pos)
            pos += 9 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            pos = _skip_sub_blocks(buf, pos)
            yield x, y, w, h
        else:
            junk += 1
            if junk > _GIF_MAX_JUNK:
                raise InvalidImage(_CORRUPT)


def _skip_sub_blocks(buf: bytes, pos: int) -> int:
    """Return the position after a chain of GIF data sub-blocks.

    Encoders write 255-byte sub-blocks; a long chain of tiny ones only costs work.
    """
    end, start, count = len(buf), pos, 0
    while pos < end:
        length = buf[pos]
        pos += 1 + length
        count += 1
        if length == 0:
            break
        if count > _GIF_TINY_BLOCKS and pos - start < _GIF_TINY_BLOCKS * count:
            raise InvalidImage(_CORRUPT)
    return pos


def _webp_header(buf: bytes, max_frames: int) -> _Header:
    """Canvas size from VP8/VP8L/VP8X, and the ANMF frame count of animations."""
    _need(buf, 30)
    kind = buf[12:16]
    if kind == b"VP8 ":
        if buf[23:26] != b"\x9d\x01\x2a":
            raise InvalidImage(_CORRUPT)
        size = (_u16le(buf, 26) & 0x3FFF, _u16le(buf, 28) & 0x3FFF)
        return _Header(size, size, 1)
    if kind == b"VP8L":
        if buf[20] != 0x2F:
            raise InvalidImage(_CORRUPT)
        bits = _u32le(buf, 21)
        size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        return _Header(size, size, 1)
    if kind != b"VP8X":
        raise InvalidImage(_CORRUPT)
    size = (_u32le(buf, 24) & 0xFFFFFF) + 1, (_u32le(buf, 27) & 0xFFFFFF) + 1
    frames = _webp_anim_frames(buf, max_frames) if buf[20] & 0x02 else 1
    return _Header(size, size, frames)


def _webp_anim_frames(buf: bytes, max_frames: int) -> int:
    """Count top-level ANMF chunks of an animated WebP."""
    frames, pos = 0, 12
    while pos + 8 <= len(buf):
        kind, length = struct.unpack_from("<4sI", buf, pos)
        if kind == b"ANMF":
            frames += 1
            if frames > max_frames:
                raise _too_many_frames()
        pos += 8 + length + (length & 1)
    if frames == 0:
        raise InvalidImage(_CORRUPT)
    return frames


def _bmp_header(buf: bytes, max_frames: int) -> _Header:
    """BITMAPCOREHEADER or BITMAPINFOHEADER v1-v5 size, read the way Pillow reads it.

    Pillow decodes RLE BMPs in pure Python (about 0.1 s per megapixel), so those are
    held to a much smaller pixel budget.
    """
    _need(buf, 26)
    dib_size = _u32le(buf, 14)
    if dib_size == 12:
        size = (_u16le(buf, 18), _u16le(buf, 20))
        return _Header(size, size, 1)
    if dib_size not in _BMP_HEADER_SIZES:
        raise InvalidImage(_CORRUPT)
    _need(buf, 34)
    height = _u32le(buf, 22)
    size = (_u32le(buf, 18), 2**32 - height if buf[25] == 0xFF else height)
    if _u32le(buf, 30) in _BMP_RLE and size[0] * size[1] > _BMP_RLE_MAX_PIXELS:
        raise ImageTooLarge("compressed BMP is too large to decode")
    return _Header(size, size, 1)


def _pixel_cap(limits: DecodeLimits) -> int:
    """``max_pixels``, lowered to Pillow's own bomb threshold so Pillow never warns."""
    pillow_cap = Image.MAX_IMAGE_PIXELS
    if pillow_cap is None:
        return limits.max_pixels
    return min(limits.max_pixels, int(pillow_cap))


def _check_limits(header: _Header, limits: DecodeLimits) -> None:
    """Refuse, from the header alone, anything over the pixel, side or frame limits."""
    width, height = header.canvas
    if min(*header.size, width, height) <= 0:
        raise InvalidImage(_CORRUPT)
    if max(width, height) > limits.max_side_px:
        raise ImageTooLarge("image dimensions exceed the limit")
    if width * height > _pixel_cap(limits):
        raise ImageTooLarge("image has too many pixels")
    if header.frames > limits.max_frames:
        raise _too_many_frames()
    if header.frames * width * height > limits.max_total_pixels:
        raise ImageTooLarge("animation is too large to decode")


# --------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS
) -> DecodedImage:
    """Decode untrusted image bytes into upright BGR frames, or raise ``InvalidImage``.

    Raises ``UnsupportedMediaType`` for formats other than JPEG/PNG/WebP/GIF/BMP,
    ``ImageTooLarge`` for anything over ``limits`` and ``InvalidImage`` for anything
    truncated, corrupt or otherwise undecodable. No other exception escapes.
    """
    buf = _as_bytes(data, limits.max_bytes)
    try:
        return _decode(buf, limits)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image has too many pixels") from None
    except MemoryError:
        raise ImageTooLarge("image is too large to decode") from None
    except (OSError, SyntaxError, EOFError, ValueError, IndexError, struct.error):
        raise InvalidImage(_CORRUPT) from None  # Pillow's ways of saying "bad data"
    except Exception:  # noqa: BLE001 - fail closed; the text may quote image bytes
        raise InvalidImage("image could not be decoded") from None


def _as_bytes(data: object, max_bytes: int) -> bytes:
    """Accept ``bytes``, ``bytearray`` or ``memoryview``; enforce ``max_bytes`` first."""
    if isinstance(data, bytes):
        size = len(data)
    elif isinstance(data, bytearray | memoryview):
        size = memoryview(data).nbytes
    else:
        raise InvalidImage("image data must be bytes")
    if size > max_bytes:
        raise ImageTooLarge("image exceeds the size limit")
    return data if isinstance(data, bytes) else memoryview(data).tobytes()


class DecodeBudget:
    """Bounds the pixels being decoded at once in this process, whatever the concurrency.

    Each decode reserves its canvas's pixels (frames decode one after another) before
    Pillow allocates them and gives them back when done; a decode that does not fit waits.
    One image larger than the whole budget still runs, alone. After a large decode the
    freed memory is handed back to the operating system (glibc ``malloc_trim``), so a
    burst of big images does not leave the process bloated.
    """

    def __init__(self, pixels: int) -> None:
        self.capacity = pixels
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or
                                self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()
            if pixels >= _TRIM_AFTER_PIXELS:
                _trim_heap()


#: The process-wide budget (``Settings.decode_budget_pixels`` sets it: gate.factory).
BUDGET = DecodeBudget(64_000_000)
_TRIM_AFTER_PIXELS: Final = 8_000_000


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc); a no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return


def _decode(buf: bytes, limits: DecodeLimits) -> DecodedImage:
    """Sniff, check the header against the limits, then decode with Pillow."""
    fmt = sniff_format(buf)
    if fmt is None:
        raise UnsupportedMediaType("unrecognised image format")
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(f"unsupported image format: {fmt}")
    header = _read_header(buf, fmt, limits)
    _check_limits(header, limits)
    canvas = header.canvas[0] * header.canvas[1]
    jpeg_factor = _jpeg_factor(*header.canvas, limits.target_side_px) if fmt == "JPEG" else 1
    with BUDGET.reserve(canvas // (jpeg_factor * jpeg_factor)):
        return _decode_within_budget(buf, fmt, header, limits)


def _decode_within_budget(buf: bytes, fmt: str, header: _Header,
                          limits: DecodeLimits) -> DecodedImage:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Pillow would then pad truncated files instead of failing: refuse to guess.
        raise InvalidImage("image decoder is misconfigured")
    with Image.open(io.BytesIO(buf), formats=[fmt]) as im:
        _check_agreement(im, fmt, header)
        stored = im.size
        frame_count = _frame_count(im, fmt, header)
        fast = _decode_plain_jpeg(buf, im, limits.target_side_px) if fmt == "JPEG" else None
        if fast is not None:
            raw = [(0, _downscale(fast, limits.target_side_px))]
        else:
            if fmt == "JPEG":
                _draft_jpeg(im, limits.target_side_px)
            raw = _read_frames(im, frame_count, header, limits.target_side_px)
        orientation = _exif_orientation(im.info.get("exif"))
    frames = tuple(_finish(index, arr, orientation, stored) for index, arr in raw)
    width, height = stored[::-1] if orientation >= 5 else stored
    return DecodedImage(
        frames=tuple(f for pair in frames for f in pair),
        format=fmt,
        width=width,
        height=height,
        frame_count=frame_count,
        sha256=hashlib.sha256(buf).hexdigest(),
    )


def _check_agreement(im: Image.Image, fmt: str, header: _Header) -> None:
    """Pillow, restricted to ``fmt``, must see that format and the header's size."""
    if im.format not in _PILLOW_AGREES[fmt]:
        raise InvalidImage("image header is inconsistent with its contents")
    (width, height), (canvas_w, canvas_h) = header.size, header.canvas
    if not (width <= im.size[0] <= canvas_w and height <= im.size[1] <= canvas_h):
        raise InvalidImage("image header is inconsistent with its contents")


def _frame_count(im: Image.Image, fmt: str, header: _Header) -> int:
    """Frames to decode: 1 for JPEG/MPO/BMP, else Pillow's count, equal to the header's."""
    if fmt in {"JPEG", "BMP"}:
        return 1
    count = int(getattr(im, "n_frames", 1))
    if count != header.frames:
        raise InvalidImage("image header is inconsistent with its contents")
    return count


_CV2_REDUCED: Final = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                       4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _jpeg_factor(width: int, height: int, target: int | None) -> int:
    """Smallest DCT scaling factor (1, 2, 4, 8) that brings the longest side to ``target``."""
    if target is None:
        return 1
    longest = max(width, height)
    return next((f for f in (1, 2, 4, 8) if -(-longest // f) <= target), 8)


def _decode_plain_jpeg(buf: bytes, im: Image.Image, target: int | None) -> Pixels | None:
    """RGB pixels of an ordinary JPEG decoded by OpenCV's libjpeg, or None to use Pillow.

    Only for 8-bit YCbCr or greyscale files that end with their EOI marker (a truncated
    file has none and goes to Pillow, which refuses it). OpenCV decodes straight into one
    BGR array with the same DCT scaling as ``_draft_jpeg``: about 3x faster than Pillow
    plus the array conversion (docs/benchmarks.md). The header has been checked against
    the limits already; EXIF orientation is applied by the caller, not by OpenCV.
    """
    if im.mode not in ("RGB", "L") or not buf.endswith(b"\xff\xd9"):
        return None
    width, height = im.size
    factor = _jpeg_factor(width, height, target)
    flags = _CV2_REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flags)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or \
            bgr.shape[:2] != (-(-height // factor), -(-width // factor)):
        return None  # let Pillow decode it (and report what is wrong)
    rgb: Pixels = np.asarray(bgr[:, :, ::-1], dtype=np.uint8)  # a view; _finish
    return rgb  # turns it back into contiguous BGR without another conversion


def _draft_jpeg(im: Image.Image, target: int | None) -> None:
    """Let libjpeg downscale by 1/2, 1/4 or 1/8 while decoding (DCT scaling).

    Picks the smallest factor that brings the longest side to ``target`` or below, so the
    decoded image is between ``target / 2`` and ``target`` (up to the 1/8 limit) and
    full-resolution pixels of a large JPEG are never materialised.
    """
    width, height = im.size
    factor = _jpeg_factor(width, height, target)
    if factor > 1:
        im.draft("RGB", (max(1, width // factor), max(1, height // factor)))


def _read_frames(
    im: Image.Image, count: int, header: _Header, target: int | None
) -> list[tuple[int, Pixels]]:
    """Decode every frame; skip only frames exactly equal to the one before."""
    frames: list[tuple[int, Pixels]] = []
    previous: Pixels | None = None
    for index in range(count):
        if index:
            im.seek(index)
        im.load()
        if im.size[0] > header.canvas[0] or im.size[1] > header.canvas[1]:
            raise ImageTooLarge("image dimensions exceed the limit")
        full_size = im.size
        pixels = _to_array(_reduced(im, target))
        if previous is not None and np.array_equal(previous, pixels):
            continue
        previous = pixels
        frames.append((index, _downscale(pixels, target, full_size)))
    return frames


#: Modes Pillow's ``reduce`` (integer box downscaling) handles without a conversion. Not
#: modes with alpha: Pillow averages premultiplied colour, which would erase a face hidden
#: under alpha 0 (decode keeps and composites those colours on purpose).
_REDUCIBLE: Final = frozenset({"L", "RGB", "RGBX", "CMYK", "YCbCr", "I", "F"})


def _reduced(im: Image.Image, target: int | None) -> Image.Image:
    """A large frame shrunk by an integer factor inside Pillow, before any array copy.

    Formats without decode-time scaling (PNG, WebP, GIF, BMP) are decoded at full size;
    converting that to an array would copy every pixel again. Reducing first (box filter,
    to between ``target`` and twice it) keeps one full-size copy per decode: a 7000x7000
    PNG peaks at Pillow's own ~190 MB instead of ~340 MB. ``_downscale`` does the rest.
    """
    if target is None or im.mode not in _REDUCIBLE:
        return im
    factor = max(im.size) // target
    return im.reduce(factor) if factor >= 2 else im


def _to_array(im: Image.Image) -> Pixels:
    """RGB or RGBA ``uint8`` array of a loaded frame (alpha dropped if fully opaque)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return _from_sixteen_bit(im)
    if im.mode not in _EIGHT_BIT_MODES:
        raise InvalidImage("image pixel format is not supported")
    if not im.has_transparency_data:
        return np.asarray(_converted(im, "RGB"), dtype=np.uint8)
    rgba = np.asarray(_converted(im, "RGBA"), dtype=np.uint8)
    return rgba if int(rgba[:, :, 3].min()) < 255 else rgba[:, :, :3]


def _converted(im: Image.Image, mode: str) -> Image.Image:
    """``im`` in ``mode``, without the full copy ``convert`` makes when it already is."""
    return im if im.mode == mode else im.convert(mode)


def _from_sixteen_bit(im: Image.Image) -> Pixels:
    """Scale 16-bit grey to 8 bits (``v * 255 / 65535``, rounded), keeping tRNS as alpha."""
    raw = np.asarray(im)
    values = np.clip(raw, 0, 65535).astype(np.uint32)
    grey = ((values + 128) // 257).astype(np.uint8)
    channels = [grey, grey, grey]
    transparent = im.info.get("transparency")
    if isinstance(transparent, int) and bool((raw == transparent).any()):
        channels.append(np.where(raw == transparent, 0, 255).astype(np.uint8))
    return np.stack(channels, axis=-1)


def _downscale(pixels: Pixels, target: int | None,
               full_size: tuple[int, int] | None = None) -> Pixels:
    """Shrink so the longest side is at most ``target`` (area interpolation). The output
    size comes from ``full_size`` (width, height) when the pixels were reduced already."""
    height, width = pixels.shape[:2]
    if full_size is not None:
        width_full, height_full = full_size
    else:
        width_full, height_full = width, height
    longest = max(width_full, height_full)
    if target is None or longest <= target:
        return pixels
    ratio = target / longest
    size = (max(1, round(width_full * ratio)), max(1, round(height_full * ratio)))
    if size == (width, height):
        return pixels
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _finish(
    index: int, pixels: Pixels, orientation: int, stored: tuple[int, int]
) -> tuple[Frame, ...]:
    """Orient, convert to BGR, and add over-white and over-black composites for translucent
    frames (a face can hide in the colour channels under alpha 0, or live only in the alpha
    channel and show when a pipeline composites over black)."""
    scale = max(pixels.shape[:2]) / max(stored)
    if scale > 1.0:  # a frame larger than the image it belongs to (malformed GIF/APNG)
        raise InvalidImage("image is truncated or corrupt")
    upright = _orient(pixels, orientation)
    bgr = np.ascontiguousarray(upright[:, :, 2::-1])
    if upright.shape[2] == 3:
        return (Frame(bgr, index, scale),)
    return (Frame(bgr, index, scale), Frame(_over_white(upright), index, scale),
            Frame(_over_black(upright), index, scale))


def _orient(pixels: Pixels, orientation: int) -> Pixels:
    """Apply an EXIF orientation (1-8) the way ``ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return pixels if transform is None else transform(pixels)


def _over_white(rgba: Pixels) -> Pixels:
    """BGR of an RGBA array composited over white."""
    colour = rgba[:, :, 2::-1].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(blended, dtype=np.uint8)


def _exif_orientation(exif: object) -> int:
    """The EXIF Orientation tag (1-8) of IFD0, or 1 for missing or malformed EXIF.

    Parsed here, with bounds checks, rather than by Pillow's EXIF reader: malformed EXIF
    then means "no rotation", never an exception or a warning.
    """
    if not isinstance(exif, bytes | bytearray):
        return 1
    tiff = bytes(exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    magic, ifd = struct.unpack_from(order + "HI", tiff, 2)
    if magic != 42 or ifd + 2 > len(tiff):
        return 1
    (entries,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(min(entries, _EXIF_MAX_ENTRIES)):
        pos = ifd + 2 + 12 * entry
        if pos + 12 > len(tiff):
            break
        tag, kind, count = struct.unpack_from(order + "HHI", tiff, pos)
        if tag == _EXIF_ORIENTATION_TAG:
            code = _EXIF_TYPES.get(kind)
            if code is None or count < 1:
                return 1
            (value,) = struct.unpack_from(order + code, tiff, pos + 8)
            return int(value) if 1 <= value <= 8 else 1
    return 1


def _over_black(rgba: Pixels) -> Pixels:
    """BGR of an RGBA array composited over black."""
    colour = rgba[:, :, 2::-1].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    return np.ascontiguousarray(((colour * alpha + 127) // 255).astype(np.uint8))
