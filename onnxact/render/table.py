"""How an :class:`onnxact.Activations` shows itself: a one-screen text repr and a notebook table.

Why its own stage: a notebook calls ``_repr_html_`` on every cell that ends with the activations,
and the default (a dict of arrays) prints megabytes of numbers. The table gives each layer one
row (name, op, shape, min / max / mean, fraction of zeros) and a small strip of its first maps,
coloured with the renderer's lookup tables and encoded with its numpy PNG encoder, so neither
Pillow nor matplotlib is imported. Rows are capped (``... N more``) so a model with hundreds of
layers renders in a fraction of a second and the statistics are computed for shown rows only.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

import numpy as np

#: rows shown by the notebook table and the text repr; the rest are counted on a "... N more" line
MAX_ROWS = 40
MAX_TEXT_ROWS = 12
#: thumbnails per row (the first channels) and their size in px (longest side)
THUMBS = 4
THUMB_PX = 32

_STYLE = ("<style>.onnxact-acts td,.onnxact-acts th{padding:2px 8px;text-align:left;font-family:monospace;"
          "font-size:12px;vertical-align:middle}.onnxact-acts td.n{text-align:right}"
          ".onnxact-acts img{image-rendering:pixelated}</style>")


def _layout_of(key: str, arr: np.ndarray, infos: Mapping[str, Any]) -> str:
    info = infos.get(key)
    if info is not None:
        return str(info.layout)
    from .tiles import guess_array_layout

    return guess_array_layout(arr)


def _op_text(info: Any) -> str:
    op, act = getattr(info, "op_type", None), getattr(info, "activation", None)
    return f"{op}+{act}" if op and act else (op or "")


def layer_numbers(arr: np.ndarray) -> tuple[float, float, float, float] | None:
    """(min, max, mean, fraction of exact zeros) over the whole array, or None for non-numbers / empty."""
    a = np.asarray(arr)
    if a.size == 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        return None
    with np.errstate(all="ignore"):
        return (float(a.min()), float(a.max()), float(a.mean(dtype=np.float64)),
                1.0 - np.count_nonzero(a) / a.size)


def thumbnail_png(arr: np.ndarray, layout: str, count: int = THUMBS, px: int = THUMB_PX) -> bytes | None:
    """PNG of the first ``count`` channel maps of sample 0 side by side (each scaled to its own
    range, viridis, at most ``px`` a side), or None when the layer has no 2-D maps."""
    from ..layout import channel_axis
    from .colors import apply_colormap, unit_scale
    from .png import encode_png
    from .tiles import layer_kind, sample_tiles, tile_grid

    a = np.asarray(arr)
    if a.ndim < 3 or a.size == 0 or not np.issubdtype(a.dtype, np.number) or layer_kind(a, layout) != "maps":
        return None
    ax = channel_axis(layout)
    if ax is None or ax >= a.ndim:
        return None
    first = a[:1].take(range(min(count, a.shape[ax])), axis=ax)  # only the channels drawn are copied
    tiles, _ = sample_tiles(first, layout, 0)
    step = max(1, max(tiles.shape[1:]) // (2 * px))
    if step > 1:  # a 640x640 map: every step-th value first, so the bilinear resize stays small
        tiles = np.ascontiguousarray(tiles[:, ::step, ::step])
    h, w = tiles.shape[1:]
    f = min(1.0, px / max(h, w))
    th, tw = max(1, round(h * f)), max(1, round(w * f))
    if (th, tw) != (h, w):  # nearest sample (the maps were already cut to at most twice the size)
        tiles = tiles[:, ((np.arange(th) + 0.5) * h / th).astype(int)][:, :, ((np.arange(tw) + 0.5) * w / tw).astype(int)]
    elif max(h, w) * 2 <= px:  # tiny maps (2x2, 4x4): blown up so they can be seen
        s = px // max(h, w)
        tiles = tiles.repeat(s, axis=1).repeat(s, axis=2)
    rgb = apply_colormap(unit_scale(tiles), "viridis")
    return encode_png(tile_grid(rgb, cols=len(rgb), sep=2, fill=255), level=9)  # tiny: the best zlib level


def _fmt(v: float) -> str:
    from .text import fmt

    return fmt(v)


def _batch(acts: Mapping[str, Any]) -> int | None:
    sizes = {int(np.shape(v)[0]) for v in acts.values() if np.ndim(v) >= 2}
    return sizes.pop() if len(sizes) == 1 else None


def _summary(acts: Mapping[str, Any]) -> str:
    nbytes = sum(np.asarray(v).nbytes for v in acts.values())
    batch = _batch(acts)
    return (f"{len(acts)} layer{'s' if len(acts) != 1 else ''}"
            + (f", batch of {batch}" if batch is not None else "") + f", {nbytes / 2**20:.1f} MB")


def activations_text(acts: Mapping[str, Any], max_rows: int = MAX_TEXT_ROWS) -> str:
    """``Activations(N layers, batch of B, X MB: name (op) shape, ...)``: one line per shown layer."""
    infos = getattr(acts, "layers", None) or {}
    lines = [f"Activations({_summary(acts)}"]
    for i, (k, v) in enumerate(acts.items()):
        if i == max_rows:
            lines.append(f"  ... {len(acts) - max_rows} more")
            break
        op = _op_text(infos.get(k))
        lines.append(f"  {k!r}: {tuple(np.shape(v))}" + (f" {op}" if op else ""))
    return "\n".join(lines) + ")" if len(lines) > 1 else lines[0] + ")"


def activations_html(acts: Mapping[str, Any], max_rows: int = MAX_ROWS) -> str:
    """The notebook table: one row per layer (the first ``max_rows``), every name escaped."""
    infos = getattr(acts, "layers", None) or {}
    head = ("<tr><th>#</th><th>layer</th><th>op</th><th>shape</th><th>min</th><th>max</th><th>mean</th>"
            f"<th>zeros</th><th>first {THUMBS} maps (sample 0)</th></tr>")
    rows = []
    for i, (k, v) in enumerate(acts.items()):
        if i == max_rows:
            rows.append(f'<tr><td colspan="9">... {len(acts) - max_rows} more '
                        f"(<code>list(acts)</code> names them all)</td></tr>")
            break
        a = np.asarray(v)
        nums = layer_numbers(a)
        cells = [_fmt(x) for x in nums[:3]] + [f"{nums[3]:.1%}"] if nums else ["", "", "", ""]
        png = thumbnail_png(a, _layout_of(k, a, infos))
        thumb = (f'<img alt="{html.escape(k)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
                 if png else "")
        rows.append(f'<tr><td class="n">{i}</td><td>{html.escape(k)}</td><td>{html.escape(_op_text(infos.get(k)))}'
                    f"</td><td>{html.escape(' x '.join(str(d) for d in a.shape))}</td>"
                    + "".join(f'<td class="n">{html.escape(c)}</td>' for c in cells) + f"<td>{thumb}</td></tr>")
    caption = f"<caption style='text-align:left'>Activations: {html.escape(_summary(acts))}</caption>"
    return f'{_STYLE}<table class="onnxact-acts">{caption}{head}{"".join(rows)}</table>'
