"""In-graph per-image, per-channel maximum AND where it is: the derived model of an exemplar scan.

Why inside the graph (as :mod:`onnxact.stats_graph` does for dead filters): a scan for the
images that excite each filter most needs, per image and channel, only the maximum and its
position. Returning whole maps would cost memory and leave onnxruntime's memory planner behind;
returning ``[N, C]`` values and positions keeps the outputs a few kilobytes per batch.

Per layer (``ArgmaxOutputs``), from the map read channels-first as ``[N, C, H, W]``, two paths:

**Blocked** (the default, every 4-d channels-first map with static H and W): only pooling ops,
which onnxruntime's NCHWc transformer keeps on its blocked layout, so no full map is reordered
back to NCHW (ReduceMax, ReduceMean, ArgMax and Gather are not NCHWc ops: feeding them cost one
reorder of every captured map, half the exemplar graph's time on the demo):

- ``rowmax`` each row's max, ``MaxPool`` kernel (1, W): ``[N, C, H, 1]``;
- ``value``  the channel maximum, ``GlobalMaxPool`` of ``rowmax`` (not of the map: one pass less);
- ``colmax`` each column's max, ``MaxPool`` kernel (H, 1): ``[N, C, 1, W]``;
- ``mean``   the channel means, ``GlobalAveragePool``: ``[N, C, 1, 1]``.

The host (``exemplar_scan.positions``) finds the first maximum in reading order from the row and
column maxima, exactly, unless several rows AND several columns hold the maximum; those entries
(only the ones that enter the top K) are given by the exact path, run on just their images.

**Exact** (``blocked=False``, and maps of rank 2 / 3, channels-last maps without a channels-first
twin, dynamic H or W; ``[N, C]`` and ``[N, C, W]`` maps are read as ``[N, C, 1, 1]`` and
``[N, C, 1, W]``):

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .activations import LayerInfo
from .errors import ModelError
from .stats_graph import _native_side, _opset, _prune, layer_rank, outputless_copy

__all__ = ["ArgmaxOutputs", "add_channel_argmax", "split_spatial", "EXEMPLAR_PREFIX"]

EXEMPLAR_PREFIX = "onnxact_exemplars"


@dataclass(frozen=True)
class ArgmaxOutputs:
    """Output names of one layer's reductions in the derived model."""

    layer: LayerInfo
    value: str  # [N, C, 1] float: each image's channel maximum ([N, C, 1, 1] on the blocked path)
    row: str  # [N, C, 1] int64: the row of that maximum (0 for maps without rows)
    col: str  # [N, C, 1] int64: its column
    mean: str  # [N, C] float: each image's channel means ([N, C, 1, 1] on the blocked path)
    rowmax: str = ""  # blocked path only: [N, C, H, 1] each row's max ("" on the exact path)
    colmax: str = ""  # blocked path only: [N, C, 1, W] each column's max

    @property
    def blocked(self) -> bool:
        """True when the position is left to the host (row and column maxima, see the module doc)."""
        return bool(self.rowmax)


def _blocked_reductions(tail: list[onnx.NodeProto], x: str, tag: str, spatial: tuple[int, int],
                        g: onnx.GraphProto, elem: int) -> tuple[str, str, str, str]:
    """(value, mean, rowmax, colmax) of a channels-first 4-d map by pooling ops only (the channel
    maximum is the max of the row maxima, a GlobalMaxPool of the small rowmax: one more over the
    map would be one more pass; numpy's max over the short rows was ~1 ms per demo batch).

    Why pools: onnxruntime's NCHWc transformer keeps GlobalMaxPool, GlobalAveragePool and MaxPool
    on its blocked layout, so only their small outputs are reordered back to NCHW; ReduceMax,
    ReduceMean, ArgMax and Gather are not NCHWc ops, and feeding them reordered every captured
    map (one pass over its bytes: half the time of the exemplar graph on the demo). The host
    finds the position from the row and column maxima (``exemplar_scan.positions``)."""
    h, w = spatial
    value, mean, rowmax, colmax = (f"{tag}/{n}" for n in ("value", "mean", "rowmax", "colmax"))
    tail.append(helper.make_node("GlobalAveragePool", [x], [mean], name=f"{mean}/GlobalAveragePool"))
    tail.append(helper.make_node("MaxPool", [x], [rowmax], kernel_shape=[1, w], name=f"{rowmax}/MaxPool"))
    tail.append(helper.make_node("MaxPool", [x], [colmax], kernel_shape=[h, 1], name=f"{colmax}/MaxPool"))
    tail.append(helper.make_node("GlobalMaxPool", [rowmax], [value], name=f"{value}/GlobalMaxPool"))
    for n in (value, mean, rowmax, colmax):
        g.output.append(helper.make_tensor_value_info(n, elem, None))
    return value, mean, rowmax, colmax


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


def _masked_row(x: str, row: str, tag: str, height: object, dst: str, ints: Callable[[str, list[int]], str],
                const: Callable[[str, np.ndarray], str], dtype: type) -> list[onnx.NodeProto]:
    """Nodes giving ``dst`` [N, C, W], the row ``row`` [N, C, 1] of the map ``x`` [N, C, H, W], with
    opset 9/10 ops only (no GatherElements or GatherND there): ``OneHot`` of the row index along H,
    ``Where`` it keeps ``x`` (-inf elsewhere), ``ReduceMax`` over H. Exact: the row's own values,
    NaN and -inf included, come out unchanged."""
    depth, hot, mask, kept = (f"{tag}/{n}" for n in ("depth", "onehot", "mask", "kept"))
    nodes = []
    if isinstance(height, int) and height > 0:
        depth = ints(f"depth{height}", [height])
    else:  # H read at run time (Gather, not Slice: Slice changed signature at opset 10)
        dims = f"{tag}/dims"
        nodes += [helper.make_node("Shape", [x], [dims], name=f"{dims}/Shape"),
                  helper.make_node("Gather", [dims, ints("two", [2])], [depth], axis=0, name=f"{depth}/Gather")]
    off_on = const(f"{EXEMPLAR_PREFIX}/off_on", np.asarray([0, 1], np.float32))
    low = const(f"{EXEMPLAR_PREFIX}/minus_inf_{np.dtype(dtype).name}", np.asarray(-np.inf, dtype))  # x's type
    nodes += [helper.make_node("OneHot", [row, depth, off_on], [hot], axis=2, name=f"{hot}/OneHot"),  # [N, C, H, 1]
              helper.make_node("Cast", [hot], [mask], to=TensorProto.BOOL, name=f"{mask}/Cast"),
              helper.make_node("Where", [mask, x, low], [kept], name=f"{kept}/Where"),
              helper.make_node("ReduceMax", [kept], [dst], axes=[2], keepdims=0, name=f"{dst}/ReduceMax")]
    return nodes


def add_channel_argmax(
    model: onnx.ModelProto,
    layers: Sequence[LayerInfo],
    elem_types: Mapping[str, int] | None = None,
    blocked: bool = True,
) -> tuple[onnx.ModelProto, list[ArgmaxOutputs]]:
    """(derived model, per-layer output names) whose only outputs are per-image channel maxima,
    their positions (or, ``blocked``, the row and column maxima they are found from) and map
    means. The model's own outputs are dropped and the nodes that only fed them are pruned.
    Layers must have rank 2 to 4 (see :func:`split_spatial`). ``blocked=False`` gives every
    layer the exact in-graph position (the fallback of ``exemplar_scan`` for tied maxima).
    """
    if not layers:
        raise ModelError("no layers to find exemplars for")
    opset = _opset(model)
    new, g, producers = outputless_copy(model)
    elem_types = elem_types or {}
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
            outs.append(replace(d, layer=layer))
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
        if (blocked and tgt.rank == 4 and tgt.ca == 1 and spatial and len(spatial) == 2
                and all(isinstance(d, int) and d > 0 for d in spatial)):
            r = _blocked_reductions(tail, x, tag, spatial, g, acc)  # type: ignore[arg-type]
            o = ArgmaxOutputs(layer, r[0], "", "", r[1], r[2], r[3])
            done[tgt.tensor] = o
            outs.append(o)
            continue
        width = spatial[-1] if spatial else None
        rows, row, val, row4, idx, line, line3, col, mean = (
            f"{tag}/{n}" for n in ("rowmax", "row", "value", "row4", "index", "line", "line3", "col", "mean"))
        # Where the maximum is, in two cheap steps instead of one ArgMax over the flattened map
        # (onnxruntime's ArgMax is a scalar loop, ~20x slower than its vectorised ReduceMax here):
        # each row's max, the first row holding the maximum, then the first column in that row.
        # Ties resolve as a row-major ArgMax would: the first position in reading order.
        tail.append(reduce("ReduceMax", x, rows, [3]))  # [N, C, H]
        tail.append(helper.make_node("ArgMax", [rows], [row], axis=2, keepdims=1, name=f"{row}/ArgMax"))
        if opset >= 11:
            tail.append(helper.make_node("GatherElements", [rows, row], [val], axis=2, name=f"{val}/Gather"))
        else:  # no GatherElements before opset 11 (tf2onnx's opset 9 models): the max of the row maxima
            tail.append(helper.make_node("ReduceMax", [rows], [val], axes=[2], keepdims=1, name=f"{val}/ReduceMax"))
        if opset >= 12:  # the row itself, [N, C, W]: one slice copy per channel
            tail.append(helper.make_node("GatherND", [x, row], [line3], batch_dims=2, name=f"{line3}/GatherND"))
        elif opset < 11:  # the row picked by a one-hot mask over H ([N, C, H, 1]), the other rows -inf
            tail += _masked_row(x, row, tag, spatial[0] if spatial else None, line3, ints, const,
                                np.float64 if acc == TensorProto.DOUBLE else np.float32)
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
