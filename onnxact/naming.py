"""Map ONNX tensors back to the framework's layer names.

Why: users think in ``features.0`` or ``conv2d_1``, not in ``/features/features.0/Conv_output_0``.
Sources, best first: names recorded by onnxact's converters (metadata ``onnxact.layer_names``),
the dynamo exporter's ``pkg.torch.onnx.name_scopes`` node metadata, the legacy exporter's
``/a/a.0/Conv`` node names, Keras/tf2onnx ``model_1/conv1_1/Relu:0`` tensor names, and last the
ONNX tensor name itself. Names are made unique over every tensor of the model once, so the same
tensor always gets the same key whatever subset is captured.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence

import onnx

__all__ = ["simple_names", "closest", "keras_layer_from_tensor", "torch_module_from_node"]

_KERAS_SUFFIX = re.compile(r"_\d+$")


def keras_layer_from_tensor(tensor: str) -> str | None:
    """``model_1/conv1_1/Relu:0`` -> ``conv1``; ``sequential/conv2d/BiasAdd:0`` -> ``conv2d``."""
    if "/" not in tensor:
        return None
    parts = tensor.split("/")
    if len(parts) < 3:
        return None
    layer = parts[1]
    # Keras 3 export appends "_1" to both the model and the layer scope.
    if _KERAS_SUFFIX.search(parts[0]) and _KERAS_SUFFIX.search(layer):
        layer = _KERAS_SUFFIX.sub("", layer)
    return layer or None


def torch_module_from_node(node_name: str) -> str | None:
    """Legacy exporter node ``/features/features.0/Conv`` -> ``features.0``; ``/conv1/Conv`` -> ``conv1``."""
    if not node_name.startswith("/"):
        return None
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return None
    return parts[-2]


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


def simple_names(
    model: onnx.ModelProto, tensors: Sequence[str], producers: Mapping[str, onnx.NodeProto]
) -> dict[str, str]:
    """Unique framework-style name for each tensor in ``tensors`` (all float tensors, graph order).

    Within one framework layer several tensors may exist (Conv, then Relu): the last tensor of
    the layer (its output) gets the bare layer name, earlier ones ``layer/OpType``.
    """
    meta = {p.key: p.value for p in model.metadata_props}
    recorded: dict[str, str] = {}
    if "onnxact.layer_names" in meta:
        try:
            recorded = dict(json.loads(meta["onnxact.layer_names"]))
        except (ValueError, TypeError):
            recorded = {}
    raw: dict[str, str | None] = {}
    for t in tensors:
        node = producers.get(t)
        name: str | None = recorded.get(t)
        if name is None and node is not None:
            name = _dynamo_scope(node) or torch_module_from_node(node.name)
        if name is None:
            name = keras_layer_from_tensor(t)
        if name is None and node is not None and node.op_type == "DequantizeLinear":
            # QDQ models: x -> QuantizeLinear -> DequantizeLinear belongs to the layer that made x
            q = producers.get(node.input[0]) if node.input else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input:
                name = raw.get(q.input[0])
        raw[t] = name
    # Group by layer name, keep order; last tensor of a group keeps the bare name.
    last_of: dict[str, str] = {}
    for t in tensors:
        n = raw[t]
        if n:
            last_of[n] = t
    result: dict[str, str] = {}
    used: set[str] = set()
    for t in tensors:
        n = raw[t]
        if n is None:
            cand = t
        elif last_of[n] == t:
            cand = n
        else:
            op = producers[t].op_type if t in producers else "tensor"
            cand = f"{n}/{op}"
        base, k = cand, 1
        while cand in used:
            cand = f"{base}_{k}"
            k += 1
        used.add(cand)
        result[t] = cand
    # A recorded/bare name that ended up with a suffix while the tensor itself is free: fine.
    return result


def closest(name: str, choices: Sequence[str], n: int = 5) -> list[str]:
    """The names most like ``name`` (for "did you mean ..." messages)."""
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if len(hits) < n:
        hits += [c for c in choices if name.lower() in c.lower() and c not in hits][: n - len(hits)]
    return hits
