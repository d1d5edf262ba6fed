"""What in a request can carry a face: every string is looked at, in every mode.

A string carries an image when any reading an upstream could make of it yields an image
or another media file: strict base64, lenient base64 (Python's default decoder, used by
the web UI, drops characters outside the alphabet), URL-safe base64, or the payload of a
``data:`` URL (base64 or percent-encoded). "An image" is anything the gate's sniffer
names (JPEG, PNG, TIFF, HEIC, MP4...) or Pillow can open (PPM, TGA, PCX...), since the
upstreams decode with Pillow. Such a string is checked by the gate, and is forwarded
re-encoded from the exact bytes that were checked (so no decoder can read other bytes
out of it); a string with two different readings is refused.

A string is also looked at as a *reference* the upstream could load pixels from: a URL
(any ``scheme://``) or a file path (absolute, or naming a media file). The mapping of each
API decides where those are refused.

``scan`` walks a parsed JSON document (bounded depth) and returns the document with
every inline image canonicalised, plus what it found and where (a path of keys and
indices). Text fields (prompts) are read strictly: a lenient reading of ordinary prose
is not an image, and no upstream decodes a prompt leniently.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from PIL import Image, UnidentifiedImageError

from gate.imaging.decode import sniff_format
from gate.proxy.types import Malformed

Path = tuple[str | int, ...]

#: Nothing smaller can hold a face (a 1x1 PNG is 67 bytes); shorter strings are skipped.
MIN_MEDIA_BYTES: Final = 64
#: JSON bodies nested deeper than this are refused (real API bodies stay below 12).
MAX_DEPTH: Final = 64
#: Pillow probes (strings that decode to bytes no sniffer names) per request.
MAX_PROBES: Final = 2000

_URL: Final = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?//")
_DATA_URL: Final = re.compile(r"\s*data:([^,]*),", re.IGNORECASE)
_NOT_STD: Final = re.compile(r"[^A-Za-z0-9+/]")
_URLSAFE: Final = str.maketrans("-_", "+/")
_ABSOLUTE_PATH: Final = re.compile(r"\s*(?:/[^/\s]|~[/\\]|[A-Za-z]:[/\\]|\\\\)")
_MEDIA_FILE: Final = re.compile(
    r"\.(?:png|jpe?g|jfif|webp|gif|bmp|tiff?|heic|heif|avif|jxl|ppm|pgm|pbm|pnm|tga|psd|"
    r"ico|exr|hdr|mp4|m4v|mov|avi|mkv|webm|mpe?g|wmv|flv|latent|npy|npz)"
    r"(?:\s*\[(?:input|output|temp)\])?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Inline:
    """An image given inline, and where: ``path`` from the document's root."""

    path: Path
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Scan:
    """A scanned document: ``doc`` with every inline image re-encoded from its checked
    bytes, the images, and the strings that name something to load (URLs, file paths)."""

    doc: Any
    images: tuple[Inline, ...]
    urls: tuple[Path, ...]
    files: tuple[Path, ...]


def where(path: Path) -> str:
    """``a.b.0`` (the param of an error)."""
    return ".".join(str(p) for p in path)[:200]


def is_url(value: str) -> bool:
    """A URL an upstream could fetch (``scheme://...`` or ``//host/...``)."""
    return _URL.match(value) is not None


def is_file_path(value: str) -> bool:
    """An absolute file path, or a name ending in a media file extension."""
    return _ABSOLUTE_PATH.match(value) is not None or _MEDIA_FILE.search(value) is not None


class _Probe:
    """Bounded media detection for one request."""

    def __init__(self, status: int = 400) -> None:
        self.probes = 0
        self.status = status

    def media(self, data: bytes) -> bool:
        if len(data) < MIN_MEDIA_BYTES:
            return False
        if sniff_format(data) is not None:
            return True
        self.probes += 1
        if self.probes > MAX_PROBES:
            raise Malformed("the request holds too many long values to check",
                            status=self.status)
        return _pillow_opens(data)

    def readings(self, value: str, *, strict: bool) -> list[tuple[bytes, str]]:
        """Distinct media readings of ``value``: ``(bytes, data URL header or "")``."""
        if len(value) < MIN_MEDIA_BYTES:
            return []
        candidates: list[tuple[bytes, str]] = []
        match = _DATA_URL.match(value)
        if match is not None:
            header, payload = match.group(1), value[match.end():]
            if header.lower().endswith(";base64"):
                candidates += [(d, header) for d in _base64_readings(payload, strict)]
            else:
                candidates.append((unquote_to_bytes(payload), header))
        candidates += [(d, "") for d in _base64_readings(value, strict)]
        out: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for data, header in candidates:
            if data not in seen:
                seen.add(data)
                if self.media(data):
                    out.append((data, header))
        return out


def _base64_readings(text: str, strict: bool) -> list[bytes]:
    """Strict base64; unless ``strict``, also what lenient decoders read: Python's default
    (drops characters outside the alphabet), the same ignoring padding, and the same
    taking ``-_`` as ``+/`` (Node.js, ``urlsafe_b64decode``)."""
    readings = []
    with contextlib.suppress(binascii.Error, ValueError):
        readings.append(base64.b64decode("".join(text.split()), validate=True))
    if strict or readings:  # clean base64: every lenient reading is this one
        return readings
    with contextlib.suppress(binascii.Error, ValueError):
        readings.append(base64.b64decode(text))
    for kept in (_NOT_STD.sub("", text), _NOT_STD.sub("", text.translate(_URLSAFE))):
        if len(kept) % 4 != 1:
            with contextlib.suppress(binascii.Error, ValueError):
                readings.append(base64.b64decode(kept + "=" * (-len(kept) % 4),
                                                 validate=True))
    return readings


def _pillow_opens(data: bytes) -> bool:
    """Pillow identifies a format and parses its header (pixels are not decoded). Only
    "no format recognises it" is a no: any other failure counts as media (fail closed: the
    gate then refuses what it cannot decode)."""
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except UnidentifiedImageError:
        return False
    except (Exception, Image.DecompressionBombWarning):  # noqa: BLE001 - fails closed
        return True


def canonical(data: bytes, header: str) -> str:
    """The forwarded form of an inline image: its checked bytes, base64 (data URL kept)."""
    text = base64.b64encode(data).decode("ascii")
    if not header:
        return text
    if not header.lower().endswith(";base64"):
        header += ";base64"
    return f"data:{header},{text}"


def inline_media(value: str, *, strict: bool = False, probe: _Probe | None = None,
                 status: int = 400) -> tuple[bytes, str] | None:
    """The one media reading of ``value`` and its canonical form, ``None`` when it holds
    none; ``Malformed`` (``status``) when it reads as two different files."""
    probe = probe or _Probe(status)
    readings = probe.readings(value, strict=strict)
    if not readings:
        return None
    if len(readings) > 1:
        raise Malformed("an inline image reads as different files depending on the decoder "
                        "(URL-safe base64, or characters outside the base64 alphabet); send "
                        "standard base64", code="ambiguous_image", status=probe.status)
    data, header = readings[0]
    return data, canonical(data, header)


def scan(doc: Any, *, text: Callable[[Path], bool] = lambda _: False,
         status: int = 400) -> Scan:
    """Walk ``doc`` (parsed JSON). Strings at paths where ``text`` is true are prompts:
    read strictly, never reported as URLs or files. Keys that hold an image are refused.
    Refusals are ``Malformed`` with ``status`` (the API's validation status)."""
    probe = _Probe(status)
    images: list[Inline] = []
    urls: list[Path] = []
    files: list[Path] = []

    def walk(value: Any, path: Path) -> Any:
        if len(path) > MAX_DEPTH:
            raise Malformed(f"the body is nested deeper than {MAX_DEPTH} levels",
                            param=where(path[:8]), status=status)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if probe.readings(key, strict=False):
                    raise Malformed("a JSON key holds an image", param=where(path),
                                    code="unexpected_image", status=status)
                out[key] = walk(item, (*path, key))
            return out
        if isinstance(value, list):
            return [walk(item, (*path, i)) for i, item in enumerate(value)]
        if not isinstance(value, str):
            return value
        prose = text(path)
        found = inline_media(value, strict=prose, probe=probe)
        if found is not None:
            images.append(Inline(path, found[0]))
            return found[1]
        if not prose and is_url(value):
            urls.append(path)
        elif not prose and is_file_path(value):
            files.append(path)
        return value

    canonical_doc = walk(doc, ())
    return Scan(canonical_doc, tuple(images), tuple(urls), tuple(files))
