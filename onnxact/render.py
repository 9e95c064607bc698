"""Pictures of activations: one tiled grid per layer, heatmap overlays on the input image.

Why tiling into one array: Keract draws one matplotlib subplot per filter and needs ~19 s for
the seed's CNN. Here every layer becomes ONE numpy array (tiles + 1-px separators), is coloured
with a 256-entry lookup table and written with Pillow: milliseconds per layer. matplotlib is
only imported for colormaps we don't carry ourselves or when a Figure is asked for, and
Pillow / matplotlib are imported inside functions so ``import onnxact`` stays light.

Layout is read once per layer from ``LayerInfo.layout`` (``Activations``); a plain dict has its
layout guessed once per array by :func:`guess_array_layout`. Everything downstream works on
``(n, h, w)`` tiles.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, LayerError, OutputError

__all__ = [
    "display_activations", "display_heatmaps", "render_layer", "tile_grid", "colormap_lut",
    "apply_colormap", "overlay", "load_display_image", "resize_bilinear", "guess_array_layout",
    "safe_filename", "Pictures", "LayerPicture",
]

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
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
NORMALIZE_MODES = ("tile", "layer")


# ----------------------------------------------------------------------------- colour
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


# ----------------------------------------------------------------------------- layout -> tiles
def guess_array_layout(arr: np.ndarray) -> str:
    """Guess the layout of an activation array that came without metadata (done once per array).

    Rank 4: NHWC when the two middle axes are equal and the last differs (Keras maps), NCHW when
    the two last axes are equal, otherwise NCHW (ONNX's own layout). Rank 3: NCW; rank 2: NC.
    """
    try:  # the foundation may provide a better guess; use it when present
        from .layout import guess_layout_of_array  # type: ignore[attr-defined]

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


# ----------------------------------------------------------------------------- one layer picture
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


# ----------------------------------------------------------------------------- public API helpers
class Pictures(dict):
    """``{key: PIL image | matplotlib Figure | ndarray}`` in layer order; ``.paths`` lists saved files.

    In a notebook the pictures are shown when rendered; ``_repr_html_`` shows them when the
    return value is the last expression of a cell instead.
    """

    paths: list[Path]
    details: dict[str, LayerPicture]

    def __init__(self) -> None:
        super().__init__()
        self.paths = []
        self.details = {}
        self._shown = False

    def _repr_html_(self) -> str:
        if self._shown:
            return f"<small>{len(self)} pictures</small>"
        import base64
        import html
        import io

        parts = []
        for k, v in self.items():
            if hasattr(v, "save") and hasattr(v, "mode"):
                buf = io.BytesIO()
                v.save(buf, format="PNG")
                b64 = base64.b64encode(buf.getvalue()).decode()
                parts.append(f'<div><img alt="{html.escape(k)}" src="data:image/png;base64,{b64}"/></div>')
        return "".join(parts)


def _in_notebook() -> bool:
    ipy = sys.modules.get("IPython")
    if ipy is None:
        return False
    try:
        shell = ipy.get_ipython()
    except AttributeError:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, max_len: int = 80) -> str:
    """A file-name-safe version of a layer name (``model/conv2d/Relu:0`` -> ``model_conv2d_Relu_0``)."""
    s = _UNSAFE.sub("_", name).strip("._") or "layer"
    return s[:max_len]


def _prepare_dir(directory: str | os.PathLike[str]) -> Path:
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {d}: {e.strerror or e}; choose a writable folder") from None
    if not os.access(d, os.W_OK):
        raise OutputError(f"output folder {d} is not writable; choose a writable folder")
    return d


def _select(acts: Mapping[str, Any], layers: Sequence[str] | str | None) -> list[str]:
    if not isinstance(acts, Mapping):
        raise InputError(f"expected a mapping {{layer name: array}}, got {type(acts).__name__}")
    if len(acts) == 0:
        raise InputError("no activations to draw: the mapping is empty (did the layer filter match nothing?)")
    if layers is None:
        return list(acts.keys())
    wanted = [layers] if isinstance(layers, str) else list(layers)
    keys = list(acts.keys())
    out = []
    for name in wanted:
        if name in acts:
            out.append(name)
            continue
        subs = [k for k in keys if name in k]
        if len(subs) == 1:
            out.append(subs[0])
            continue
        close = difflib.get_close_matches(name, keys, n=3, cutoff=0.4) or subs[:3]
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known layers: {', '.join(keys[:8])}"
        raise LayerError(f"unknown layer {name!r}{hint}")
    return out


def _samples(arr: np.ndarray, index: int | str | None) -> list[int]:
    n = arr.shape[0] if arr.ndim >= 2 else 1
    if index is None or index == "all":
        return list(range(n))
    if not isinstance(index, (int, np.integer)):
        raise InputError(f"index must be a sample number or 'all', not {index!r}")
    if not -n <= index < n:
        raise InputError(f"index {index} is out of range: the batch has {n} sample(s)")
    return [int(index) % n]


def _as_figure(img: Any, title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = img.size
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.asarray(img))
    ax.set_axis_off()
    fig.suptitle("")
    fig.set_label(title)
    return fig


def _convert(img: Any, fmt: str, title: str) -> Any:
    if fmt == "image":
        return img
    if fmt == "array":
        return np.asarray(img)
    if fmt == "figure":
        return _as_figure(img, title)
    raise InputError(f"fmt must be 'image', 'array' or 'figure', not {fmt!r}")


def _finish(pics: Pictures, show: bool | None) -> Pictures:
    if show is None:
        show = _in_notebook()
    if show:
        try:
            from IPython.display import display
        except ImportError:
            return pics
        for v in pics.values():
            display(v)
        pics._shown = True
    return pics


def display_activations(acts: Mapping[str, Any], cmap: Any = None, save: bool = False,
                        directory: str | os.PathLike[str] = ".", *, layers: Sequence[str] | str | None = None,
                        index: int | str | None = 0, normalize: str = "tile", fmt: str = "image",
                        data_format: str | None = None, show: bool | None = None) -> Pictures:
    """Draw one grid per layer: ~sqrt(C) x sqrt(C) tiles, title with name/op/shape, colour bar.

    ``normalize="tile"`` scales each tile to its own min..max; ``"layer"`` uses one scale for the
    layer (a dead filter is then a flat tile at the bottom colour). ``index`` picks the sample of
    a batch (``"all"`` draws each). Returns :class:`Pictures` ``{key: PIL image}`` (``fmt="figure"``
    for matplotlib Figures, ``"array"`` for uint8 arrays). ``save=True`` writes
    ``{position:03d}_{layer}.png`` (``..._{sample}.png`` for several samples) into ``directory``.
    """
    keys = _select(acts, layers)
    if normalize not in NORMALIZE_MODES:
        raise InputError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, not {normalize!r}")
    colormap_lut(cmap)  # fail early on a bad colormap
    out_dir = _prepare_dir(directory) if save else None
    infos = getattr(acts, "layers", None) or {}
    positions = {k: i for i, k in enumerate(acts.keys())}
    pics = Pictures()
    used_names: set[str] = set()
    for key in keys:
        arr = np.asarray(acts[key])
        samples = _samples(arr, index)
        for s in samples:
            pic = render_layer(key, arr, infos.get(key), cmap=cmap, normalize=normalize, sample=s,
                               data_format=data_format)
            name = key if len(samples) == 1 else f"{key}[{s}]"
            pics[name] = _convert(pic.image, fmt, pic.title)
            pics.details[name] = pic
            if out_dir is not None:
                stem = f"{positions[key]:03d}_{safe_filename(key)}" + (f"_{s}" if len(samples) > 1 else "")
                while stem in used_names:
                    stem += "_"
                used_names.add(stem)
                pics.paths.append(_save_png(pic.image, out_dir / f"{stem}.png"))
    return _finish(pics, show)


def _save_png(img: Any, path: Path) -> Path:
    try:
        img.save(path, format="PNG", compress_level=1)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}; choose a writable folder") from None
    return path


# ----------------------------------------------------------------------------- heatmaps
def load_display_image(image: Any, index: int = 0) -> np.ndarray:
    """Any image (path, PIL, ndarray HW / HWC / CHW / NHWC / NCHW, any dtype) -> float32 ``(H, W, 3)`` in [0, 1].

    Never modifies the caller's array. Float arrays outside [0, 1] are min-max scaled (inputs
    preprocessed with ImageNet or caffe normalisation still display sensibly).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"cannot read image {image}: {e}") from None
        return a
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    a = np.asarray(image)
    if a.dtype == object or a.size == 0:
        raise InputError("image must be a path, a PIL image or a non-empty numeric array")
    if a.ndim == 4:
        if not -a.shape[0] <= index < a.shape[0]:
            raise InputError(f"index {index} is out of range for an image batch of {a.shape[0]}")
        a = a[index]
    if a.ndim == 3:
        if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        if a.shape[-1] == 1:
            a = a[..., 0]
        elif a.shape[-1] == 4:
            a = a[..., :3]
        elif a.shape[-1] != 3:
            raise InputError(f"cannot read an image of shape {np.shape(image)}: expected 1, 3 or 4 channels")
    if a.ndim != 2 and a.ndim != 3:
        raise InputError(f"cannot read an image of shape {np.shape(image)}: expected HxW, HxWxC or a batch")
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    else:
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(f.min()), float(f.max())
        if not (lo >= 0.0 and hi <= 1.0):
            if lo >= 0.0 and hi <= 255.0 and np.issubdtype(a.dtype, np.integer):
                f = f / 255.0
            else:
                f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=2)
    return np.ascontiguousarray(f, dtype=np.float32)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Half-pixel-centre bilinear weights (as PIL / OpenCV / ONNX Resize ``half_pixel``)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] += 1 - w1
    m[np.arange(n_out), i1] += w1
    return m


def resize_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(n, h, w)`` (or ``(h, w)``) maps bilinearly to ``height x width`` with two matmuls."""
    a = np.asarray(maps, dtype=np.float32)
    single = a.ndim == 2
    if single:
        a = a[None]
    ry = _interp_matrix(height, a.shape[1])
    rx = _interp_matrix(width, a.shape[2])
    out = np.matmul(np.matmul(ry, a), rx.T)
    return out[0] if single else out


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1]; constant maps become all zeros (flat), never NaN."""
    m = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    mn = m.min(axis=(-2, -1), keepdims=True)
    rng = m.max(axis=(-2, -1), keepdims=True) - mn
    return np.where(rng > 0, (m - mn) / np.where(rng > 0, rng, 1.0), 0.0).astype(np.float32)


def overlay(image: Any, heat: np.ndarray, cmap: Any = "jet", alpha: float = 0.3, *, normalize: bool = True,
            index: int = 0) -> Any:
    """One map (any size, any range) resized bilinearly onto ``image`` and blended -> PIL image."""
    from PIL import Image

    base = load_display_image(image, index)
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise InputError(f"heat map must be 2-D, got shape {h.shape}")
    # normalise before resizing: min-max is exact on the source map, so a constant map stays flat
    h = _unit(h) if normalize else np.clip(np.nan_to_num(h, nan=0.0), 0, 1)
    r = np.clip(resize_bilinear(h, base.shape[0], base.shape[1]), 0.0, 1.0)
    return Image.fromarray(_blend(base, r, cmap, alpha))


def _blend(base: np.ndarray, heat01: np.ndarray, cmap: Any, alpha: float) -> np.ndarray:
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, not {alpha}")
    col = colormap_lut(cmap)[np.rint(heat01 * 255).astype(np.uint8)].astype(np.float32)
    out = (1.0 - alpha) * (base * 255.0) + alpha * col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def display_heatmaps(acts: Mapping[str, Any], image: Any, save: bool = False,
                     directory: str | os.PathLike[str] = ".", merge_filters: bool = False, cmap: Any = "jet",
                     alpha: float = 0.3, *, layers: Sequence[str] | str | None = None, index: int = 0,
                     max_tile: int = 80, max_side: int = 1024, data_format: str | None = None,
                     fmt: str = "image", show: bool | None = None) -> Pictures:
    """Overlay each filter map (or, with ``merge_filters``, the layer's mean map) on ``image``.

    Each map is resized bilinearly to the image, scaled to [0, 1] (constant maps are flat),
    coloured with ``cmap`` and blended at ``alpha``. Per-filter overlays of a layer are tiled
    into one grid (tiles at most ``max_tile`` px); the merged overlay is at most ``max_side``
    px. 1-D layers are skipped. ``save=True`` writes ``{position:03d}_{layer}_heatmap.png``.
    """
    keys = _select(acts, layers)
    colormap_lut(cmap)
    base_full = load_display_image(image, index)
    out_dir = _prepare_dir(directory) if save else None
    infos = getattr(acts, "layers", None) or {}
    positions = {k: i for i, k in enumerate(acts.keys())}
    H, W = base_full.shape[:2]
    limit = max_side if merge_filters else max_tile
    f = min(1.0, limit / max(H, W))
    th, tw = max(1, round(H * f)), max(1, round(W * f))
    if (th, tw) == (H, W):
        base = base_full
    else:  # Pillow's resize filters properly when shrinking a large photo
        from PIL import Image

        small = Image.fromarray(np.rint(base_full * 255).astype(np.uint8)).resize((tw, th), Image.BILINEAR)
        base = np.asarray(small, dtype=np.float32) / 255.0
    pics = Pictures()
    for key in keys:
        arr = np.asarray(acts[key])
        info = infos.get(key)
        layout = _layout(arr, info, data_format)
        if arr.size == 0 or layout not in ("NCHW", "NHWC", "NCDHW", "NDHWC") or arr.ndim < 4:
            continue
        sample = _samples(arr, index)[0]
        maps, _ = sample_tiles(arr, layout, sample)
        if merge_filters:
            maps = maps.mean(axis=0, keepdims=True)
        heat = np.clip(resize_bilinear(_unit(maps), th, tw), 0.0, 1.0)  # unit first: constant stays flat
        tiles = np.stack([_blend(base, m, cmap, alpha) for m in heat])
        grid = tile_grid(tiles, sep=2, fill=255) if len(tiles) > 1 else tiles[0]
        op, act = getattr(info, "op_type", None), getattr(info, "activation", None)
        op = f"{op}+{act}" if op and act else op
        title = "  |  ".join([key] + ([op] if op else []) + [_shape_text(arr)]
                              + (["mean of filters"] if merge_filters else [f"{len(tiles)} filters"]))
        img, _ = _compose(grid, title, (colormap_lut(cmap), "map max", "map min"))
        pics[key] = _convert(img, fmt, title)
        if out_dir is not None:
            stem = f"{positions[key]:03d}_{safe_filename(key)}_heatmap"
            pics.paths.append(_save_png(img, out_dir / f"{stem}.png"))
    if not pics:
        raise InputError("no spatial layer to overlay: heatmaps need 4-D (NCHW/NHWC) activations")
    return _finish(pics, show)
