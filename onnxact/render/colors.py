"""Colormaps as 256-entry lookup tables, and colouring values in [0, 1] with them.

Its own stage because every picture (grids, overlays, the viewer's tiles) colours through the
same LUT, and because it is the one place that may import matplotlib (only for colormaps not
carried here), so that cost stays out of everything else.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import InputError

# Anchors sampled from matplotlib (17 evenly spaced stops); linear interpolation between them is
# within ~2/255 of the real maps and saves importing matplotlib (~0.2 s) for the defaults.
_ANCHORS: dict[str, list[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141),
                (44, 114, 142), (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115),
                (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37)],
    "magma": [(0, 0, 4), (10, 8, 34), (29, 17, 71), (54, 16, 107), (81, 18, 124), (106, 28, 129),
              (131, 38, 129), (156, 46, 127), (183, 55, 121), (208, 65, 111), (231, 82, 99), (245, 107, 92),
              (252, 137, 97), (254, 167, 114), (254, 196, 136), (253, 226, 163), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
    "grey": [(0, 0, 0), (255, 255, 255)],
}
_SEPARATOR = (235, 235, 235)


@lru_cache(maxsize=32)
def _lut_for(name: str) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    if name == "jet":  # matplotlib's jet, piecewise linear
        r = np.interp(x, [0, 0.35, 0.66, 0.89, 1], [0, 0, 1, 1, 0.5])
        g = np.interp(x, [0, 0.125, 0.375, 0.64, 0.91, 1], [0, 0, 1, 1, 0, 0])
        b = np.interp(x, [0, 0.11, 0.34, 0.65, 1], [0.5, 1, 1, 0, 0])
        return np.rint(np.stack([r, g, b], 1) * 255).astype(np.uint8)
    if name in _ANCHORS:
        a = np.asarray(_ANCHORS[name], np.float64)
        pos = np.linspace(0, 1, len(a))
        return np.rint(np.stack([np.interp(x, pos, a[:, k]) for k in range(3)], 1)).astype(np.uint8)
    import matplotlib

    try:
        cm = matplotlib.colormaps[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; use a matplotlib colormap name such as viridis"
        raise InputError(f"unknown colormap {name!r}{hint}") from None
    return np.rint(cm(x)[:, :3] * 255).astype(np.uint8)


def colormap_lut(cmap: Any = None) -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table for a colormap name, a matplotlib Colormap, or None (viridis)."""
    if cmap is None:
        return _lut_for("viridis")
    if isinstance(cmap, str):
        return _lut_for(cmap)
    if callable(cmap):  # a matplotlib Colormap object
        return np.rint(np.asarray(cmap(np.linspace(0, 1, 256)))[:, :3] * 255).astype(np.uint8)
    raise InputError(f"cmap must be a colormap name or a matplotlib Colormap, not {type(cmap).__name__}")


def apply_colormap(values01: np.ndarray, cmap: Any = None, nan_color=_SEPARATOR) -> np.ndarray:
    """Colour an array of values in [0, 1] (NaN = separator/background) -> uint8 RGB ``(..., 3)``."""
    lut = colormap_lut(cmap)
    nan = np.isnan(values01)
    idx = np.rint(np.nan_to_num(values01, nan=0.0) * 255.0)
    rgb = lut[np.clip(idx, 0, 255).astype(np.uint8)]
    if nan.any():
        rgb[nan] = nan_color
    return rgb


#: the index :func:`lut_index` gives NaN (separators, background); :func:`colour_index` paints it
BACKGROUND_INDEX = 256


def unit_scale(maps: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values in [0, 1] to colour: each 2-D map (the last two axes) by its own min and max, or every
    value by the given ``lo`` .. ``hi`` (a layer's range; clipped). NaN and infinities count as 0; a
    flat map (or ``hi <= lo``) becomes all zeros, never NaN. float32."""
    m = np.nan_to_num(np.asarray(maps).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if lo is None or hi is None:
        mn = m.min(axis=(-2, -1), keepdims=True)
        rng = m.max(axis=(-2, -1), keepdims=True) - mn
        return np.where(rng > 0, (m - mn) / np.where(rng > 0, rng, 1.0), 0.0).astype(np.float32)
    if not hi > lo:
        return np.zeros(m.shape, np.float32)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def lut_index(values01: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint16 colour indices 0..255, NaN -> :data:`BACKGROUND_INDEX`.

    Why: a grid drawn bigger than its maps is coloured at the maps' own size, then the 2-byte
    indices are repeated, then looked up once (:func:`colour_index`), instead of colouring
    every upscaled float pixel."""
    with np.errstate(invalid="ignore"):
        f = np.rint(np.clip(np.asarray(values01, dtype=np.float32), 0.0, 1.0) * 255.0)  # NaN stays NaN
    nan = np.isnan(f)
    if nan.any():
        f[nan] = BACKGROUND_INDEX
    return f.astype(np.uint16)


@lru_cache(maxsize=32)
def _packed(name: str | None, nan_color: tuple[int, int, int]) -> np.ndarray:
    lut = np.zeros((BACKGROUND_INDEX + 1, 4), np.uint8)
    lut[:256, :3] = colormap_lut(name)
    lut[BACKGROUND_INDEX, :3] = nan_color
    lut[:, 3] = 255
    return lut.view(np.uint32).ravel()


def packed_lut(cmap: Any = None, nan_color: tuple[int, int, int] = _SEPARATOR) -> np.ndarray:
    """The colormap as 257 packed RGBX ``uint32`` (index 256: ``nan_color``): one ``np.take``
    colours a picture ~15x faster than indexing a ``(256, 3)`` table."""
    if cmap is None or isinstance(cmap, str):
        return _packed(cmap, tuple(nan_color))
    lut = np.zeros((BACKGROUND_INDEX + 1, 4), np.uint8)
    lut[:256, :3] = colormap_lut(cmap)
    lut[BACKGROUND_INDEX, :3] = nan_color
    lut[:, 3] = 255
    return lut.view(np.uint32).ravel()


def colour_packed(idx: np.ndarray, cmap: Any = None, nan_color: tuple[int, int, int] = _SEPARATOR) -> np.ndarray:
    """uint16 indices from :func:`lut_index` (after any tiling / upscaling) -> packed RGBX uint32."""
    return np.take(packed_lut(cmap, nan_color), idx)


def rgb_view(packed: np.ndarray) -> np.ndarray:
    """A writable uint8 ``(H, W, 3)`` view of a packed RGBX ``(H, W)`` uint32 picture."""
    return packed.view(np.uint8).reshape(packed.shape + (4,))[..., :3]


def colour_index(idx: np.ndarray, cmap: Any = None, nan_color: tuple[int, int, int] = _SEPARATOR) -> np.ndarray:
    """uint16 indices from :func:`lut_index` -> uint8 RGB ``(..., 3)``."""
    return np.ascontiguousarray(rgb_view(colour_packed(idx, cmap, nan_color)))
