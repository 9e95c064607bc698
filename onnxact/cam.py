"""Class activation maps without gradients: exact CAM for GAP -> FC heads, EigenCAM otherwise.

Why no gradients: onnxruntime inference builds have none, and for the most common head
(GlobalAveragePool -> [Flatten/Reshape] -> Gemm/MatMul) none are needed: the logit of class k
is ``b_k + mean_hw(sum_c W[k, c] * F[c, h, w])``, so ``sum_c W[k, c] * F[c]`` (the CAM of Zhou
et al. 2016) is exact and its spatial mean plus the bias *is* the logit. The class weights are
read straight from the graph's initializers. Heads of any other shape (Flatten -> Dense, like
the seed's CNN, or a hidden layer after the pool) and detectors get EigenCAM: the first
principal component of the last spatial map feeding the head (:mod:`onnxact.heads` picks it),
which is class-agnostic; the result says which layer and why (``reason``, ``why``, ``caption``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import InputError
from .graph import node_attr
from .heads import (
    cam_targets,
    classifier_outputs,
    find_layer_tensor,
    head_summary,
    linear_head_end,
    same_map,
    static_shapes,
)

__all__ = ["CamHead", "CamResult", "find_cam_head", "cam_from_features", "eigencam", "class_activation_map"]

_PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Identity", "Dropout", "Cast"}


@dataclass
class CamHead:
    """Where the exact CAM comes from: the pooled feature tensor and the class weights ``(K, C)``."""

    feature_tensor: str
    weights: np.ndarray
    bias: np.ndarray | None
    feature_layout: str  # NCHW or NHWC
    pool_node: str
    fc_node: str
    output: str | None = None  # the graph output the linear layer's classes reach


@dataclass
class CamResult:
    """A class activation map at the feature map's resolution (``map``: raw values, ``(H, W)``)."""

    map: np.ndarray
    method: str  # "cam" (exact) or "eigencam" (class-agnostic)
    layer: str
    class_index: int | None = None
    class_name: str | None = None
    score: float | None = None
    scores: np.ndarray | None = field(default=None, repr=False)
    reason: str = ""  # why this layer ("the last spatial map feeding the classifier head", ...)
    why: str = ""  # why this method (EigenCAM: "the head has a hidden layer ...")
    output: str | None = None  # the classifier output the class index refers to

    def normalized(self) -> np.ndarray:
        """The map scaled to [0, 1]; a constant map is all zeros (never NaN)."""
        m = np.nan_to_num(self.map.astype(np.float32))
        lo, hi = float(m.min()), float(m.max())
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)

    def overlay(self, image: Any, cmap: Any = "jet", alpha: float = 0.4, index: int = 0) -> Any:
        """The map resized bilinearly onto ``image`` and blended -> PIL image."""
        from .render import overlay

        return overlay(image, self.map, cmap=cmap, alpha=alpha, index=index)

    @property
    def title(self) -> str:
        what = "CAM" if self.method == "cam" else "EigenCAM (class-agnostic)"
        cls = ""
        if self.class_index is not None and self.method == "cam":
            cls = f" | class {self.class_index}" + (f" {self.class_name}" if self.class_name else "")
            if self.score is not None:
                cls += f" (score {self.score:.3g})"
        return f"{what} | {self.layer}{cls}"

    @property
    def caption(self) -> str:
        """The title plus why this layer and why this method, for the report and the viewer."""
        out = self.title + (f". Layer: {self.reason}" if self.reason else "")
        return out + (f". {self.why[0].upper()}{self.why[1:]}" if self.why else "") + "."


# ----------------------------------------------------------------------------- graph reading
class _Constants(Mapping[str, np.ndarray]):
    """Initializers and Constant outputs, each read on first use from the model's own folder.

    Why lazy: the head needs two small tensors; reading every initializer would pull a big
    model's external weights into memory. Why a folder: external data is read relative to the
    model (:func:`onnxact.model.read_tensor`), never to the working directory.
    """

    def __init__(self, graph: onnx.GraphProto, base_dir: Path | None) -> None:
        self._protos: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self._protos[n.output[0]] = a.t
        self._base = base_dir
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            from .model import read_tensor

            self._read[name] = read_tensor(self._protos[name], self._base)
        return self._read[name]

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)


def _pool_layout(node: onnx.NodeProto, consts: Mapping[str, np.ndarray],
                 shapes: Mapping[str, Sequence[Any]] | None = None) -> str | None:
    """NCHW / NHWC when ``node`` averages exactly the spatial axes of a 4-D map, else None.

    An AveragePool whose unpadded kernel covers the whole map (tf2onnx's ResNet head:
    ``AvgPool 7x7`` on a 7x7 map) is a global average too, when ``shapes`` says the map's size.
    """
    if node.op_type == "GlobalAveragePool":
        return "NCHW"
    if node.op_type == "AveragePool":
        dims = (shapes or {}).get(node.input[0])
        kernel = list(node_attr(node, "kernel_shape", []))
        pads = list(node_attr(node, "pads", []))
        unpadded = not any(pads) and node_attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID", "NOTSET", "VALID")
        full = dims is not None and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:])
        return "NCHW" if unpadded and full and kernel == list(dims[2:]) else None
    if node.op_type != "ReduceMean":
        return None
    axes = node_attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = consts[node.input[1]].tolist()
    if axes is None:
        return None
    axes = sorted(int(a) % 4 for a in axes)
    return {(2, 3): "NCHW", (1, 2): "NHWC"}.get(tuple(axes))


def find_cam_head(proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None = None,
                  output: str | None = None, shapes: Mapping[str, Sequence[Any]] | None = None) -> CamHead | None:
    """Find a GlobalAveragePool (or spatial ReduceMean) feeding a Gemm/MatMul through
    reshape-like ops only, whose result reaches a graph output through softmax / reshape-like
    ops only, and read its class weights; None when the model has no such head.

    ``base_dir`` is the model's folder (``Model.external_data_dir``), where weights kept in
    external data files are read from. ``output``: the head of that graph output (a model with
    an ``age`` and a ``gender`` linear layer on one pooled vector has one head each); default
    the last head in graph order. ``shapes`` (``{tensor: dims}``, e.g. ``Model.shapes``) lets an
    AveragePool whose kernel covers the whole map count as the global pool.
    """
    graph = proto.graph
    consts = _Constants(graph, Path(base_dir) if base_dir is not None else None)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found: CamHead | None = None
    for pool in graph.node:
        layout = _pool_layout(pool, consts, shapes)
        if layout is None or not pool.output:
            continue
        cur = pool.output[0]
        nxt: list[onnx.NodeProto] = []
        for _ in range(8):
            nxt = [c for c in consumers.get(cur, []) if c.op_type not in ("Shape", "Size")]  # reshape plumbing
            if len(nxt) == 1 and nxt[0].op_type in _PASS_THROUGH:
                cur = nxt[0].output[0]
                continue
            break
        for node in nxt:  # one linear layer per classifier output that reads the pooled vector
            head = _linear_head(graph, node, cur, consts, consumers)
            if head is not None and (output is None or head[2] == output):
                found = CamHead(pool.input[0], head[0], head[1], layout, pool.name or pool.output[0],
                                node.name or node.output[0], head[2])
    return found


def _linear_head(graph: onnx.GraphProto, node: onnx.NodeProto, cur: str, consts: Mapping[str, np.ndarray],
                 consumers: Mapping[str, list[onnx.NodeProto]]) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """(class weights (K, C), bias, graph output) when ``node`` is a linear layer on ``cur`` whose
    result is a graph output (through softmax / reshapes only), else None."""
    if node.op_type not in ("Gemm", "MatMul") or node.input[0] != cur:
        return None
    if len(node.input) < 2 or node.input[1] not in consts:
        return None
    b = consts[node.input[1]].astype(np.float64)
    if b.ndim != 2:
        return None
    bias = None
    end = node.output[0]
    if node.op_type == "Gemm":
        if node_attr(node, "transA", 0):
            return None
        w = b if node_attr(node, "transB", 0) else b.T
        w = w * float(node_attr(node, "alpha", 1.0))
        if len(node.input) > 2 and node.input[2] in consts:
            bias = consts[node.input[2]].astype(np.float64).reshape(-1) * float(node_attr(node, "beta", 1.0))
    else:
        w = b.T
        mm = node.output[0]
        after = consumers.get(mm, [])
        while len(after) == 1 and after[0].op_type == "Cast":  # a float16 export's casts around the bias
            mm = after[0].output[0]
            after = consumers.get(mm, [])
        if len(after) == 1 and after[0].op_type == "Add":
            other = [i for i in after[0].input if i != mm]
            if other and other[0] in consts:
                bias = consts[other[0]].astype(np.float64).reshape(-1)
                end = after[0].output[0]
    # Only a linear layer whose result *is* the class output has class weights: behind a
    # hidden layer (GAP -> Dense 128 -> ReLU -> Dense 4) its rows are hidden units.
    output = linear_head_end(graph, end, consumers)
    return None if output is None else (w, bias, output)


# ----------------------------------------------------------------------------- the maps
def cam_from_features(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """``sum_c weights[class_index, c] * features[c]`` for features ``(C, H, W)`` -> ``(H, W)``."""
    f = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if f.ndim != 3 or w.ndim != 2 or w.shape[1] != f.shape[0]:
        raise InputError(f"CAM needs features (C, H, W) and weights (K, C); got {f.shape} and {w.shape}")
    if not 0 <= class_index < w.shape[0]:
        raise InputError(f"class index {class_index} is out of range: the head has {w.shape[0]} classes")
    return np.tensordot(w[class_index], f, axes=1).astype(np.float32)


def eigencam(features: np.ndarray) -> np.ndarray:
    """First principal component of ``(C, H, W)`` features projected per pixel -> ``(H, W)``.

    The sign of a principal component is arbitrary; it is chosen so the map correlates
    positively with the mean over channels (bright where the layer fires).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3:
        raise InputError(f"EigenCAM needs features (C, H, W), got shape {f.shape}")
    c, h, w = f.shape
    a = np.nan_to_num(f.reshape(c, h * w).T)
    a = a - a.mean(axis=0, keepdims=True)
    if not np.any(a):
        return np.zeros((h, w), np.float32)
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    proj = a @ vt[0]
    ref = f.mean(axis=0).ravel()
    if np.dot(proj - proj.mean(), ref - ref.mean()) < 0:
        proj = -proj
    return proj.reshape(h, w).astype(np.float32)


def _chw(arr: np.ndarray, layout: str, sample: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 4:
        raise InputError(f"a class activation map needs a 4-D feature map, got shape {a.shape}")
    if not -a.shape[0] <= sample < a.shape[0]:
        raise InputError(f"sample {sample} is out of range: the batch has {a.shape[0]}")
    s = a[sample]
    return np.moveaxis(s, -1, 0) if layout == "NHWC" else s


def _graph_output(m: Any, key: str | None, outputs: Mapping[str, Any]) -> str | None:
    """The graph output name behind an ``outputs`` key (keys may be framework names, same order)."""
    if key is None or key in m.output_names:
        return key
    tensors = getattr(outputs, "tensors", None) or {}
    if tensors.get(key) in m.output_names:
        return tensors[key]
    keys = list(outputs)
    if len(keys) == len(m.output_names) and key in keys:
        return m.output_names[keys.index(key)]
    return None


def _row(v: Any, sample: int) -> np.ndarray | None:
    a = np.asarray(v)
    if a.ndim == 0 or not -a.shape[0] <= sample < a.shape[0]:
        return None
    return a[sample].reshape(-1).astype(np.float64)


def _fetch(m: Any, acts: Any, feeds: Mapping[str, np.ndarray], tensors: Sequence[str]
           ) -> dict[str, tuple[np.ndarray, str, str]]:
    """{tensor: (array, layout, layer name)}: from the capture, the rest in one more run on
    ``feeds`` (one run and one session, however many candidate maps were not captured)."""
    from .run import run_model

    out: dict[str, tuple[np.ndarray, str, str]] = {}
    for k, info in (getattr(acts, "layers", None) or {}).items():
        t = getattr(info, "tensor", None)
        if t in tensors and t not in out and k in acts:
            out[t] = (np.asarray(acts[k]), info.layout, info.name)
    if tensors and tensors[0] in out:
        return out  # the best candidate was captured: no run for the others yet
    missing = [t for t in tensors if t not in out]
    if missing:
        if not feeds:
            raise InputError("the activations do not hold the CAM's feature map and no input x was given; "
                             "pass x or acts from get_activations (which keep the inputs)")
        values, _ = run_model(m, feeds, missing)
        for t in missing:
            # the name the default capture gives it (a conv keyed by its own name holds its activation)
            name = next((li.name for li in list(m.layers) + list(m.all_layers) if li.tensor == t), t)
            out[t] = (np.asarray(values[t]), m.layouts.get(t, "NCHW"), name)
    return out


def class_activation_map(model: Any, x: Any = None, class_index: int | None = None, *,
                         acts: Mapping[str, Any] | None = None, method: str = "auto", cam_layer: str | None = None,
                         output: str | None = None, sample: int = 0, layer: str | None = None,
                         providers: str | Sequence[str] | None = None, threads: int | None = None,
                         **preprocess_kw: Any) -> CamResult:
    """The class activation map of ``sample`` for ``class_index`` (default: the predicted class).

    ``method="auto"`` uses exact CAM when the model's head is a global average pool followed by
    one linear layer to the class output, and EigenCAM otherwise (``"cam"`` / ``"eigencam"``
    force one). The map is the one :func:`onnxact.heads.cam_targets` picks (the last spatial
    map feeding the head; never a detector's reshaped decode output) unless ``cam_layer`` names
    a layer exactly (``layer`` is the older name of that argument). ``output`` names the
    classifier output the class index refers to (default: :func:`onnxact.heads.classifier_outputs`).
    Pass ``acts`` from :func:`onnxact.get_activations` to reuse a capture (its ``.outputs`` give
    the prediction); otherwise ``x`` (array, image path, ...) is run through the model.
    The result says which layer was used and why (``reason``), and why this method (``why``).
    ``providers`` / ``threads`` go to onnxruntime when ``model`` is not a loaded ``Model`` already
    (see ``load``), as in :func:`onnxact.get_activations`.
    """
    from .model import load
    from .run import prepare_feeds, run_model

    if method not in ("auto", "cam", "eigencam"):
        raise InputError(f"method must be 'auto', 'cam' or 'eigencam', not {method!r}")
    cam_layer = cam_layer if cam_layer is not None else layer
    m = load(model, providers=providers, threads=threads)
    if acts is None and x is None:
        raise InputError("pass an input x (image path or array) or acts from get_activations")
    feeds: Mapping[str, np.ndarray] = dict(getattr(acts, "inputs", None) or {}) if acts is not None else {}
    if not feeds and x is not None:
        feeds = prepare_feeds(m, x, **preprocess_kw)
    outputs: Mapping[str, Any] = (getattr(acts, "outputs", None) or {}) if acts is not None else {}
    if not outputs and feeds:
        _, outputs = run_model(m, feeds, [])
    batch = next((int(np.shape(v)[0]) for v in (feeds or {}).values() if np.ndim(v)), None)
    choice = classifier_outputs(outputs, m, output, batch=batch)
    cls_key = choice.outputs[0] if choice else None
    cls_graph = _graph_output(m, cls_key, outputs)
    head = None
    if method != "eigencam" and cls_graph is not None:
        head = find_cam_head(m.proto, m.external_data_dir, output=cls_graph, shapes=static_shapes(m))
    # the pooled map as the capture holds it (before a layout transpose or a Cast)
    pooled = same_map(m, head.feature_tensor, acts) if head is not None else None
    user_map = find_layer_tensor(m, acts, cam_layer) if cam_layer is not None else None
    if head is not None and user_map is not None:
        if user_map in (head.feature_tensor, pooled):
            pooled = user_map
        elif method == "cam":
            raise InputError(f"exact CAM uses the map the global pool averages ({head.feature_tensor}); "
                             "drop --cam-layer / cam_layer, or ask for EigenCAM (--cam eigencam)")
        else:
            head = pooled = None
    if method == "cam" and head is None:
        raise InputError("exact CAM needs a global average pool followed by one linear layer to the class "
                         f"output, and {head_summary(m, cls_graph)}; use EigenCAM (method='eigencam')")
    names = getattr(m, "class_names", None) or (getattr(acts, "class_names", None) if acts is not None else None)
    scores = _row(outputs[cls_key], sample) if cls_key is not None else None
    targets = cam_targets(m, acts, [cls_graph] if cls_graph else [], cam_layer, pooled=pooled)
    feats = None
    fetched: dict[str, tuple[np.ndarray, str, str]] = {}
    for i, target in enumerate(targets[:4]):
        if target.tensor not in fetched:  # captured ones first; the others together, in one run
            fetched.update(_fetch(m, acts, feeds, [t.tensor for t in targets[i:4] if t.tensor not in fetched]))
        arr, lay, layer_name = fetched[target.tensor]
        if head is not None and target.tensor == pooled:
            feats = _chw(arr, lay if lay in ("NCHW", "NHWC") else head.feature_layout, sample)
            break
        if arr.ndim == 4 and lay in ("NCHW", "NHWC"):
            f = _chw(arr, lay, sample)
            if min(f.shape[1:]) > 1:
                feats = f
                break
        if cam_layer is not None:
            raise InputError(f"layer {cam_layer!r} has shape {'x'.join(map(str, arr.shape))}; a class activation "
                             "map needs a spatial map (N, C, H, W) with H and W over 1")
    if feats is None:
        raise InputError("no spatial feature map (N, C, H, W with H and W over 1) feeds the model's head, "
                         "so there is no class activation map; name one with --cam-layer / cam_layer")
    if head is not None and target.tensor == pooled:
        k_classes = head.weights.shape[0]
        if scores is not None and scores.shape[0] != k_classes:
            scores = None
        if class_index is None:
            if scores is not None:
                class_index = int(np.argmax(scores))
            else:  # the logits from the features themselves (exact for a GAP head)
                logits = head.weights @ feats.reshape(feats.shape[0], -1).mean(axis=1)
                class_index = int(np.argmax(logits + (head.bias if head.bias is not None else 0)))
        cmap = cam_from_features(feats, head.weights, class_index)
        method_used, why = "cam", ""
    else:
        cmap = eigencam(feats)
        if class_index is None and scores is not None:
            class_index = int(np.argmax(scores))
        method_used, why = "eigencam", head_summary(m, cls_graph) if method != "eigencam" else "EigenCAM was asked for"
    score = float(scores[class_index]) if scores is not None and class_index is not None \
        and 0 <= class_index < len(scores) else None
    cname = names[class_index] if names and class_index is not None and 0 <= class_index < len(names) else None
    return CamResult(cmap, method_used, layer_name, class_index, cname, score, scores, target.reason, why, cls_key)

