"""Small text (numbers, captions) stamped into numpy RGB canvases without system fonts.

Its own stage because every picture needs numbers (colour-bar values, channel numbers, axis
ticks) and drawing them through ``ImageDraw`` per label is slow for grids of hundreds of tiles:
each distinct string is rasterised once with Pillow's bundled default font (no system font is
needed), cached as an alpha mask, and blended into the canvas with numpy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

TEXT = (20, 20, 20)


@lru_cache(maxsize=8)
def font(size: int):
    """Pillow's bundled default font at ``size`` px (a fixed bitmap font on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


@lru_cache(maxsize=8)
def line_height(size: int) -> int:
    """Height in px of one line of text at ``size`` (ascent + descent: every label lines up)."""
    f = font(size)
    try:
        ascent, descent = f.getmetrics()
    except AttributeError:  # bitmap font
        box = f.getbbox("0g")
        return int(box[3] - box[1]) + 2
    return int(ascent + descent)


@lru_cache(maxsize=4096)
def _mask(text: str, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    f = font(size)
    w = max(1, int(np.ceil(f.getlength(text))) if hasattr(f, "getlength") else f.getbbox(text)[2])
    img = Image.new("L", (w, line_height(size)), 0)
    ImageDraw.Draw(img).text((0, 0), text, fill=255, font=f)
    m = np.asarray(img, dtype=np.float32) / 255.0
    m.setflags(write=False)
    return m


def text_width(text: str, size: int = 11) -> int:
    """Width in px of ``text`` drawn at ``size``."""
    return int(_mask(text, size).shape[1])


def stamp(canvas: np.ndarray, x: int, y: int, text: str, size: int = 11, color: tuple[int, int, int] = TEXT,
          anchor: str = "lt") -> tuple[int, int, int, int]:
    """Blend ``text`` into the uint8 RGB ``canvas`` in place; returns the box ``(x, y, w, h)`` it covers.

    ``anchor``: first letter l / m / r (x is the left edge, middle or right edge), second t / m / b
    (y is the top, middle or bottom). Text falling off the canvas is clipped, never an error.
    """
    m = _mask(text, size)
    h, w = m.shape
    x = int(x - (w // 2 if anchor[0] == "m" else w if anchor[0] == "r" else 0))
    y = int(y - (h // 2 if anchor[1] == "m" else h if anchor[1] == "b" else 0))
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if x0 >= x1 or y0 >= y1:
        return x, y, w, h
    a = m[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.rint(region * (1.0 - a) + np.asarray(color, np.float32) * a).astype(np.uint8)
    return x, y, w, h


def fmt(v: float) -> str:
    """A number as a short label: 3 significant digits (``0.0123``, ``4.56e+03``, ``-1``)."""
    if v == 0:
        return "0"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    """Round tick positions (1, 2, 5 x 10^k steps) inside ``[lo, hi]``, at most ``max_ticks`` of them."""
    span = hi - lo
    if span <= 0 or max_ticks < 1:
        return [lo]
    raw = span / max(1, max_ticks)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step) * step
    return [float(t) for t in np.arange(first, hi + step * 1e-9, step)]
