"""Per-tensor layout (NCHW, NHWC, 1-D, other) found by propagation through the graph.

Why propagation and not shapes: a Keras export keeps its NHWC input, switches to NCHW with a
Transpose before the convolutions and back again before Flatten. A 64x64x3 tensor and a
3x64x64 tensor can't be told apart by shape alone when channels and width are equal, but ONNX
defines Conv/Pool/BatchNormalization outputs as channels-first, so walking the graph from
those anchors (and through Transposes) gives every tensor's layout exactly.

Layout strings: ``NCHW``, ``NHWC``, ``NCW``, ``NWC``, ``NCDHW``, ``NDHWC``, ``NC`` (1-D feature
vectors), ``other`` (unknown or not spatial).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx

__all__ = ["guess_layout_of_array", "channel_axis", "propagate_layouts", "guess_input_layout", "CHANNELS_FIRST", "is_spatial"]

CHANNELS_FIRST = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
CHANNELS_LAST = {3: "NWC", 4: "NHWC", 5: "NDHWC"}
_CHANNEL_AXIS = {"NCHW": 1, "NCW": 1, "NCDHW": 1, "NC": 1, "NHWC": 3, "NWC": 2, "NDHWC": 4}

#: Ops whose first output is channels-first by the ONNX specification.
CHANNEL_FIRST_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "MaxUnpool", "MaxRoiPool", "RoiAlign", "DepthToSpace",
    "SpaceToDepth", "Upsample", "Resize", "QLinearAveragePool", "QLinearGlobalAveragePool",
}
#: Ops whose output keeps the layout of their first input (same rank, elementwise-ish).
SAME_AS_INPUT_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Celu", "ThresholdedRelu", "Add", "Sub", "Mul",
    "Div", "Pow", "Max", "Min", "Sum", "Mean", "Identity", "Dropout", "Cast", "Abs", "Neg", "Exp",
    "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Where", "Pad", "Concat",
    "DequantizeLinear", "QuantizeLinear", "Softmax", "LogSoftmax", "Shrink", "Sign", "Not",
    "Equal", "Greater", "Less", "And", "Or", "Xor", "Sin", "Cos", "Slice", "Split", "BiasGelu",
    "FastGelu", "QuickGelu", "Swish", "HardMax",
}


def channel_axis(layout: str | None) -> int | None:
    """Axis index of the channels for a layout string, or None (``other`` / unknown)."""
    if layout is None:
        return None
    return _CHANNEL_AXIS.get(layout)


def is_spatial(layout: str | None) -> bool:
    """True for layouts with spatial axes (maps that can be drawn as pictures)."""
    return layout in ("NCHW", "NHWC", "NCW", "NWC", "NCDHW", "NDHWC")


def guess_input_layout(shape: Sequence[int | str | None]) -> str:
    """Best guess of a graph input's layout from its shape alone (only used at the inputs).

    A 4-D input whose last axis is 1, 3 or 4 while axis 1 is not is NHWC (Keras/TF style);
    any other 4-D input is NCHW; 3-D is NCW; 2-D is NC.
    """
    r = len(shape)
    if r == 4:
        last, second = shape[3], shape[1]
        if last in (1, 3, 4) and second not in (1, 3, 4):
            return "NHWC"
        return "NCHW"
    if r == 3:
        last, second = shape[2], shape[1]
        if last in (1, 2, 3, 4) and isinstance(second, int) and second > 4:
            return "NWC"
        return "NCW"
    if r == 5:
        return "NCDHW"
    if r == 2:
        return "NC"
    return "other"


def _permute(layout: str, perm: Sequence[int]) -> str:
    if layout == "other" or len(layout) != len(perm) or "C" not in layout:
        return "other"
    out = "".join(layout[p] for p in perm)
    # Normalise to a known name; "NHWC" with perm (0,3,1,2) -> "NCHW".
    if out in _CHANNEL_AXIS or out == "NC":
        return out
    return "other"


def propagate_layouts(
    graph: onnx.GraphProto,
    ranks: Mapping[str, int],
    input_layouts: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return ``{tensor name: layout}`` for every tensor of the top-level graph.

    ``ranks`` gives the rank of each tensor where shape inference knows it. Graph inputs take
    ``input_layouts`` or a guess from their shape; from there layouts flow through the nodes in
    order: channels-first anchors, Transposes permute, elementwise ops keep their input's
    layout, 2-D outputs are ``NC``, everything else is ``other``.
    """
    layouts: dict[str, str] = {}
    init_names = {t.name for t in graph.initializer}
    for inp in graph.input:
        if inp.name in init_names:
            continue
        if input_layouts and inp.name in input_layouts:
            layouts[inp.name] = input_layouts[inp.name]
            continue
        dims: list[int | str | None] = []
        t = inp.type.tensor_type
        if t.HasField("shape"):
            for d in t.shape.dim:
                dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        layouts[inp.name] = guess_input_layout(dims) if dims else "other"

    for node in graph.node:
        op = node.op_type
        for k, out in enumerate(node.output):
            if not out:
                continue
            r = ranks.get(out)
            lay = "other"
            src = next((layouts[i] for i in node.input if i and layouts.get(i, "other") != "other"), "other")
            if op in CHANNEL_FIRST_OPS and k == 0:
                lay = CHANNELS_FIRST.get(r, "other") if r is not None else "NCHW"
                if op in ("Resize", "Upsample", "Pad") and src != "other":
                    lay = src
            elif op == "Transpose" and node.input and node.input[0] in layouts:
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                src0 = layouts[node.input[0]]
                if perm is None:
                    perm = list(reversed(range(len(src0))))
                lay = _permute(src0, perm)
            elif op in SAME_AS_INPUT_OPS:
                # The first input whose rank equals the output's carries the layout.
                same = [
                    layouts[i] for i in node.input
                    if i and layouts.get(i, "other") != "other" and (r is None or ranks.get(i) == r)
                ]
                lay = same[0] if same else "other"
            if lay == "other" and r == 2 and op in ("Flatten", "Gemm", "MatMul", "Reshape", "Squeeze",
                                                     "GlobalAveragePool", "ReduceMean", "Add", "Relu",
                                                     "Softmax", "Dropout", "Identity", "Sigmoid", "Tanh"):
                lay = "NC"
            if r is not None and lay != "other" and len(lay) != r:
                lay = "NC" if r == 2 else "other"
            layouts[out] = lay
    return layouts


def guess_layout_of_array(shape: Sequence[int] | Any) -> str:
    """Layout of a bare array with no graph to ask (a hand-built dict): guessed once, by shape.

    4-D: the two equal axes are taken as the spatial ones (maps are usually square); otherwise
    NHWC only when the last axis is smaller than both others; ties go to ONNX's NCHW.
    """
    if hasattr(shape, "shape"):
        shape = shape.shape
    r = len(shape)
    if r == 4:
        _, a, b, c = shape
        if a == b != c:
            return "NHWC"
        if b == c:
            return "NCHW"
        return "NHWC" if c < a and c < b else "NCHW"
    if r == 3:
        return "NCW"
    if r == 2:
        return "NC"
    if r == 5:
        return "NCDHW"
    return "other"
