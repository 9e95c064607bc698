"""In-graph per-channel statistics: a derived model whose only outputs are size-C reductions.

Why inside the graph: promoting whole feature maps to outputs defeats onnxruntime's memory
planner and its Conv+BN+ReLU fusions (DESIGN.md 4). Appending ``ReduceMin`` / ``ReduceMax`` /
``ReduceSum`` / ``ReduceSumSquare`` nodes to the tensors of interest and returning only their
size-C results keeps the fusions (the tensors stay ordinary intermediates with extra readers),
returns a few kilobytes per batch, and lets the scan run at inference speed.

Per layer and batch the derived model returns, reduced over the batch and spatial axes (which
axes depends on the layer's layout, NCHW or NHWC):

- ``max``, ``min``     exact extremes; min only for layers that can be negative (max |a| needs it)
- ``sum``              float32 per batch (sum of per-image means); the host accumulates in float64
- ``sumsq``            the same for squares (optional: it costs a full-size tensor and a pass)
- ``above``            count of positions > threshold (optional; float32, exact up to 2**24 per batch)
- ``size``             int64 number of elements (positions per channel = size / C); only when the
                       layer's spatial dims are not static (``StatOutputs.per_image`` otherwise)

Measured on a 2-CPU machine: every extra full pass over the maps costs 10-20% of inference time
on memory-bound CNNs, so the default is the minimum the report needs (max, sum, and min where
values can be negative); ``constant`` is then max == mean, which holds exactly when every value
equals the max.

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
    per_image: int = 0  # positions per channel and image when the shape is static (then no ``size``)

    def names(self) -> list[str]:
        """The output names present (``min`` and ``above`` may be absent: empty strings)."""
        return [n for n in (self.min, self.max, self.sum, self.sumsq, self.above, self.size) if n]


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


def _prune(g: onnx.GraphProto) -> None:
    """Drop nodes no output depends on (onnxruntime keeps them): the classifier head, mostly."""
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output) or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            keep.append(node)
            needed.update(i for i in node.input if i)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(reversed(keep))


def add_channel_stats(
    model: onnx.ModelProto,
    layers: Sequence[LayerInfo],
    threshold: float = 0.0,
    elem_types: Mapping[str, int] | None = None,
    count_above: bool = False,
    nonnegative: Sequence[bool] | None = None,
    sum_squares: bool = False,
) -> tuple[onnx.ModelProto, list[StatOutputs]]:
    """Return (derived model, per-layer output names) whose ONLY outputs are per-channel stats.

    ``layers`` are the tensors to reduce (``Model.layers`` or a selection). Channels-first layers
    (the conv/pool outputs) are reduced with ``GlobalMaxPool`` / ``GlobalAveragePool`` first:
    onnxruntime runs those on its blocked NCHWc conv layout without reordering the full map,
    which is what keeps the scan near inference speed; the [N, C] results are then summed over
    the batch. Other layouts use ``ReduceMax`` / ``ReduceSum`` over their non-channel axes.

    Outputs per layer (``StatOutputs``): ``max``; ``min`` (empty name when the layer is known to be
    ``nonnegative``, e.g. after a ReLU: then min is not computed, it costs a pass);
    ``sum`` and ``sumsq`` (only with ``sum_squares``) as sums over the batch of per-image spatial
    MEANS (multiply by the positions per image); ``above`` (only with ``count_above``: a count of positions >
    ``threshold``, an extra three passes); ``size`` (int64 element count).
    The original outputs are dropped and nodes that only fed them are pruned.
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
    nonneg = list(nonnegative) if nonnegative is not None else [False] * len(layers)
    for i, layer in enumerate(layers):
        ca, axes = reduce_axes(layer)
        rank = len(axes) + 1
        base = f"{_PREFIX}/{i}"
        et = elem_types.get(layer.tensor, TensorProto.FLOAT) or TensorProto.FLOAT
        x = layer.tensor
        acc = TensorProto.DOUBLE if et == TensorProto.DOUBLE else TensorProto.FLOAT
        if et not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            nodes.append(helper.make_node("Cast", [x], [f"{base}/f32"], to=TensorProto.FLOAT, name=f"{base}/Cast"))
            x = f"{base}/f32"
        pooled = ca == 1 and rank >= 3
        # Static spatial dims give the positions per image on the host: a Size/Shape node would
        # make onnxruntime reorder the whole map out of its blocked NCHWc layout.
        dims = [d for a, d in enumerate(layer.shape or ()) if a not in (0, ca)]
        static = int(np.prod(dims)) if layer.shape and all(isinstance(d, int) and d > 0 for d in dims) else 0
        # per-image spatial reductions -> [N, C, 1...] (pooled) then over these axes -> [C]
        small_axes = [0] + list(range(2, rank)) if pooled else axes
        axes_name = f"{base}/axes"
        g.initializer.append(numpy_helper.from_array(np.asarray(small_axes, np.int64), axes_name))
        names = StatOutputs(layer, "" if nonneg[i] else f"{base}/min", f"{base}/max", f"{base}/sum",
                            f"{base}/sumsq" if sum_squares else "", f"{base}/above" if count_above else "",
                            "" if static else f"{base}/size", static)

        def reduce(op: str, src: str, dst: str, axes: list[int] = small_axes, axes_name: str = axes_name,
                   ) -> onnx.NodeProto:
            # ReduceSum takes axes as an input from opset 13, the other reductions from opset 18.
            as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
            if as_input:
                return helper.make_node(op, [src, axes_name], [dst], keepdims=0, name=f"{dst}/{op}")
            return helper.make_node(op, [src], [dst], axes=axes, keepdims=0, name=f"{dst}/{op}")

        def spatial(kind: str, src: str, dst: str, pooled: bool = pooled, base: str = base,
                    nodes: list[onnx.NodeProto] = nodes) -> None:
            """kind max|mean over the spatial axes (pooled) then max|sum over the rest."""
            if pooled:
                pool = "GlobalMaxPool" if kind == "max" else "GlobalAveragePool"
                nodes.append(helper.make_node(pool, [src], [dst + "/pool"], name=f"{dst}/{pool}"))
                src = dst + "/pool"
                nodes.append(reduce("ReduceMax" if kind == "max" else "ReduceSum", src, dst))
            else:
                nodes.append(reduce("ReduceMax" if kind == "max" else "ReduceMean", src, dst + "/r"))
                if kind == "max":
                    nodes[-1].output[0] = dst
                else:  # mean over all non-channel axes x batch = sum of per-image means
                    nodes.append(helper.make_node("Mul", [dst + "/r", f"{base}/n"], [dst], name=f"{dst}/Mul"))

        if not pooled:
            nodes.append(helper.make_node("Shape", [x], [f"{base}/shape"], name=f"{base}/Shape"))
            nodes.append(helper.make_node("Gather", [f"{base}/shape", f"{base}/zero"], [f"{base}/ni"], axis=0,
                                          name=f"{base}/Gather"))
            nodes.append(helper.make_node("Cast", [f"{base}/ni"], [f"{base}/n"], to=acc, name=f"{base}/CastN"))
            g.initializer.append(numpy_helper.from_array(np.asarray(0, np.int64), f"{base}/zero"))
        spatial("max", x, names.max)
        if names.min:
            nodes.append(helper.make_node("Neg", [x], [f"{base}/neg"], name=f"{base}/Neg"))
            spatial("max", f"{base}/neg", f"{base}/negmax")
            nodes.append(helper.make_node("Neg", [f"{base}/negmax"], [names.min], name=f"{base}/NegMin"))
        spatial("mean", x, names.sum)
        if sum_squares:  # an extra full-size tensor and pass: only when asked for
            nodes.append(helper.make_node("Mul", [x, x], [f"{base}/sq"], name=f"{base}/Square"))
            spatial("mean", f"{base}/sq", names.sumsq)
        if count_above:
            thr = f"{base}/threshold"
            g.initializer.append(numpy_helper.from_array(
                np.asarray(threshold, np.float64 if acc == TensorProto.DOUBLE else np.float32), thr))
            nodes += [
                helper.make_node("Greater", [x, thr], [f"{base}/gt"], name=f"{base}/Greater"),
                helper.make_node("Cast", [f"{base}/gt"], [f"{base}/gtf"], to=acc, name=f"{base}/CastGt"),
                reduce("ReduceSum", f"{base}/gtf", names.above, axes=axes),
            ]
            if opset >= 13:  # ReduceSum over all non-channel axes needs its own axes input
                g.initializer.append(numpy_helper.from_array(np.asarray(axes, np.int64), f"{base}/allaxes"))
                nodes[-1].input[1] = f"{base}/allaxes"
        if names.size:
            nodes.append(helper.make_node("Size", [x], [names.size], name=f"{base}/Size"))
        for n in (names.min, names.max, names.sum, names.sumsq, names.above):
            if n:
                g.output.append(helper.make_tensor_value_info(n, acc, None))
        if names.size:
            g.output.append(helper.make_tensor_value_info(names.size, TensorProto.INT64, []))
        outs.append(names)
    g.node.extend(nodes)
    _prune(g)
    return new, outs
