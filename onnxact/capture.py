"""``get_activations``: the one verb that ties load -> select -> run -> the activation dict.

Why a separate module: it is the public boundary where a path, bytes or proto becomes a
``Model``, an image path becomes feeds, and framework-facing options (output key format,
source layout) are applied once, so later stages only ever see one plain mapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .activations import Activations, LayerInfo, Outputs
from .errors import InputError
from .model import Model, load
from .run import _is_image_ref, prepare_feeds, run_model

__all__ = ["get_activations", "model_outputs", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("simple", "full", "numbered")
_TO_LAST = {"NCHW": ((0, 2, 3, 1), "NHWC"), "NCW": ((0, 2, 1), "NWC"), "NCDHW": ((0, 2, 3, 4, 1), "NDHWC")}


def get_activations(
    model: Any,
    x: Any,
    layer_names: Sequence[str | int] | str | None = None,
    *,
    op_types: Sequence[str] | str | None = None,
    all_tensors: bool = False,
    output_format: str = "simple",
    layout: str | None = None,
    batch_size: int | None = None,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    max_memory: int | str | None = None,
    **preprocess_kw: Any,
) -> Activations:
    """Capture the activations of ``model`` for input ``x``, in graph order.

    ``model``: a ``Model`` (sessions are reused across calls), a path, bytes or ModelProto.
    ``x``: an array (batch > 1 allowed), ``{input name: array}`` for multi-input models, an image
    path / list of paths / PIL image (preprocessed with ``preprocess_image``; extra keyword
    arguments such as ``normalize=``, ``size=(h, w)`` and ``resize="letterbox"`` go there, and
    ``.geometry`` of the result records how each image was fitted).
    By default every conv and pool output is captured, after the activation that follows it;
    ``layer_names`` (names, ONNX tensor names or indices), ``op_types`` or ``all_tensors=True``
    change that. Keys are framework layer names (``"simple"``), ONNX tensor names (``"full"``)
    or ``"0", "1", ...`` (``"numbered"``). ``layout="source"`` returns channels-last arrays when
    the model came from a channels-last framework (Keras), so they compare 1:1 with it.
    ``providers`` / ``threads`` go to onnxruntime when ``model`` is not a loaded ``Model`` already
    (see ``load``). ``max_memory`` (bytes or "2GB") bounds the memory the captured arrays take: over it, they are
    streamed to memory-mapped files.
    """
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, not '{output_format}'")
    if layout not in (None, "source", "onnx"):
        raise InputError(f"layout must be None, 'onnx' or 'source', not '{layout}'")
    m: Model = load(model, providers=providers, threads=threads)  # a Model comes back as is, sessions and all
    if isinstance(layer_names, (str, int)):
        layer_names = [layer_names]
    if isinstance(op_types, str):
        op_types = [op_types]
    layers = m.select(layer_names, op_types, all_tensors)
    feeds = prepare_feeds(m, x, **preprocess_kw)
    if max_memory is not None:
        from .membound import capture_bounded

        values, own = capture_bounded(m, feeds, layers, max_memory, batch_size=batch_size)
    else:
        values, own = run_model(m, feeds, [layer.tensor for layer in layers], batch_size=batch_size)
    to_last = layout == "source" and (m.source_layout or "").upper() in ("NHWC", "NWC", "NDHWC")
    data: dict[str, np.ndarray] = {}
    infos: dict[str, LayerInfo] = {}
    for i, layer in enumerate(layers):
        key = layer.name if output_format == "simple" else layer.tensor if output_format == "full" else str(i)
        arr = values[layer.tensor]
        if to_last and layer.layout in _TO_LAST:
            perm, new_layout = _TO_LAST[layer.layout]
            arr = np.ascontiguousarray(arr.transpose(perm)) if type(arr) is np.ndarray else arr.transpose(perm)
            info = dataclasses.replace(layer, layout=new_layout, shape=None)
        else:
            info = m.shaped(layer, arr.shape)
        data[key] = arr
        infos[key] = info
    acts = Activations(data, infos, outputs=model_outputs(m, own), model_sha256=m.sha256, class_names=m.class_names,
                       inputs=feeds, geometry=next(iter(getattr(feeds, "geometry", {}).values()), None))
    if _is_image_ref(x):  # pixels were scaled here: say how, and whether that was a guess (normalization.py)
        from .normalization import choose_normalization

        chosen = {k: preprocess_kw[k] for k in ("normalize", "mean", "std") if preprocess_kw.get(k) is not None}
        acts.preprocessing = choose_normalization(m, **chosen).to_json()
    return acts


def model_outputs(model: Model, own: Mapping[str, np.ndarray]) -> Outputs:
    """The model's own outputs (``{ONNX name: array}``) keyed by framework names (``Model.output_keys``)."""
    keys = getattr(model, "output_keys", {})
    return Outputs({keys.get(k, k): v for k, v in own.items()}, {keys.get(k, k): k for k in own})
