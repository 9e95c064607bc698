"""Writing onnxact's metadata into converted ONNX models, plus small ONNX helpers the converters share.

The keys are the contract in docs/CONTRACTS.md: ``onnxact.framework``, ``onnxact.layer_names``
(JSON ``{onnx tensor: framework layer name}``), ``onnxact.source_layout``, ``onnxact.class_names``
and ``onnxact.preprocess``. Only numpy, onnx and onnxruntime are imported here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "set_metadata", "get_metadata", "tensor_values", "remove_dead_nodes", "cancel_transpose_pairs", "arrays_match",
]


def set_metadata(
    proto,
    *,
    framework: str | None = None,
    layer_names: Mapping[str, str] | None = None,
    source_layout: str | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> None:
    """Set (replace) the ``onnxact.*`` metadata entries on ``proto`` in place; None leaves a key as it is."""
    values: dict[str, str] = {}
    if framework is not None:
        values["onnxact.framework"] = framework
    if layer_names is not None:
        values["onnxact.layer_names"] = json.dumps(dict(layer_names))
    if source_layout is not None:
        values["onnxact.source_layout"] = source_layout
    if class_names is not None:
        values["onnxact.class_names"] = json.dumps([str(c) for c in class_names])
    if preprocess is not None:
        values["onnxact.preprocess"] = json.dumps(dict(preprocess))
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for k, v in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def get_metadata(proto) -> dict[str, str]:
    """The model's metadata_props as a plain dict."""
    return {p.key: p.value for p in proto.metadata_props}


def remove_dead_nodes(graph) -> None:
    """Drop nodes of ``graph`` whose outputs no longer reach a graph output (in place)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraph inputs from the outer scope
                for g in list(attr.g and [attr.g] or []) + list(attr.graphs):
                    for n in g.node:
                        needed.update(i for i in n.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = needed | {o for n in keep for o in n.output}
    init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(init)
    vi = [v for v in graph.value_info if v.name in used]
    del graph.value_info[:]
    graph.value_info.extend(vi)


def cancel_transpose_pairs(graph) -> int:
    """Bypass ``Transpose(Transpose(x))`` pairs that compose to the identity (in place); returns how many.

    Why: exporting with every layer as an output (``from_keras(keep_batchnorm=True)``) leaves
    NCHW -> NHWC -> NCHW round trips behind once those outputs are removed again.
    """
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    renames: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Transpose" or node.output[0] in outputs:
            continue
        src = producer.get(node.input[0])
        if src is None or src.op_type != "Transpose":
            continue
        p1 = next((list(a.ints) for a in src.attribute if a.name == "perm"), None)
        p2 = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if p1 is None or p2 is None or len(p1) != len(p2):
            continue
        if [p1[i] for i in p2] == list(range(len(p1))):
            renames[node.output[0]] = src.input[0]
    if renames:
        for node in graph.node:
            for i, name in enumerate(node.input):
                while name in renames:
                    name = renames[name]
                node.input[i] = name
        remove_dead_nodes(graph)
    return len(renames)


def tensor_values(proto, feeds: Mapping[str, np.ndarray], tensors: Iterable[str]) -> dict[str, np.ndarray]:
    """Run ``proto`` with onnxruntime and return the values of the named intermediate tensors.

    Used only to verify, at conversion time, which ONNX tensor holds which framework layer's output.
    Tensors are promoted as name-only outputs (onnx.checker refuses them; onnxruntime runs them, same numbers).
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    existing = {o.name for o in m.graph.output}
    wanted = [t for t in dict.fromkeys(tensors) if t]
    for t in wanted:
        if t not in existing:
            m.graph.output.add().name = t
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = sess.run(wanted, dict(feeds))
    return dict(zip(wanted, out))


def _layout_candidates(onnx_arr: np.ndarray, ref_shape: tuple[int, ...]) -> list[np.ndarray]:
    """Views of an ONNX tensor that could equal a framework tensor of ``ref_shape`` (channels-first -> last)."""
    cands = []
    if onnx_arr.shape == tuple(ref_shape):
        cands.append(onnx_arr)
    if onnx_arr.ndim >= 3:
        perm = (0, *range(2, onnx_arr.ndim), 1)  # NC... -> N...C
        t = np.transpose(onnx_arr, perm)
        if t.shape == tuple(ref_shape):
            cands.append(t)
    if not cands and onnx_arr.size == int(np.prod(ref_shape)) and onnx_arr.ndim != len(ref_shape):
        cands.append(onnx_arr.reshape(ref_shape))  # e.g. GlobalAveragePool (N,C,1,1) vs (N,C)
    return cands


def arrays_match(onnx_arr: np.ndarray, ref: np.ndarray, rtol: float = 1e-3) -> bool:
    """True when the ONNX tensor equals the framework tensor, allowing a channels-first/last difference."""
    ref = np.asarray(ref)
    if not np.issubdtype(ref.dtype, np.floating) or not np.issubdtype(np.asarray(onnx_arr).dtype, np.floating):
        return False
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    atol = 1e-5 + 1e-4 * scale
    for c in _layout_candidates(np.asarray(onnx_arr), tuple(ref.shape)):
        if np.allclose(c, ref, rtol=rtol, atol=atol):
            return True
    return False
