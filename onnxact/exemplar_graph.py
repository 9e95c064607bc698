"""In-graph per-image, per-channel maximum AND where it is: the derived model of an exemplar scan.

Why inside the graph (as :mod:`onnxact.stats_graph` does for dead filters): a scan for the
images that excite each filter most needs, per image and channel, only the maximum and its
position. Returning whole maps would cost memory and leave onnxruntime's memory planner behind;
returning ``[N, C]`` values and positions keeps the outputs a few kilobytes per batch.

Per layer (``ArgmaxOutputs``), from the map read channels-first as ``[N, C, H, W]`` (``[N, C]``
and ``[N, C, W]`` maps are read as ``[N, C, 1, 1]`` and ``[N, C, 1, W]``):

- ``value``  each image's channel maximum, ``[N, C, 1]``;
- ``row``, ``col``  its position, ``[N, C, 1]`` int64 each: the first maximum in reading order,
             as a row-major ``ArgMax`` over the flattened map would give;
- ``mean``   each image's channel means, ``[N, C]``, for the layer mean that the Model Explorer
             overlay shows.

Why not one ``ArgMax`` over the flattened map: onnxruntime 1.32's ArgMax is a scalar loop, about
20x slower than its vectorised ``ReduceMax`` (a [8, 64, 112, 112] map: 45 ms against 2 ms on the
dev machine). So: each row's max (``ReduceMax`` over W, the one pass over the map), the first row
holding the maximum (``ArgMax`` over H values), that row gathered (``GatherND`` with two batch
dims, W values), and the first column in it (``ArgMax`` over W values).

A Keras export's channels-last tensor made by a ``Transpose`` of a channels-first one is read on
its channels-first side (the same values; :mod:`onnxact.stats_graph` does the same). Any other
channels-last map is transposed first. Maps of more than two spatial dims are not supported
(``split_spatial`` leaves them out with a note).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .activations import LayerInfo
from .errors import ModelError
from .stats_graph import _native_side, _opset, _prune, layer_rank

__all__ = ["ArgmaxOutputs", "add_channel_argmax", "split_spatial", "EXEMPLAR_PREFIX"]

EXEMPLAR_PREFIX = "onnxact_exemplars"


@dataclass(frozen=True)
class ArgmaxOutputs:
    """Output names of one layer's reductions in the derived model."""

    layer: LayerInfo
    value: str  # [N, C, 1] float: each image's channel maximum
    row: str  # [N, C, 1] int64: the row of that maximum (0 for maps without rows)
    col: str  # [N, C, 1] int64: its column
    mean: str  # [N, C] float: each image's channel means


def split_spatial(layers: Sequence[LayerInfo]) -> tuple[list[LayerInfo], list[str]]:
    """(layers with at most two spatial dims, one note per layer left out).

    Call it after ``stats_graph.split_unknown_rank`` (which leaves out unknown ranks)."""
    kept: list[LayerInfo] = []
    notes: list[str] = []
    for layer in layers:
        r = layer_rank(layer)
        if r is not None and r > 4:
            notes.append(f"layer '{layer.name}' skipped: {r - 2} spatial dims; exemplars need maps of at most two")
        else:
            kept.append(layer)
    return kept, notes


def add_channel_argmax(
    model: onnx.ModelProto,
    layers: Sequence[LayerInfo],
    elem_types: Mapping[str, int] | None = None,
) -> tuple[onnx.ModelProto, list[ArgmaxOutputs]]:
    """(derived model, per-layer output names) whose only outputs are per-image channel maxima,
    their positions and map means. The model's own outputs are dropped and the nodes that only
    fed them are pruned. Layers must have rank 2 to 4 (see :func:`split_spatial`).
    """
    if not layers:
        raise ModelError("no layers to find exemplars for")
    opset = _opset(model)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    del g.output[:]
    elem_types = elem_types or {}
    producers = {o: n for n in g.node for o in n.output if o}
    outs: list[ArgmaxOutputs] = []
    done: dict[str, ArgmaxOutputs] = {}  # tensor -> outputs (two layer names for one tensor share them)
    attach: dict[str, list[onnx.NodeProto]] = {}  # tensor -> its reduction nodes
    consts: set[str] = set()

    def const(name: str, value: np.ndarray) -> str:
        if name not in consts:
            consts.add(name)
            g.initializer.append(numpy_helper.from_array(value, name))
        return name

    def ints(name: str, values: list[int]) -> str:
        return const(f"{EXEMPLAR_PREFIX}/{name}", np.asarray(values, np.int64))

    def reduce(op: str, x: str, dst: str, axes: list[int]) -> onnx.NodeProto:
        # ReduceMax/ReduceMean take axes as an input from opset 18, an attribute before
        if opset >= 18:
            return helper.make_node(op, [x, ints(f"axes{axes}", axes)], [dst], keepdims=0, name=f"{dst}/{op}")
        return helper.make_node(op, [x], [dst], axes=axes, keepdims=0, name=f"{dst}/{op}")

    def unsqueeze(x: str, dst: str, axes: list[int]) -> onnx.NodeProto:
        if opset >= 13:
            return helper.make_node("Unsqueeze", [x, ints(f"axes{axes}", axes)], [dst], name=f"{dst}/Unsqueeze")
        return helper.make_node("Unsqueeze", [x], [dst], axes=axes, name=f"{dst}/Unsqueeze")

    def squeeze(x: str, dst: str, axis: int) -> onnx.NodeProto:
        if opset >= 13:
            return helper.make_node("Squeeze", [x, ints(f"axes{[axis]}", [axis])], [dst], name=f"{dst}/Squeeze")
        return helper.make_node("Squeeze", [x], [dst], axes=[axis], name=f"{dst}/Squeeze")

    for k, layer in enumerate(layers):
        tgt = _native_side(producers, layer)
        if tgt.tensor in done:
            d = done[tgt.tensor]
            outs.append(ArgmaxOutputs(layer, d.value, d.row, d.col, d.mean))
            continue
        tag = f"{EXEMPLAR_PREFIX}/{k}"
        x = tgt.tensor
        tail = attach.setdefault(tgt.tensor, [])
        et = elem_types.get(layer.tensor, TensorProto.FLOAT) or TensorProto.FLOAT
        acc = TensorProto.DOUBLE if et == TensorProto.DOUBLE else TensorProto.FLOAT
        if et not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            tail.append(helper.make_node("Cast", [x], [f"{tag}/f32"], to=TensorProto.FLOAT, name=f"{tag}/Cast"))
            x = f"{tag}/f32"
        shape = tgt.shape if tgt.shape and len(tgt.shape) == tgt.rank else None
        if tgt.ca != 1:  # channels-last without a channels-first twin: move channels to axis 1
            perm = [0, tgt.ca] + [a for a in range(1, tgt.rank) if a != tgt.ca]
            tail.append(helper.make_node("Transpose", [x], [f"{tag}/cf"], perm=perm, name=f"{tag}/Transpose"))
            x = f"{tag}/cf"
            shape = tuple(shape[a] for a in perm) if shape else None
        spatial = tuple(shape[2:]) if shape else None
        if tgt.rank < 4:  # [N, C] and [N, C, W]: read as [N, C, 1, 1] and [N, C, 1, W]
            tail.append(unsqueeze(x, f"{tag}/4d", [2, 3] if tgt.rank == 2 else [2]))
            x = f"{tag}/4d"
            spatial = (1, 1) if tgt.rank == 2 else ((1, *spatial) if spatial else None)
        width = spatial[-1] if spatial else None
        rows, row, val, row4, idx, line, line3, col, mean = (
            f"{tag}/{n}" for n in ("rowmax", "row", "value", "row4", "index", "line", "line3", "col", "mean"))
        # Where the maximum is, in two cheap steps instead of one ArgMax over the flattened map
        # (onnxruntime's ArgMax is a scalar loop, ~20x slower than its vectorised ReduceMax here):
        # each row's max, the first row holding the maximum, then the first column in that row.
        # Ties resolve as a row-major ArgMax would: the first position in reading order.
        tail.append(reduce("ReduceMax", x, rows, [3]))  # [N, C, H]
        tail.append(helper.make_node("ArgMax", [rows], [row], axis=2, keepdims=1, name=f"{row}/ArgMax"))
        tail.append(helper.make_node("GatherElements", [rows, row], [val], axis=2, name=f"{val}/Gather"))
        if opset >= 12:  # the row itself, [N, C, W]: one slice copy per channel
            tail.append(helper.make_node("GatherND", [x, row], [line3], batch_dims=2, name=f"{line3}/GatherND"))
        else:  # GatherND has no batch_dims before opset 12: the row index spread over W, then GatherElements
            tail.append(unsqueeze(row, row4, [3]))  # [N, C, 1, 1]
            if isinstance(width, int) and width > 0:
                expand_to = ints(f"expand{width}", [1, 1, 1, width])
            else:
                dims = f"{tag}/dims"
                tail.append(helper.make_node("Shape", [x], [dims], name=f"{dims}/Shape"))
                tail.append(helper.make_node("Slice", [dims, ints("three", [3]), ints("four", [4])], [f"{tag}/w"],
                                             name=f"{tag}/SliceW"))
                tail.append(helper.make_node("Concat", [ints("ones3", [1, 1, 1]), f"{tag}/w"], [f"{tag}/expand"],
                                             axis=0, name=f"{tag}/ExpandShape"))
                expand_to = f"{tag}/expand"
            tail.append(helper.make_node("Expand", [row4, expand_to], [idx], name=f"{idx}/Expand"))  # [N, C, 1, W]
            tail.append(helper.make_node("GatherElements", [x, idx], [line], axis=2, name=f"{line}/Gather"))
            tail.append(squeeze(line, line3, 2))  # [N, C, W]
        tail.append(helper.make_node("ArgMax", [line3], [col], axis=2, keepdims=1, name=f"{col}/ArgMax"))
        # [N, C]: over the channels too ([N]) was several times slower in onnxruntime 1.32 (a
        # reduction to N values parallelises over N only); the host averages the channels
        tail.append(reduce("ReduceMean", x, mean, [2, 3]))
        for n, t in ((val, acc), (row, TensorProto.INT64), (col, TensorProto.INT64), (mean, acc)):
            g.output.append(helper.make_tensor_value_info(n, t, None))
        o = ArgmaxOutputs(layer, val, row, col, mean)
        done[tgt.tensor] = o
        outs.append(o)
    # Deepest map first: with the PRIORITY_BASED execution order the scan's session uses, onnxruntime
    # then runs each reduction right after the node that makes its map, while it is in cache
    # (the same node order as stats_graph.add_channel_stats).
    position = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    for t in sorted(attach, key=lambda t: -position.get(t, -1)):
        g.node.extend(attach[t])
    _prune(g)
    return new, outs
