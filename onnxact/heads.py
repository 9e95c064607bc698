"""The model's head: which output is a classifier, which feature map feeds the head, and whether
the head is a global pool followed by one linear layer (so exact CAM class weights apply).

Why one module: the report's predictions, the class activation map, the viewer and the CLI must
make the same choice on the same model. Each used to guess on its own (the first 2-D output, the
last 4-D layer, the first Gemm after a pool), which gave a detector's box regression as "class
3083 40.7%", a YOLO CAM drawn on its reshaped box-distribution conv (vertical stripes), and a
4-class model the CAM of hidden unit 121. Everything here reads the graph and, where given, the
arrays of one run; nothing here runs the model.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .errors import InputError, LayerError

__all__ = ["ClassifierChoice", "CamTarget", "is_class_vector", "classifier_outputs", "cam_targets",
           "head_summary", "linear_head_end", "find_layer_tensor", "probability_op", "static_shapes", "same_map"]

#: ops a class vector passes through unchanged in meaning on its way to the graph output
_PASS = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Dropout"}
#: ops that make class probabilities
_PROB_OPS = {"Softmax", "Sigmoid", "LogSoftmax"}
#: what may follow the single linear layer of an exact-CAM head before the output
_AFTER_LINEAR = _PASS | _PROB_OPS
#: ops whose 4-D output no longer has the image's spatial axes (a detector's view(b, 4, 16, a))
_RESHAPING = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Gather", "GatherElements", "Einsum",
              "Tile", "Expand", "DepthToSpace", "SpaceToDepth", "MatMul", "Gemm"}
_LAYOUT_SWAPS = ([0, 2, 3, 1], [0, 3, 1, 2])
_SHAPE_OPS = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Range", "ConstantOfShape"}
_CONVS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}
#: elementwise ops on the gate side of x * f(x) activations (SiLU, HardSwish, Mish)
_GATE_OPS = {"Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Relu", "Clip", "Add", "Mul", "Div", "Sub"}
_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "AveragePool", "MaxPool"}
_LINEAR = {"Gemm", "MatMul", "Conv"}

# Output names: tokens that say "class scores" and tokens that say "not class scores".
_CLASS_WORDS = ("prob", "cls", "logit", "label", "class", "softmax", "pred", "score")
_NOT_CLASS_WORDS = ("box", "bbox", "landmark", "loc", "reg", "coord", "offset", "delta", "kpt", "keypoint",
                    "point", "mask", "seg", "depth", "heat", "embed", "feat")


@dataclass(frozen=True)
class ClassifierChoice:
    """The outputs that hold class scores (best first; empty when the model has no classifier
    head) and one line saying why they were chosen, or why none was."""

    outputs: tuple[str, ...]
    reason: str

    def __bool__(self) -> bool:
        return bool(self.outputs)


@dataclass(frozen=True)
class CamTarget:
    """The tensor a class activation map is computed on, and one line saying why that one."""

    tensor: str
    reason: str


# ----------------------------------------------------------------------------- graph index
class _Graph:
    """Producers, consumers, data tensors (not constants or shape plumbing) and graph order."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        from .graph import constant_tensors

        g = proto.graph
        self.nodes = list(g.node)
        self.outputs = [o.name for o in g.output]
        inits = {t.name for t in g.initializer}
        self.inputs = {i.name for i in g.input if i.name not in inits}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.pos: dict[str, int] = {}
        nondata = set(constant_tensors(g))
        for i, n in enumerate(self.nodes):
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(n)
            if n.op_type in _SHAPE_OPS or all(t in nondata for t in n.input if t):
                nondata.update(o for o in n.output if o)
            for o in n.output:
                if o:
                    self.producer[o] = n
                    self.pos[o] = i
        self.nondata = nondata

    def data_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [t for t in node.input if t and t not in self.nondata]

    def gate_source(self, node: onnx.NodeProto) -> str | None:
        """``x`` when ``node`` is ``x * f(x)`` with ``f`` a short chain of elementwise ops (SiLU...)."""
        ins = self.data_inputs(node)
        if node.op_type != "Mul" or len(ins) != 2:
            return None
        for x, gate in ((ins[0], ins[1]), (ins[1], ins[0])):
            t = gate
            for _ in range(4):
                p = self.producer.get(t)
                if p is None or p.op_type not in _GATE_OPS:
                    break
                d = self.data_inputs(p)
                if len(d) != 1:
                    break
                if d[0] == x:
                    return x
                t = d[0]
        return None

    def branches(self, x: str) -> int:
        """Consumers of ``x`` that start a branch (the gate side of an ``x * f(x)`` is not one)."""
        count = 0
        for c in self.consumers.get(x, []):
            if c.op_type == "Mul" and self.gate_source(c) == x:
                count += 1
                continue
            if c.op_type in _GATE_OPS and self._feeds_own_gate(c, x):
                continue
            count += 1
        return count + (1 if x in self.outputs else 0)

    def _feeds_own_gate(self, node: onnx.NodeProto, x: str) -> bool:
        t = node.output[0] if node.output else ""
        for _ in range(4):
            users = self.consumers.get(t, [])
            if len(users) != 1:
                return False
            u = users[0]
            if u.op_type == "Mul" and x in u.input:
                return True
            if u.op_type not in _GATE_OPS or not u.output:
                return False
            t = u.output[0]
        return False

    def ancestors(self, tensors: Sequence[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(tensors)
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            p = self.producer.get(t)
            if p is not None:
                stack.extend(self.data_inputs(p))
        return seen


_GRAPHS: weakref.WeakKeyDictionary[Any, _Graph] = weakref.WeakKeyDictionary()


def _graph(model: Any) -> _Graph:
    g = _GRAPHS.get(model)
    if g is None:
        g = _GRAPHS[model] = _Graph(model.proto)
    return g


def linear_head_end(graph: onnx.GraphProto, tensor: str,
                    consumers: Mapping[str, Sequence[onnx.NodeProto]]) -> str | None:
    """The graph output that ``tensor`` (a linear layer's result) reaches through softmax /
    reshape-like ops only, or None when anything else (a hidden layer's ReLU, another Gemm)
    comes between: then the linear layer is not the class output and its weights are no class
    weights."""
    outputs = {o.name for o in graph.output}
    t = tensor
    for _ in range(16):
        if t in outputs:
            return t
        users = [u for u in consumers.get(t, []) if u.op_type not in ("Shape", "Size")]
        if len(users) != 1 or users[0].op_type not in _AFTER_LINEAR or not users[0].output:
            return None
        if users[0].op_type in ("Reshape", "Unsqueeze", "Squeeze") and users[0].input[0] != t:
            return None
        t = users[0].output[0]
    return None


# ----------------------------------------------------------------------------- classifier outputs
def is_class_vector(arr: Any, batch: int | None = None) -> bool:
    """True for class scores: ``[N, C]`` or ``[N, C, 1, 1]`` with ``C >= 2`` (N = the batch when known)."""
    shape = np.shape(arr)
    if len(shape) == 2:
        ok = shape[1] >= 2
    elif len(shape) == 4:
        ok = shape[1] >= 2 and shape[2] == 1 and shape[3] == 1
    else:
        return False
    return ok and (batch is None or shape[0] == batch)


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", name.lower())


def _name_says(name: str, words: Sequence[str]) -> bool:
    return any(w.startswith(words) for w in _words(name))


def _made_by(g: _Graph | None, output: str) -> str | None:
    """The probability op (Softmax / Sigmoid) that makes ``output``, through reshape-like ops."""
    if g is None:
        return None
    t = output
    for _ in range(8):
        p = g.producer.get(t)
        if p is None:
            return None
        if p.op_type in _PROB_OPS:
            return p.op_type
        if p.op_type not in _PASS or not p.input:
            return None
        t = p.input[0]
    return None


def probability_op(model: Any, output: str) -> str | None:
    """"Softmax" / "Sigmoid" / "LogSoftmax" when that op makes ``output`` (through reshapes), else None."""
    return _made_by(_graph(model), output)


def _sums_to_one(v: np.ndarray) -> bool:
    s = np.asarray(v, dtype=np.float64).reshape(v.shape[0], -1)
    return bool(s.size and np.isfinite(s).all() and s.min() >= 0 and np.allclose(s.sum(axis=1), 1.0, atol=1e-3))


def _shape_text(v: Any) -> str:
    return "x".join(str(d) for d in np.shape(v)) or "scalar"


def classifier_outputs(outputs: Mapping[str, Any], model: Any = None, output: str | None = None,
                       batch: int | None = None) -> ClassifierChoice:
    """Which of the model's ``outputs`` (``{name: array of one run}``) hold class scores.

    A class vector is ``[N, C]`` or ``[N, C, 1, 1]``. Keys may be framework names
    (``predictions``) when ``outputs`` is an :class:`onnxact.activations.Outputs`. Among those, the outputs made by Softmax /
    Sigmoid (or whose rows sum to 1) win; else those named like prob / cls / logits / label;
    else every class vector not named like a box or landmark regression. When several remain
    they are all returned (the report labels each by its output name). ``output`` (the user's
    choice) overrides: it must name an output, and that output must be a class vector.
    ``model`` (a loaded :class:`onnxact.Model`) lets the graph say which op made each output.
    """
    g = _graph(model) if model is not None else None
    names = list(outputs)
    if output is not None:
        if output not in outputs:
            from .naming import closest

            hint = closest(output, names) or names
            raise LayerError(f"the model has no output named {output!r}; its outputs are: "
                             f"{', '.join(repr(h) for h in hint[:8])}")
        if not is_class_vector(outputs[output]):
            raise InputError(f"output {output!r} has shape {_shape_text(outputs[output])}, not class scores "
                             "[N, C] or [N, C, 1, 1]; name another output")
        return ClassifierChoice((output,), f"output {output!r} chosen by the user")
    vectors = [n for n in names if is_class_vector(outputs[n], batch)]
    if not vectors:
        single = [n for n in names if len(np.shape(outputs[n])) == 2 and np.shape(outputs[n])[1] == 1]
        if single:  # a binary classifier's one sigmoid score: no ranking of classes to show
            return ClassifierChoice((), f"no class ranking: output {single[0]!r} is a single score "
                                        f"{_shape_text(outputs[single[0]])}")
        shapes = ", ".join(f"{n} {_shape_text(outputs[n])}" for n in names[:4])
        return ClassifierChoice((), f"no classifier head: no output is a class vector [N, C] ({shapes})")
    plausible = [n for n in vectors if not _name_says(n, _NOT_CLASS_WORDS)]
    tensors = getattr(outputs, "tensors", None) or {}  # framework key -> ONNX output name

    def made_by(n: str) -> str | None:
        return _made_by(g, tensors.get(n, n))

    probs = [n for n in plausible if made_by(n) or _sums_to_one(np.asarray(outputs[n]))]
    if probs:
        how = made_by(probs[0])
        why = f"made by {how}" if how else "its scores sum to 1"
        return ClassifierChoice(tuple(probs), f"output {probs[0]!r} holds class probabilities ({why})")
    named = [n for n in plausible if _name_says(n, _CLASS_WORDS)]
    if named:
        return ClassifierChoice(tuple(named), f"output {named[0]!r} is named like class scores")
    if plausible:
        return ClassifierChoice(tuple(plausible), f"output {plausible[0]!r} is a class-score vector "
                                                  f"{_shape_text(outputs[plausible[0]])}")
    return ClassifierChoice((), "no classifier head: the vector outputs are named like box or landmark "
                                f"regressions ({', '.join(vectors[:4])})")


# ----------------------------------------------------------------------------- feature maps
def static_shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    """``{tensor: dims}`` from the model's shape inference (None where a dim is unknown)."""
    out: dict[str, tuple[int | None, ...]] = {}
    for name, vi in (getattr(model, "value_info", None) or {}).items():
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                              for d in tt.shape.dim)
    return out


class _Maps:
    """Shapes and layouts of 4-D maps (the run's arrays where captured, else the graph's shapes),
    and which of them still have the image's spatial axes."""

    def __init__(self, model: Any, g: _Graph, acts: Any) -> None:
        self.g = g
        self.layouts: Mapping[str, str] = getattr(model, "layouts", {}) or {}
        self.shapes: dict[str, tuple[Any, ...]] = dict(static_shapes(model))
        self.captured: dict[str, str] = {}  # tensor -> key in acts
        runtime_layout: dict[str, str] = {}
        for key, info in (getattr(acts, "layers", None) or {}).items():
            t = getattr(info, "tensor", None)
            if t and key in acts:
                self.captured[t] = key
                self.shapes[t] = tuple(np.shape(acts[key]))
                runtime_layout[t] = getattr(info, "layout", None) or self.layouts.get(t, "other")
        self.layouts = {**self.layouts, **runtime_layout}
        self.tainted = self._taint()

    def chw(self, t: str) -> tuple[Any, Any, Any] | None:
        """(C, H, W) of a 4-D NCHW/NHWC tensor (None entries where unknown), else None."""
        lay = self.layouts.get(t)
        if lay not in ("NCHW", "NHWC"):
            return None
        s = self.shapes.get(t)
        if s is not None and len(s) != 4:
            return None
        if s is None:
            return (None, None, None)
        return (s[1], s[2], s[3]) if lay == "NCHW" else (s[3], s[1], s[2])

    def _flat(self, t: str) -> bool:
        """True when ``t`` is known to have H = W = 1 (a pooled vector kept 4-D)."""
        s = self.shapes.get(t)
        if s is None or len(s) != 4:
            return False
        lay = self.layouts.get(t, "NCHW")
        hw = s[1:3] if lay == "NHWC" else s[2:4]
        return all(d == 1 for d in hw)

    def _taint(self) -> set[str]:
        """Tensors whose axes came through a reshape (decode outputs): never a CAM's map."""
        g, bad = self.g, set()
        for n in g.nodes:
            ins = g.data_inputs(n)
            if n.op_type in _RESHAPING:
                perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
                if n.op_type == "Transpose" and perm in _LAYOUT_SWAPS:
                    hit = bool(ins) and ins[0] in bad
                else:
                    hit = True
                bad.update(o for o in n.output if o and hit and not self._flat(o))
                continue
            spatial = [i for i in ins if not self._flat(i)]
            if spatial and all(i in bad for i in spatial):
                bad.update(o for o in n.output if o)
        return bad

    def usable(self, t: str) -> bool:
        """A spatial map a CAM can be drawn from: image axes kept, H and W not known to be 1."""
        if t in self.g.inputs or t in self.tainted:
            return False
        chw = self.chw(t)
        if chw is None:
            return False
        _, h, w = chw
        return not (h is not None and h <= 1) and not (w is not None and w <= 1)

    def channels(self, t: str) -> int:
        chw = self.chw(t)
        return int(chw[0]) if chw and isinstance(chw[0], (int, np.integer)) else 0


def _frontier(m: _Maps, targets: Sequence[str]) -> list[str]:
    """The first usable spatial maps met walking back from ``targets`` (each path stops there)."""
    g, seen, found, stack = m.g, set(), [], list(targets)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if m.usable(t):
            found.append(t)
            continue
        p = g.producer.get(t)
        if p is not None:
            stack.extend(g.data_inputs(p))
    return found


def _undo_layout_swap(m: _Maps, t: str) -> str:
    """The map before a layout-only Transpose / Identity (Keras exports: the NCHW conv output)."""
    for _ in range(4):
        p = m.g.producer.get(t)
        if p is None or not p.input:
            break
        perm = next((list(a.ints) for a in p.attribute if a.name == "perm"), None)
        if (p.op_type == "Transpose" and perm in _LAYOUT_SWAPS) or p.op_type in ("Identity", "Cast"):
            if m.usable(p.input[0]):
                t = p.input[0]
                continue
        break
    return t


def same_map(model: Any, tensor: str, acts: Any = None) -> str:
    """The tensor holding the same map as ``tensor`` before layout-only Transposes, Identity and
    Cast ops: the conv output the capture keys by a layer name (a Keras head pools the NHWC
    transpose of it; a float16 export pools a Cast of it)."""
    return _undo_layout_swap(_Maps(model, _graph(model), acts), tensor)


def _head_input(m: _Maps, t: str, max_convs: int = 4) -> str:
    """Walk back from a prediction map along its branch to where the branch starts: a map that
    feeds several branches (YOLO's neck output feeding box and class convs) or one made by a
    merge (a segmenter's concatenated pyramid). At most ``max_convs`` convs back."""
    g, convs = m.g, 0
    for _ in range(256):
        p = g.producer.get(t)
        if p is None:
            return t
        x = g.gate_source(p)
        ins = [x] if x is not None else g.data_inputs(p)
        if len(ins) != 1:
            return t
        prev = ins[0]
        if not m.usable(prev):
            return t
        if p.op_type in _CONVS:
            convs += 1
            if convs > max_convs:
                return t
        if g.branches(prev) > 1:
            return prev
        t = prev
    return t


def _best(m: _Maps, tensors: Sequence[str]) -> list[str]:
    """Last in graph order first, maps of one channel (objectness, masks) after all others."""
    uniq = list(dict.fromkeys(tensors))
    return sorted(uniq, key=lambda t: (m.channels(t) == 1, -m.g.pos.get(t, -1)))


def find_layer_tensor(model: Any, acts: Any, name: str) -> str:
    """The tensor of the layer the user named for the CAM: an activation key, a layer name or an
    ONNX tensor, matched exactly (a near name is only suggested, never substituted)."""
    layers = getattr(acts, "layers", None) or {}
    if name in layers:
        return layers[name].tensor
    for info in list(getattr(model, "layers", [])) + list(getattr(model, "all_layers", [])):
        if name in (info.name, info.tensor):  # the default capture's meaning of a name first
            return info.tensor
    from .naming import closest

    choices = list(layers) + [i.name for i in getattr(model, "all_layers", [])]
    hint = closest(name, list(dict.fromkeys(choices)))
    raise LayerError(f"no layer named {name!r} for the CAM (--cam-layer / cam_layer)"
                     + (f"; closest: {', '.join(repr(h) for h in hint)}" if hint else
                        "; see Model.layers for the names"))


def cam_targets(model: Any, acts: Any = None, classifier: Sequence[str] = (), cam_layer: str | None = None,
                pooled: str | None = None) -> list[CamTarget]:
    """The feature maps to draw a class activation map on, best first.

    ``cam_layer`` (the user's exact layer name) wins. ``pooled`` (the map an exact GAP -> linear
    head averages) comes next. Otherwise: for a classifier (``classifier`` = its output names),
    the last spatial map feeding it; for a detector or segmenter, the map its prediction
    branches start from (never a reshaped decode output such as YOLO's ``1x4xN`` DFL conv, and
    a many-channel map before a 1-channel objectness map). Later entries are fallbacks for when
    a map's size is only known after running it.
    """
    g = _graph(model)
    m = _Maps(model, g, acts)
    if cam_layer is not None:
        return [CamTarget(find_layer_tensor(model, acts, cam_layer), "chosen by --cam-layer / cam_layer")]
    out: list[CamTarget] = []
    if pooled is not None:
        out.append(CamTarget(pooled, "the map the global pool averages before the single linear classifier"))
    if classifier:
        front = [_undo_layout_swap(m, t) for t in _frontier(m, list(classifier))]
        out += [CamTarget(t, "the last spatial map feeding the classifier head") for t in _best(m, front)]
    else:
        starts: list[str] = []
        for f in _frontier(m, g.outputs):
            p = g.producer.get(f)
            parts = [i for i in g.data_inputs(p) if m.usable(i)] if p is not None and p.op_type == "Concat" else []
            starts += parts or [f]
        heads = [_undo_layout_swap(m, _head_input(m, s)) for s in starts]
        out += [CamTarget(t, "the last spatial feature map feeding the head (where its prediction branches start)")
                for t in _best(m, heads)]
    rest = [t for t in g.ancestors(list(classifier) or g.outputs) if m.usable(t) and t in m.captured]
    out += [CamTarget(t, "the last spatial map before the outputs") for t in _best(m, rest)]
    seen: set[str] = set()
    return [c for c in out if not (c.tensor in seen or seen.add(c.tensor))]


# ----------------------------------------------------------------------------- the head's shape
def head_summary(model: Any, class_output: str | None) -> str:
    """One line on why a head gets no exact CAM: it has a hidden layer, it flattens instead of
    pooling, or there is no classifier at all (EigenCAM is then the class-agnostic choice)."""
    if class_output is None:
        return "no classifier head, so the map is class-agnostic"
    g = _graph(model)
    m = _Maps(model, g, None)
    ops: list[str] = []
    t = class_output
    for _ in range(64):
        if m.usable(t) or t in g.inputs:
            break
        p = g.producer.get(t)
        if p is None:
            break
        if p.op_type not in ("Identity", "Cast", "Dropout"):
            ops.append(p.op_type)
        ins = g.data_inputs(p)
        if not ins:
            break
        t = ins[0]
    ops.reverse()
    chain = " -> ".join(ops[:8]) + (" -> ..." if len(ops) > 8 else "")
    pools = [o for o in ops if o in _POOLS]
    linear = sum(o in _LINEAR for o in ops)
    if pools and pools[-1] in ("GlobalMaxPool", "ReduceMax", "MaxPool") and linear <= 1:
        return f"the head pools with a maximum, not an average ({chain}), so class weights do not apply"
    if pools and linear >= 2:
        return f"the head has a hidden layer between the global pool and the class output ({chain})"
    if not pools:
        return f"the head flattens the map instead of pooling it ({chain}), so class weights do not apply"
    return f"the head is not a global average pool followed by one linear layer ({chain})"
