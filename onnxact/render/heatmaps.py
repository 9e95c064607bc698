"""Activation maps over the input image: read the image, resize maps bilinearly, blend, tile.

Its own stage because it needs the input picture, not just the activations: image loading and
normalisation, resizing and alpha blending live here, apart from the plain activation grids.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .colors import colormap_lut, unit_scale
from .display import (
    Pictures,
    PngWriter,
    _convert,
    _finish,
    _prepare_dir,
    _progress,
    _samples,
    _select,
    numbering,
    safe_filename,
)
from .picture import _NUMBER_SIZE, ColourBar, _compose, _shape_text, body_width
from .text import line_height, stamp, text_width
from .tiles import _layout, check_data_format, layer_kind, sample_tiles, tile_grid


def load_display_image(image: Any, index: int = 0) -> np.ndarray:
    """Any image (path, PIL, ndarray HW / HWC / CHW / NHWC / NCHW, any dtype) -> float32 ``(H, W, 3)`` in [0, 1].

    Never modifies the caller's array. Float arrays outside [0, 1] are min-max scaled (inputs
    preprocessed with ImageNet or caffe normalisation still display sensibly).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            from ..preprocess import upright

            with Image.open(image) as im:
                a = np.asarray(upright(im).convert("RGB"), dtype=np.float32) / 255.0
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
    return bilinear_rows((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, n_in)


def bilinear_rows(src: np.ndarray, n_in: int) -> np.ndarray:
    """The (len(src) x n_in) matrix that samples a length-``n_in`` signal bilinearly at positions
    ``src`` (clipped to the signal): each row holds two weights summing to 1."""
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    m = np.zeros((len(src), n_in), np.float32)
    m[np.arange(len(src)), i0] += 1 - w1
    m[np.arange(len(src)), i1] += w1
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


def _geometry_for(base: np.ndarray, geometry: Any) -> Any:
    """``geometry`` when ``base`` is the original image (any scale), None when it is the model
    input itself (maps then align by a plain resize, padding and all)."""
    if geometry is None:
        return None
    th, tw = geometry.input_size
    return None if base.shape[:2] == (th, tw) else geometry


def _onto(maps01: np.ndarray, height: int, width: int, geometry: Any) -> np.ndarray:
    """Maps over the model input onto a ``height x width`` picture: through ``geometry`` (see
    :func:`onnxact.sizing.map_to_image`; NaN where the model saw nothing) or a plain resize."""
    if geometry is None:
        return np.clip(resize_bilinear(maps01, height, width), 0.0, 1.0)
    from ..sizing import map_to_image

    return np.clip(map_to_image(maps01, geometry, (height, width)), 0.0, 1.0)


def overlay(image: Any, heat: np.ndarray, cmap: Any = "jet", alpha: float = 0.3, *, normalize: bool = True,
            index: int = 0, geometry: Any = None) -> Any:
    """One map (any size, any range) resized bilinearly onto ``image`` and blended -> PIL image.

    ``geometry`` (an :class:`onnxact.sizing.Geometry`, e.g. ``acts.geometry[0]``): the map covers
    the letterboxed / cropped model input and ``image`` is the original: the map is un-padded /
    un-cropped onto it. Ignored when ``image`` is the model input itself.
    """
    from PIL import Image

    base = load_display_image(image, index)
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise InputError(f"heat map must be 2-D, got shape {h.shape}")
    # normalise before resizing: min-max is exact on the source map, so a constant map stays flat
    h = unit_scale(h) if normalize else np.clip(np.nan_to_num(h, nan=0.0), 0, 1)
    r = _onto(h, base.shape[0], base.shape[1], _geometry_for(base, geometry))
    return Image.fromarray(_blend(base, r, cmap, alpha))


def _blend(base: np.ndarray, heat01: np.ndarray, cmap: Any, alpha: float) -> np.ndarray:
    """Colour ``heat01`` and blend it on ``base``; NaN (never seen by the model) keeps the base."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, not {alpha}")
    unseen = np.isnan(heat01)
    col = colormap_lut(cmap)[np.rint(np.nan_to_num(heat01) * 255).astype(np.uint8)].astype(np.float32)
    out = (1.0 - alpha) * (base * 255.0) + alpha * col
    if unseen.any():
        out[unseen] = base[unseen] * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _positional(save: Any, directory: Any, extra: tuple[Any, ...], merge_filters: bool, cmap: Any,
                alpha: float) -> tuple[bool, Any, bool, Any, float]:
    """Sort out positional arguments given in Keract's order ``(directory, save, fix, merge_filters)``
    or in onnxact's ``(save, directory, merge_filters, cmap, alpha)``; the first is recognised by a
    folder name (not a bool) in third place."""
    if isinstance(save, (str, os.PathLike)):  # Keract: display_heatmaps(acts, x, directory, save, fix, merge_filters)
        if len(extra) > 2:
            raise InputError("display_heatmaps takes at most (acts, image, directory, save, fix, merge_filters) "
                             "in Keract's order; pass the rest by keyword")
        directory, save = save, (directory if isinstance(directory, bool) else False)
        if len(extra) == 2:
            merge_filters = extra[1]
    elif extra:
        if len(extra) > 3:
            raise InputError("display_heatmaps takes at most (acts, image, save, directory, merge_filters, cmap, "
                             "alpha) by position; pass the rest by keyword")
        given = [merge_filters, cmap, alpha]
        given[:len(extra)] = extra
        merge_filters, cmap, alpha = given
    if not isinstance(save, (bool, np.bool_)):
        raise InputError(f"save must be True or False, not {save!r}")
    if isinstance(directory, (bool, np.bool_)):
        raise InputError(f"directory must be a folder name, not {directory!r}")
    return bool(save), directory, bool(merge_filters), cmap, alpha


def _numbered(tiles: np.ndarray, cols: int | None, numbers: bool) -> np.ndarray:
    """Overlays ``(n, h, w, 3)`` tiled with 2-px white separators; with ``numbers``, each under a
    white band holding its channel number (where the tile is wide enough for it)."""
    band = line_height(_NUMBER_SIZE) if numbers and text_width(str(len(tiles) - 1), _NUMBER_SIZE) + 2 <= \
        tiles.shape[2] else 0
    if band:
        tiles = np.concatenate([np.full((len(tiles), band) + tiles.shape[2:], 255, np.uint8), tiles], axis=1)
    cols = cols or max(1, math.ceil(math.sqrt(len(tiles))))  # tile_grid's default, needed for the positions
    grid = tile_grid(tiles, cols=cols, sep=2, fill=255)
    if band:
        h, w = tiles.shape[1:3]
        for i in range(len(tiles)):
            r, c = divmod(i, cols)
            stamp(grid, c * (w + 2) + 1, r * (h + 2), str(i), _NUMBER_SIZE)
    return grid


def display_heatmaps(activations: Mapping[str, Any], image: Any = None, save: Any = False,
                     directory: str | os.PathLike[str] | bool = ".", *keract_args: Any, merge_filters: bool = False,
                     cmap: Any = "jet", alpha: float = 0.3, fix: bool = True, input_image: Any = None,
                     layers: Sequence[str] | str | None = None, index: int = 0,
                     max_tile: int = 80, max_side: int = 1024, data_format: str | None = None,
                     fmt: str = "image", show: bool | None = None, progress: bool | str = False,
                     geometry: Any = None, max_width: int | None = None,
                     channel_numbers: bool | None = None) -> Pictures:
    """Overlay each filter map (or, with ``merge_filters``, the layer's mean map) on ``image``.

    ``image`` may be the model input (``x``) or the original picture: with the original, the maps
    go through ``geometry`` (default ``acts.geometry[index]``, recorded by ``get_activations`` when
    it read the image) so letterbox padding and crops are undone and the maps line up with it.

    Each map is resized bilinearly to the image, scaled to [0, 1] (constant maps are flat),
    coloured with ``cmap`` and blended at ``alpha``. Per-filter overlays of a layer are tiled
    into one grid (tiles at most ``max_tile`` px; ``max_width`` px wide at most, as many columns
    as fit, when given); the merged overlay is at most ``max_side`` px. 1-D layers are skipped.
    ``save=True`` writes ``{position:03d}_{layer}_heatmap.png`` into ``directory``.
    ``progress=True`` (or a label) shows a progress bar on a terminal. ``channel_numbers=True``
    writes each overlay's channel number above it (default: when shown in a notebook).

    Keract's signature works unchanged: ``display_heatmaps(acts, x, directory, save, fix,
    merge_filters)`` by position (a folder name in third place is read in Keract's order) or by
    keyword (``input_image=`` too); ``fix`` is accepted and the image is always read robustly (batch axis, grey, 0-255
    or any float range), which is what Keract's ``fix=True`` does; ``data_format`` as in
    :func:`.display.display_activations`. onnxact's own positional order
    ``(acts, image, save, directory, merge_filters, cmap, alpha)`` works too.
    """
    save, directory, merge_filters, cmap, alpha = _positional(save, directory, keract_args, merge_filters, cmap,
                                                              alpha)
    check_data_format(data_format)
    show, channel_numbers = numbering(show, channel_numbers)
    acts = activations
    if (image is None) == (input_image is None):
        raise InputError("display_heatmaps needs the image to draw on: pass it as the second argument "
                         "(or as input_image=, Keract's name), once")
    image = image if input_image is None else input_image
    keys = _select(acts, layers)
    colormap_lut(cmap)
    base_full = load_display_image(image, index)
    if geometry is None:
        recorded = getattr(acts, "geometry", None) or []
        geometry = recorded[index] if -len(recorded) <= index < len(recorded) else None
    geometry = _geometry_for(base_full, geometry)
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
    writer = PngWriter() if out_dir is not None else None
    bar = ColourBar(colormap_lut(cmap), [(1.0, "map max"), (0.0, "map min")], ["per map"])

    def draw(key: str) -> tuple[Any, str] | None:
        arr = np.asarray(acts[key])
        info = infos.get(key)
        layout = _layout(arr, info, data_format)
        if arr.size == 0 or layout not in ("NCHW", "NHWC", "NCDHW", "NDHWC") or arr.ndim < 4 \
                or layer_kind(arr, layout) == "channels":  # 1x1 maps: a flat overlay says nothing
            return None
        sample = _samples(arr, index)[0]
        maps, _ = sample_tiles(arr, layout, sample)
        if merge_filters:
            maps = maps.mean(axis=0, keepdims=True)
        heat = _onto(unit_scale(maps), th, tw, geometry)  # unit first: constant stays flat
        tiles = np.stack([_blend(base, m, cmap, alpha) for m in heat])
        cols = None
        if max_width is not None:  # as many columns as the width takes
            cols = max(1, min(len(tiles), (body_width(max_width, bar) + 2) // (tiles.shape[2] + 2)))
        grid = _numbered(tiles, cols, channel_numbers) if len(tiles) > 1 else tiles[0]
        op, act = getattr(info, "op_type", None), getattr(info, "activation", None)
        op = f"{op}+{act}" if op and act else op
        title = "  |  ".join([key] + ([op] if op else []) + [_shape_text(arr)]
                              + (["mean of filters"] if merge_filters else [f"{len(tiles)} filters"]))
        img, _ = _compose(grid, title, bar, max_width)
        return img, title

    # Layers are drawn on two threads: numpy's resize/blend and the PNG encoder release the GIL.
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            drawn = _progress(pool.map(draw, keys), progress, "heatmaps", total=len(keys))
            for key, d in zip(keys, drawn):  # in layer order, as each is drawn
                if d is None:
                    continue
                pics[key] = _convert(d[0], fmt, d[1])
                if writer is not None:
                    writer.submit(d[0], out_dir / f"{positions[key]:03d}_{safe_filename(key)}_heatmap.png")
    except BaseException:
        if writer is not None:
            writer.close()  # no write may land after the caller cleans up (Ctrl-C, SIGTERM)
        raise
    if writer is not None:
        pics.paths.extend(writer.paths())
    if not pics:
        raise InputError("no spatial layer to overlay: heatmaps need 4-D (NCHW/NHWC) activations")
    return _finish(pics, show)
