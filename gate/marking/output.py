"""Labelling a generated image: everything an output carries, in one place.

``OutputLabeller.label`` applies, in this order:

1. **Invisible watermark** (always): a keyed 64-bit digest of the request id, embedded in
   the full-resolution pixels (``gate.marking.watermark``), so a re-posted, re-encoded,
   resized or cropped copy can be traced back to its request (``FaceGate.trace``).
2. **Visible label** (obligation ``label_visible``, from the jurisdiction packs): the
   pack's text in the person's locale, in an allowed corner, at least its minimum height.
3. Re-encoding: PNG stays lossless; JPEG at quality 95; other formats become PNG.
4. **Implicit labels** (always: ``label_ai_content``; they also meet
   ``label_gb45438_metadata`` and the XMP carrier of ``mark_machine_readable``): the GB
   45438 ``AIGC`` metadata fields, ``ProduceID`` = the request id, and the IPTC digital
   source type ``trainedAlgorithmicMedia`` (``gate.marking.labels``).
5. **C2PA manifest** (when a signer is configured; required by ``embed_c2pa_manifest``).

An image too small to carry a watermark (under 128 x 256 px) is labelled without one;
the result says so (``watermarked``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from gate.errors import InvalidImage
from gate.imaging.decode import DecodeLimits, decode_image, sniff_format
from gate.marking.labels import LabelInfo, label_image
from gate.marking.provenance import ManifestSigner, ProvenanceError
from gate.marking.visible import draw_label
from gate.marking.watermark import TiledWatermarker, mark_digest

_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg"}
#: Smallest image (short side, long side) the watermark fits in.
MIN_MARK_SIZE = (128, 256)


@dataclass(frozen=True, slots=True)
class VisibleLabel:
    """What ``label_visible`` asks for (``PolicySet.labels().visible``, resolved)."""

    text: str
    position: str
    min_height_ratio: float


@dataclass(frozen=True, slots=True)
class Labelled:
    data: bytes
    media_type: str
    digest: bytes | None  # the mark embedded (None: too small to carry one)
    visible: bool
    c2pa: bool


class OutputLabeller:
    """Applies the labels of the module doc to one generated image."""

    def __init__(self, mark_key: bytes, *, limits: DecodeLimits,
                 signer: ManifestSigner | None = None, content_producer: str = "consent-gate"
                 ) -> None:
        self.mark_key = mark_key
        self.watermarker = TiledWatermarker(mark_key)
        self.limits = limits
        self.signer = signer
        self.content_producer = content_producer

    def label(self, data: bytes, *, request_id: str, visible: VisibleLabel | None = None,
              c2pa: bool = False, grant_ids: Sequence[str] = (),
              policy_version: str = "") -> Labelled:
        kind = sniff_format(data)
        decoded = decode_image(data, self.limits)  # full size, every limit still applies
        frame = decoded.frames[0]
        pixels = frame.pixels
        if frame.scale != 1.0:
            raise InvalidImage("the output is larger than the labelling limits")
        digest: bytes | None = None
        short, long = sorted(pixels.shape[:2])
        if short >= MIN_MARK_SIZE[0] and long >= MIN_MARK_SIZE[1]:
            digest = mark_digest(self.mark_key, request_id)
            pixels = self.watermarker.embed(pixels, digest)
        if visible is not None:
            pixels = draw_label(pixels, visible.text, position=visible.position,
                                min_height_ratio=visible.min_height_ratio)
        encoded, _ = _encode(pixels, kind, _alpha(data, decoded.frames))
        info = LabelInfo(content_producer=self.content_producer, produce_id=request_id,
                         grant_ids=tuple(grant_ids), policy_version=policy_version)
        labelled, media = label_image(encoded, info)
        signed = False
        if c2pa:
            if self.signer is None:
                raise ProvenanceError("a C2PA manifest is required but no C2PA signer is "
                                      "configured (GATE_C2PA_CERT_FILE, GATE_C2PA_KEY_FILE)")
            labelled = self.signer.sign(labelled, media, info)
            signed = True
        return Labelled(labelled, media, digest, visible is not None, signed)


def _alpha(data: bytes, frames: Sequence[object]) -> np.ndarray | None:
    """The alpha channel of a translucent PNG output (kept through labelling)."""
    if sniff_format(data) != "PNG" or len(frames) < 2:
        return None
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("RGBA", "LA", "PA", "P"):
            return None
        alpha = np.asarray(im.convert("RGBA"), dtype=np.uint8)[:, :, 3]
    return alpha.copy()


def _encode(pixels: np.ndarray, kind: str | None, alpha: np.ndarray | None
            ) -> tuple[bytes, str]:
    if kind == "JPEG":
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        fmt = "JPEG"
    else:
        image = pixels if alpha is None or alpha.shape != pixels.shape[:2] else \
            np.dstack([pixels, alpha])
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        fmt = "PNG"
    if not ok:
        raise InvalidImage("the labelled output could not be encoded")
    return buf.tobytes(), fmt
