"""From one activation array to ``(n, h, w)`` tiles: layout, sampling, normalisation, the grid.

Its own stage because it is pure numpy on values (no pixels, no fonts): layout is settled here
once per layer so everything downstream, grids, heatmaps and the viewer, works on tiles only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..errors import InputError

NORMALIZE_MODES = ("tile", "layer")


def guess_array_layout(arr: np.ndarray) -> str:
    """Guess the layout of an activation array that came without metadata (done once per array).

    Rank 4: NHWC when the two middle axes are equal and the last differs (Keras maps), NCHW when
    the two last axes are equal, otherwise NCHW (ONNX's own layout). Rank 3: NCW; rank 2: NC.
    """
    try:  # the foundation may provide a better guess; use it when present
        from ..layout import guess_layout_of_array  # type: ignore[attr-defined]

        return str(guess_layout_of_array(arr))
    except ImportError:
        pass
    s = np.shape(arr)
    if len(s) == 4:
        _, a, b, c = s
        if a == b and c != a:
            return "NHWC"
        return "NCHW"
    return {3: "NCW", 2: "NC", 5: "NCDHW"}.get(len(s), "other")


def _layout(arr: np.ndarray, info: Any, data_format: str | None) -> str:
    if info is not None and getattr(info, "layout", None) and info.layout != "other":
        return str(info.layout)
    if data_format in ("channels_last", "channels_first") and arr.ndim in (3, 4, 5):
        first = data_format == "channels_first"
        return {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}[arr.ndim][0 if first else 1]
    return guess_array_layout(arr)


def _near_square(v: np.ndarray) -> np.ndarray:
    """A 1-D vector as one near-square tile, padded with NaN (drawn as background)."""
    n = v.size
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    out = np.full(rows * cols, np.nan, np.float32)
    out[:n] = v
    return out.reshape(1, rows, cols)


def sample_tiles(arr: np.ndarray, layout: str, sample: int) -> tuple[np.ndarray, str]:
    """One sample of an activation as float32 tiles ``(n, h, w)`` plus a word for how it was drawn.

    Never writes into ``arr`` (every path below makes a new array).
    """
    a = np.asarray(arr)
    if a.ndim == 0:
        return np.asarray(a, np.float32).reshape(1, 1, 1), "scalar"
    if a.ndim == 1:
        return _near_square(a.astype(np.float32)), "vector"
    s = a[sample]
    if layout == "NCHW" and s.ndim == 3:
        return s.astype(np.float32), "maps"
    if layout == "NHWC" and s.ndim == 3:
        return np.ascontiguousarray(np.moveaxis(s, -1, 0), dtype=np.float32), "maps"
    if layout in ("NCDHW", "NDHWC") and s.ndim == 4:
        s = s if layout == "NCDHW" else np.moveaxis(s, -1, 0)
        return s.astype(np.float32).mean(axis=1), "maps (mean over depth)"
    if layout in ("NCW", "NWC") and s.ndim == 2:
        s = s if layout == "NCW" else s.T
        return s.astype(np.float32)[None], "channels x width"
    return _near_square(s.astype(np.float32).ravel()), "vector"


def _normalise(tiles: np.ndarray, mode: str) -> tuple[np.ndarray, float, float]:
    """Scale tiles to [0, 1] per tile (``tile``) or over the layer (``layer``); flat -> 0, never NaN.

    NaN padding (1-D strips) is kept as NaN; infinities are clipped to the finite range.
    """
    if mode not in NORMALIZE_MODES:
        raise InputError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, not {mode!r}")
    t = tiles
    finite = np.isfinite(t)
    all_finite = bool(finite.all())
    masked = t if all_finite else np.where(finite, t, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles: drawn as background
        if mode == "tile":
            axes = (1, 2)
            mn = np.nanmin(masked, axis=axes, keepdims=True) if not all_finite else t.min(axis=axes, keepdims=True)
            mx = np.nanmax(masked, axis=axes, keepdims=True) if not all_finite else t.max(axis=axes, keepdims=True)
        else:
            mn = np.asarray(np.nanmin(masked) if not all_finite else t.min())
            mx = np.asarray(np.nanmax(masked) if not all_finite else t.max())
        mn = np.nan_to_num(mn, nan=0.0)
        mx = np.nan_to_num(mx, nan=0.0)
        rng = mx - mn
        out = (masked - mn) / np.where(rng > 0, rng, 1.0)
    if not all_finite:
        out = np.where(np.isposinf(t), 1.0, np.where(np.isneginf(t), 0.0, out))
    out = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
    return out, float(np.min(mn)), float(np.max(mx))


def tile_grid(tiles: np.ndarray, cols: int | None = None, sep: int = 1, scale: int = 1,
              fill: float = np.nan) -> np.ndarray:
    """Tile ``(n, h, w[, k])`` into one ``(rows*(h*scale+sep)-sep, cols*(w*scale+sep)-sep[, k])`` array.

    Tile ``i`` sits at row ``i // cols``, column ``i % cols``; ``cols`` defaults to
    ``ceil(sqrt(n))``. Separators and empty cells hold ``fill``.
    """
    n, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    cell = np.full((rows * cols, h + sep, w + sep) + extra, fill, dtype=tiles.dtype)
    cell[:n, :h, :w] = tiles
    grid = cell.reshape((rows, cols, h + sep, w + sep) + extra).swapaxes(1, 2)
    grid = grid.reshape((rows * (h + sep), cols * (w + sep)) + extra)
    return grid[: grid.shape[0] - sep, : grid.shape[1] - sep] if sep else grid
