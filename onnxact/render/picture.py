"""One layer as one picture: a title band, the layer's values drawn the way that shows them, a
colour bar with numbers.

Its own stage because it is where values become pixels with text. :func:`render_layer` picks the
drawing from the layer's shape (:func:`.tiles.layer_kind`): a tile grid for 2-D maps, a bar chart
for one value per channel (global pools, squeeze-excite), a channels x time image for 1-D maps
(:mod:`.charts` draws the last two). Everything is drawn into numpy arrays; text is stamped from
cached glyph masks (:mod:`.text`), so a grid of hundreds of numbered tiles stays in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .colors import BACKGROUND_INDEX, colormap_lut, colour_packed, lut_index, rgb_view
from .text import fmt, line_height, stamp, text_width
from .tiles import _layout, _normalise, grid_geometry, layer_kind, sample_tiles, tile_grid, tile_ranges

_PAD, _TITLE_SIZE, _LABEL_SIZE, _NUMBER_SIZE = 6, 13, 11, 10
_BAR_W = 14


@dataclass
class LayerPicture:
    """A rendered layer: the PIL image plus where every tile sits in it and what it holds.

    ``kind`` is ``grid`` (tiles of 2-D maps), ``bars`` (one value per channel), ``sequence``
    (channels x time) or ``vector`` (a 1-D array as one near-square tile). ``channels[i]``,
    ``tile_ranges[i]`` (raw ``(min, max)`` of its values) and ``tile_boxes[i]`` (``(x, y, w, h)``
    in ``image`` pixels) describe tile / bar / row ``i``: what a report needs for hover text.
    ``vmin`` / ``vmax`` are the range of the drawn sample; ``scale`` says what the colours mean
    (``"per tile"``, ``"per channel"`` or ``"layer"``).
    """

    key: str
    image: Any  # PIL.Image.Image
    grid: np.ndarray  # the normalised values drawn, in [0, 1], tiled at the maps' own size; NaN between
    origin: tuple[int, int]  # (x, y) of the grid's top-left pixel inside ``image``
    tile_shape: tuple[int, int]  # (h, w) of one tile in pixels, after scaling
    cols: int
    rows: int
    count: int
    vmin: float
    vmax: float
    normalize: str
    title: str
    kind: str = "grid"
    scale: str = "per tile"
    channels: list[int] = field(default_factory=list)
    tile_ranges: list[tuple[float, float]] = field(default_factory=list)
    tile_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: ``bars``: the value of each channel (same order as ``channels``); None otherwise
    values: list[float] | None = None


@dataclass
class ColourBar:
    """A vertical colour ramp with labels at fractions of its height (1 = top) and caption lines."""

    lut: np.ndarray
    labels: list[tuple[float, str]]
    caption: list[str] = field(default_factory=list)


def _shape_text(arr: np.ndarray) -> str:
    return "x".join(str(d) for d in np.shape(arr))


def value_bar(lut: np.ndarray, lo: float, hi: float, caption: list[str] | None = None) -> ColourBar:
    """A colour bar labelled with the numbers it stands for: ``hi`` at the top, ``lo`` at the bottom."""
    labels = [(1.0, fmt(hi)), (0.0, fmt(lo))]
    if hi > lo:
        labels.insert(1, (0.5, fmt((lo + hi) / 2)))
    return ColourBar(lut, labels, caption or [])


def tile_bar(lut: np.ndarray, lo: float, hi: float, what: str = "tile") -> ColourBar:
    """The colour bar of per-tile scaling: it says so, and gives the layer's range under it."""
    return ColourBar(lut, [(1.0, f"{what} max"), (0.5, f"per {what}"), (0.0, f"{what} min")],
                     ["layer range", f"{fmt(lo)} .. {fmt(hi)}"])


def _bar_label_width(bar: ColourBar) -> int:
    texts = [t for _, t in bar.labels] + list(bar.caption)
    return max(text_width(t, _LABEL_SIZE) for t in texts) if texts else 0


def _fit_title(title: str, width: int | None) -> str:
    if not width or text_width(title, _TITLE_SIZE) <= width - 2 * _PAD:
        return title
    keep = len(title)
    while keep > 8 and text_width(title[:keep] + "…", _TITLE_SIZE) > width - 2 * _PAD:
        keep -= max(1, (keep - 8) // 8)
    return title[:keep] + "…"


def _compose(body: np.ndarray, title: str, bar: ColourBar | tuple[np.ndarray, str, str] | None,
             max_width: int | None = None) -> tuple[Any, tuple[int, int]]:
    """Body (uint8 RGB, or packed RGBX uint32 from :func:`.colors.colour_packed`) + title band +
    optional colour bar -> (PIL image, (x, y) of the body).

    The canvas is packed RGBX: filled white with a memset and turned into an RGB image by one
    Pillow unpack (filling and copying ``(H, W, 3)`` arrays cost ~10x more on big grids)."""
    from PIL import Image

    if isinstance(bar, tuple):  # (lut, top label, bottom label)
        bar = ColourBar(bar[0], [(1.0, bar[1]), (0.0, bar[2])])
    title = _fit_title(title, max_width)
    lh = line_height(_LABEL_SIZE)
    gh, gw = body.shape[:2]
    title_h = line_height(_TITLE_SIZE) + 8
    label_w = _bar_label_width(bar) if bar is not None else 0
    side = (_PAD + _BAR_W + 4 + label_w) if bar is not None else 0
    width = max(gw + 2 * _PAD + side, text_width(title, _TITLE_SIZE) + 2 * _PAD)
    bar_h = min(max(gh, 64), 320) if bar is not None else 0
    cap_h = (len(bar.caption) * lh + 4) if bar is not None and bar.caption else 0
    height = title_h + max(gh, bar_h + cap_h + lh // 2) + 2 * _PAD
    packed = np.full((height, width), 0xFFFFFFFF, np.uint32)  # white
    canvas = rgb_view(packed)
    oy, ox = title_h + _PAD, _PAD
    if body.dtype == np.uint32:
        packed[oy:oy + gh, ox:ox + gw] = body
    else:
        canvas[oy:oy + gh, ox:ox + gw] = body
    stamp(canvas, _PAD, 4, title, _TITLE_SIZE)
    if bar is not None:
        bx = ox + gw + _PAD
        ramp = bar.lut[np.linspace(255, 0, bar_h).round().astype(np.uint8)]
        canvas[oy:oy + bar_h, bx:bx + _BAR_W] = ramp[:, None, :]
        tx = bx + _BAR_W + 4
        for frac, text in bar.labels:
            y = oy + round((1.0 - frac) * (bar_h - 1))
            canvas[y, bx + _BAR_W:bx + _BAR_W + 3] = (90, 90, 90)  # tick
            anchor = "lt" if frac >= 1.0 else "lb" if frac <= 0.0 else "lm"
            stamp(canvas, tx, y if frac < 1.0 else y - 1, text, _LABEL_SIZE, anchor=anchor)
        for i, line in enumerate(bar.caption):
            stamp(canvas, bx, oy + bar_h + 4 + i * lh, line, _LABEL_SIZE)
    return Image.frombytes("RGB", (width, height), packed, "raw", "RGBX"), (ox, oy)


def _title(key: str, arr: np.ndarray, info: Any, sample: int, extra: list[str]) -> str:
    op = getattr(info, "op_type", None)
    act = getattr(info, "activation", None)
    op_text = f"{op}+{act}" if op and act else (op or "")
    parts = [key] + ([op_text] if op_text else []) + [_shape_text(arr)]
    if arr.ndim >= 2 and arr.shape[0] > 1:
        parts.append(f"sample {sample}")
    return "  |  ".join(parts + extra)


def body_width(max_width: int | None, bar: ColourBar | None = None) -> int | None:
    """Width left for the body of a picture at most ``max_width`` px wide (None: no limit)."""
    if max_width is None:
        return None
    side = 3 * _PAD + (_BAR_W + 4 + _bar_label_width(bar) if bar is not None else 0)
    return max(64, int(max_width) - side)


def _numbered_grid(idx: np.ndarray, cols: int, scale: int, band: int) -> np.ndarray:
    """Colour indices of tiles upscaled by ``scale``, each under a ``band`` px strip (background)
    for its number, tiled with 1-px background separators."""
    if band <= 0:
        return tile_grid(idx, cols=cols, sep=1, scale=scale, fill=BACKGROUND_INDEX)
    v = idx.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else idx
    padded = np.full((v.shape[0], v.shape[1] + band, v.shape[2]), BACKGROUND_INDEX, idx.dtype)
    padded[:, band:] = v
    return tile_grid(padded, cols=cols, sep=1, fill=BACKGROUND_INDEX)


def _unflatten(values: np.ndarray, long_px: int) -> tuple[np.ndarray, str | None]:
    """Very elongated tiles (a ``4 x 5376`` box-distribution map): the long axis binned (mean) to
    at most ``long_px``, the short one repeated to 1/4 of it, so the tile is not a hair-thin line."""
    n, h, w = values.shape
    wide = w >= h
    if max(h, w) < 8 * min(h, w):
        return values, None
    v = values if wide else values.transpose(0, 2, 1)
    length = v.shape[2]
    if length > long_px:
        starts = np.linspace(0, length, long_px + 1).astype(np.int64)[:-1]
        with np.errstate(all="ignore"):
            v = np.add.reduceat(v, starts, axis=2) / np.diff(np.append(starts, length))[None, None, :]
    rep = max(1, -(-v.shape[2] // (4 * v.shape[1])))
    v = v.repeat(rep, axis=1) if rep > 1 else v
    v = v if wide else v.transpose(0, 2, 1)
    how = f"{'rows' if wide else 'columns'} drawn {rep}x" + (f", {length} {'columns' if wide else 'rows'} "
                                                              f"binned to {long_px}" if length > long_px else "")
    return np.ascontiguousarray(v, dtype=np.float32), how


def render_layer(key: str, arr: np.ndarray, info: Any = None, *, cmap: Any = None, normalize: str = "tile",
                 sample: int = 0, data_format: str | None = None, min_tile: int = 32,
                 max_side: int = 1600, max_width: int | None = None, max_height: int | None = None,
                 channel_numbers: bool = False, reshape_1d: bool = False) -> LayerPicture:
    """Render one layer (one sample): a tile grid, a bar chart or a channels x time image, with
    a title and a colour bar that carries numbers.

    ``max_width``: the whole picture's width in px (a page's width; columns and tile size are
    chosen to fill it); ``max_height`` caps the grid's height (default half the width).
    ``channel_numbers`` writes each tile's channel number above it (grids of more than one tile).
    ``reshape_1d`` draws ``[N, C]`` layers as one square tile (Keract's ``reshape_1d_layers``)
    instead of a bar chart.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputError(f"layer {key!r} is empty (shape {arr.shape}); there is nothing to draw")
    layout = _layout(arr, info, data_format)
    kind = layer_kind(arr, layout, reshape_1d)
    if kind in ("channels", "sequence"):
        from .charts import render_bars, render_sequence

        draw = render_bars if kind == "channels" else render_sequence
        return draw(key, arr, layout, sample=sample, cmap=cmap, normalize=normalize, max_width=max_width,
                    channel_numbers=channel_numbers, title=lambda extra: _title(key, arr, info, sample, extra))
    tiles, how = sample_tiles(arr, layout, sample)
    lo_t, hi_t = tile_ranges(tiles)
    values, vmin, vmax = _normalise(tiles, normalize)
    lut = colormap_lut(cmap)
    bar = tile_bar(lut, vmin, vmax) if normalize == "tile" else value_bar(lut, vmin, vmax, ["layer scale"])
    values, stretched = _unflatten(values, (body_width(max_width, bar) or max_side) if len(values) == 1 else 256)
    n, h, w = values.shape
    numbered = channel_numbers and n > 1
    band = line_height(_NUMBER_SIZE) if numbered else 0
    min_w = text_width(str(n - 1), _NUMBER_SIZE) + 2 if numbered else 0
    cols, rows, scale, step = grid_geometry(n, h, w, max_width=body_width(max_width, bar), max_height=max_height,
                                            min_tile=min_tile, max_side=max_side, band=band, min_width=min_w)
    if step > 1:
        values = values[:, ::step, ::step]
        n, h, w = values.shape
    body = colour_packed(_numbered_grid(lut_index(values), cols, scale, band), cmap)
    rgb = rgb_view(body)
    grid = tile_grid(values, cols=cols, sep=1)
    th, tw = h * scale, w * scale
    extra = ([] if how == "maps" else [how]) + ([stretched] if stretched else [])
    extra.append("per-tile scale" if normalize == "tile" else "shared scale")
    title = _title(key, arr, info, sample, extra)
    if numbered:
        for i in range(n):
            r, c = divmod(i, cols)
            stamp(rgb, c * (tw + 1) + 1, r * (band + th + 1), str(i), _NUMBER_SIZE)
    image, (ox, oy) = _compose(body, title, bar, max_width)
    boxes = [(ox + (i % cols) * (tw + 1), oy + (i // cols) * (band + th + 1) + band, tw, th) for i in range(n)]
    return LayerPicture(key, image, grid, (ox, oy), (th, tw), cols, rows, n, vmin, vmax, normalize, title,
                        kind="grid" if how != "vector" else "vector",
                        scale="per tile" if normalize == "tile" else "layer",
                        channels=list(range(n)),
                        tile_ranges=[(float(a), float(b)) for a, b in zip(lo_t, hi_t)],
                        tile_boxes=boxes)
