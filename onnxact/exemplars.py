"""What does each filter look for? The dataset images (and patches) that excite it most.

``find_exemplars(model, images, top=9)`` scans a dataset once and returns, for every channel of
every captured layer, the K images with the highest maximum activation of that channel, each
with the position of the maximum and the box of the input image that position sees (its
receptive field, :mod:`onnxact.receptive`, in ORIGINAL image pixels). This is OpenAI
Microscope's "dataset examples", gradient-free, so it works on any ONNX model.

How it stays fast and small (see :mod:`onnxact.exemplar_graph` and :mod:`onnxact.exemplar_scan`):
the per-image maximum and its position are reduced inside the graph, so only ``[N, C]`` values
leave onnxruntime; the host keeps K entries per channel, whatever the number of images; the
Ray engine merges partial results in the same total order (value, then image path), so it
gives exactly the local lists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .activations import LayerInfo
from .errors import InputError, ModelError

__all__ = ["Exemplar", "Exemplars", "find_exemplars"]


@dataclass(frozen=True)
class Exemplar:
    """One of a channel's top images."""

    image: str  # the image path as given (``array[i]`` / ``FILE.npy[i]`` for arrays)
    value: float  # the channel's maximum over that image
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in original image pixels, clipped
    position: tuple[int, int]  # (row, col) of the maximum in the layer's map

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "value": _num(self.value), "box": list(self.box),
                "position": list(self.position)}


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


class Exemplars:
    """The result of :func:`find_exemplars`: ``layers[name][channel]`` is that channel's top list
    (value descending, ties by image path)."""

    def __init__(self, model: str, images: int, top: int, layers: dict[str, list[list[Exemplar]]],
                 means: dict[str, float], skipped: list[tuple[str, str]], *, infos: dict[str, LayerInfo] | None = None,
                 notes: Sequence[str] = (), input_size: tuple[int, int] | None = None, resize: str | None = None,
                 model_path: str | None = None) -> None:
        self.model = model
        self.images = images
        self.top = top
        self.layers = layers
        self.means = means
        self.skipped = skipped
        self.infos = infos or {}
        self.notes = list(notes)
        self.input_size = input_size
        self.resize = resize
        self.model_path = model_path
        self._model: Any = None
        self._preprocess: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Exemplars({self.model!r}, images={self.images}, top={self.top}, layers={len(self.layers)})"

    @property
    def fewer_than_top(self) -> bool:
        """True when the dataset had fewer readable images than K (every list is shorter)."""
        return self.images < self.top

    def to_json(self) -> dict[str, Any]:
        """The ``exemplars.json`` document (issue 15): ``model``, ``images``, ``layers`` (per layer a
        list of ``{"channel", "top": [{"image", "value", "box"}]}``), plus ``top``, ``means``,
        ``skipped``, ``input_size``, ``resize``, ``layer_info`` and ``notes``; each entry also
        has its map ``position`` [row, col]. Boxes are [x0, y0, x1, y1] in original image pixels."""
        info = {}
        for name, li in self.infos.items():
            info[name] = {"tensor": li.tensor, "op_type": li.op_type, "layout": li.layout,
                          "shape": [d if isinstance(d, int) else None for d in (li.shape or ())]}
        return {
            "model": self.model, "images": self.images, "top": self.top,
            "layers": {name: [{"channel": c, "top": [e.to_json() for e in entries]}
                              for c, entries in enumerate(channels)] for name, channels in self.layers.items()},
            "means": {k: _num(v) for k, v in self.means.items()},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "input_size": list(self.input_size) if self.input_size else None, "resize": self.resize,
            "layer_info": info, "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Exemplars:
        """Read back :meth:`to_json` (e.g. a saved ``exemplars.json``)."""
        try:
            layers = {name: [[Exemplar(str(e["image"]), float("nan") if e["value"] is None else float(e["value"]),
                                       tuple(int(v) for v in e["box"]),  # type: ignore[misc]
                                       tuple(int(v) for v in e.get("position", (0, 0))))  # type: ignore[misc]
                              for e in ch["top"]] for ch in chans] for name, chans in d["layers"].items()}
            return cls(str(d["model"]), int(d["images"]), int(d.get("top", 0)), layers,
                       {k: float("nan") if v is None else float(v) for k, v in (d.get("means") or {}).items()},
                       [(s["path"], s["reason"]) for s in d.get("skipped") or []], notes=d.get("notes") or (),
                       input_size=tuple(d["input_size"]) if d.get("input_size") else None,  # type: ignore[arg-type]
                       resize=d.get("resize"))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not an exemplars.json document ({e})") from None

    def save(self, folder: str | os.PathLike[str], *, force: bool = False, crops: bool = True,
             pages: bool = True) -> Path:
        """Write ``exemplars.json``, one crop PNG per entry and an ``index.html`` per layer (plus a
        top-level ``index.html``) into ``folder``, staged and moved in at the end (see
        :func:`onnxact.safeio.output_folder`). Returns the folder."""
        from .exemplar_pages import write_exemplars

        return write_exemplars(self, folder, force=force, crops=crops, pages=pages)


def _check_top(top: Any) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise InputError(f"top must be a whole number of images of at least 1, not {top!r} (e.g. --top 9)")
    return int(top)


def _image_size(path: str) -> tuple[int, int] | None:
    """(height, width) of an image file as the scan saw it (after EXIF rotation), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            except (OSError, ValueError, SyntaxError):
                turned = False
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return (w, h) if turned else (h, w)


def find_exemplars(
    model: Any,
    images: Any,
    top: int = 9,
    *,
    layers: Sequence[str | int] | None = None,
    op_types: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    batch_size: int = 32,
    engine: str = "local",
    progress: Callable[[int, int], Any] | None = None,
    strict: bool = False,
    address: str | None = None,
    workers: int | None = None,
    providers: Any = None,
    threads: int | None = None,
    **preprocess: Any,
) -> Exemplars:
    """The top ``top`` images of the dataset ``images`` for every channel of every captured layer.

    ``images``: folders (recursive), globs, list files, image files, ``.npy``/``.npz`` arrays or
    ndarrays, as for :func:`onnxact.find_dead_filters`. ``layers`` / ``op_types`` narrow the
    default capture set. Every image is fed at one size (``size``, else as ``check`` resolves it)
    and fitted by ``resize`` (stretch / letterbox / crop); the boxes are mapped back through that
    fit onto the original image. ``progress(done, total)`` is called after each batch.
    Unreadable images are skipped and listed in ``skipped`` (``strict=True``: ``InputError``).
    ``engine="ray"`` runs on a Ray cluster with the same result. ``preprocess``: ``normalize``,
    ``mean``, ``std`` as for :func:`onnxact.preprocess_image`.
    """
    from .exemplar_graph import split_spatial
    from .images import count_samples, expand_sources
    from .model import load
    from .stats_graph import split_unknown_rank
    from .stats_runner import post_activation_layers, scan_preprocess

    k = _check_top(top)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    m = load(model, providers=providers, threads=threads)
    sel = m.select(layers, op_types) if (layers or op_types) else list(m.layers)
    sel, notes = split_unknown_rank(post_activation_layers(m, sel))
    sel, more = split_spatial(sel)
    notes += more
    if not sel:
        why = f" ({notes[0]})" if notes else ""
        raise ModelError(f"{m.name} has no capturable conv/pool layers to find exemplars for{why}; "
                         "pass layers= or op_types=")
    kw = dict(preprocess)
    if size is not None:
        kw["size"] = size
    if resize is not None:
        kw["resize"] = resize
    items = expand_sources(images)
    kw = scan_preprocess(m, images, kw)
    from .exemplar_scan import sample_keys, sample_labels, scan_exemplars

    labels = sample_labels(items)
    keys = sample_keys(labels)
    total = count_samples(items)
    if engine == "local":
        state = scan_exemplars(m, items, keys, sel, k, batch_size=batch_size, strict=strict, progress=progress,
                               total=total, **kw)
    elif engine == "ray":
        try:
            from .ray_engine import scan_exemplars_ray
        except ImportError as e:
            from .errors import DependencyError

            raise DependencyError(f"the Ray engine is unavailable ({e}); install it with: pip install 'onnxact[ray]'") from None
        state = scan_exemplars_ray(m, items, keys, sel, k, batch_size=batch_size, strict=strict, progress=progress,
                                   address=address, workers=workers, **kw)
    else:
        raise InputError(f"unknown engine '{engine}'; use 'local' or 'ray'")
    return _finish(m, state, items, labels, kw, notes)


def _finish(m: Any, state: Any, items: Sequence[Any], labels: Sequence[str], kw: dict[str, Any],
            notes: list[str]) -> Exemplars:
    """Keys back to paths, positions to boxes in original image pixels."""
    from .exemplar_scan import EMPTY
    from .receptive import box_to_image, cell_box, receptive_fields
    from .sizing import Geometry, default_resize, plan

    by_key = sorted(range(len(labels)), key=lambda i: (labels[i], i))  # key -> sample position
    mode = kw.get("resize") or default_resize(m)
    fed = tuple(kw["size"]) if kw.get("size") else None
    array_shapes = _array_input_sizes(m, items)
    fields_at: dict[tuple[int, int] | None, dict[str, Any]] = {}
    geometry_of: dict[int, Geometry] = {}
    tensors = [li.tensor for li in state.infos.values()]

    def fields(size: tuple[int, int] | None) -> dict[str, Any]:
        if size not in fields_at:
            fields_at[size] = receptive_fields(m, tensors, size)
        return fields_at[size]

    def geometry(pos: int) -> Geometry | None:
        if pos in geometry_of:
            return geometry_of[pos]
        label = labels[pos]
        g = None
        if pos not in array_shapes:
            hw = _image_size(label)
            if hw is not None:
                g = plan(hw, fed or hw, mode if fed else "stretch")
        else:
            hw = array_shapes[pos]
            if hw is not None:
                g = plan(hw, hw, "stretch")
        geometry_of[pos] = g  # type: ignore[assignment]
        return g

    out: dict[str, list[list[Exemplar]]] = {}
    means: dict[str, float] = {}
    for name, t in state.layers.items():
        info = state.infos[name]
        chans: list[list[Exemplar]] = []
        for c in range(t.values.shape[0]):
            entries = []
            for j in range(t.k):
                key = int(t.keys[c, j])
                if key == EMPTY or np.isnan(t.values[c, j]):
                    continue
                pos = by_key[key]
                g = geometry(pos)
                r, col = int(t.rows[c, j]), int(t.cols[c, j])
                if g is None:
                    box = (0, 0, 1, 1)
                else:
                    f = fields(g.input_size).get(info.tensor)
                    if f is None:
                        box = (0, 0, g.image_size[1], g.image_size[0])
                    else:
                        box = box_to_image(cell_box(f, r, col, g.input_size), g)
                entries.append(Exemplar(labels[pos], float(t.values[c, j]), box, (r, col)))
            chans.append(entries)
        out[name] = chans
        means[name] = t.mean_sum / state.images if state.images else float("nan")
    ex = Exemplars(m.name, state.images, state.k, out, means, list(state.failed), infos=dict(state.infos),
                   notes=notes, input_size=fed, resize=mode if fed else None,
                   model_path=str(m.path) if getattr(m, "path", None) else None)
    # what save() needs to draw each channel's map on its top image (not part of the JSON)
    ex._model = m
    ex._preprocess = {k: v for k, v in kw.items() if k in ("size", "resize", "normalize", "mean", "std")}
    return ex


def _array_input_sizes(m: Any, items: Sequence[Any]) -> dict[int, tuple[int, int] | None]:
    """{sample position: fed (h, w)} for the samples that come from arrays (None: not an image map)."""
    from .images import ArrayRef
    from .sizing import image_input

    inp = image_input(m)
    nhwc = inp is not None and inp.layout == "NHWC"
    out: dict[int, tuple[int, int] | None] = {}
    pos = 0
    for it in items:
        if not isinstance(it, ArrayRef):
            pos += 1
            continue
        shape = tuple(it.load().shape)
        if len(shape) == 3:  # one sample without its batch axis
            shape = (1, *shape)
        n = shape[0] if shape else 1
        hw = ((shape[1], shape[2]) if nhwc else (shape[2], shape[3])) if len(shape) == 4 else None
        for i in range(n):
            out[pos + i] = hw
        pos += n
    return out
