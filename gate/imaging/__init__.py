"""Safe image decoding (see :mod:`gate.imaging.decode`)."""

from gate.imaging.decode import (
    ACCEPTED_FORMATS,
    DEFAULT_LIMITS,
    DecodedImage,
    DecodeLimits,
    Frame,
    decode_image,
    sniff_format,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_LIMITS",
    "DecodeLimits",
    "DecodedImage",
    "Frame",
    "decode_image",
    "sniff_format",
]
