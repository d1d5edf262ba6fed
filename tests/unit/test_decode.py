"""Tests of gate.imaging: safe decoding of untrusted image bytes.

Every image is generated here with Pillow/numpy or written byte by byte; no files.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

import gate.imaging.decode as decode_mod
from gate.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from gate.imaging import DecodedImage, DecodeLimits, Frame, decode_image, sniff_format

# --------------------------------------------------------------------------- helpers


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    """Save ``im`` to bytes in ``fmt``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def quadrants(width: int = 40, height: int = 24) -> np.ndarray:
    """An RGB image whose four quadrants differ, so every flip/rotation is visible."""
    arr = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    arr[:h2, :w2] = (255, 0, 0)
    arr[:h2, w2:] = (0, 255, 0)
    arr[h2:, :w2] = (0, 0, 255)
    arr[h2:, w2:] = (255, 255, 0)
    arr[0, 0] = (255, 255, 255)
    return arr


def bgr_of(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def check_frames(result: DecodedImage) -> None:
    """Invariants of every decode result."""
    assert isinstance(result, DecodedImage)
    assert result.frames
    for frame in result.frames:
        assert isinstance(frame, Frame)
        px = frame.pixels
        assert px.dtype == np.uint8
        assert px.ndim == 3 and px.shape[2] == 3
        assert px.flags["C_CONTIGUOUS"]
        assert 0 < frame.scale <= 1.0
        assert 0 <= frame.index < result.frame_count


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, *, bit_depth: int = 8, colour: int = 0,
              idat: bytes | None = None, extra: bytes = b"") -> bytes:
    """A PNG with the given IHDR; ``idat`` defaults to a tiny (wrong-sized) stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = zlib.compress(b"\x00" * 16) if idat is None else idat
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
            + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))


def zeros_deflated(total: int, step: int = 1 << 20) -> bytes:
    """zlib stream of ``total`` zero bytes, built without holding them in memory."""
    comp = zlib.compressobj(9)
    chunk = b"\x00" * step
    parts = [comp.compress(chunk) for _ in range(total // step)]
    parts.append(comp.compress(b"\x00" * (total % step)))
    parts.append(comp.flush())
    return b"".join(parts)


GIF_HEAD_1X1 = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
GIF_FRAME_1X1 = b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"


def gif_assemble(frames: list[Image.Image]) -> bytes:
    """A multi-frame GIF that keeps identical frames (Pillow's writer merges them)."""
    blobs = [encode(f, "GIF", optimize=False) for f in frames]
    head_len = 13 + (3 << ((blobs[0][10] & 7) + 1))
    head = blobs[0][:head_len]
    assert all(b[:head_len] == head for b in blobs)
    return head + b"".join(b[head_len:-1] for b in blobs) + b";"


def palette_frame(arr: np.ndarray) -> Image.Image:
    """A P-mode frame with a fixed greyscale palette (index i -> grey i)."""
    im = Image.fromarray(arr.astype(np.uint8), "L").convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    return im


def bmp_rle(width: int, height: int, body: bytes) -> bytes:
    """An 8-bit RLE BMP with the given compressed body."""
    palette = b"\x00\x00\x00\x00" * 256
    offset = 14 + 40 + len(palette)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835,
                      256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + dib + palette + body


@pytest.fixture
def no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow is asked to open or decode anything."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow must not be reached")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


RNG = np.random.default_rng(1234)
NOISE = Image.fromarray(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8))
SAMPLES: dict[str, bytes] = {
    "JPEG": encode(NOISE, "JPEG", quality=90),
    "PNG": encode(NOISE, "PNG"),
    "GIF": encode(NOISE.convert("P"), "GIF"),
    "WEBP": encode(NOISE, "WEBP", lossless=True),
    "BMP": encode(NOISE, "BMP"),
}

# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_decodes_each_accepted_format(fmt: str) -> None:
    data = SAMPLES[fmt]
    result = decode_image(data)
    check_frames(result)
    assert result.format == fmt
    assert (result.width, result.height) == (64, 48)
    assert result.frame_count == 1
    assert len(result.frames) == 1
    assert result.frames[0].pixels.shape == (48, 64, 3)
    assert result.frames[0].scale == 1.0
    assert result.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_lossless_formats_are_exact_bgr(fmt: str) -> None:
    pixels = decode_image(SAMPLES[fmt]).frames[0].pixels
    assert np.array_equal(pixels, bgr_of(np.asarray(NOISE)))


def test_channel_order_is_bgr() -> None:
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    pixels = decode_image(encode(red, "PNG")).frames[0].pixels
    assert pixels[0, 0].tolist() == [0, 0, 255]


def test_jpeg_is_close_to_source() -> None:
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    pixels = decode_image(encode(Image.fromarray(smooth), "JPEG", quality=95)).frames[0].pixels
    assert np.abs(pixels.astype(int) - bgr_of(smooth).astype(int)).mean() < 3


def test_mpo_decodes_as_its_primary_jpeg() -> None:
    first = Image.new("RGB", (32, 24), (250, 10, 10))
    second = Image.new("RGB", (32, 24), (10, 10, 250))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "MPO"
    result = decode_image(data)
    check_frames(result)
    assert result.format == "JPEG"
    assert result.frame_count == 1
    b, _, r = result.frames[0].pixels[12, 16].tolist()
    assert r > 200 and b < 60


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like(kind: Callable[[bytes], Any]) -> None:
    result = decode_image(kind(SAMPLES["PNG"]))
    assert result.format == "PNG"
    assert result.sha256 == hashlib.sha256(SAMPLES["PNG"]).hexdigest()


@pytest.mark.parametrize("value", ["not bytes", None, 123, [1, 2, 3], np.zeros(4, np.uint8)])
def test_rejects_non_bytes_without_type_error(value: object) -> None:
    with pytest.raises(InvalidImage, match="must be bytes"):
        decode_image(value)  # type: ignore[arg-type]


def _ftyp(brand: bytes, compatible: bytes = b"") -> bytes:
    body = brand + b"\x00\x00\x00\x00" + compatible
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00" * 64


def _unsupported() -> dict[str, tuple[bytes, str | None]]:
    small = Image.new("RGB", (16, 16), (1, 2, 3))
    return {
        "tiff": (encode(small, "TIFF"), "TIFF"),
        "ico": (encode(small, "ICO"), "ICO"),
        "pdf": (encode(small, "PDF"), "PDF"),
        "jpeg2000": (encode(small, "JPEG2000"), "JP2"),
        "avif": (_ftyp(b"avif", b"mif1miaf"), "AVIF"),
        "heic": (_ftyp(b"heic", b"mif1heic"), "HEIC"),
        "mp4": (_ftyp(b"isom", b"iso2mp41"), "MP4"),
        "mov": (_ftyp(b"qt  "), "MOV"),
        "webm": (b"\x1aE\xdf\xa3" + b"\x00" * 60, "WEBM"),
        "psd": (b"8BPS\x00\x01" + b"\x00" * 60, "PSD"),
        "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        "svg_bare": (b"  <svg width='10' height='10'></svg>", "SVG"),
        "html": (b"<!DOCTYPE html><html><img src=x></html>", "HTML"),
        "text": (b"hello, this is not an image", None),
        "bm_text": (b"BMW and BMX are words, not bitmaps " * 3, None),
        "empty": (b"", None),
        "one_byte": (b"\xff", None),
        "random": (np.random.default_rng(7).bytes(4096).replace(b"\xff\xd8", b"\x00\x00"),
                   None),
        "riff_avi": (b"RIFF\x00\x01\x00\x00AVI LIST" + b"\x00" * 32, "AVI"),
    }


@pytest.mark.parametrize("name", sorted(_unsupported()))
def test_unsupported_media_is_refused(name: str) -> None:
    data, expected = _unsupported()[name]
    assert sniff_format(data) == expected
    with pytest.raises(UnsupportedMediaType):
        decode_image(data)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_sniff_format_names_accepted_formats(fmt: str) -> None:
    assert sniff_format(SAMPLES[fmt]) == fmt


def test_sniff_format_is_not_fooled_by_a_bm_prefix() -> None:
    assert sniff_format(b"BM" + b"\x00" * 40) is None


# --------------------------------------------------------------------------- polyglots


def test_png_magic_with_gif_body_is_invalid() -> None:
    data = b"\x89PNG\r\n\x1a\n" + SAMPLES["GIF"]
    with pytest.raises(InvalidImage):
        decode_image(data)


def test_jpeg_magic_with_png_body_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_image(b"\xff\xd8\xff" + SAMPLES["PNG"])


def test_trailing_data_does_not_change_the_format() -> None:
    # A GIF with a PNG appended (a classic polyglot) is decoded as the GIF it starts as.
    result = decode_image(SAMPLES["GIF"] + SAMPLES["PNG"])
    assert result.format == "GIF"
    assert result.frame_count == 1


def test_pillow_must_agree_with_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    real = decode_mod._read_header

    def lying(buf: bytes, fmt: str, limits: DecodeLimits) -> Any:
        header = real(buf, fmt, limits)
        return decode_mod._Header((10, 10), (10, 10), header.frames)

    monkeypatch.setattr(decode_mod, "_read_header", lying)
    with pytest.raises(InvalidImage, match="inconsistent"):
        decode_image(SAMPLES["PNG"])


# --------------------------------------------------------------------------- limits


def test_byte_limit() -> None:
    limits = DecodeLimits(max_bytes=100)
    with pytest.raises(ImageTooLarge):
        decode_image(SAMPLES["PNG"], limits)
    with pytest.raises(ImageTooLarge):
        decode_image(memoryview(bytearray(SAMPLES["PNG"])), limits)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_side_limit(fmt: str) -> None:
    with pytest.raises(ImageTooLarge, match="dimensions"):
        decode_image(SAMPLES[fmt], DecodeLimits(max_side_px=50))


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_pixel_limit(fmt: str) -> None:
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(SAMPLES[fmt], DecodeLimits(max_pixels=64 * 48 - 1))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_frames=0)
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(target_side_px=-1)


def test_animation_total_pixel_limit() -> None:
    frames = [Image.new("RGB", (20, 20), (i * 40, 0, 0)) for i in range(5)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).frame_count == 5
    with pytest.raises(ImageTooLarge):
        decode_image(data, DecodeLimits(max_total_pixels=5 * 400 - 1))


# --------------------------------------------------------------------------- bombs


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _webp_canvas(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + b"VP8L" + struct.pack("<I", 6) + b"\x2f\x00\x00\x00\x00\x00"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _gif(screen: tuple[int, int], frame: tuple[int, int, int, int]) -> bytes:
    x, y, w, h = frame
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00" * 3 + b"\xff" * 3
    return head + b"\x2c" + struct.pack("<HHHHB", x, y, w, h, 0) + b"\x02\x02\x44\x01\x00;"


def _bmp_header_only(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + dib + b"\x00" * 64


BOMBS: dict[str, Callable[[], bytes]] = {
    "png_header_100000x100000": lambda: png_bytes(100_000, 100_000),
    "png_header_max_side_square": lambda: png_bytes(20_000, 20_000, colour=2),
    # A real, valid 19000x19000 PNG of one colour: ~45 kB that inflates to 1 GB as RGB.
    "png_real_zlib_bomb": lambda: png_bytes(
        19_000, 19_000, bit_depth=1,
        idat=zeros_deflated(19_000 * (1 + 19_000 // 8 + 1))),
    "apng_frames_claim": lambda: png_bytes(
        10, 10, extra=png_chunk(b"acTL", struct.pack(">II", 10_000, 0))),
    "gif_screen_20000x20000": lambda: _gif((20_000, 20_000), (0, 0, 1, 1)),
    "gif_frame_grows_canvas": lambda: _gif((1, 1), (0, 0, 15_000, 15_000)),
    "gif_frame_outside_screen": lambda: _gif((10, 10), (60_000, 0, 10, 10)),
    "webp_canvas_16384": lambda: _webp_canvas(16_384, 16_384),
    "jpeg_sof_65000": lambda: _jpeg_with_size(65_000, 65_000),
    "jpeg_sof_10000x10000": lambda: _jpeg_with_size(10_000, 10_000),
    "bmp_header_50000": lambda: _bmp_header_only(50_000, 50_000),
    "bmp_top_down_huge": lambda: _bmp_header_only(8_000, -8_000),
    "bmp_rle_3000x3000": lambda: bmp_rle(3_000, 3_000, b"\x00\x01"),
    "gif_10000_frames": lambda: GIF_HEAD_1X1 + GIF_FRAME_1X1 * 10_000 + b";",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_before_pillow_sees_them(name: str, no_pillow: None) -> None:
    data = BOMBS[name]()
    with pytest.raises(ImageTooLarge):
        decode_image(data)


def test_zlib_bomb_does_not_allocate() -> None:
    data = BOMBS["png_real_zlib_bomb"]()
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge):
            decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024


def test_small_real_bomb_decodes_when_limits_allow() -> None:
    # The bomb builders make real files: a 2000x2000 one decodes under default limits.
    data = png_bytes(2000, 2000, bit_depth=1, idat=zeros_deflated(2000 * (1 + 250)))
    result = decode_image(data, DecodeLimits(target_side_px=500))
    assert (result.width, result.height) == (2000, 2000)
    assert result.frames[0].pixels.shape == (500, 500, 3)


def test_small_gif_frame_outside_screen_grows_canvas() -> None:
    # Pillow grows the canvas for frames beyond the logical screen; limits see that.
    data = _gif((1, 1), (0, 0, 30, 20))
    with pytest.raises(ImageTooLarge):
        decode_image(data, DecodeLimits(max_pixels=599))
    with pytest.raises(ImageTooLarge):
        decode_image(data, DecodeLimits(max_side_px=29))


def test_pillow_bomb_threshold_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lower global Pillow limit wins over ours, without Pillow ever warning.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for side in (40, 100):  # warning range, error range of Pillow's own check
        data = encode(Image.new("RGB", (side, side)), "PNG")
        with pytest.raises(ImageTooLarge):
            decode_image(data)


@pytest.mark.parametrize("side", [40, 100])
def test_pillow_bomb_exceptions_become_image_too_large(
    monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    # Even if our own check were bypassed, Pillow's error/warning maps to ImageTooLarge.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(decode_mod, "_pixel_cap", lambda limits: limits.max_pixels)
    data = encode(Image.new("RGB", (side, side)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge):
            decode_image(data)


# --------------------------------------------------------------------------- corrupt


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_files_are_invalid(fmt: str, fraction: float) -> None:
    data = SAMPLES[fmt]
    with pytest.raises(InvalidImage):
        decode_image(data[: int(len(data) * fraction)])


def test_jpeg_missing_only_its_end_marker_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(SAMPLES["JPEG"][:-2])


def test_truncated_progressive_jpeg_is_invalid() -> None:
    data = encode(NOISE, "JPEG", progressive=True)
    for cut in (len(data) // 3, len(data) * 2 // 3):
        with pytest.raises(InvalidImage):
            decode_image(data[:cut])


def test_truncated_jpeg_fails_even_if_pillow_pads_truncated_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InvalidImage):
        decode_image(SAMPLES["JPEG"][: len(SAMPLES["JPEG"]) // 2])
    # With Pillow configured to pad truncated files, nothing is decoded at all.
    with pytest.raises(InvalidImage, match="misconfigured"):
        decode_image(SAMPLES["PNG"])


def test_corrupt_png_header_crc_is_invalid() -> None:
    data = bytearray(SAMPLES["PNG"])
    data[29] ^= 0xFF  # inside the IHDR CRC
    with pytest.raises(InvalidImage):
        decode_image(bytes(data))


def test_corrupt_png_pixel_data_is_invalid() -> None:
    data = bytearray(SAMPLES["PNG"])
    idat = data.find(b"IDAT")
    for offset in range(idat + 40, idat + 60):
        data[offset] ^= 0x5A
    with pytest.raises(InvalidImage):
        decode_image(bytes(data))


def test_unexpected_errors_are_generic(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(im: Image.Image) -> np.ndarray:
        raise RuntimeError("secret pixel bytes \x89\x01\x02")

    monkeypatch.setattr(decode_mod, "_to_array", boom)
    with pytest.raises(InvalidImage) as info:
        decode_image(SAMPLES["PNG"])
    assert type(info.value) is InvalidImage
    assert "secret" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_memory_error_is_image_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(im: Image.Image) -> np.ndarray:
        raise MemoryError

    monkeypatch.setattr(decode_mod, "_to_array", exhausted)
    with pytest.raises(ImageTooLarge):
        decode_image(SAMPLES["PNG"])


def test_error_messages_are_short_and_safe() -> None:
    for data in (SAMPLES["JPEG"][:100], b"\x89PNG\r\n\x1a\n" + b"\xab" * 64, b"GIF89a"):
        with pytest.raises(InvalidImage) as info:
            decode_image(data)
        assert len(info.value.message) < 80
        assert "\\x" not in repr(info.value.message)


def test_rle_bmp_within_budget_decodes() -> None:
    # RLE8: a row of 10 pixels of colour 0 then end-of-line, for 10 rows, end-of-bitmap.
    body = (b"\x0a\x00\x00\x00" * 10) + b"\x00\x01"
    result = decode_image(bmp_rle(10, 10, body))
    assert result.format == "BMP"
    assert result.frames[0].pixels.shape == (10, 10, 3)


def test_gif_junk_flood_is_refused() -> None:
    data = GIF_HEAD_1X1 + GIF_FRAME_1X1 + b"\x00" * 10_000 + GIF_FRAME_1X1 + b";"
    with pytest.raises(InvalidImage):
        decode_image(data)


def test_gif_tiny_sub_block_flood_is_refused() -> None:
    data = GIF_HEAD_1X1 + b"\x21\xfe" + b"\x01a" * 10_000 + b"\x00" + GIF_FRAME_1X1 + b";"
    with pytest.raises(InvalidImage):
        decode_image(data)


def test_png_chunk_flood_is_refused() -> None:
    flood = png_chunk(b"tEXt", b"k\x00v") * 20_000
    with pytest.raises(ImageTooLarge):
        decode_image(png_bytes(4, 4, extra=flood))


def test_jpeg_scan_flood_is_refused() -> None:
    data = SAMPLES["JPEG"]
    sos = data.find(b"\xff\xda")
    flood = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x00" * 300
    assert sos > 0
    with pytest.raises(ImageTooLarge, match="scans"):
        decode_image(data[:-2] + flood + b"\xff\xd9")


# --------------------------------------------------------------------------- modes


def _png_16bit(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    data = _png_16bit(values)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    pixels = decode_image(data).frames[0].pixels
    assert pixels[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.array_equal(pixels[:, :, 0], pixels[:, :, 2])


def test_sixteen_bit_gradient_keeps_its_shape() -> None:
    values = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    pixels = decode_image(_png_16bit(values)).frames[0].pixels
    expected = np.round(values / 257).astype(int)
    assert np.abs(pixels[:, :, 1].astype(int) - expected).max() <= 1
    assert len(np.unique(pixels)) > 200  # not collapsed to white


def test_sixteen_bit_with_transparent_value() -> None:
    values = np.array([[1000, 2000], [1000, 3000]], np.uint16)
    data = encode(Image.fromarray(values), "PNG", transparency=1000)
    result = decode_image(data)
    assert len(result.frames) == 3
    raw, white, _black = (f.pixels for f in result.frames)
    assert raw[0, 0].tolist() == [4, 4, 4]
    assert white[0, 0].tolist() == [255, 255, 255]
    assert white[0, 1].tolist() == raw[0, 1].tolist()


def _mode_image(mode: str) -> Image.Image:
    base = Image.fromarray(quadrants(16, 16))
    if mode == "1":
        return base.convert("L").point(lambda v: 255 if v > 100 else 0).convert("1")
    return base.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("L", "JPEG"), ("1", "PNG"), ("1", "BMP"), ("P", "PNG"), ("P", "BMP"),
     ("RGB", "BMP"), ("CMYK", "JPEG"), ("LA", "PNG"), ("RGBA", "PNG"), ("RGBA", "WEBP")],
)
def test_modes_convert_to_bgr(mode: str, fmt: str) -> None:
    im = _mode_image(mode)
    data = encode(im, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    result = decode_image(data)
    check_frames(result)
    assert len(result.frames) == 1  # no translucency in these images
    expected = bgr_of(np.asarray(im.convert("RGB"))).astype(int)
    tolerance = 40 if fmt == "JPEG" else 0
    assert np.abs(result.frames[0].pixels.astype(int) - expected).mean() <= tolerance


def test_cmyk_jpeg_colours() -> None:
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    pixels = decode_image(encode(red, "JPEG", quality=95)).frames[0].pixels
    b, g, r = pixels[8, 8].tolist()
    assert r > 230 and g < 30 and b < 30


def test_palette_with_transparency_returns_both_views() -> None:
    arr = np.zeros((8, 8), np.uint8)
    arr[2:6, 2:6] = 1
    im = Image.fromarray(arr, "L").convert("P")
    im.putpalette([0, 200, 0, 255, 0, 0] + [0, 0, 0] * 254)
    for fmt in ("PNG", "GIF"):
        result = decode_image(encode(im, fmt, transparency=1))
        assert len(result.frames) == 3, fmt
        raw, white, _black = (f.pixels for f in result.frames)
        assert raw[3, 3].tolist() == [0, 0, 255]  # the hidden colour, BGR
        assert white[3, 3].tolist() == [255, 255, 255]
        assert raw[0, 0].tolist() == white[0, 0].tolist() == [0, 200, 0]
        assert result.frames[0].index == result.frames[1].index == 0


# --------------------------------------------------------------------------- alpha


def _hidden_face_rgba(alpha: int) -> np.ndarray:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, :3] = 20
    rgba[8:24, 8:24, :3] = (250, 220, 200)  # the "face" lives in the colour channels
    rgba[:, :, 3] = alpha
    return rgba


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_face_hidden_under_zero_alpha_is_returned(fmt: str) -> None:
    rgba = _hidden_face_rgba(0)
    params: dict[str, Any] = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    result = decode_image(encode(Image.fromarray(rgba, "RGBA"), fmt, **params))
    check_frames(result)
    assert [f.index for f in result.frames] == [0, 0, 0]
    raw, white, _black = (f.pixels for f in result.frames)
    assert np.array_equal(raw, bgr_of(rgba[:, :, :3]))
    assert (white == 255).all()


def test_partial_alpha_composites_over_white() -> None:
    rgba = _hidden_face_rgba(0)
    rgba[:, :, 3] = 255
    rgba[0, 0] = (0, 0, 0, 128)
    rgba[0, 1] = (100, 50, 0, 0)
    result = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    raw, white, _black = (f.pixels for f in result.frames)
    assert white[0, 0].tolist() == [127, 127, 127]
    assert white[0, 1].tolist() == [255, 255, 255]
    assert raw[0, 1].tolist() == [0, 50, 100]
    assert np.array_equal(white[1:], raw[1:])


def test_opaque_alpha_gives_one_frame() -> None:
    result = decode_image(encode(Image.fromarray(_hidden_face_rgba(255), "RGBA"), "PNG"))
    assert len(result.frames) == 1


# --------------------------------------------------------------------------- EXIF


def _with_orientation(fmt: str, orientation: int, arr: np.ndarray | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(quadrants() if arr is None else arr)
    params: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    return encode(image, fmt, exif=exif.tobytes(), **params)


def _reference_upright(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im)
        return bgr_of(np.asarray(upright.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(fmt: str, orientation: int) -> None:
    data = _with_orientation(fmt, orientation)
    result = decode_image(data)
    check_frames(result)
    expected = _reference_upright(data)
    pixels = result.frames[0].pixels
    assert pixels.shape == expected.shape
    assert (result.height, result.width) == expected.shape[:2]
    if fmt == "JPEG":
        assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 8
    else:
        assert np.array_equal(pixels, expected)
    # The white marker pixel (top-left of the stored image) moved where it should.
    assert (result.width, result.height) == ((24, 40) if orientation >= 5 else (40, 24))


def _exif_ifd(entries: list[tuple[int, int, int, bytes]], order: str = "<") -> bytes:
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    body = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return b"Exif\x00\x00" + head + body + b"\x00\x00\x00\x00"


MALFORMED_EXIF: dict[str, bytes] = {
    "garbage": b"Exif\x00\x00" + b"\x13\x37" * 20,
    "bad_byte_order": b"Exif\x00\x00XX*\x00\x08\x00\x00\x00",
    "ifd_offset_beyond_end": b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",
    "entry_count_lies": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01",
    "orientation_out_of_range": _exif_ifd([(0x0112, 3, 1, struct.pack("<H", 9))]),
    "orientation_zero": _exif_ifd([(0x0112, 3, 1, struct.pack("<H", 0))]),
    "orientation_ascii": _exif_ifd([(0x0112, 2, 4, b"six\x00")]),
    "orientation_no_values": _exif_ifd([(0x0112, 3, 0, b"")]),
    "truncated_entry": _exif_ifd([(0x0112, 3, 1, struct.pack("<H", 6))])[:-10],
    "big_endian_valid_6": _exif_ifd([(0x0112, 3, 1, struct.pack(">H", 6))], ">"),
    "long_typed_6": _exif_ifd([(0x0112, 4, 1, struct.pack("<I", 6))]),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_EXIF))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_malformed_exif_means_no_rotation(name: str, fmt: str) -> None:
    # EXIF is parsed by our own bounded reader: malformed means "not rotated".
    params: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(Image.fromarray(quadrants()), fmt, exif=MALFORMED_EXIF[name], **params)
    result = decode_image(data)
    check_frames(result)
    rotated = name.endswith("_6")
    assert (result.width, result.height) == ((24, 40) if rotated else (40, 24))


@pytest.mark.parametrize("name", sorted(MALFORMED_EXIF))
def test_malformed_exif_in_jpeg_never_crashes(name: str) -> None:
    # Pillow's JPEG opener reads EXIF for DPI and *warns* on corrupt EXIF; under
    # warnings-as-errors (as here) that fails closed, otherwise decoding goes on.
    data = encode(Image.fromarray(quadrants()), "JPEG", exif=MALFORMED_EXIF[name])
    try:
        result = decode_image(data)
    except InvalidImage:
        return
    check_frames(result)
    rotated = name.endswith("_6")
    assert (result.width, result.height) == ((24, 40) if rotated else (40, 24))


def test_malformed_jpeg_exif_decodes_when_warnings_are_not_errors() -> None:
    data = encode(Image.fromarray(quadrants()), "JPEG",
                  exif=MALFORMED_EXIF["ifd_offset_beyond_end"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = decode_image(data)
    assert (result.width, result.height) == (40, 24)


def test_exif_parser_directly() -> None:
    assert decode_mod._exif_orientation(None) == 1
    assert decode_mod._exif_orientation(b"") == 1
    assert decode_mod._exif_orientation(MALFORMED_EXIF["big_endian_valid_6"]) == 6
    assert decode_mod._exif_orientation(MALFORMED_EXIF["big_endian_valid_6"][6:]) == 6
    for name, blob in MALFORMED_EXIF.items():
        assert decode_mod._exif_orientation(blob) in ({6} if name.endswith("_6") else {1})


# --------------------------------------------------------------------------- animation


def _dark_frames(count: int, size: int = 32) -> list[np.ndarray]:
    base = (np.indices((size, size)).sum(axis=0) % 7 * 10).astype(np.uint8)
    return [base.copy() for _ in range(count)]


def test_gif_frame_that_differs_is_never_skipped() -> None:
    frames = _dark_frames(30)
    frames[27][8:20, 8:20] = 255  # a bright square only in frame 27
    data = gif_assemble([palette_frame(f) for f in frames])
    result = decode_image(data)
    check_frames(result)
    assert result.frame_count == 30
    indices = [f.index for f in result.frames]
    assert 27 in indices
    assert indices == [0, 27, 28]  # identical neighbours are skipped, changes are not
    bright = next(f for f in result.frames if f.index == 27).pixels
    assert (bright[8:20, 8:20] == 255).all()
    assert not (result.frames[0].pixels == 255).any()


def test_a_single_changed_pixel_is_a_different_frame() -> None:
    frames = _dark_frames(30)
    frames[27][5, 5] += 1  # invisible in any 16x16 thumbnail
    result = decode_image(gif_assemble([palette_frame(f) for f in frames]))
    assert [f.index for f in result.frames] == [0, 27, 28]


def _animation(fmt: str, count: int, size: int = 24) -> bytes:
    frames = [Image.new("RGB", (size, size), (i * 7 % 256, 255 - i * 5 % 256, 40))
              for i in range(count)]
    params: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50,
                  **params)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_every_distinct_animation_frame_is_returned(fmt: str) -> None:
    result = decode_image(_animation(fmt, 12))
    check_frames(result)
    assert result.format == fmt
    assert result.frame_count == 12
    assert [f.index for f in result.frames] == list(range(12))
    colours = {tuple(f.pixels[5, 5].tolist()) for f in result.frames}
    assert len(colours) == 12


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_frame_limit(fmt: str) -> None:
    data = _animation(fmt, 5)
    assert decode_image(data, DecodeLimits(max_frames=5)).frame_count == 5
    with pytest.raises(ImageTooLarge, match="frames"):
        decode_image(data, DecodeLimits(max_frames=4))


def test_ten_thousand_frame_gif_is_refused_from_the_header(no_pillow: None) -> None:
    data = GIF_HEAD_1X1 + GIF_FRAME_1X1 * 10_000 + b";"
    with pytest.raises(ImageTooLarge, match="frames"):
        decode_image(data)


def test_tiny_hand_made_gif_decodes() -> None:
    # The same hand-made frames are valid: the refusal above is only about their count.
    result = decode_image(GIF_HEAD_1X1 + GIF_FRAME_1X1 * 3 + b";")
    assert result.frame_count == 3
    assert [f.index for f in result.frames] == [0]


def test_apng_default_image_outside_the_animation_is_checked() -> None:
    face = np.zeros((24, 24, 3), np.uint8)
    face[6:18, 6:18] = 255
    default = Image.fromarray(face)
    frames = [Image.new("RGB", (24, 24), (0, 0, 10 * i + 10)) for i in range(3)]
    data = encode(default, "PNG", save_all=True, append_images=frames, default_image=True)
    result = decode_image(data)
    assert result.frame_count == 4
    assert [f.index for f in result.frames] == [0, 1, 2, 3]
    assert (result.frames[0].pixels[6:18, 6:18] == 255).all()


def test_animated_webp_with_alpha_returns_both_views_per_frame() -> None:
    frames = []
    for i in range(3):
        rgba = _hidden_face_rgba(0 if i == 1 else 255)
        rgba[0, 0, 0] = i * 50
        frames.append(Image.fromarray(rgba, "RGBA"))
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True,
                  exact=True)
    result = decode_image(data)
    assert result.frame_count == 3
    assert [f.index for f in result.frames] == [0, 1, 1, 1, 2]


# --------------------------------------------------------------------------- downscale


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 48, (3000, 4000, 3), dtype=np.uint8)
    arr += np.linspace(0, 200, 4000).astype(np.uint8)[None, :, None]
    return encode(Image.fromarray(arr), "JPEG", quality=85)


def _spy_jpeg_load(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Sizes (w, h) at which libjpeg decoded pixels, through Pillow or through OpenCV."""
    sizes: list[tuple[int, int]] = []
    real = JpegImagePlugin.JpegImageFile.load
    real_imdecode = decode_mod.cv2.imdecode

    def spy(self: JpegImagePlugin.JpegImageFile) -> Any:
        sizes.append(self.size)
        return real(self)

    def spy_imdecode(buf: Any, flags: int) -> Any:
        out = real_imdecode(buf, flags)
        if out is not None:
            sizes.append((out.shape[1], out.shape[0]))
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    monkeypatch.setattr(decode_mod.cv2, "imdecode", spy_imdecode)
    return sizes


def test_plain_jpeg_takes_the_opencv_path_and_matches_pillow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    arr = cv2_smooth(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    data = encode(Image.fromarray(arr), "JPEG", quality=90)
    calls: list[int] = []
    real_imdecode = decode_mod.cv2.imdecode
    monkeypatch.setattr(decode_mod.cv2, "imdecode",
                        lambda b, f: calls.append(f) or real_imdecode(b, f))
    fast = decode_image(data).frames[0].pixels
    assert calls, "an ordinary JPEG should be decoded by OpenCV"
    with Image.open(io.BytesIO(data)) as im:
        reference = np.asarray(im.convert("RGB"))[:, :, ::-1]
    assert fast.shape == reference.shape and fast.flags["C_CONTIGUOUS"]
    assert float(np.abs(fast.astype(int) - reference.astype(int)).mean()) < 1.5
    # No EOI marker at the end (truncated): Pillow decodes, and refuses it.
    calls.clear()
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[: len(data) * 3 // 4])
    assert not calls
    # CMYK and other modes are Pillow's.
    cmyk = encode(Image.fromarray(arr).convert("CMYK"), "JPEG")
    assert decode_image(cmyk).frames[0].pixels.shape == (300, 400, 3) and not calls


def cv2_smooth(arr: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.GaussianBlur(arr, (0, 0), 3))


def test_big_jpeg_is_downscaled_while_decoding(
    big_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _spy_jpeg_load(monkeypatch)
    result = decode_image(big_jpeg, DecodeLimits(target_side_px=2048))
    check_frames(result)
    assert set(sizes) == {(2000, 1500)}  # libjpeg decoded at 1/2: 4000x3000 never existed
    frame = result.frames[0]
    assert 1024 <= max(frame.pixels.shape[:2]) <= 2048
    assert frame.pixels.shape == (1500, 2000, 3)
    assert frame.scale == pytest.approx(0.5)
    assert (result.width, result.height) == (4000, 3000)


def test_big_jpeg_full_resolution_without_target(
    big_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _spy_jpeg_load(monkeypatch)
    result = decode_image(big_jpeg, DecodeLimits(target_side_px=None))
    assert set(sizes) == {(4000, 3000)}
    assert result.frames[0].pixels.shape == (3000, 4000, 3)
    assert result.frames[0].scale == 1.0


@pytest.mark.parametrize(("target", "factor"), [(1000, 4), (500, 8), (300, 8)])
def test_jpeg_draft_factor(
    big_jpeg: bytes, monkeypatch: pytest.MonkeyPatch, target: int, factor: int
) -> None:
    sizes = _spy_jpeg_load(monkeypatch)
    frame = decode_image(big_jpeg, DecodeLimits(target_side_px=target)).frames[0]
    assert set(sizes) == {(4000 // factor, 3000 // factor)}
    assert target // 2 <= max(frame.pixels.shape[:2]) <= target
    assert frame.scale == pytest.approx(max(frame.pixels.shape[:2]) / 4000)


def test_downscaled_rotated_jpeg() -> None:
    arr = np.zeros((600, 800, 3), np.uint8)
    arr[:, :400] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes())
    result = decode_image(data, DecodeLimits(target_side_px=400))
    assert (result.width, result.height) == (600, 800)
    frame = result.frames[0]
    assert frame.pixels.shape == (400, 300, 3)
    assert frame.scale == pytest.approx(0.5)
    assert frame.pixels[50, 150].mean() > 200 and frame.pixels[350, 150].mean() < 50


def test_png_is_resized_after_decoding_and_bbox_maps_back() -> None:
    arr = np.zeros((1000, 3000, 3), np.uint8)
    arr[300:600, 1500:1800] = 255
    result = decode_image(encode(Image.fromarray(arr), "PNG"), DecodeLimits(target_side_px=1000))
    frame = result.frames[0]
    assert frame.pixels.shape == (333, 1000, 3)
    assert frame.scale == pytest.approx(1 / 3)
    ys, xs = np.nonzero(frame.pixels[:, :, 0] > 128)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / frame.scale
    assert np.abs(box - [1500, 300, 1800, 600]).max() <= 4


def test_alpha_views_are_downscaled_together() -> None:
    rgba = np.zeros((400, 800, 4), np.uint8)
    rgba[:, :, :3] = 90
    rgba[:, :, 3] = 0
    result = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"),
                          DecodeLimits(target_side_px=200))
    assert [f.pixels.shape for f in result.frames] == [(100, 200, 3)] * 3
    assert (result.frames[0].pixels == 90).all()
    assert (result.frames[1].pixels == 255).all()


# --------------------------------------------------------------------------- properties


def _outcome(data: bytes, limits: DecodeLimits = decode_mod.DEFAULT_LIMITS) -> None:
    """decode_image either succeeds with valid frames or raises InvalidImage."""
    try:
        result = decode_image(data, limits)
    except InvalidImage:
        return
    check_frames(result)


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_invalid_image(data: bytes) -> None:
    _outcome(data)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8X",
          b"BM", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"]


@PROPERTY_SETTINGS
@given(st.sampled_from(MAGICS), st.binary(max_size=1024))
def test_magic_prefixed_bytes_only_raise_invalid_image(magic: bytes, tail: bytes) -> None:
    _outcome(magic + tail)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf if cut is None else buf[: cut % (len(buf) + 1)])


ANIMATIONS = {f"anim_{fmt}": _animation(fmt, 3, size=16) for fmt in ("GIF", "PNG", "WEBP")}
CORPUS = {**SAMPLES, **ANIMATIONS,
          "PNG_RGBA": encode(Image.fromarray(_hidden_face_rgba(0), "RGBA"), "PNG"),
          "JPEG_EXIF": _with_orientation("JPEG", 6)}


@PROPERTY_SETTINGS
@given(
    st.sampled_from(sorted(CORPUS)),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.none() | st.integers(0, 1 << 20),
)
def test_corrupted_images_only_raise_invalid_image(
    name: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    _outcome(_mutate(CORPUS[name], edits, cut), DecodeLimits(max_pixels=4_000_000))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_property_corpus_is_valid(name: str) -> None:
    check_frames(decode_image(CORPUS[name]))


def test_face_drawn_only_in_alpha_shows_over_black() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, :3] = 255
    rgba[8:24, 8:24, 3] = 255  # the "face" exists only in the alpha channel
    result = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    raw, white, black = (f.pixels for f in result.frames)
    assert (raw == 255).all() and (white == 255).all()  # invisible in these views
    assert (black[8:24, 8:24] == 255).all() and (black[0:8, 0:8] == 0).all()


def test_gif_frame_larger_than_its_screen_is_invalid() -> None:
    data = bytearray(encode(Image.new("RGB", (8, 8), (200, 10, 10)), "GIF"))
    data[6:10] = struct.pack("<HH", 4, 4)  # the logical screen claims 4x4
    try:
        result = decode_image(bytes(data))
    except InvalidImage:
        return
    check_frames(result)  # if Pillow crops to the screen, the frame must still be sane
