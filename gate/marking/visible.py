"""The explicit (visible) AI-content label drawn into an output's pixels.

Obligation ``label_visible`` (China's labelling measures and GB 45438-2025: text with "AI"
and "生成" in a corner, at least 5 % of the shorter side high; the EU pack's deepfake
disclosure): the text of the person's locale, in the first allowed placement, on a
translucent dark plate so it reads on any background, at least the pack's minimum height.
The text is drawn with a bundled subset of Noto Sans CJK (``fonts/``), so Chinese renders
on any machine; a text with a character the subset lacks is refused, never drawn as boxes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gate.errors import GateError

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "label-sans.otf"
#: Placements a pack may allow, as (horizontal, vertical) anchors.
POSITIONS = {"top_left": ("left", "top"), "top_right": ("right", "top"),
             "bottom_left": ("left", "bottom"), "bottom_right": ("right", "bottom"),
             "top": ("center", "top"), "bottom": ("center", "bottom"),
             "left": ("left", "middle"), "right": ("right", "middle")}


class LabelTextError(GateError):
    code = "label_text_invalid"


#: The characters ``fonts/label-sans.otf`` was subset to (its README has the command).
COVERED = frozenset("".join(chr(c) for c in range(32, 127)) +
                    "人工智能生成合成内容由创作标识本图片视频音频为所：（）·、，。|")


def check_text(text: str) -> None:
    """Raise ``LabelTextError`` when the bundled font cannot draw every character."""
    missing = sorted({c for c in text if c not in COVERED and not c.isspace()})
    if missing:
        raise LabelTextError(f"the label font has no glyph for {''.join(missing)!r}; "
                             "add it to gate/marking/fonts (see its README)")


@cache
def _font(size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), size_px)


def draw_label(image_bgr: np.ndarray, text: str, *, position: str = "bottom_right",
               min_height_ratio: float = 0.05) -> np.ndarray:
    """``image_bgr`` with ``text`` drawn in ``position``; the glyphs' height is at least
    ``min_height_ratio`` of the image's shorter side (and at least 12 px)."""
    check_text(text)
    if position not in POSITIONS:
        raise LabelTextError(f"unknown label position {position!r}")
    height, width = image_bgr.shape[:2]
    target = max(12, int(np.ceil(min_height_ratio * min(width, height))))
    # Size the font so the *ink* of the text (not the em box) reaches the target height.
    font = _font(target)
    for _ in range(4):
        left, top, right, bottom = font.getbbox(text)
        ink = bottom - top
        if ink >= target:
            break
        font = _font(max(font.size + 1, int(font.size * target / max(ink, 1)) + 1))
    left, top, right, bottom = font.getbbox(text)
    text_w, text_h = right - left, bottom - top
    pad = max(2, text_h // 4)
    plate_w, plate_h = text_w + 2 * pad, text_h + 2 * pad
    if plate_w > width or plate_h > height:
        raise LabelTextError("the image is too small for a legible label")
    horizontal, vertical = POSITIONS[position]
    margin = max(2, min(width, height) // 100)
    x = {"left": margin, "center": (width - plate_w) // 2,
         "right": width - plate_w - margin}[horizontal]
    y = {"top": margin, "middle": (height - plate_h) // 2,
         "bottom": height - plate_h - margin}[vertical]
    rgba = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])).convert("RGBA")
    overlay = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((x, y, x + plate_w, y + plate_h), fill=(0, 0, 0, 150))
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))
    labelled = Image.alpha_composite(rgba, overlay).convert("RGB")
    out: np.ndarray = np.asarray(labelled, dtype=np.uint8)[:, :, ::-1].copy()
    return out
