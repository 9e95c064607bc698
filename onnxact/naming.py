"""Map ONNX tensors back to the names a user of the source framework knows.

Why: users think in ``model.2.m.0.cv1``, ``layer1.0.conv1`` or ``conv2d_1``, not in
``/model.2/m.0/cv1/act/Mul_output_0``. Sources, best first: names recorded by onnxact's converters
(metadata ``onnxact.layer_names``), the dynamo exporter's ``pkg.torch.onnx.name_scopes``, the
legacy exporter's ``/layer1/layer1.0/conv1/Conv`` node paths (read back to the module path),
Keras/tf2onnx ``model_1/conv1_1/Relu:0`` scopes, the names of a layer's weights (tf2onnx's fused
``Conv__99`` keeps ``functional_1/conv2d_1/...`` on its kernel; Paddle2ONNX keeps ``conv1_weights``
or ``conv2d_0.w_0``), then a meaningful ONNX tensor name, and last the op and its order
(``conv_12``, as Keras names layers) for graphs whose names say nothing (``849``, ``/Conv_51_output_0``).

Two kinds of names come out of :func:`name_model`:

- every float tensor gets its own name (``Model.all_layers``): the framework name of the node
  that made it, ``name/Op`` for earlier tensors of the same layer, unique over the model;
- every default-capture layer (a conv or pool read after the BN / activation that follows it)
  is keyed by the *conv's* name; the BN / activation names it absorbed are listed in ``fused``.
  A torch module that wraps exactly one conv and its BN/activation (Ultralytics' ``Conv``,
  torchvision's ``Conv2dNormActivation``) computes that same value, so the layer is keyed by the
  wrapper (``model.2.m.0.cv1`` rather than ``model.2.m.0.cv1.conv``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

__all__ = [
    "simple_names", "name_model", "ModelNames", "closest", "keras_layer_from_tensor", "torch_module_from_node",
    "param_layer", "is_generated", "folded_hint",
]

_KERAS_SUFFIX = re.compile(r"_\d+$")
_CALL_SUFFIX = re.compile(r"^(.*)_(\d+)$")
#: Tensor / node names that exporters make up and that mean nothing to a user: old torch (``849``,
#: ``onnx::Add_6``, ``/Conv_51_output_0``), tf2onnx (``Conv__99:0``), Paddle2ONNX (``p2o.Conv.0``; its
#: PIR exporter writes ``p2o.pd_op.hardswish.26.0`` = op, op count, output index, and ``Add.1`` /
#: ``helper.constant.0`` for its own nodes), keras2onnx (``convolution_output3``, ``biased_tensor_name2``,
#: ``p_re_lu_7/add:0_pooling0``: a tensor name with a suffix glued on), and quantizers' names built on
#: a made-up one (``390_bias_add_cast_output``, ``Conv_0_quant_scales_mul:0``).
_GENERATED = re.compile(
    r"^(\d+|onnx::.*|/.*_output_\d+|[A-Z][A-Za-z]*(_{1,2}\d+(:\d+)?|:\d+|\.\d+)|p2o\.[A-Za-z]+\.\d+"
    r"|p2o\.pd_op\.\w+\.\d+\.\d+|helper\.[a-z_]+\.\d+|[A-Za-z]+@\d+"
    r"|(convolution_output|biased_tensor_name|adjusted_input|push_transpose_out_)\d*|.*:\d+_\w+"
    r"|(\d+|[A-Z][A-Za-z]*_\d+)_[a-z]\w*(:\d+)?)$"
)
#: A TF / Keras op inside a layer's scope: ``BiasAdd``, ``FusedBatchNormV3``, ``Relu_1``, ``add``, ``kernel``.
_SCOPED_OP = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(:\d+)?$")
#: Paddle2ONNX (PIR) copies each parameter under ``<param>_deepcopy_<k>`` (``conv2d_0.w_0_deepcopy_0``).
_DEEPCOPY = re.compile(r"_deepcopy_\d+$")
#: Paddle variables: ``relu_0.tmp_0`` is the output of op instance ``relu_0``.
_PADDLE_VAR = re.compile(r"^([A-Za-z]\w*_\d+)\.tmp_\d+$")
_CONV_OPS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")
_ATTACHED = ("BatchNormalization",)  # ops whose parameters name a layer of their own (folded or not)


def is_generated(name: str) -> bool:
    """True for names an exporter made up (``849``, ``onnx::Add_6``, ``/Conv_51_output_0``, ``Conv__99:0``)."""
    return not name or bool(_GENERATED.match(name))


def keras_layer_from_tensor(tensor: str) -> str | None:
    """``model_1/conv1_1/Relu:0`` -> ``conv1``; ``sequential/conv2d/BiasAdd:0`` -> ``conv2d``.

    Graphs from TF1-style Keras code (tf2onnx) and keras2onnx have no model scope: the layer is the
    first of two parts (``conv_stage0_block0_branch2c/BiasAdd:0``, ``max_pooling2d/MaxPool:0``,
    ``p_re_lu_7/add:0``, weights ``conv2d_8/kernel:0``), when the second one is a plain op name.
    """
    if "/" not in tensor:
        return None
    parts = tensor.split("/")
    if len(parts) == 2:
        ok = parts[0] and not is_generated(parts[0]) and _SCOPED_OP.match(parts[1])
        return parts[0] if ok else None
    if len(parts) < 3:
        return None
    layer = parts[1]
    # Keras 3 export appends "_1" to both the model and the layer scope.
    if _KERAS_SUFFIX.search(parts[0]) and _KERAS_SUFFIX.search(layer):
        layer = _KERAS_SUFFIX.sub("", layer)
    return layer or None


def _torch_components(node_name: str) -> list[str] | None:
    if not node_name.startswith("/"):
        return None
    parts = [p for p in node_name.split("/") if p]
    return parts[:-1] if len(parts) >= 2 else None


def torch_module_from_node(node_name: str, repeated: set[str] | frozenset[str] = frozenset()) -> str | None:
    """Legacy exporter node path -> module path: ``/model.2/m.0/cv1/conv/Conv`` -> ``model.2.m.0.cv1.conv``.

    A child of a ``Sequential`` / ``ModuleList`` is written with its parent's component as prefix
    (``/layer1/layer1.0/conv1/Conv``, ``/model.22/cv2.0/cv2.0.0/...``) and is read as one step. The
    exporter writes the n-th call of a reused module as ``relu_1``; when ``relu`` exists beside
    it (``repeated`` holds such ``parent/relu`` pairs) the call is named ``relu:2`` as hooks key it.
    """
    comps = _torch_components(node_name)
    if not comps:
        return None
    qual, prev = "", ""
    for c in comps:
        m = _CALL_SUFFIX.match(c)
        call = ""
        if m and f"{qual}/{m.group(1)}" in repeated:
            c, call = m.group(1), f":{int(m.group(2)) + 1}"
        if prev and c.startswith(prev + "."):
            step = qual + c[len(prev):]
        else:
            step = f"{qual}.{c}" if qual else c
        qual, prev = step + call, c
    return qual or None


def _repeated_calls(graph: onnx.GraphProto) -> set[str]:
    """``qualified parent/name`` of modules a legacy export calls more than once: the exporter
    writes ``relu`` and ``relu_1`` side by side under one parent (keys for torch_module_from_node)."""
    seen: set[tuple[str, str]] = set()
    for node in graph.node:
        comps = _torch_components(node.name)
        if comps:
            for i, c in enumerate(comps):
                seen.add(("/".join(comps[:i]), c))
    out: set[str] = set()
    for parent, c in seen:
        m = _CALL_SUFFIX.match(c)
        if m and (parent, m.group(1)) in seen:
            qual = torch_module_from_node(f"/{parent}/X") if parent else ""
            out.add(f"{qual or ''}/{m.group(1)}")
    return out


def param_layer(name: str) -> str | None:
    """The layer a weight belongs to: ``functional_1/conv2d_1/convolution/merged_input:0`` -> ``conv2d``,
    ``conv1_weights`` / ``conv1_bn_scale`` -> ``conv1`` / ``conv1_bn``, ``conv2d_0.w_0`` -> ``conv2d_0``,
    ``layer1.0.conv1.weight`` -> ``layer1.0.conv1``, ``conv2d_8/kernel:0`` -> ``conv2d_8`` (keras2onnx),
    ``conv2d_0.w_0_deepcopy_0`` -> ``conv2d_0`` (Paddle PIR); None when the name says nothing."""
    name = _DEEPCOPY.sub("", name)
    if not name or is_generated(name) or name.startswith("const_fold"):
        return None
    if "/" in name:
        return keras_layer_from_tensor(name)
    for pat in (r"^(.+)\.[wb]_\d+$", r"^(.+?)_(weights|offset|bias|scale|mean|variance)$",
                r"^(.+)\.(weight|bias|running_mean|running_var)$"):
        m = re.match(pat, name)
        if m and not is_generated(m.group(1)):
            return m.group(1)
    return None


def _dynamo_scope(node: onnx.NodeProto) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(p.value)
            except ValueError:
                try:
                    scopes = eval_list(p.value)
                except ValueError:
                    return None
            if not isinstance(scopes, list):
                return None
            # ['', 'features', 'features.0', 'conv2d'] -> module path is the last scope that
            # looks like a module path; the very last one is the op's own name.
            mods = [s for s in scopes[:-1] if s]
            return mods[-1] if mods else None
    return None


def eval_list(text: str) -> list[str]:
    """Parse the ``['a', 'b']`` repr the dynamo exporter stores, without eval."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(text)
    return [s.strip().strip("'\"") for s in body[1:-1].split(",")]


def _recorded(model: onnx.ModelProto) -> dict[str, str]:
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        rec = json.loads(meta.get("onnxact.layer_names", "{}"))
    except (ValueError, TypeError):
        return {}
    return {str(k): str(v) for k, v in rec.items()} if isinstance(rec, dict) else {}


class _Namer:
    """Shared state of one model's naming: recorded names, legacy repeated calls, param lookup."""

    def __init__(self, model: onnx.ModelProto, producers: Mapping[str, onnx.NodeProto]) -> None:
        self.recorded = _recorded(model)
        self.producers = producers
        self.repeated = _repeated_calls(model.graph)
        self.inits = {t.name for t in model.graph.initializer}
        self.consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
        self._own: dict[str, str | None] = {}

    def scope(self, node: onnx.NodeProto) -> str | None:
        """The framework name the node's own scope gives (dynamo, legacy path, Keras/tf2onnx scope)."""
        return (_dynamo_scope(node) or torch_module_from_node(node.name, self.repeated)
                or keras_layer_from_tensor(node.name + ":0"))

    def param(self, node: onnx.NodeProto, index: int) -> str | None:
        """The layer named by the node's ``index``-th input when it is a weight (through casts/transposes)."""
        if len(node.input) <= index or not node.input[index]:
            return None
        t = node.input[index]
        for _ in range(4):
            if t in self.inits or t in self.consts:
                return param_layer(t)
            p = self.producers.get(t)
            if p is None or p.op_type not in ("Transpose", "Cast", "Identity", "Reshape", "DequantizeLinear",
                                              "Unsqueeze", "Squeeze") or not p.input:
                return param_layer(t)
            t = p.input[0]
        return None

    def own(self, t: str) -> str | None:
        """Framework name of tensor ``t`` from its producer alone (None when nothing names it)."""
        if t not in self._own:
            self._own[t] = self._read_own(t)
        return self._own[t]

    def _read_own(self, t: str) -> str | None:
        name = self.recorded.get(t)
        if name is not None:
            return name
        node = self.producers.get(t)
        if node is not None:
            name = _dynamo_scope(node) or torch_module_from_node(node.name, self.repeated)
        if name is None:
            name = keras_layer_from_tensor(t)
        if name is None and node is not None and is_generated(t):
            name = keras_layer_from_tensor(node.name + ":0")
            if name is None and node.op_type in _ATTACHED + _CONV_OPS:
                # a fused conv (tf2onnx Conv__99) holds its BN's value when the bias came from that BN
                w = self.param(node, 1)
                b = self.param(node, 2) if node.op_type in _CONV_OPS else None
                name = b if b is not None and b != w else w
        if name is None:
            m = _PADDLE_VAR.match(t)
            name = m.group(1) if m else None
        return name


@dataclass(frozen=True)
class ModelNames:
    """What :func:`name_model` returns.

    ``tensors``: every float tensor -> its unique key (``Model.all_layers``).
    ``layers``: each default-capture tensor -> (layer key, fused framework names in graph order).
    ``aliases``: torch container module -> the tensor that is its output (selectable by that name).
    """

    tensors: dict[str, str]
    layers: dict[str, tuple[str, tuple[str, ...]]]
    aliases: dict[str, str]


def simple_names(
    model: onnx.ModelProto, tensors: Sequence[str], producers: Mapping[str, onnx.NodeProto]
) -> dict[str, str]:
    """Unique framework-style name for each tensor in ``tensors`` (all float tensors, graph order).

    Within one framework layer several tensors may exist (Conv, then Relu): the last tensor of
    the layer (its output) gets the bare layer name, earlier ones ``layer/OpType``. A tensor no
    source names keeps its ONNX name, unless that name was made up by the exporter: then it is
    named by its op and order (``conv_12``, ``relu_3``).
    """
    return _tensor_names(_Namer(model, producers), model, tensors)


def _op_order_names(model: onnx.ModelProto) -> dict[str, str]:
    """``{tensor: opname_k}`` for the first output of every node, numbered per op type in graph order."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if not node.output or not node.output[0]:
            continue
        op = node.op_type.lower()
        k = counts.get(op, 0)
        counts[op] = k + 1
        out[node.output[0]] = op if k == 0 else f"{op}_{k}"
    return out


def _tensor_names(namer: _Namer, model: onnx.ModelProto, tensors: Sequence[str]) -> dict[str, str]:
    producers = namer.producers
    raw: dict[str, str | None] = {}
    for t in tensors:
        name = namer.own(t)
        node = producers.get(t)
        if name is None and node is not None and node.op_type == "DequantizeLinear":
            # QDQ models: x -> QuantizeLinear -> DequantizeLinear belongs to the layer that made x
            q = producers.get(node.input[0]) if node.input else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input:
                name = raw.get(q.input[0])
        raw[t] = name
    numbered = _op_order_names(model) if any(raw[t] is None and is_generated(t) for t in tensors) else {}
    last_of: dict[str, str] = {}
    for t in tensors:
        n = raw[t]
        if n:
            last_of[n] = t
    last_in = _last_in_subtree(tensors, raw)
    result: dict[str, str] = {}
    used: set[str] = set()
    for i, t in enumerate(tensors):
        n = raw[t]
        if n is None:
            cand = numbered.get(t, t) if is_generated(t) else t
        elif last_of[n] == t and last_in.get(n, i) == i:
            # the module's output: its last tensor, unless a child module computes after it
            # (a C2f's Concat is not the C2f's output; its cv2 is)
            cand = n
        else:
            op = producers[t].op_type if t in producers else "tensor"
            cand = f"{n}/{op}"
        result[t] = _unique(cand, used)
    return result


def _last_in_subtree(tensors: Sequence[str], raw: Mapping[str, str | None]) -> dict[str, int]:
    """For each torch module path (and every ancestor), the index of the last tensor made inside it."""
    last_in: dict[str, int] = {}
    for i, t in enumerate(tensors):
        n = raw.get(t)
        if not n or "/" in n:
            continue
        parts = n.split(":")[0].split(".")
        for k in range(1, len(parts)):
            last_in[".".join(parts[:k])] = i
        last_in[n] = i
    return last_in


def _container_aliases(tensors: Sequence[str], raw: Mapping[str, str | None], names: Mapping[str, str]) -> dict[str, str]:
    """``{module path: tensor}`` for torch containers (``layer1.0``, ``model.4``) that no tensor is
    named after: a container's output is the last tensor computed inside it."""
    taken = set(names.values())
    parents = {n.split(":")[0].rpartition(".")[0] for n in raw.values() if n and "/" not in n and "." in n}
    return {p: tensors[i] for p, i in _last_in_subtree(tensors, raw).items() if p not in taken and any(
        q == p or q.startswith(p + ".") for q in parents)}


def _unique(cand: str, used: set[str]) -> str:
    base, k = cand, 1
    while cand in used:
        k += 1
        cand = f"{base}:{k}" if ":" not in base else f"{base}_{k}"
    used.add(cand)
    return cand


def _chain(captured: str, op_type: str, producers: Mapping[str, onnx.NodeProto],
           order: Mapping[int, int]) -> list[onnx.NodeProto]:
    """Nodes from the layer's defining op (Conv / pool) to the one that made ``captured``, in graph order.

    Walks back (breadth first) over every non-constant input (``x * Sigmoid(x)`` has two paths
    back to the conv) and stops at the defining op; the defining op comes first, and only nodes
    that compute from it follow. Side inputs are not part of the layer: a dynamically quantized
    conv's scale and bias are computed from ``DynamicQuantizeLinear`` of the layer's input (which
    leads back to the layer before, never walked into).
    """
    tail = producers.get(captured)
    if tail is None:
        return []
    if tail.op_type == op_type:
        return [tail]
    seen: dict[int, onnx.NodeProto] = {}
    heads: list[onnx.NodeProto] = []
    todo = [tail]
    while todo and len(seen) < 24:
        node = todo.pop(0)
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if node.op_type == op_type:
            heads.append(node)
            continue
        for i in node.input:
            p = producers.get(i) if i else None
            if p is not None and p.op_type not in ("Constant", "DynamicQuantizeLinear"):
                todo.append(p)
    if not heads:
        return [tail]
    head = max(heads, key=lambda n: order.get(id(n), 0))  # the nearest: an earlier one feeds it
    made = set(head.output)
    rest: list[onnx.NodeProto] = []
    for n in sorted((n for n in seen.values() if n is not head), key=lambda n: order.get(id(n), 0)):
        if any(i in made for i in n.input):
            rest.append(n)
            made.update(n.output)
    return [head, *rest]


def _wraps_only(parent: str, chain: Sequence[onnx.NodeProto], inside: Mapping[str, list[onnx.NodeProto]]) -> bool:
    """True when module ``parent`` computes this layer and nothing after it: no other conv or pool
    inside it, and nothing inside it reads the layer's tensors except the layer's own nodes."""
    members = {id(n) for n in chain}
    made = {o for n in chain for o in n.output}
    for node in inside.get(parent, ()):
        if id(node) in members:
            continue
        if node.op_type in _CONV_OPS or "Pool" in node.op_type or any(i in made for i in node.input):
            return False
    return True


def _parent(path: str) -> str:
    return path.split(":")[0].rpartition(".")[0]


def _inside(path: str | None, parent: str) -> bool:
    return bool(path) and path.split(":")[0].startswith(parent + ".")  # type: ignore[union-attr]


def name_model(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    captured: Sequence[tuple[str, str]],
    producers: Mapping[str, onnx.NodeProto],
) -> ModelNames:
    """Name every float tensor (``tensors``) and every default layer (``captured``: (tensor, defining op)).

    A layer's key, best first: the conv's own name (scope, or its weights' name), then the name
    of the captured tensor (recorded by a converter or a meaningful ONNX name), then the op and
    order of the conv (``conv_3``). Keys are unique among layers (a module called twice gets
    ``name:2``); ``fused`` lists the framework names of the BN / activation tensors after the
    conv (and the conv's own name when a wrapper module's name is the key), each a key of
    ``tensors`` so it can be selected exactly.
    """
    namer = _Namer(model, producers)
    per_tensor = _tensor_names(namer, model, tensors)
    numbered = _op_order_names(model)
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    chains = {t: _chain(t, op, producers, order) for t, op in captured}
    inside = _submodule_nodes(model.graph, namer)
    base: dict[str, tuple[str, list[str]]] = {}
    for t, _op in captured:
        chain = chains[t]
        name, scoped = _layer_name(namer, t, chain, numbered, per_tensor)
        if scoped is not None and _is_wrapper_of(namer, scoped, chain, inside):
            name = _parent(scoped)
        base[t] = (name, _fused_names(namer, chain, name, per_tensor))
    # several convs under one name (a Keras SeparableConv2D: depthwise, then pointwise + BN + act):
    # the last one is the layer's output and keeps the name, earlier ones are parts ("name/depthwise")
    last_of = {name: t for t, (name, _f) in base.items()}
    layers: dict[str, tuple[str, tuple[str, ...]]] = {}
    used: set[str] = set()
    for t, (name, fused) in base.items():
        if last_of[name] != t:
            head = chains[t][0] if chains[t] else None
            part = head.name.rsplit("/", 1)[-1] if head is not None and head.name else ""
            name = f"{name}/{part if part and not is_generated(part) else (head.op_type if head else 'part')}"
        key = _unique(name, used)
        layers[t] = (key, tuple(f for f in fused if f != key))
    raw = {t: namer.own(t) for t in tensors}
    aliases = {p: t for p, t in _container_aliases(tensors, raw, per_tensor).items() if p not in used}
    return ModelNames(per_tensor, layers, aliases)


def _layer_name(namer: _Namer, t: str, chain: Sequence[onnx.NodeProto], numbered: Mapping[str, str],
                per_tensor: Mapping[str, str]) -> tuple[str, str | None]:
    """(key, the conv's own scope name or None) of the layer captured at ``t``, before wrappers."""
    head = chain[0] if chain else None
    scoped = namer.scope(head) if head is not None else None
    if head is not None and head.op_type in _CONV_OPS and _dynamo_scope(head) is not None:
        # dynamo puts a folded conv in its BN's scope; the conv's weights keep the conv's name
        scoped = namer.param(head, 1) or scoped
    rec_t = namer.recorded.get(t)
    rec_head = namer.recorded.get(head.output[0]) if head is not None and head.output else None
    conv_name = (scoped or namer.param(head, 1)) if head is not None and head.op_type in _CONV_OPS else None
    # a lone conv whose recorded name is not its own holds a folded BN's value: the conv names the layer
    folded_conv = len(chain) == 1 and conv_name not in (None, rec_t)
    if rec_t is not None and not folded_conv and (
            rec_head is None or rec_head == rec_t or rec_head.startswith(rec_t + "/")):
        return rec_t, None  # a converter recorded conv + activation as one layer (Conv2D(activation=...))
    name = scoped
    if name is None and head is not None and head.op_type in _CONV_OPS + _ATTACHED:
        name = namer.param(head, 1)
    if name is None:
        own_t = namer.own(t)
        name = own_t if own_t is not None else (None if is_generated(t) else t)
    if name is None and head is not None:
        name = numbered.get(head.output[0])
    return name or per_tensor.get(t, t), scoped


def _submodule_nodes(graph: onnx.GraphProto, namer: _Namer) -> dict[str, list[onnx.NodeProto]]:
    """``{torch module path: the nodes made inside its sub-modules}`` (legacy paths, dynamo scopes)."""
    inside: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        if n.op_type == "Constant" or not (n.name.startswith("/") or n.metadata_props):
            continue
        path = namer.scope(n)
        if path and "." in path:
            parts = path.split(":")[0].split(".")
            for k in range(1, len(parts)):
                inside.setdefault(".".join(parts[:k]), []).append(n)
    return inside


def _is_wrapper_of(namer: _Namer, scoped: str, chain: Sequence[onnx.NodeProto],
                   inside: Mapping[str, list[onnx.NodeProto]]) -> bool:
    """Does the conv's parent module compute exactly this conv and the BN / activation after it
    (Ultralytics' ``Conv``, torchvision's ``Conv2dNormActivation``)? Then its name is the key."""
    head = chain[0] if chain else None
    if head is None or head.op_type not in _CONV_OPS or "." not in scoped:
        return False
    parent = _parent(scoped)
    last = namer.own(chain[-1].output[0])
    return bool(parent and _inside(last, parent) and last != scoped and not _inside(last, scoped.split(":")[0])
                and _wraps_only(parent, chain, inside))


def _fused_names(namer: _Namer, chain: Sequence[onnx.NodeProto], name: str,
                 per_tensor: Mapping[str, str]) -> list[str]:
    """Framework names of the tensors after the conv (its BN, its activation), each selectable
    exactly; the conv's own tensor counts when something else names it (a BN folded into it, or
    the conv module when a wrapper is the key)."""
    head = chain[0] if chain else None
    fused: list[str] = []
    for node in chain:
        o = node.output[0] if node.output else ""
        n = per_tensor.get(o)
        if not n or "/" in n or n == name or n in fused:
            continue
        if namer.own(o) is None and (node is head or is_generated(o)):
            continue
        if _PADDLE_VAR.match(o) and head is not None and namer.own(o) == namer.own(head.output[0]):
            continue  # the conv op's own Paddle variable (conv2d_55.tmp_0, + bias: .tmp_1)
        fused.append(n)
    return fused


def closest(name: str, choices: Sequence[str], n: int = 5) -> list[str]:
    """The names most like ``name`` (for "did you mean ..." messages; never used to substitute)."""
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if len(hits) < n:
        hits += [c for c in choices if name.lower() in c.lower() and c not in hits][: n - len(hits)]
    return hits


_BN_LIKE = re.compile(r"(batch_?norm|(^|[._/])bn\d*($|[._/])|_bn$|^bn)", re.IGNORECASE)


def folded_hint(name: str, model: onnx.ModelProto, names: Sequence[str] = ()) -> str | None:
    """Why a BN-like name may be missing: the exporter folded BatchNormalization into the conv.

    Said only when the graph has no BatchNormalization node and no other BN-like name (``names``:
    the model's layer names), so a typo in a model whose BNs are all there is just a typo.
    """
    if not _BN_LIKE.search(name):
        return None
    if any(n.op_type == "BatchNormalization" for n in model.graph.node) or any(_BN_LIKE.search(n) for n in names):
        return None
    return (f"'{name}' looks like a BatchNormalization layer, and this export has none: the exporter folded it "
            "into the conv before it (that conv's layer holds its value); re-export with keep_batchnorm=True "
            "(onnxact.converters.from_torch / from_keras) to capture it on its own")


_PASS_THROUGH = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose")


def output_keys(
    model: onnx.ModelProto, producers: Mapping[str, onnx.NodeProto], tensor_names: Mapping[str, str]
) -> dict[str, str]:
    """``{ONNX output name: key}`` for the model's own outputs.

    An output keeps its ONNX name when that name means something (``output0``, ``probs``);
    a made-up one (tf2onnx's ``Identity:0``, a legacy ``843``) takes the framework name of the
    layer that computes it (``predictions``), looking through Identity / Cast / Reshape.
    """
    namer = _Namer(model, producers)
    out: dict[str, str] = {}
    used: set[str] = set()
    for o in model.graph.output:
        key = None
        node = producers.get(o.name)
        # dynamo names tensors after aten ops ("linear", "relu_1"): as made up as "Identity:0"
        if is_generated(o.name) or (node is not None and node.name == f"node_{o.name}" and _dynamo_scope(node)):
            t = o.name
            for _ in range(4):
                key = namer.own(t)
                node = producers.get(t)
                if key is not None or node is None or node.op_type not in _PASS_THROUGH or not node.input:
                    break
                t = node.input[0]
            if key is None and t in tensor_names and not is_generated(tensor_names[t]):
                key = tensor_names[t]
            if key is not None and "/" in key:  # a part of a layer ("dense/BiasAdd"): the layer
                key = key.split("/")[0]
        out[o.name] = _unique(key or o.name, used)
    return out
