"""Layers that are no grid of 2-D maps: one value per channel (a bar chart) and 1-D maps
(a channels x time image with axes).

Its own stage because a tile grid fails on both: a global pool or squeeze-excite output
``[N, C, 1, 1]`` became C identical flat tiles (each 1x1 tile scaled to itself), and an
8 x 2000 audio map became a strip a few pixels high. Both are drawn here with numbers on
their axes, into numpy arrays, composed by :func:`.picture._compose` with a colour bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .colors import apply_colormap, colormap_lut, colour_index, lut_index
from .picture import _LABEL_SIZE, _NUMBER_SIZE, LayerPicture, _compose, body_width, tile_bar, value_bar
from .text import fmt, line_height, nice_ticks, stamp, text_width
from .tiles import _normalise, channel_vector, sequence_matrix, tile_ranges

_AXIS = (110, 110, 110)
_ZERO = (60, 60, 60)
_PLOT_H = 128  # bar chart plot height, px
_DEFAULT_WIDTH = 960  # body width when no max_width is asked


def _bins(n: int, parts: int) -> np.ndarray:
    """Start index of each of ``parts`` near-equal consecutive bins over ``n`` items."""
    return np.linspace(0, n, parts + 1).astype(np.int64)[:-1]


def _finite(v: np.ndarray) -> np.ndarray:
    """Infinities clipped to the finite range (so the axis stays numeric); NaN kept (no bar)."""
    fin = np.isfinite(v)
    if fin.all():
        return v
    lo, hi = (float(v[fin].min()), float(v[fin].max())) if fin.any() else (0.0, 0.0)
    return np.where(np.isposinf(v), hi, np.where(np.isneginf(v), lo, v))


def _x_labels(canvas: np.ndarray, y: int, x0: int, centres: np.ndarray, starts: np.ndarray, n_channels: int,
              every: bool) -> None:
    """Channel numbers under the bars: every bar when they fit, else round ticks (in channels)."""
    if every:
        ticks = list(range(n_channels))
    else:
        width = int(centres[-1] - centres[0]) + 1 if len(centres) else 1
        ticks = sorted({int(round(t)) for t in nice_ticks(0, n_channels - 1, max(1, width // 48))} | {n_channels - 1})
    last_end = -10
    for ch in ticks:
        b = int(np.searchsorted(starts, ch, side="right")) - 1
        text = str(ch)
        cx = x0 + int(centres[b])
        w = text_width(text, _NUMBER_SIZE)
        if cx - w // 2 <= last_end + 3:
            continue
        anchor = "mt" if cx - w // 2 >= 0 and cx + w // 2 < canvas.shape[1] else "lt" if cx - w // 2 < 0 else "rt"
        canvas[y:y + 3, cx] = _AXIS
        stamp(canvas, cx, y + 3, text, _NUMBER_SIZE, anchor=anchor)
        last_end = cx + w // 2


def render_bars(key: str, arr: np.ndarray, layout: str, *, sample: int, cmap: Any, normalize: str,
                max_width: int | None, channel_numbers: bool, title: Callable[[list[str]], str]) -> LayerPicture:
    """One value per channel as a bar chart: bar height and colour are the value, y axis labelled
    with numbers (and each bar's value written on it when it fits), x axis with channel numbers."""
    raw = channel_vector(arr, layout, sample)
    v = _finite(raw)
    c = v.size
    fin = np.isfinite(v)
    lo, hi = (float(v[fin].min()), float(v[fin].max())) if fin.any() else (0.0, 0.0)
    lut = colormap_lut(cmap)
    bar = value_bar(lut, lo, hi, ["channel value"])
    ymin, ymax = min(lo, 0.0), max(hi, 0.0)
    if ymax <= ymin:
        ymax = ymin + 1.0
    y_ticks = [(ymax, fmt(ymax)), (ymin, fmt(ymin))] + ([(0.0, "0")] if ymin < 0 < ymax else [])
    left = max(text_width(t, _LABEL_SIZE) for _, t in y_ticks) + 6
    target = body_width(max_width, bar) or min(_DEFAULT_WIDTH, max(320, (40 if c <= 24 else 14) * c) + left)
    plot_w = max(16, target - left - 2)
    nb = min(c, plot_w)
    bw = max(1, min(40, plot_w // nb))
    gap = 1 if bw >= 4 else 0
    starts = _bins(c, nb)
    with np.errstate(all="ignore"):
        vv = np.where(fin, v, np.nan)
        bmax = np.fmax.reduceat(vv, starts) if nb < c else vv
        bmin = np.fmin.reduceat(vv, starts) if nb < c else vv
    shown = np.where(np.abs(np.nan_to_num(bmax)) >= np.abs(np.nan_to_num(bmin)), bmax, bmin)
    lh = line_height(_NUMBER_SIZE)
    annotate = nb == c and c <= 64 and all(text_width(fmt(x), _NUMBER_SIZE) <= bw for x in v[fin])
    top = lh + 2 if annotate else line_height(_LABEL_SIZE) // 2 + 1  # room for the top y label
    under = lh + 1 if annotate and bool((v[fin] < 0).any()) else 0  # room for labels under negative bars
    ph = _PLOT_H
    width = left + nb * bw + 2
    height = top + ph + under + 4 + lh + 2
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = 255

    def ypix(val: np.ndarray | float) -> np.ndarray:
        return top + np.rint((ymax - np.asarray(val, np.float64)) / (ymax - ymin) * (ph - 1)).astype(np.int64)

    y0 = int(ypix(0.0))
    ytop = ypix(np.nan_to_num(np.fmax(bmax, 0.0)))
    ybot = ypix(np.nan_to_num(np.fmin(bmin, 0.0)))
    rows = np.arange(height)[:, None]
    mask = (rows >= ytop[None, :]) & (rows <= ybot[None, :]) & np.isfinite(shown)[None, :]
    col01 = np.where(np.isfinite(shown), (np.nan_to_num(shown) - lo) / (hi - lo) if hi > lo else 0.0, np.nan)
    colours = apply_colormap(col01.astype(np.float32), cmap)  # (nb, 3)
    x0 = left + 1
    fill = bw - gap
    region = np.full((height, nb, bw, 3), 255, np.uint8)
    region[:, :, :fill][mask] = colours[np.nonzero(mask)[1]][:, None, :]
    canvas[:, x0:x0 + nb * bw] = region.reshape(height, nb * bw, 3)
    canvas[top:top + ph, left] = _AXIS  # y axis
    canvas[y0, left:x0 + nb * bw] = _ZERO  # the zero line
    for val, text in y_ticks:
        y = int(ypix(val))
        canvas[y, left - 3:left] = _AXIS
        stamp(canvas, left - 4, y, text, _LABEL_SIZE, anchor="rm")
    centres = (np.arange(nb) * bw + fill / 2.0).astype(np.int64)
    if annotate:
        for i in range(c):
            if np.isfinite(v[i]):
                yb = int(ytop[i]) if v[i] >= 0 else int(ybot[i])
                stamp(canvas, x0 + int(centres[i]), yb - 1 if v[i] >= 0 else yb + 1,
                      fmt(float(v[i])), _NUMBER_SIZE, anchor="mb" if v[i] >= 0 else "mt")
    every = channel_numbers and text_width(str(c - 1), _NUMBER_SIZE) + 2 <= bw and nb == c
    _x_labels(canvas, top + ph + under + 1, x0, centres, starts, c, every)
    what = "one value per channel" + ("" if nb == c else f", {c} channels in {nb} bars (min..max of each)")
    image, (ox, oy) = _compose(canvas, title([what]), bar, max_width)
    per_bar = np.searchsorted(starts, np.arange(c), side="right") - 1
    boxes = [(ox + x0 + int(b) * bw, oy + top, max(1, fill), ph) for b in per_bar]
    grid = col01[None, :].astype(np.float32)
    return LayerPicture(key, image, grid, (ox + x0, oy + top), (ph, bw), nb, 1, c, lo, hi, normalize,
                        title([what]), kind="bars", scale="layer", channels=list(range(c)),
                        tile_ranges=[(float(x), float(x)) for x in np.nan_to_num(v, nan=0.0)], tile_boxes=boxes,
                        values=[float(x) for x in raw])


def _resample_time(m: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """``(C, T)`` -> ``(C, width')``: bin means when T is longer than ``width``, else each step
    repeated; returns the image and its px per time step."""
    t = m.shape[1]
    if t > width:
        starts = _bins(t, width)
        counts = np.diff(np.append(starts, t))
        with np.errstate(all="ignore"):
            return np.add.reduceat(m, starts, axis=1) / counts, width / t
    k = max(1, width // t)
    return (m.repeat(k, axis=1) if k > 1 else m), float(k)


def render_sequence(key: str, arr: np.ndarray, layout: str, *, sample: int, cmap: Any, normalize: str,
                    max_width: int | None, channel_numbers: bool,
                    title: Callable[[list[str]], str]) -> LayerPicture:
    """A 1-D map as one channels x time image (one row per channel, at least 64 px tall), a time
    axis with tick labels under it and channel numbers beside it.

    With ``normalize="tile"`` each channel row is scaled to its own range (a channel is this
    picture's tile); ``"layer"`` shares one scale."""
    m = sequence_matrix(arr, layout, sample)
    c, t = m.shape
    lo_t, hi_t = tile_ranges(m)
    values, vmin, vmax = _normalise(m[:, None, :], normalize)
    values = values[:, 0, :]
    lut = colormap_lut(cmap)
    bar = tile_bar(lut, vmin, vmax, "channel") if normalize == "tile" else value_bar(lut, vmin, vmax, ["layer scale"])
    lh = line_height(_NUMBER_SIZE)
    c_rows = c
    if c > 1024:  # more channels than rows worth drawing: mean of neighbouring channels
        starts = _bins(c, 1024)
        with np.errstate(all="ignore"):
            values = np.add.reduceat(values, starts, axis=0) / np.diff(np.append(starts, c))[:, None]
        c_rows = 1024
    rh = max(-(-64 // c_rows), min(32, max(1, 192 // c_rows)))
    label_every = channel_numbers and rh >= lh and c_rows == c
    left = text_width(str(c - 1), _NUMBER_SIZE) + 6
    target = body_width(max_width, bar) or _DEFAULT_WIDTH
    img, px_per_step = _resample_time(values, max(16, target - left - 2))
    iw = img.shape[1]
    ih = c_rows * rh
    grid = img.astype(np.float32)
    idx = lut_index(grid)
    rgb = colour_index(idx.repeat(rh, axis=0) if rh > 1 else idx, cmap)
    y_img, x_img = lh // 2 + 1, left  # room for half a channel label above the first row
    height = y_img + ih + 4 + lh + lh + 2
    canvas = np.empty((height, left + iw + 1, 3), np.uint8)
    canvas[:] = 255
    canvas[y_img:y_img + ih, x_img:x_img + iw] = rgb
    # channel axis: every channel when rows are tall enough, else round ticks
    if label_every:
        picks = list(range(c))
    else:
        picks = sorted({int(round(x)) for x in nice_ticks(0, c - 1, max(1, ih // (lh + 4)))} | {0, c - 1})
    row_of = (np.arange(c) * c_rows) // max(1, c)
    last = -100
    for ch in picks:
        y = y_img + int(row_of[ch]) * rh + rh // 2
        if y - lh // 2 < last + 1:
            continue
        canvas[y, left - 3:left] = _AXIS
        stamp(canvas, left - 4, y, str(ch), _NUMBER_SIZE, anchor="rm")
        last = y + lh // 2
    # time axis: round ticks in time steps of this layer
    ya = y_img + ih
    canvas[ya, x_img:x_img + iw] = _AXIS
    last_end = -100
    for tick in nice_ticks(0, t, max(2, iw // 70)):
        x = x_img + min(iw - 1, int(round(tick * iw / t)))
        text = str(int(tick)) if float(tick).is_integer() else fmt(tick)
        w = text_width(text, _NUMBER_SIZE)
        if x - w // 2 <= last_end + 4:
            continue
        canvas[ya:ya + 4, x] = _AXIS
        anchor = "mt" if x - w // 2 >= 0 and x + w // 2 < canvas.shape[1] else "lt" if x < iw // 2 else "rt"
        stamp(canvas, x, ya + 4, text, _NUMBER_SIZE, anchor=anchor)
        last_end = x + w // 2
    stamp(canvas, x_img + iw // 2, ya + 4 + lh, f"time step (of {t})", _NUMBER_SIZE, anchor="mt")
    what = f"channels x time, {c} x {t}" + ("" if c_rows == c else f" ({c} channels in {c_rows} rows)")
    extra = [what, "per-channel scale" if normalize == "tile" else "shared scale"]
    image, (ox, oy) = _compose(canvas, title(extra), bar, max_width)
    boxes = [(ox + x_img, oy + y_img + int(row_of[ch]) * rh, iw, rh) for ch in range(c)]
    return LayerPicture(key, image, grid, (ox + x_img, oy + y_img), (rh, iw), 1, c_rows, c, vmin, vmax,
                        normalize, title(extra), kind="sequence",
                        scale="per channel" if normalize == "tile" else "layer", channels=list(range(c)),
                        tile_ranges=[(float(a), float(b)) for a, b in zip(lo_t, hi_t)], tile_boxes=boxes)
