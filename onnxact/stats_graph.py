"""In-graph per-channel statistics: a derived model whose only outputs are size-C reductions.

Why inside the graph: promoting whole feature maps to outputs defeats onnxruntime's memory
planner and its Conv+BN+ReLU fusions (DESIGN.md 4). Appending ``ReduceMin`` / ``ReduceMax`` /
``ReduceSum`` / ``ReduceSumSquare`` nodes to the tensors of interest and returning only their
size-C results keeps the fusions (the tensors stay ordinary intermediates with extra readers),
returns a few kilobytes per batch, and lets the scan run at inference speed.

Per layer and batch the derived model returns, reduced over the batch and spatial axes (which
axes depends on the layer's layout, NCHW or NHWC):

- ``min``, ``max``     exact extremes (max |a| = max(max, -min); "constant" = max == min)
- ``sum``, ``sumsq``   float32 partial sums for one batch; the host accumulates them in float64
- ``above``            count of positions > threshold (float32, exact up to 2**24 per batch)
- ``size``             int64 number of elements (positions per channel = size / C)

Float16/bfloat16 tensors are cast to float32 first; float64 tensors are reduced in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .activations import LayerInfo
from .errors import ModelError
from .layout import channel_axis

__all__ = ["StatOutputs", "add_channel_stats", "STAT_KINDS", "reduce_axes"]

STAT_KINDS = ("min", "max", "sum", "sumsq", "above", "size")
_PREFIX = "onnxact_stats"
_LAYOUT_RANK = {"NCHW": 4, "NHWC": 4, "NCW": 3, "NWC": 3, "NCDHW": 5, "NDHWC": 5, "NC": 2}


@dataclass(frozen=True)
class StatOutputs:
    """The output names of one layer's statistics in the derived model."""

    layer: LayerInfo
    min: str
    max: str
    sum: str
    sumsq: str
    above: str
    size: str

    def names(self) -> list[str]:
        return [self.min, self.max, self.sum, self.sumsq, self.above, self.size]


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 13


def reduce_axes(layer: LayerInfo, rank: int | None = None) -> tuple[int, list[int]]:
    """(channel axis, axes to reduce) for a layer; from its layout, else channels at axis 1."""
    r = rank or (len(layer.shape) if layer.shape else None) or _LAYOUT_RANK.get(layer.layout)
    if r is None or r < 2:
        raise ModelError(
            f"layer '{layer.name}' has unknown rank (shape inference found none); its channels can't be told apart"
        )
    ca = channel_axis(layer.layout)
    if ca is None or ca >= r:
        ca = 1
    return ca, [a for a in range(r) if a != ca]


def add_channel_stats(
    model: onnx.ModelProto,
    layers: Sequence[LayerInfo],
    threshold: float = 0.0,
    elem_types: Mapping[str, int] | None = None,
) -> tuple[onnx.ModelProto, list[StatOutputs]]:
    """Return (derived model, per-layer output names) whose ONLY outputs are per-channel stats.

    ``layers`` are the tensors to reduce (``Model.layers`` or a selection); ``threshold`` sets the
    ``above`` count (positions > threshold). ``elem_types`` maps tensor name -> ONNX element
    type where known (float32 is assumed otherwise). The original outputs are dropped, so
    onnxruntime prunes whatever only fed them (the classifier head).
    """
    if not layers:
        raise ModelError("no layers to compute statistics for")
    opset = _opset(model)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    del g.output[:]
    elem_types = elem_types or {}
    outs: list[StatOutputs] = []
    nodes: list[onnx.NodeProto] = []
    for i, layer in enumerate(layers):
        _, axes = reduce_axes(layer)
        base = f"{_PREFIX}/{i}"
        et = elem_types.get(layer.tensor, TensorProto.FLOAT) or TensorProto.FLOAT
        x = layer.tensor
        acc = TensorProto.DOUBLE if et == TensorProto.DOUBLE else TensorProto.FLOAT
        if et not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            nodes.append(helper.make_node("Cast", [x], [f"{base}/f32"], to=TensorProto.FLOAT, name=f"{base}/Cast"))
            x = f"{base}/f32"
        axes_name = f"{base}/axes"
        g.initializer.append(numpy_helper.from_array(np.asarray(axes, np.int64), axes_name))
        names = StatOutputs(layer, f"{base}/min", f"{base}/max", f"{base}/sum", f"{base}/sumsq", f"{base}/above",
                            f"{base}/size")

        def reduce(op: str, src: str, dst: str, axes: list[int] = axes, axes_name: str = axes_name) -> onnx.NodeProto:
            # ReduceSum takes axes as an input from opset 13, the other reductions from opset 18.
            as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
            if as_input:
                return helper.make_node(op, [src, axes_name], [dst], keepdims=0, name=f"{dst}/{op}")
            return helper.make_node(op, [src], [dst], axes=axes, keepdims=0, name=f"{dst}/{op}")

        thr = f"{base}/threshold"
        g.initializer.append(numpy_helper.from_array(
            np.asarray(threshold, np.float64 if acc == TensorProto.DOUBLE else np.float32), thr))
        nodes += [
            reduce("ReduceMin", x, names.min),
            reduce("ReduceMax", x, names.max),
            reduce("ReduceSum", x, names.sum),
            reduce("ReduceSumSquare", x, names.sumsq),
            helper.make_node("Greater", [x, thr], [f"{base}/gt"], name=f"{base}/Greater"),
            helper.make_node("Cast", [f"{base}/gt"], [f"{base}/gtf"], to=acc, name=f"{base}/CastGt"),
            reduce("ReduceSum", f"{base}/gtf", names.above),
            helper.make_node("Size", [x], [names.size], name=f"{base}/Size"),
        ]
        for n in (names.min, names.max, names.sum, names.sumsq, names.above):
            g.output.append(helper.make_tensor_value_info(n, acc, None))
        g.output.append(helper.make_tensor_value_info(names.size, TensorProto.INT64, []))
        outs.append(names)
    g.node.extend(nodes)
    return new, outs
