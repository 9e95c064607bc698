"""``find_dead_filters``: scan a dataset with the local or the Ray engine and report its dead filters.

The layers, from the bottom: :mod:`onnxact.stats_records` (mergeable per-channel statistics),
:mod:`onnxact.stats_graph` (the in-graph reductions), :mod:`onnxact.stats_runner` (one session over a
model, and the local engine's ``scan``) and :mod:`onnxact.stats_report` (the report and its writers);
the Ray engine (:mod:`onnxact.ray_engine`) sits above the runner. This module is the only one that
picks an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, ModelError
from .model import Model, load
from .stats_graph import split_unknown_rank
from .stats_report import DeadFilterReport
from .stats_runner import scan, scan_preprocess

__all__ = ["find_dead_filters"]


def _reads_images(sources: Any) -> bool:
    """Are any of the scan's sources image files (preprocessed), not ready arrays (.npy/.npz, ndarrays)?"""
    import os
    from pathlib import Path

    from .images import ARRAY_SUFFIXES

    if isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    return any(not isinstance(s, np.ndarray) and Path(os.fspath(s)).suffix.lower() not in ARRAY_SUFFIXES
               for s in sources)


def find_dead_filters(
    model: Any,
    images: Any,
    *,
    eps: float = 0.0,
    tau: float = 0.0,
    threshold: float | None = None,
    layer_names: Sequence[str | int] | None = None,
    op_types: Sequence[str] | None = None,
    batch_size: int = 32,
    strict: bool = False,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    providers: Any = None,
    threads: int | None = None,
    show_progress: bool = True,
    inputs: Mapping[str, Any] | None = None,
    **preprocess_kw: Any,
) -> DeadFilterReport:
    """Scan a dataset for dead / dormant / constant filters; returns a ``DeadFilterReport``.

    ``images``: folders (recursive), globs, a text file listing paths, ``.npy``/``.npz`` arrays
    of ready inputs, or an ndarray (or a list of any of these). ``eps``: max |a| at or below which
    a channel is dead; ``tau``: the dormant ratio; ``threshold``: when given, the statistics also
    count positions above it per channel (``LayerStats.fraction_above``; three extra passes). ``engine="ray"`` runs the scan on a Ray
    cluster (``address``, ``workers``); results are identical to the local engine's.
    ``inputs``: ``{name: array}`` for a model's other inputs (a sample rate, ``im_info``), the same
    for every image (one sample is repeated to each batch); the images feed the remaining input.
    """
    m = load(model, providers=providers, threads=threads)
    layers = m.select(layer_names, op_types) if (layer_names or op_types) else list(m.layers)
    layers, notes = split_unknown_rank(layers)
    if not layers:
        why = f" ({notes[0]})" if notes else ""
        raise ModelError(f"{m.name} has no capturable conv/pool layers to check{why}; pass layer_names= or op_types=")
    thr = eps if threshold is None else threshold
    preprocess_kw = scan_preprocess(m, images, preprocess_kw)
    if engine == "local":
        stats = scan(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                     show_progress=show_progress, count_above=threshold is not None, inputs=inputs, **preprocess_kw)
    elif engine == "ray":
        if inputs:
            raise InputError("fixed values for other inputs (inputs= / --input) work with the local engine only")
        try:
            from .ray_engine import scan_ray
        except ImportError as e:
            from .errors import DependencyError

            raise DependencyError(f"the Ray engine is unavailable ({e}); install it with: pip install 'onnxact[ray]'") from None

        stats = scan_ray(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                         count_above=threshold is not None, address=address, workers=workers, show_progress=show_progress, **preprocess_kw)
    else:
        raise InputError(f"unknown engine '{engine}'; use 'local' or 'ray'")
    report = DeadFilterReport(stats, eps=eps, tau=tau, model_name=m.name)
    report.notes = notes
    if any(len(i.shape) == 4 for i in m.inputs) and _reads_images(images):
        from .normalization import choose_normalization

        chosen = {k: preprocess_kw[k] for k in ("normalize", "mean", "std") if preprocess_kw.get(k) is not None}
        report.preprocessing = choose_normalization(m, **chosen).to_json()
        report.input_size = _input_size_record(m, preprocess_kw)
    return report


def _input_size_record(model: Model, kw: Mapping[str, Any]) -> dict[str, Any] | None:
    from .sizing import default_resize, fixed_hw, image_input

    inp = image_input(model)
    if inp is None or not kw.get("size"):
        return None
    fixed = fixed_hw(inp)
    return {"size": list(kw["size"]), "resize": kw.get("resize") or default_resize(model),
            "dynamic": not (fixed[0] and fixed[1])}
