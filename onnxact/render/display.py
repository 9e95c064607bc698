"""The user-facing side of rendering: pick layers and samples, return, save or show pictures.

Its own stage because both :func:`display_activations` and the heatmaps share it: the
:class:`Pictures` container, output formats (image / array / matplotlib Figure, imported lazily),
file names, the output folder and notebook display.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LayerError, OutputError
from .colors import colormap_lut
from .picture import LayerPicture, render_layer
from .tiles import NORMALIZE_MODES, check_data_format

#: px: the width ``inspect`` draws pictures at, the report page's content width (report.py's
#: ``main{max-width:1400px}`` less its padding and the section margins)
REPORT_WIDTH = 1200


class Pictures(dict):
    """``{key: PIL image | matplotlib Figure | ndarray}`` in layer order; ``.paths`` lists saved files.

    In a notebook the pictures are shown when rendered; ``_repr_html_`` shows them when the
    return value is the last expression of a cell instead.
    """

    paths: list[Path]
    details: dict[str, LayerPicture]
    #: {key: why it was not drawn} for layers that are no map (0-d and 1-d arrays: scales, scalars)
    skipped: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.paths = []
        self.details = {}
        self.skipped = {}
        self._shown = False

    def _repr_html_(self) -> str:
        if self._shown:
            return f"<small>{len(self)} pictures</small>"
        import base64
        import html

        from .png import png_bytes

        parts = []
        for k, v in self.items():
            if hasattr(v, "save") and hasattr(v, "mode"):
                b64 = base64.b64encode(png_bytes(v)).decode()
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


def numbering(show: bool | None, channel_numbers: bool | None) -> tuple[bool, bool]:
    """(show, channel_numbers) with their defaults resolved: shown, and so numbered, in a notebook."""
    show = _in_notebook() if show is None else bool(show)
    return show, show if channel_numbers is None else bool(channel_numbers)


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


def display_activations(activations: Mapping[str, Any], cmap: Any = None, save: bool = False,
                        directory: str | os.PathLike[str] = ".", data_format: str | None = None,
                        fig_size: tuple[float, float] | None = None, reshape_1d_layers: bool = False, *,
                        layers: Sequence[str] | str | None = None, index: int | str | None = 0,
                        normalize: str = "tile", fmt: str = "image", show: bool | None = None,
                        progress: bool | str = False, max_width: int | None = None,
                        channel_numbers: bool | None = None) -> Pictures:
    """Draw one picture per layer: a grid of ~sqrt(C) x sqrt(C) tiles for 2-D maps, a bar chart
    for one value per channel (``[N, C]``, global pools, squeeze-excite), a channels x time image
    for 1-D maps; each with a title (name, op, shape) and a colour bar with numbers.

    The first seven parameters are Keract's, in Keract's order and with its meaning, so a Keract
    script runs unchanged: ``data_format`` (``channels_last`` / ``channels_first``) says how plain
    arrays are laid out (default: each layer's own layout, or a guess for a plain dict);
    ``fig_size=(w, h)`` in inches at 100 dpi sizes each picture (a width of ``w * 100`` px, grids
    at most ``h * 100`` px tall); ``reshape_1d_layers=True`` draws ``[N, C]`` layers as one
    near-square tile instead of a bar chart. ``save=True`` writes ``{position:03d}_{layer}.png``
    (``..._{sample}.png`` for several samples) into ``directory``.

    ``normalize="tile"`` scales each tile to its own min..max (the colour bar says "per tile";
    each tile's range is in ``.details[key].tile_ranges``); ``"layer"`` uses one scale for the
    layer (a dead filter is then a flat tile at the bottom colour) and the colour bar gives its
    numbers. ``max_width`` (px) fits each picture to a page's width: columns and tile size are
    chosen from it. ``channel_numbers=True`` writes each tile's channel number above it (default:
    when the pictures are shown in a notebook, so a tile can be named by its filter).
    ``index`` picks the sample of a batch (``"all"`` draws each). Returns :class:`Pictures`
    ``{key: PIL image}`` (``fmt="figure"`` for matplotlib Figures, ``"array"`` for uint8 arrays)
    with ``.details[key]`` (:class:`LayerPicture`: tile positions, channel numbers, ranges).
    ``progress=True`` (or a label) shows a progress bar on a terminal (never in a pipe or log).
    """
    acts = activations
    check_data_format(data_format)
    show, channel_numbers = numbering(show, channel_numbers)
    max_height = None
    if fig_size is not None:
        w_px, h_px = _fig_size_px(fig_size)
        max_width = max_width or w_px
        max_height = h_px
    keys = _select(acts, layers)
    if normalize not in NORMALIZE_MODES:
        raise InputError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, not {normalize!r}")
    colormap_lut(cmap)  # fail early on a bad colormap
    out_dir = _prepare_dir(directory) if save else None
    infos = getattr(acts, "layers", None) or {}
    positions = {k: i for i, k in enumerate(acts.keys())}
    pics = Pictures()
    writer = PngWriter() if out_dir is not None else None
    used_names: set[str] = set()
    try:
        for key in _progress(keys, progress, "grids"):
            arr = np.asarray(acts[key])
            if arr.ndim <= 1:  # no batch and channel axes: a scalar (a quantization scale...), not a map
                pics.skipped[key] = f"{key}: a {arr.ndim}-d array of shape {list(arr.shape)}, not a map; not drawn"
                continue
            samples = _samples(arr, index)
            for s in samples:
                pic = render_layer(key, arr, infos.get(key), cmap=cmap, normalize=normalize, sample=s,
                                   data_format=data_format, max_width=max_width, max_height=max_height,
                                   channel_numbers=channel_numbers, reshape_1d=reshape_1d_layers)
                name = key if len(samples) == 1 else f"{key}[{s}]"
                pics[name] = _convert(pic.image, fmt, pic.title)
                pics.details[name] = pic
                if out_dir is not None:
                    stem = f"{positions[key]:03d}_{safe_filename(key)}" + (f"_{s}" if len(samples) > 1 else "")
                    while stem in used_names:
                        stem += "_"
                    used_names.add(stem)
                    writer.submit(pic.image, out_dir / f"{stem}.png")
    except BaseException:
        if writer is not None:
            writer.close()  # no write may land after the caller cleans up (Ctrl-C, SIGTERM)
        raise
    if writer is not None:
        pics.paths.extend(writer.paths())
    return _finish(pics, show)


def _fig_size_px(fig_size: Any) -> tuple[int, int]:
    """Keract's ``fig_size`` (width, height) in inches -> pixels at matplotlib's default 100 dpi."""
    try:
        w, h = (float(v) for v in fig_size)
    except (TypeError, ValueError):
        raise InputError(f"fig_size must be (width, height) in inches, such as (24, 24), not {fig_size!r}") from None
    if not (0 < w < 1000 and 0 < h < 1000):
        raise InputError(f"fig_size must be (width, height) in inches between 0 and 1000, not {fig_size!r}")
    return max(64, round(w * 100)), max(64, round(h * 100))


def _progress(items: Any, label: bool | str, default: str, total: int | None = None) -> Any:
    """``items`` behind a terminal progress bar when ``label`` asks for one."""
    if not label:
        return items
    from ..progress import progress

    return progress(items, total=total, desc=label if isinstance(label, str) else default)


class PngWriter:
    """Writes PNGs on a small thread pool while the caller draws the next layer.

    Why: PNG encoding was ~2/3 of ``display_heatmaps`` on the seed CNN; numpy and zlib release
    the GIL, so encoding layer k overlaps drawing layer k+1. ``paths()`` returns
    the paths in submission order and re-raises the first write error (an ``OutputError``).
    """

    def __init__(self, workers: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self._futures: list[Any] = []

    def submit(self, img: Any, path: Path) -> None:
        self._futures.append(self._pool.submit(save_png, img, path))

    def paths(self) -> list[Path]:
        try:
            return [f.result() for f in self._futures]
        finally:
            self.close()

    def close(self) -> None:
        """Cancel queued writes and wait for those in flight (each is atomic: whole or absent)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:  # a drawing error mid-way: don't leave idle threads behind
        pool = getattr(self, "_pool", None)  # absent when Ctrl-C / SIGTERM came inside __init__
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def save_png(img: Any, path: Path) -> Path:
    """Write ``img`` (a PIL image or uint8 array) as PNG with the fast encoder (render/png.py).

    The file is written under a temporary name and renamed (onnxact.safeio), so an interrupted
    run never leaves a half-written picture; an unwritable path or a symbolic link at ``path``
    is an ``OutputError``."""
    from ..safeio import write_bytes
    from .png import png_bytes

    write_bytes(path, png_bytes(img))  # atomic, never through a link (an OutputError otherwise)
    return path
