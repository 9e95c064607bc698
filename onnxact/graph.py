"""Graph rewrites: choose the tensors worth capturing and promote them to graph outputs.

Why promote instead of hooks: onnxruntime only returns graph outputs. Appending a tensor to
``graph.output`` (Polygraphy's ``mark all``) is the standard trick; a node whose output is a
graph output is never fused away, so the promoted values are the unfused graph's values.
Typed value_info (from shape inference) keeps ``onnx.checker`` happy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto

__all__ = [
    "CONV_OPS", "POOL_OPS", "ACTIVATION_OPS", "Candidate", "find_candidates", "skipped_subgraph_layers",
    "expose_outputs", "subgraph_tensors", "FLOAT_TYPES",
]

CONV_OPS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")
POOL_OPS = (
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "QLinearAveragePool", "QLinearGlobalAveragePool",
)
#: Activations folded into the conv/pool layer they follow (a Keras Conv2D(activation=...) is one layer).
ACTIVATION_OPS = (
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Tanh",
)
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
#: Ops that always produce shapes/indices/metadata, never feature maps.
_SHAPE_OPS = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "TopK", "Range", "ConstantOfShape", "EyeLike"}
_SUBGRAPH_OPS = ("If", "Loop", "Scan")


@dataclass(frozen=True)
class Candidate:
    """A promotable tensor: the node that made it and what it is in layer terms."""

    tensor: str
    op_type: str  # the op that defines the layer (Conv for Conv->Relu)
    node: str  # name of the node that produced ``tensor``
    activation: str | None
    position: int  # index of the producing node in graph order


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (ints, floats, bytes, a tensor ...), else ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            if i:
                out.setdefault(i, []).append(node)
        for attr in node.attribute:  # tensors read by subgraphs (implicit inputs)
            if attr.type == onnx.AttributeProto.GRAPH:
                for name in subgraph_tensors(attr.g, inputs_only=True):
                    out.setdefault(name, []).append(node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    for name in subgraph_tensors(g, inputs_only=True):
                        out.setdefault(name, []).append(node)
    return out


def subgraph_tensors(g: onnx.GraphProto, inputs_only: bool = False) -> list[str]:
    """Names produced inside a subgraph (or, with inputs_only, read there from outside)."""
    produced: set[str] = {i.name for i in g.input} | {t.name for t in g.initializer}
    read: list[str] = []
    for node in g.node:
        for i in node.input:
            if i and i not in produced:
                read.append(i)
        produced.update(o for o in node.output if o)
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sg in subs:
                inner = subgraph_tensors(sg, inputs_only)
                if inputs_only:
                    read.extend(x for x in inner if x not in produced)
                else:
                    produced.update(inner)
    return read if inputs_only else sorted(produced)


def _follow_activation(
    tensor: str, consumers: Mapping[str, list[onnx.NodeProto]], graph_outputs: set[str],
    consts: Mapping[str, float] | None = None, const_tensors: set[str] | frozenset[str] = frozenset(),
    _affine_steps: int = 0,
) -> tuple[str, onnx.NodeProto | None, str | None]:
    """From a conv/pool output, step over the activation that follows it, if exactly one does.

    Returns (tensor to capture, the node that makes it or None, the activation's name or None).
    ``const_tensors`` (initializers and what is computed from them alone) lets a conv's bias or
    affine written as separate ops (Paddle: ``Conv -> Add(bias) -> Relu``; PP-LCNetV3's learnable
    affine ``* s + b`` before its HardSwish) count as part of the layer.
    """
    if tensor in graph_outputs:
        return tensor, None, None
    dyn = _follow_integer(tensor, consumers, graph_outputs)
    if dyn is not None:  # ConvInteger -> Cast -> Mul(scale): the layer continues from the float result
        t, act, name = _follow_activation(dyn.output[0], consumers, graph_outputs, consts, const_tensors,
                                          _affine_steps)
        return (t, act, name) if act is not None else (dyn.output[0], dyn, None)
    dq = _follow_qdq(tensor, consumers, graph_outputs)
    if dq is not None:
        return dq[0], dq[1], None
    users = consumers.get(tensor, [])
    if len(users) == 1 and users[0].op_type == "BatchNormalization" and users[0].input[0] == tensor:
        # Conv -> BN -> act kept unfolded (keep_batchnorm exports, opset-7-era graphs): capturing
        # the raw conv output would stop onnxruntime fusing the three, so the layer is read at its
        # activation (or after the BN when none follows), as the framework's block computes it.
        t, act, name = _follow_activation(users[0].output[0], consumers, graph_outputs, consts, const_tensors,
                                          _affine_steps)
        return (t, act, name) if act is not None else (t, users[0], "BatchNormalization")
    if (len(users) == 1 and _affine_steps < 3 and users[0].op_type in ("Add", "Sub", "Mul", "Div")
            and len(users[0].input) == 2 and list(users[0].input).count(tensor) == 1
            and (users[0].input[1] if users[0].input[0] == tensor else users[0].input[0]) in const_tensors
            and (users[0].input[0] == tensor or users[0].op_type in ("Add", "Mul"))):
        # A constant bias / scale written as its own op (onnxruntime folds it into the conv).
        nxt = users[0].output[0]
        t, act, name = _follow_activation(nxt, consumers, graph_outputs, consts, const_tensors, _affine_steps + 1)
        return (t, act, name) if act is not None else (nxt, users[0], None)
    if len(users) == 1 and users[0].op_type in ACTIVATION_OPS and users[0].input[0] == tensor:
        out = users[0].output[0]
        after = _follow_qdq(out, consumers, graph_outputs)
        return (after[0] if after is not None else out), users[0], users[0].op_type
    # SiLU / Swish written as x * Sigmoid(x), or x * Sigmoid(beta * x) with a constant beta
    if len(users) == 2:
        sig = next((u for u in users if u.op_type == "Sigmoid"), None)
        if sig is None:
            beta = next((u for u in users if u.op_type == "Mul" and len(u.input) == 2 and
                         next((i for i in u.input if i != tensor), "") in const_tensors), None)
            after = consumers.get(beta.output[0], []) if beta is not None else []
            sig = after[0] if len(after) == 1 and after[0].op_type == "Sigmoid" else None
        mul = next((u for u in users if u.op_type == "Mul" and sig is not None and sig.output[0] in u.input), None)
        if sig is not None and mul is not None and tensor in mul.input:
            if len(consumers.get(sig.output[0], [])) == 1:
                return mul.output[0], mul, "SiLU"
    hs = _follow_hardswish(tensor, users, consumers, consts or {})
    if hs is not None:
        return hs.output[0], hs, "HardSwish"
    return tensor, None, None


def _const_inputs(node: onnx.NodeProto, tensor: str, consts: Mapping[str, float]) -> list[float] | None:
    """The scalar constants among ``node``'s inputs other than ``tensor`` (None if any is not one)."""
    vals = [consts.get(i) for i in node.input if i and i != tensor]
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def _near(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-4 * max(1.0, abs(b))


def _follow_hardswish(
    x: str, users: Sequence[onnx.NodeProto], consumers: Mapping[str, list[onnx.NodeProto]],
    consts: Mapping[str, float],
) -> onnx.NodeProto | None:
    """HardSwish as exporters without the op write it; returns the node whose output is x*relu6(x+3)/6.

    ``x * HardSigmoid(x)`` (alpha 1/6, beta 0.5: torch.onnx below opset 14, tf2onnx) and Paddle's
    ``x * Clip(x + 3, 0, 6) / 6`` (also ``Clip / 6`` then ``* x``, or ``* (1/6)``), which the
    rapidocr models use after most convs: reading the layer at the conv output would show the
    pre-activation map and differ from the framework's block.
    """
    if len(users) != 2:
        return None

    def only(t: str) -> onnx.NodeProto | None:
        u = consumers.get(t, [])
        return u[0] if len(u) == 1 else None

    def scale(node: onnx.NodeProto | None, value: str) -> bool:  # node computes value / 6 (or * 1/6)
        if node is None or len(node.input) != 2 or node.input[0] != value:
            return False
        c = consts.get(node.input[1])
        return (node.op_type == "Div" and _near(c, 6.0)) or (node.op_type == "Mul" and _near(c, 1 / 6))

    mul = next((u for u in users if u.op_type == "Mul" and list(u.input).count(x) == 1), None)
    gate_in = next((u for u in users if u is not mul), None)
    if mul is None or gate_in is None:
        return None
    other = next(i for i in mul.input if i != x)
    if gate_in.op_type == "HardSigmoid":
        attrs = {a.name: a.f for a in gate_in.attribute}
        if (gate_in.output[0] == other and only(other) is mul and _near(attrs.get("alpha", 0.2), 1 / 6)
                and _near(attrs.get("beta", 0.5), 0.5)):
            return mul
        return None
    three = _const_inputs(gate_in, x, consts) if gate_in.op_type == "Add" else None
    if not three or not _near(three[0], 3.0):
        return None
    clip = only(gate_in.output[0])
    if clip is None or clip.op_type != "Clip" or clip.input[0] != gate_in.output[0]:
        return None
    attrs = {a.name: a.f for a in clip.attribute}
    lo = consts.get(clip.input[1]) if len(clip.input) > 1 and clip.input[1] else attrs.get("min")
    hi = consts.get(clip.input[2]) if len(clip.input) > 2 and clip.input[2] else attrs.get("max")
    if not (_near(lo, 0.0) and _near(hi, 6.0)):
        return None
    if other == clip.output[0] and only(clip.output[0]) is mul:  # x * clip, then / 6
        after = only(mul.output[0])
        return after if scale(after, mul.output[0]) else None
    div = only(clip.output[0])  # clip / 6, then x * that
    if scale(div, clip.output[0]) and other == div.output[0] and only(div.output[0]) is mul:
        return mul
    return None


#: Ops that compute a constant when all their inputs are constants (shape plumbing of exported biases).
_CONST_PROPAGATING = {"Reshape", "Unsqueeze", "Squeeze", "Cast", "Identity", "Flatten", "Expand", "Transpose",
                      "Mul", "Add", "Sub", "Div", "Sqrt", "Reciprocal", "Neg", "Concat"}


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers, Constant outputs and outputs of nodes fed only by those (in graph order)."""
    out = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (
                node.op_type in _CONST_PROPAGATING and all(i in out for i in node.input if i)):
            out.update(o for o in node.output if o)
    return out


def scalar_constants(graph: onnx.GraphProto, base_dir: Any = None) -> dict[str, float]:
    """Single-element initializers and Constant outputs of ``graph``, as floats (for pattern matching).

    ``base_dir`` is the model's folder, where external data is read from (never the working directory).
    """
    from onnx import numpy_helper

    from .model import read_tensor

    out: dict[str, float] = {}
    for t in graph.initializer:
        if len(t.dims) <= 4 and all(d == 1 for d in t.dims):
            try:
                out[t.name] = float(read_tensor(t, base_dir).reshape(-1)[0])
            except (ValueError, IndexError, TypeError):
                pass
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                try:
                    if a.name == "value" and all(d == 1 for d in a.t.dims):
                        out[node.output[0]] = float(numpy_helper.to_array(a.t).reshape(-1)[0])
                    elif a.name == "value_float":
                        out[node.output[0]] = float(a.f)
                except (ValueError, IndexError, TypeError):
                    pass
    return out


def _follow_qdq(
    tensor: str, consumers: Mapping[str, list[onnx.NodeProto]], graph_outputs: set[str]
) -> tuple[str, onnx.NodeProto] | None:
    """QDQ models (onnxruntime.quantization): ``x -> QuantizeLinear -> DequantizeLinear``.

    The quantizer drops a Relu after a Conv and lets the quantization range clip instead, so the
    layer's real (int8-equivalent) activation is the dequantized tensor, not the raw float output.
    """
    if tensor in graph_outputs:
        return None
    users = consumers.get(tensor, [])
    if len(users) == 1 and users[0].op_type == "QuantizeLinear" and users[0].input[0] == tensor:
        dq = consumers.get(users[0].output[0], [])
        if len(dq) == 1 and dq[0].op_type == "DequantizeLinear" and dq[0].output and dq[0].output[0]:
            return dq[0].output[0], dq[0]
    return None


def _follow_integer(
    tensor: str, consumers: Mapping[str, list[onnx.NodeProto]], graph_outputs: set[str]
) -> onnx.NodeProto | None:
    """Dynamic int8 models (``quantize_dynamic``): ``ConvInteger -> Cast(float) -> Mul(scale)``.

    The int32 accumulator means nothing to a user until it is cast and multiplied by the input
    scale times the weight scale (a tensor computed at run time from ``DynamicQuantizeLinear``,
    so not a constant); the float product is the conv's output in the units of the float model.
    The old ``onnx.quantize`` 0.1.0 tool (ddddocr's models) adds the bias to the accumulator
    first: ``ConvInteger -> Add(int32 bias) -> Cast -> Mul``. That bias is computed at run time
    too (``Floor(bias / (x_scale * w_scale))``), and an Add on an int32 tensor can only add an
    int32 one, so any single Add followed by the float Cast is taken as that bias.
    Returns the node giving that float value (the Mul, or the Cast when no scale follows).
    Only called on the integer op's own output, so an ordinary ``Cast -> Mul`` is never taken.
    """
    users = consumers.get(tensor, [])
    if (len(users) == 1 and users[0].op_type == "Add" and tensor not in graph_outputs
            and len(users[0].input) == 2 and list(users[0].input).count(tensor) == 1 and users[0].output
            and users[0].output[0] and users[0].output[0] not in graph_outputs):
        biased = consumers.get(users[0].output[0], [])
        if len(biased) == 1 and biased[0].op_type == "Cast":
            tensor, users = users[0].output[0], biased
    if len(users) != 1 or users[0].op_type != "Cast" or users[0].input[0] != tensor:
        return None
    cast = users[0]
    to = next((a.i for a in cast.attribute if a.name == "to"), None)
    if to not in FLOAT_TYPES or not cast.output or not cast.output[0]:
        return None
    if cast.output[0] in graph_outputs:
        return cast
    after = consumers.get(cast.output[0], [])
    if len(after) == 1 and after[0].op_type == "Mul" and list(after[0].input).count(cast.output[0]) == 1:
        return after[0]
    return cast


def find_candidates(
    graph: onnx.GraphProto, elem_types: Mapping[str, int], all_tensors: bool = True, base_dir: Any = None,
    ranks: Mapping[str, int] | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """Return (all promotable float tensors, default capture set) of the top-level graph.

    The default set is every conv and pool output, read after the activation that follows it;
    a dynamically quantized ``ConvInteger`` is read at its float result (cast, scaled, biased,
    activated), and so is a ``MatMulInteger`` whose float result is a rank-4 map (``ranks``,
    from shape inference; without it such MatMuls are not layers).
    Constants, non-float and shape tensors and anything inside If/Loop/Scan bodies are never
    candidates (see :func:`skipped_subgraph_layers` to report the latter).
    """
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    consts = scalar_constants(graph, base_dir)
    const_tensors = constant_tensors(graph)
    everything: list[Candidate] = []
    default: list[Candidate] = []
    node_index = {id(n): k for k, n in enumerate(graph.node)}
    for k, node in enumerate(graph.node):
        if node.op_type in ("Constant",) or node.op_type in _SHAPE_OPS:
            continue
        for out in node.output:
            if out and elem_types.get(out) in FLOAT_TYPES:
                everything.append(Candidate(out, node.op_type, node.name, None, k))
        is_mm = node.op_type == "MatMulInteger"
        if (node.op_type in CONV_OPS + POOL_OPS or is_mm) and node.output and node.output[0]:
            t, act, act_name = _follow_activation(node.output[0], consumers, graph_outputs, consts, const_tensors)
            if is_mm and (act is None or (ranks or {}).get(t) != 4):
                continue  # a quantized MatMul is a layer only when its float result is a spatial map
            if elem_types.get(t, TensorProto.FLOAT) not in FLOAT_TYPES and node.op_type not in ("ConvInteger", "QLinearConv"):
                continue
            pos = node_index[id(act)] if act is not None else k
            default.append(Candidate(t, node.op_type, act.name if act is not None else node.name, act_name, pos))
    default.sort(key=lambda c: c.position)
    return everything, default


def skipped_subgraph_layers(graph: onnx.GraphProto) -> list[str]:
    """Conv/pool outputs that live inside If/Loop/Scan bodies: reported, never promoted."""
    found: list[str] = []

    def walk(g: onnx.GraphProto, inside: bool) -> None:
        for node in g.node:
            if inside and node.op_type in CONV_OPS + POOL_OPS:
                found.extend(o for o in node.output[:1] if o)
            for attr in node.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for sg in subs:
                    walk(sg, True)

    walk(graph, False)
    return found


def expose_outputs(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    value_info: Mapping[str, onnx.ValueInfoProto] | None = None,
    keep_original: bool = True,
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph outputs include ``tensors`` (in that order).

    The original outputs stay first and unchanged (unless keep_original is False). Outputs get the
    typed value_info from shape inference where available, else a name-only entry (onnxruntime
    runs those; only ``onnx.checker`` objects). Initializers are shared by reference in the
    protobuf copy, so the caller should build this once per capture set.
    """
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = new.graph
    existing = {o.name for o in g.output}
    if not keep_original:
        del g.output[:]
        existing = set()
    vi = value_info or {}
    for t in tensors:
        if t in existing:
            continue
        existing.add(t)
        if t in vi:
            g.output.append(vi[t])
        else:
            g.output.append(onnx.ValueInfoProto(name=t))
    return new
