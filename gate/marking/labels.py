"""Implicit AI-content labels in image metadata, written without touching pixels.

Obligation ``label_ai_content`` (China's 2025 labelling measures with GB 45438-2025; EU AI
Act Art. 50) is met with machine-readable metadata:

* PNG: a ``tEXt`` chunk ``AIGC`` holding the standard's JSON label
  (``Label`` "1" = AI-generated, ``ContentProducer``, ``ProduceID`` = the gate's request id,
  and the reserved/propagator fields, empty), a ``tEXt`` chunk ``consent-gate`` with the
  request id, the grant ids and the policy version, and one XMP packet (``iTXt``
  ``XML:com.adobe.xmp``) carrying ``TC260:AIGC`` and IPTC
  ``Iptc4xmpExt:DigitalSourceType`` = ``trainedAlgorithmicMedia``.
* JPEG: the same XMP packet in an APP1 segment after SOI/JFIF/Exif.
* Other formats (WebP, GIF, BMP) are re-encoded to PNG first (one frame only).

Every other chunk or segment is kept byte for byte and in order: an existing C2PA manifest
(JUMBF in a PNG ``caBX`` chunk or in JPEG APP11 segments) is never stripped. A previous
``AIGC``/``consent-gate`` text chunk and a previous XMP packet are replaced, since a file
holds one XMP packet. Adding metadata changes the file's bytes, so an upstream C2PA
manifest's hard binding no longer matches them; re-sign with ``gate.marking.provenance``
(obligation ``embed_c2pa_manifest``), which carries the upstream manifest as an ingredient.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from gate.errors import InvalidImage
from gate.imaging.decode import sniff_format

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
_XMP_KEYWORD = b"XML:com.adobe.xmp"
_XMP_APP1_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_REPLACED_TEXT_KEYS = (b"AIGC", b"consent-gate")


@dataclass(frozen=True, slots=True)
class LabelInfo:
    """What a label says about one generated image (no names, no pixels)."""

    content_producer: str
    produce_id: str  # the gate's request id
    grant_ids: Sequence[str] = field(default_factory=tuple)
    policy_version: str = ""

    def aigc(self) -> dict[str, str]:
        """The GB 45438-2025 metadata label; ``Label`` "1" means AI-generated."""
        return {"Label": "1", "ContentProducer": self.content_producer,
                "ProduceID": self.produce_id, "ReservedCode1": "", "ContentPropagator": "",
                "PropagateID": "", "ReservedCode2": ""}

    def gate_record(self) -> dict[str, object]:
        return {"request_id": self.produce_id, "grant_ids": list(self.grant_ids),
                "policy_version": self.policy_version}


def label_image(data: bytes, info: LabelInfo) -> tuple[bytes, str]:
    """``(labelled bytes, media type)``; PNG and JPEG keep their pixels byte for byte."""
    kind = sniff_format(data)
    if kind == "PNG":
        return label_png(data, info), "image/png"
    if kind == "JPEG":
        return label_jpeg(data, info), "image/jpeg"
    if kind in ("WEBP", "GIF", "BMP"):
        return label_png(_to_png(data), info), "image/png"
    raise InvalidImage(f"cannot label an output of format {kind or 'unknown'}")


def xmp_packet(info: LabelInfo) -> bytes:
    aigc = escape(json.dumps(info.aigc(), ensure_ascii=False, separators=(",", ":")))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f' xmlns:TC260="{TC260_NS}">'
        f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>"
        f"<TC260:AIGC>{aigc}</TC260:AIGC>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


# --------------------------------------------------------------------------- PNG


def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(type, whole chunk bytes)`` of each chunk; ``InvalidImage`` when truncated."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidImage("not a PNG file")
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise InvalidImage("truncated PNG chunk header")
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise InvalidImage("truncated PNG chunk")
        kind = data[pos + 4:pos + 8]
        yield kind, data[pos:end]
        pos = end
        if kind == b"IEND":
            return
    raise InvalidImage("PNG without IEND")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _is_replaced(kind: bytes, chunk: bytes) -> bool:
    payload = chunk[8:-4]
    if kind == b"tEXt":
        return payload.split(b"\x00", 1)[0] in _REPLACED_TEXT_KEYS
    if kind == b"iTXt":
        return payload.split(b"\x00", 1)[0] == _XMP_KEYWORD
    return False


def label_png(data: bytes, info: LabelInfo) -> bytes:
    aigc = json.dumps(info.aigc(), ensure_ascii=True, separators=(",", ":")).encode("latin-1")
    record = json.dumps(info.gate_record(), ensure_ascii=True,
                        separators=(",", ":")).encode("latin-1")
    ours = (png_chunk(b"tEXt", b"AIGC\x00" + aigc)
            + png_chunk(b"tEXt", b"consent-gate\x00" + record)
            # iTXt: keyword, NUL, compression flag 0, method 0, empty language, empty
            # translated keyword, then the UTF-8 XMP packet.
            + png_chunk(b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp_packet(info)))
    out = [PNG_SIGNATURE]
    inserted = False
    for kind, chunk in png_chunks(data):
        if _is_replaced(kind, chunk):
            continue
        if not inserted and kind in (b"IDAT", b"IEND"):
            out.append(ours)
            inserted = True
        out.append(chunk)
    return b"".join(out)


# --------------------------------------------------------------------------- JPEG

_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments before SOS as ``(marker, bytes)``, and the rest (scan data)."""
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImage("not a JPEG file")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidImage("corrupt JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            segments.append((marker, data[pos:pos + 2]))
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: everything from here is kept as is
            return segments, data[pos:]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise InvalidImage("truncated JPEG segment")
        segments.append((marker, data[pos:end]))
        pos = end
    raise InvalidImage("JPEG without a scan")


def label_jpeg(data: bytes, info: LabelInfo) -> bytes:
    packet = _XMP_APP1_HEADER + xmp_packet(info)
    if len(packet) + 2 > 0xFFFF:
        raise InvalidImage("label too large for one JPEG segment")
    ours = b"\xff\xe1" + struct.pack(">H", len(packet) + 2) + packet
    segments, rest = jpeg_segments(data)
    kept = [(m, s) for m, s in segments
            if not (m == 0xE1 and s[4:4 + len(_XMP_APP1_HEADER)] == _XMP_APP1_HEADER)]
    # After SOI and the leading APP0 (JFIF) / APP1 (Exif) segments, as readers expect.
    at = 0
    while at < len(kept) and kept[at][0] in (0xE0, 0xE1):
        at += 1
    body = [s for _, s in kept[:at]] + [ours] + [s for _, s in kept[at:]]
    return b"\xff\xd8" + b"".join(body) + rest


# --------------------------------------------------------------------------- others


def _to_png(data: bytes) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise InvalidImage("animated outputs cannot be labelled")
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, UnidentifiedImageError):
        raise InvalidImage("the output image could not be decoded") from None


def has_c2pa(data: bytes) -> bool:
    """True when the image carries an embedded C2PA manifest store (JUMBF)."""
    try:
        kind = sniff_format(data)
        if kind == "PNG":
            return any(k == b"caBX" for k, _ in png_chunks(data))
        if kind == "JPEG":
            return any(m == 0xEB for m, _ in jpeg_segments(data)[0])
    except InvalidImage:
        return False
    return False
