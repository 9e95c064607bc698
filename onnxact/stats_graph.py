"""In-graph per-channel statistics: a derived model whose only outputs are small per-channel reductions.

Why inside the graph: promoting whole feature maps to outputs defeats onnxruntime's memory
planner and its Conv+BN+ReLU fusions (a graph output is never fused and its buffer never reused:
promoting every tensor of an 8-block 224x224 conv net took peak RSS from 132 to 567 MB).
Appending reductions to the tensors of interest and returning only their results keeps the
fusions (the tensors stay ordinary intermediates with extra readers), returns a few kilobytes per
batch, and lets the scan run at close to inference speed.

Every output is PER IMAGE, shape ``[N, C]`` or ``[N, C, 1, ...]``: the reduction over the batch
is left to the host (``StatsRunner``, in float64), which saves a node per statistic. Per layer:

- ``max``, ``min``     per-image extremes; min only for layers that can be negative (max |a| needs it)
- ``sum``              per-image spatial MEANS (the host multiplies by the positions per image)
- ``sumsq``            the same for squares (optional: an extra pass)
- ``above``            per-image count of positions > threshold (optional; float32, exact up to 2**24)
- ``size``             int64 element count of the batch; only when the spatial dims are not static
                       (``StatOutputs.per_image`` holds the positions per image otherwise)

What makes it fast (measured on a 2-CPU machine, where every extra full pass over the maps
costs 10-20% of a memory-bound forward pass; see bench/results_check.md):

- Channels-first maps are reduced with ``GlobalMaxPool`` / ``GlobalAveragePool``: onnxruntime
  runs those on its blocked NCHWc conv layout; ``ReduceMax`` & co. would make it reorder the
  whole map first. Channels-last maps (and ranks below 3) use ``ReduceMax`` / ``ReduceMean``.
- **Max through a max pool**: when a captured map feeds a ``MaxPool`` whose windows cover every
  position (no padding, dilation 1, stride <= kernel, and (size - kernel) divisible by the stride
  on every static spatial axis), the map's per-channel max equals the pool output's, so the
  smaller pool output is reduced instead (following chains of such pools). Where the pool output
  is itself captured, both layers share one reduction. Anything else (padding, odd sizes,
  unknown sizes) reduces the map itself.
- **The native side of a Transpose**: a channels-last tensor made by a ``Transpose`` (Keras
  exports) holds the same values as the transpose's channels-first input, which is reduced instead.
- Min on the blocked layout is -max(-x) with -x as a depthwise 1x1 Conv of weight -1 (exact); a
  ``Neg`` or ``ReduceMin`` would first reorder the whole map out of it.
- A map of one position per image ([N, C, 1, 1], a global pool's) is returned as it is.
- Node order: the reductions are appended deepest map first, which makes onnxruntime (1.32, with
  the PRIORITY_BASED execution order ``StatsRunner`` sets) run each one right after the node that
  makes its map, while the map is still in cache; ``StatsRunner`` also runs batches in chunks
  small enough for the largest map to stay there.
- Default statistics are the minimum the report needs (max, sum, and min where values can be
  negative); ``constant`` is then max == mean, which holds exactly when every value equals the max.

Float16/bfloat16 tensors are cast to float32 first; float64 tensors are reduced in float64.
A map holding NaN may give a different max through a pool than directly (both are unspecified).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .activations import LayerInfo
from .errors import ModelError
from .graph import node_attr
from .layout import channel_axis

__all__ = ["StatOutputs", "add_channel_stats", "STAT_KINDS", "reduce_axes", "max_pool_source", "layer_rank",
           "split_unknown_rank"]

STAT_KINDS = ("min", "max", "sum", "sumsq", "above", "size")
_PREFIX = "onnxact_stats"
_LAYOUT_RANK = {"NCHW": 4, "NHWC": 4, "NCW": 3, "NWC": 3, "NCDHW": 5, "NDHWC": 5, "NC": 2}


@dataclass(frozen=True)
class StatOutputs:
    """The output names of one layer's statistics in the derived model.

    Each output holds one row per image (``[N, C]`` or ``[N, C, 1, ...]``); layers may share an
    output (a conv's max read through the max pool that follows it).
    """

    layer: LayerInfo
    min: str
    max: str
    sum: str
    sumsq: str
    above: str
    size: str
    per_image: int = 0  # positions per channel and image when the shape is static (then no ``size``)
    max_from: str = ""  # the tensor whose max stands for this layer's (a following max pool), if any
    #: (name, packed output, first column, end column) for names that are columns of a packed output
    packed: tuple[tuple[str, str, int, int], ...] = ()

    def names(self) -> list[str]:
        """The output names present (``min``, ``sumsq``, ``above``, ``size`` may be absent: empty strings)."""
        return [n for n in (self.min, self.max, self.sum, self.sumsq, self.above, self.size) if n]


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 13


def layer_rank(layer: LayerInfo) -> int | None:
    """The rank of a layer's tensor from its shape or layout; None when shape inference found none."""
    return (len(layer.shape) if layer.shape else None) or _LAYOUT_RANK.get(layer.layout)


def split_unknown_rank(layers: Sequence[LayerInfo]) -> tuple[list[LayerInfo], list[str]]:
    """(layers whose channels can be told apart, one note per layer skipped for an unknown rank).

    Why skip and not fail: ``--op-types Mul`` on a quantized model also picks the scale products
    (``x_scale * w_scale``), whose rank shape inference cannot always tell; one such tensor must
    not stop a scan of every other layer, but the user is told it was left out.
    """
    kept: list[LayerInfo] = []
    notes: list[str] = []
    for layer in layers:
        r = layer_rank(layer)
        if r is None or r < 2:
            what = "unknown rank (shape inference found none)" if r is None else f"rank {r}, no channels"
            notes.append(f"layer '{layer.name}' skipped: {what}; its channels can't be told apart")
        else:
            kept.append(layer)
    return kept, notes


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


def outputless_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.GraphProto, dict[str, onnx.NodeProto]]:
    """(copy, its graph, tensor -> producing node) of ``model`` with the graph outputs removed.

    Why: the derived scan graphs (channel statistics, exemplar maxima) replace every output with
    their small reductions; the caller appends those and prunes what only fed the old outputs.
    """
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    del g.output[:]
    return new, g, {o: n for n in g.node for o in n.output if o}


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


def _covering_pool_shape(node: onnx.NodeProto, spatial: Sequence[object]) -> tuple[int, ...] | None:
    """The output spatial dims of a MaxPool whose windows cover every input position exactly
    (so its output's max equals its input's), or None when that can't be proven."""
    if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx"):
        return None
    if not spatial or not all(isinstance(d, int) and d > 0 for d in spatial):
        return None
    kernel = list(node_attr(node, "kernel_shape", []))
    n = len(spatial)
    strides = list(node_attr(node, "strides", [1] * n))
    dil = list(node_attr(node, "dilations", [1] * n))
    pads = list(node_attr(node, "pads", [0] * 2 * n))
    auto_pad = node_attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "VALID", "") or len(kernel) != n or len(strides) != n:
        return None
    if any(p != 0 for p in pads) or any(d != 1 for d in dil):
        return None
    out = []
    for size, k, s in zip(spatial, kernel, strides):
        assert isinstance(size, int)
        if not (0 < s <= k <= size) or (size - k) % s:
            return None
        out.append((size - k) // s + 1)
    return tuple(out)


def max_pool_source(model: onnx.ModelProto, tensor: str, shape: Sequence[object] | None) -> tuple[str, tuple]:
    """(tensor, shape) whose per-channel max equals ``tensor``'s: the output of the last of a chain
    of covering MaxPools fed by ``tensor`` (channels-first, shape ``[N, C, spatial...]``), else itself."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.input:
            consumers.setdefault(node.input[0], []).append(node)
    return _follow_pools(consumers, tensor, tuple(shape or ()))


def _follow_pools(consumers: Mapping[str, list[onnx.NodeProto]], tensor: str, shape: tuple) -> tuple[str, tuple]:
    for _ in range(16):
        if len(shape) < 3:
            break
        nxt = None
        for node in consumers.get(tensor, []):
            out = _covering_pool_shape(node, shape[2:])
            if out is not None and node.output and node.output[0]:
                nxt = (node.output[0], (*shape[:2], *out))
                break
        if nxt is None:
            break
        tensor, shape = nxt
    return tensor, shape


@dataclass(frozen=True)
class _Target:
    """The tensor actually reduced for a layer: the layer's own, or the same values permuted."""

    tensor: str
    ca: int
    rank: int
    shape: tuple | None


def _native_side(producers: Mapping[str, onnx.NodeProto], layer: LayerInfo) -> _Target:
    """Step back over Identity / Transpose producers to the tensor holding the same values
    channels-first (Keras exports: the NHWC side is a Transpose of the NCHW one ORT computes)."""
    ca, axes = reduce_axes(layer)
    t = _Target(layer.tensor, ca, len(axes) + 1, tuple(layer.shape) if layer.shape else None)
    for _ in range(8):
        if t.ca == 1:
            break
        node = producers.get(t.tensor)
        if node is None or not node.input or node.domain not in ("", "ai.onnx"):
            break
        if node.op_type == "Identity":
            t = _Target(node.input[0], t.ca, t.rank, t.shape)
            continue
        if node.op_type != "Transpose":
            break
        perm = list(node_attr(node, "perm", list(range(t.rank))[::-1]))
        if len(perm) != t.rank or perm[0] != 0:
            break
        shape = None
        if t.shape:
            shape = [None] * t.rank
            for i, p in enumerate(perm):
                shape[p] = t.shape[i]
        t = _Target(node.input[0], perm[t.ca], t.rank, tuple(shape) if shape else None)
    return t


def add_channel_stats(
    model: onnx.ModelProto,
    layers: Sequence[LayerInfo],
    threshold: float = 0.0,
    elem_types: Mapping[str, int] | None = None,
    count_above: bool = False,
    nonnegative: Sequence[bool] | None = None,
    sum_squares: bool = False,
    max_through_pools: bool = True,
    pack: bool = False,
) -> tuple[onnx.ModelProto, list[StatOutputs]]:
    """Return (derived model, per-layer output names) whose ONLY outputs are per-channel stats.

    ``layers`` are the tensors to reduce (``Model.layers`` or a selection). Outputs per layer
    (``StatOutputs``), each per image (``[N, C]`` or ``[N, C, 1, ...]``; reduce over the batch
    on the host): ``max`` (through a covering max pool when ``max_through_pools``: see the module
    docstring); ``min`` (empty name when the layer is known to be ``nonnegative``, e.g. after a
    ReLU: then min is not computed, it costs a pass); ``sum`` and ``sumsq`` (only with
    ``sum_squares``) as spatial MEANS (multiply by the positions per image); ``above`` (only with
    ``count_above``: a count of positions > ``threshold``); ``size`` (int64 element count, only
    for dynamic spatial dims). The original outputs are dropped and nodes that only fed them are pruned.
    """
    if not layers:
        raise ModelError("no layers to compute statistics for")
    opset = _opset(model)
    new, g, producers = outputless_copy(model)
    elem_types = elem_types or {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        if node.input:
            consumers.setdefault(node.input[0], []).append(node)
    outs: list[StatOutputs] = []
    attach: dict[str, list[onnx.NodeProto]] = {}  # tensor -> reduction nodes to run right after it
    done: dict[tuple[str, str], str] = {}  # (kind, tensor) -> output name, shared between layers
    declared: dict[str, int] = {}  # output name -> element type
    packable: dict[str, tuple[int, int]] = {}  # output name -> (rank, channels): [N, C, 1, ...] float32
    nonneg = list(nonnegative) if nonnegative is not None else [False] * len(layers)

    consts: set[str] = set()
    sources: dict[str, int] = {}

    def const(name: str, value: np.ndarray) -> str:
        if name not in consts:
            consts.add(name)
            g.initializer.append(numpy_helper.from_array(value, name))
        return name

    for i, layer in enumerate(layers):
        tgt = _native_side(producers, layer)
        et = elem_types.get(layer.tensor, TensorProto.FLOAT) or TensorProto.FLOAT
        acc = TensorProto.DOUBLE if et == TensorProto.DOUBLE else TensorProto.FLOAT
        # Static spatial dims give the positions per image on the host: a Size/Shape node would
        # make onnxruntime reorder the whole map out of its blocked NCHWc layout.
        dims = [d for a, d in enumerate(tgt.shape or ()) if a not in (0, tgt.ca)]
        static = int(np.prod(dims)) if tgt.shape and all(isinstance(d, int) and d > 0 for d in dims) else 0

        def reducer(src: str, ca: int, rank: int, unit: bool = False, channels: int = 0, et: int = et,
                    acc: int = acc) -> Callable[[str], str]:
            """kind -> output name of a per-image reduction of ``src`` (built once per tensor and kind);
            ``unit``: one position per image (e.g. [N, C, 1, 1]), so max, min and mean are the values."""
            pooled = ca == 1 and rank >= 3
            axes = [a for a in range(1, rank) if a != ca]  # all but batch and channels
            chain = attach.setdefault(src, [])
            tag = f"{_PREFIX}/{sources.setdefault(src, len(sources))}"

            def cast() -> str:
                if et in (TensorProto.FLOAT, TensorProto.DOUBLE):
                    return src
                key = ("f32", src)
                if key not in done:
                    done[key] = f"{tag}/f32"
                    chain.append(helper.make_node("Cast", [src], [done[key]], to=TensorProto.FLOAT,
                                                  name=f"{tag}/Cast"))
                return done[key]

            def reduce(op: str, x: str, dst: str) -> None:
                if not axes:  # [N, C]: nothing to reduce per image
                    chain.append(helper.make_node("Identity", [x], [dst], name=f"{dst}/Identity"))
                    return
                # ReduceSum takes axes as an input from opset 13, the other reductions from opset 18.
                if opset >= 18 or (op == "ReduceSum" and opset >= 13):
                    chain.append(helper.make_node(op, [x, const(f"{tag}/axes", np.asarray(axes, np.int64))], [dst],
                                                  keepdims=0, name=f"{dst}/{op}"))
                else:
                    chain.append(helper.make_node(op, [x], [dst], axes=axes, keepdims=0, name=f"{dst}/{op}"))

            def get(kind: str) -> str:
                if unit and kind in ("max", "min", "sum"):
                    kind = "values"
                key = (kind, src)
                if key in done:
                    return done[key]
                dst = done[key] = f"{tag}/{kind}"
                x = cast()
                if kind == "values":
                    chain.append(helper.make_node("Identity", [x], [dst], name=f"{dst}/Identity"))
                elif kind == "max":
                    if pooled:
                        chain.append(helper.make_node("GlobalMaxPool", [x], [dst], name=f"{dst}/GlobalMaxPool"))
                    else:
                        reduce("ReduceMax", x, dst)
                elif kind == "min":
                    if pooled:  # -max(-x): stays on the blocked layout where ReduceMin would not
                        if channels and acc == TensorProto.FLOAT:
                            # -x as a depthwise 1x1 Conv (weights -1, exact): onnxruntime keeps it on its
                            # blocked layout, where a Neg would first reorder the whole map
                            w = const(f"{tag}/minus_one", -np.ones((channels, 1, *[1] * (rank - 2)), np.float32))
                            chain.append(helper.make_node("Conv", [x, w], [f"{dst}/neg"], group=channels,
                                                          kernel_shape=[1] * (rank - 2), name=f"{dst}/Negate"))
                        else:
                            chain.append(helper.make_node("Neg", [x], [f"{dst}/neg"], name=f"{dst}/Neg"))
                        chain.append(helper.make_node("GlobalMaxPool", [f"{dst}/neg"], [f"{dst}/negmax"],
                                                      name=f"{dst}/GlobalMaxPool"))
                        chain.append(helper.make_node("Neg", [f"{dst}/negmax"], [dst], name=f"{dst}/NegMax"))
                    else:
                        reduce("ReduceMin", x, dst)
                elif kind == "sum":  # per-image means
                    if pooled:
                        chain.append(helper.make_node("GlobalAveragePool", [x], [dst],
                                                      name=f"{dst}/GlobalAveragePool"))
                    else:
                        reduce("ReduceMean", x, dst)
                elif kind == "sumsq":
                    chain.append(helper.make_node("Mul", [x, x], [f"{dst}/sq"], name=f"{dst}/Square"))
                    if pooled:
                        chain.append(helper.make_node("GlobalAveragePool", [f"{dst}/sq"], [dst],
                                                      name=f"{dst}/GlobalAveragePool"))
                    else:
                        reduce("ReduceMean", f"{dst}/sq", dst)
                elif kind == "above":
                    thr = const(f"{tag}/threshold", np.asarray(threshold, np.float64 if acc == TensorProto.DOUBLE
                                                                else np.float32))
                    chain.append(helper.make_node("Greater", [x, thr], [f"{dst}/gt"], name=f"{dst}/Greater"))
                    chain.append(helper.make_node("Cast", [f"{dst}/gt"], [f"{dst}/gtf"], to=acc, name=f"{dst}/CastGt"))
                    reduce("ReduceSum", f"{dst}/gtf", dst)
                elif kind == "size":
                    chain.append(helper.make_node("Size", [src], [dst], name=f"{dst}/Size"))
                declared[dst] = TensorProto.INT64 if kind == "size" else acc
                if pooled and channels and acc == TensorProto.FLOAT and kind in ("values", "max", "min", "sum", "sumsq"):
                    packable[dst] = (rank, channels)
                return dst

            return get

        c = tgt.shape[tgt.ca] if tgt.shape and len(tgt.shape) == tgt.rank else None
        own = reducer(tgt.tensor, tgt.ca, tgt.rank, static == 1, c if isinstance(c, int) and c > 0 else 0)
        max_from = ""
        max_name = ""
        if max_through_pools and tgt.ca == 1 and tgt.rank >= 3 and tgt.shape:
            src, shape = _follow_pools(consumers, tgt.tensor, tuple(tgt.shape))
            if src != tgt.tensor:
                max_from = src
                max_name = reducer(src, 1, len(shape), all(d == 1 for d in shape[2:]),
                                   c if isinstance(c, int) and c > 0 else 0)("max")
        names = StatOutputs(
            layer,
            "" if nonneg[i] else own("min"),
            max_name or own("max"),
            own("sum"),
            own("sumsq") if sum_squares else "",
            own("above") if count_above else "",
            "" if static else own("size"),
            static,
            max_from,
        )
        outs.append(names)
    columns: dict[str, tuple[str, int, int]] = {}
    tail: list[onnx.NodeProto] = []
    if pack:
        for rank in sorted({r for r, _ in packable.values()}):
            group = [n for n, (r, _) in packable.items() if r == rank]
            if len(group) < 2:
                continue
            out, start = f"{_PREFIX}/packed{rank}", 0
            for n in group:
                columns[n] = (out, start, start + packable[n][1])
                start += packable[n][1]
            tail.append(helper.make_node("Concat", group, [out], axis=1, name=f"{out}/Concat"))
            declared[out] = TensorProto.FLOAT
        outs = [replace(o, packed=tuple((n, *columns[n]) for n in o.names() if n in columns)) for o in outs]
    for n, et in declared.items():
        if n not in columns:
            g.output.append(helper.make_tensor_value_info(n, et, None))
    # Node order steers onnxruntime's PRIORITY_BASED execution order (StatsRunner uses it): with
    # the reductions appended deepest tensor first, onnxruntime 1.32 runs each one right after the
    # node that makes its input, while the map is still in cache (checked in its profiles).
    position = {o: k for k, n in enumerate(g.node) for o in n.output if o}
    for t in sorted(attach, key=lambda t: -position.get(t, -1)):
        g.node.extend(attach[t])
    g.node.extend(tail)
    _prune(g)
    return new, outs
