"""One layer as one picture: a coloured tile grid with a title band and a colour bar.

Its own stage because it is where values become pixels with text (Pillow, imported lazily):
:func:`render_layer` is what the display functions, the report and the tests call per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import InputError
from .colors import apply_colormap, colormap_lut
from .tiles import _layout, _normalise, sample_tiles, tile_grid

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


@dataclass
class LayerPicture:
    """A rendered layer: the PIL image plus where the grid sits in it (for tests and reports)."""

    key: str
    image: Any  # PIL.Image.Image
    grid: np.ndarray  # normalised values in [0, 1], NaN on separators
    origin: tuple[int, int]  # (x, y) of the grid's top-left pixel inside ``image``
    tile_shape: tuple[int, int]  # (h, w) of one tile in pixels, after scaling
    cols: int
    rows: int
    count: int
    vmin: float
    vmax: float
    normalize: str
    title: str


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _shape_text(arr: np.ndarray) -> str:
    return "x".join(str(d) for d in np.shape(arr))


def _compose(grid_rgb: np.ndarray, title: str, bar: tuple[np.ndarray, str, str] | None):
    """Grid + title band + optional colour bar (lut, top label, bottom label) -> PIL image."""
    from PIL import Image, ImageDraw

    font = _font(13)
    small = _font(11)
    gh, gw = grid_rgb.shape[:2]
    pad, title_h = 6, 22
    bar_w, label_w = (14, 78) if bar is not None else (0, 0)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(probe.textlength(title, font=font)) + 2 * pad
    width = max(gw + 2 * pad + (bar_w + label_w + pad if bar else 0), text_w)
    bar_h = max(gh, 64) if bar is not None else 0
    height = title_h + max(gh, bar_h) + 2 * pad
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _BACKGROUND
    oy, ox = title_h + pad, pad
    canvas[oy:oy + gh, ox:ox + gw] = grid_rgb
    if bar is not None:
        lut, top, bottom = bar
        bx = ox + gw + pad
        ramp = lut[np.linspace(255, 0, bar_h).round().astype(np.uint8)]
        canvas[oy:oy + bar_h, bx:bx + bar_w] = ramp[:, None, :]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    draw.text((pad, 4), title, fill=_TEXT, font=font)
    if bar is not None:
        tx = ox + gw + pad + bar_w + 4
        draw.text((tx, oy), top, fill=_TEXT, font=small)
        draw.text((tx, oy + bar_h - 13), bottom, fill=_TEXT, font=small)
    return img, (ox, oy)


def render_layer(key: str, arr: np.ndarray, info: Any = None, *, cmap: Any = None, normalize: str = "tile",
                 sample: int = 0, data_format: str | None = None, min_tile: int = 32,
                 max_side: int = 1600) -> LayerPicture:
    """Render one layer (one sample) as a tiled grid with title and colour bar."""
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputError(f"layer {key!r} is empty (shape {arr.shape}); there is nothing to draw")
    layout = _layout(arr, info, data_format)
    tiles, kind = sample_tiles(arr, layout, sample)
    values, vmin, vmax = _normalise(tiles, normalize)
    n, h, w = values.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    if max(h, w) * max(cols, rows) > max_side:  # too big: subsample each tile
        step = math.ceil(max(h, w) * max(cols, rows) / max_side)
        values = values[:, ::step, ::step]
        n, h, w = values.shape
    if n == 1:  # a single tile (1-D strip, channels x width) is drawn bigger
        min_tile = max(min_tile, 160)
    scale = max(1, min(math.ceil(min_tile / max(h, w)), max_side // max(1, max(h, w) * max(cols, rows))))
    grid = tile_grid(values, cols=cols, sep=1, scale=scale)
    lut = colormap_lut(cmap)
    rgb = apply_colormap(grid, cmap)
    op = getattr(info, "op_type", None)
    act = getattr(info, "activation", None)
    op_text = f"{op}+{act}" if op and act else (op or "")
    parts = [key] + ([op_text] if op_text else []) + [_shape_text(arr)]
    if arr.ndim >= 2 and arr.shape[0] > 1:
        parts.append(f"sample {sample}")
    if kind not in ("maps",):
        parts.append(kind)
    parts.append("per-tile scale" if normalize == "tile" else "shared scale")
    title = "  |  ".join(parts)
    if normalize == "tile":
        bar = (lut, "tile max", "tile min")
    else:
        bar = (lut, _fmt(vmax), _fmt(vmin))
    image, origin = _compose(rgb, title, bar)
    return LayerPicture(key, image, grid, origin, (h * scale, w * scale), cols, rows, n, vmin, vmax,
                        normalize, title)
