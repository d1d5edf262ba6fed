"""Real one-face photos for the benchmarks, from packages that are always installed."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path


def face_jpeg(side: int = 512) -> bytes:
    """insightface's packaged Tom Hanks portrait as a ``side`` x ``side`` JPEG."""
    from PIL import Image

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "data" / "images" / "Tom_Hanks_54745.png"
    image = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
