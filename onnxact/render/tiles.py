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


DATA_FORMATS = ("channels_first", "channels_last")


def check_data_format(data_format: str | None) -> None:
    """Keract's ``data_format``: None (the layer's own layout), ``channels_first`` or ``channels_last``."""
    if data_format is not None and data_format not in DATA_FORMATS:
        raise InputError(f"data_format must be 'channels_first' or 'channels_last' (as in Keras), not {data_format!r}")


def _layout(arr: np.ndarray, info: Any, data_format: str | None) -> str:
    check_data_format(data_format)
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


def _spatial(shape: tuple[int, ...], layout: str) -> tuple[int, ...] | None:
    """The spatial dims of one sample (no batch axis) in ``layout``, or None when it has none."""
    if layout in ("NCHW", "NCW", "NCDHW") and len(shape) >= 2:
        return tuple(shape[1:])
    if layout in ("NHWC", "NWC", "NDHWC") and len(shape) >= 2:
        return tuple(shape[:-1])
    return None


def layer_kind(arr: np.ndarray, layout: str, reshape_1d: bool = False) -> str:
    """How a layer is best drawn: ``maps`` (a grid), ``channels`` (one value per channel: a bar
    chart), ``sequence`` (a channels x time image) or ``vector`` (a near-square tile).

    ``channels``: ``[N, C]`` and maps whose spatial size is 1 (global pools, squeeze-excite); a
    grid of 1x1 tiles would be identical flat squares. ``sequence``: ``NCW`` / ``NWC`` and 2-D maps
    that are one pixel high or wide (``[N, C, 1, T]`` audio nets), where a grid of hair-thin tiles
    shows nothing. ``reshape_1d`` (Keract's ``reshape_1d_layers``) draws ``[N, C]`` as a square tile.
    """
    a = np.asarray(arr) if not hasattr(arr, "shape") else arr
    if a.ndim <= 1:
        return "vector"
    sample = tuple(a.shape[1:])
    if a.ndim == 2:
        return "vector" if reshape_1d else "channels"
    sp = _spatial(sample, layout)
    if sp is None or len(sp) != len(sample) - 1:
        return "maps" if layout in ("NCHW", "NHWC") else "vector"
    big = [d for d in sp if d > 1]
    if not big:
        return "channels"
    if len(big) == 1 and len(sp) <= 2:
        return "sequence"
    return "maps"


def channel_vector(arr: np.ndarray, layout: str, sample: int) -> np.ndarray:
    """The ``C`` values of one sample of a ``channels`` layer (spatial size 1), float32."""
    s = np.asarray(arr)[sample]
    return np.asarray(s, dtype=np.float32).reshape(-1)


def sequence_matrix(arr: np.ndarray, layout: str, sample: int) -> np.ndarray:
    """One sample of a ``sequence`` layer as float32 ``(C, T)``: channels x time (the long axis)."""
    s = np.asarray(arr)[sample]
    if layout in ("NHWC", "NWC", "NDHWC"):
        s = np.moveaxis(s, -1, 0)
    return np.ascontiguousarray(s.reshape(s.shape[0], -1), dtype=np.float32)


def tile_ranges(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite ``(min, max)`` of each tile ``(n, ...)`` (0, 0 for a tile with no finite value)."""
    t = tiles.reshape(len(tiles), -1)
    if np.isfinite(t).all():
        return t.min(axis=1), t.max(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.where(np.isfinite(t), t, np.nan)
        return np.nan_to_num(np.nanmin(m, axis=1)), np.nan_to_num(np.nanmax(m, axis=1))


def grid_geometry(n: int, h: int, w: int, *, max_width: int | None = None, max_height: int | None = None,
                  min_tile: int = 32, max_side: int = 1600, band: int = 0, min_width: int = 0,
                  sep: int = 1) -> tuple[int, int, int, int]:
    """Columns, rows, upscale factor and subsampling step of a grid of ``n`` tiles of ``h x w``.

    Without ``max_width``: a ~sqrt(n) x sqrt(n) grid (Keract's layout) at most ``max_side`` px,
    tiles at least ``min_tile`` px. With ``max_width`` (the width the grid may take, e.g. a page's):
    as many columns as fit, the largest tiles (up to 160 px, 320 for a lone tile, or the map's own size;
    at most 8x the map) whose grid is
    at most ``max_height`` px (default half the width) tall; when none is, the smallest allowed.
    ``band`` px above each tile hold its channel number; ``min_width`` is the narrowest tile that
    number fits in.
    """
    long = max(h, w, 1)
    if max_width is None:
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = max(1, math.ceil(n / cols))
        step = 1
        if long * max(cols, rows) > max_side:  # too big: subsample each tile
            step = math.ceil(long * max(cols, rows) / max_side)
        hs, ws = -(-h // step), -(-w // step)
        ls = max(hs, ws, 1)
        if n == 1:  # a single tile is drawn bigger
            min_tile = max(min_tile, 160)
        scale = max(1, min(math.ceil(min_tile / ls), max_side // max(1, ls * max(cols, rows))))
        if min_width and ws * scale < min_width:
            scale = math.ceil(min_width / max(1, ws))
        return cols, rows, scale, step
    width = max(1, int(max_width))
    height = int(max_height) if max_height else max(200, width // 2)
    k_min = max(1, math.ceil(min_tile / long), math.ceil(min_width / max(1, w)) if min_width else 1)
    k_max = max(k_min, min(max(160 if n > 1 else 320, long) // long, 8))  # tiny maps gain nothing past 8x
    candidates: list[tuple[int, int]] = [(k, 1) for k in range(k_max, k_min - 1, -1)]
    if k_min == 1:  # big maps may be subsampled, not below ~48 px, a number's width or 16 px across
        floor_px = max(48, min_width)
        short = min(h, w)
        step = 2
        while (-(-long // step) >= floor_px and -(-short // step) >= min(short, 16)) or -(-w // (step - 1)) > width:
            candidates.append((1, step))
            step += 1
    fits = [c for c in candidates if -(-w // c[1]) * c[0] <= width] or [candidates[-1]]
    best = fits[-1]
    for k, st in fits:
        th, tw = -(-h // st) * k + band, -(-w // st) * k
        cols = max(1, min(n, (width + sep) // (tw + sep)))
        rows = math.ceil(n / cols)
        if rows * (th + sep) - sep <= height:
            best = (k, st)
            break
    k, st = best
    tw = -(-w // st) * k
    cols = max(1, min(n, (width + sep) // (tw + sep)))
    return cols, math.ceil(n / cols), k, st


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
