"""Which pixel normalisation an image model gets, and where that choice came from.

Why its own stage: the right scaling of the pixels is a fact of training that an ONNX file
rarely states. Fed the wrong one, a Caffe-style ResNet shows hundreds of "dead" filters and a
classifier's top class changes, so onnxact may guess but must never hide that it guessed.
The decision, in order:

1. ``user``     ``normalize=`` / ``mean=`` / ``std=`` (``--normalize``, ``--mean/--std``);
2. ``metadata`` the model's ``onnxact.preprocess`` metadata (written by onnxact's converters), or
                Ultralytics metadata (``author``, ``stride``/``imgsz``/``names``: YOLO takes pixels / 255);
3. ``graph``    the graph normalises its own input: a chain of ``Sub``/``Div``/``Mul``/``Add`` by
                constants right after the input (past a ``Transpose``/``Cast``/``Identity``), as
                torch modules that normalise in ``forward`` and Keras ``Rescaling`` layers export,
                or a uint8 input. The chain's affine ``a*x + b`` tells which input range it
                expects: raw 0-255 pixels (then ``none``: fed as they are) or 0-1 values;
4. ``guessed``  none of these: pixels / 255 (``0-1``, the seed's rescaling), with a warning.

Only numpy and onnx are used (``import onnxact`` stays light); the graph is read once per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

__all__ = ["Normalization", "GraphAffine", "SOURCES", "choose_normalization", "graph_normalization"]

SOURCES = ("user", "metadata", "graph", "guessed")
_PRESETS = ("0-1", "none", "-1-1", "imagenet", "caffe")
_OPTIONS = "--normalize 0-1|none|-1-1|imagenet|caffe or --mean/--std"
#: Ops that pass pixel values through unchanged (up to layout or dtype) between the input and the affine.
_PASS_THROUGH = ("Transpose", "Cast", "Identity")
_AFFINE_OPS = ("Sub", "Div", "Mul", "Add")
_CONST_PLUMBING = ("Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Expand", "Flatten")


@dataclass(frozen=True)
class GraphAffine:
    """``y = scale * x + shift`` per channel (or one value), done by the graph right after its input."""

    scale: tuple[float, ...]
    shift: tuple[float, ...]
    ops: tuple[str, ...]  # the op types, in order (``Mul``, ``Add``...), for the report
    expects: str  # "0-255" (raw pixels) or "0-1"

    def as_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The same affine written as ``(x / 255 - mean) / std`` on 0-255 input (how users state it)."""
        top = 255.0 if self.expects == "0-255" else 1.0
        std = tuple(1.0 / (a * top) for a in self.scale)
        mean = tuple(-b * s for b, s in zip(self.shift, std))
        return mean, std


@dataclass(frozen=True)
class Normalization:
    """The normalisation chosen for a model's image input, and why.

    ``preset`` is one of ``0-1 none -1-1 imagenet caffe``, or ``mean/std`` when ``mean``/``std``
    (applied to 0-1 scaled pixels) were given. ``source``: ``user``, ``metadata``, ``graph`` or
    ``guessed``. ``detail`` says what was found (the graph's ops, the metadata key).
    """

    preset: str
    source: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    detail: str = ""

    @property
    def guessed(self) -> bool:
        return self.source == "guessed"

    def describe(self) -> str:
        """A short phrase for reports: ``0-1 (pixels / 255), guessed``."""
        what = {"0-1": "pixels / 255", "none": "raw 0-255 pixels", "-1-1": "pixels / 127.5 - 1",
                "imagenet": "ImageNet mean/std", "caffe": "BGR minus the Caffe means"}.get(self.preset, "")
        if self.preset == "mean/std":
            what = f"(pixels / 255 - {_fmt(self.mean)}) / {_fmt(self.std)}"
        text = f"{self.preset} ({what})" if what and self.preset != "mean/std" else what or self.preset
        by = {"user": "chosen by the user", "metadata": "from the model's metadata",
              "graph": "the graph normalises its input", "guessed": "guessed"}[self.source]
        return f"{text}, {by}" + (f": {self.detail}" if self.detail and self.source == "graph" else "")

    def warning(self, model_name: str = "the model") -> str | None:
        """The one warning line to print when the choice was guessed (None otherwise)."""
        if not self.guessed:
            return None
        return (f"onnxact: warning: {model_name} states no preprocessing (no metadata, no normalisation in the graph); "
                f"guessed --normalize {self.preset} ({'pixels / 255' if self.preset == '0-1' else self.preset}): "
                f"activations and dead counts depend on it; pass {_OPTIONS} to choose")

    @classmethod
    def from_json(cls, d: Any) -> Normalization:
        return cls(str(d.get("normalize")), str(d.get("source")), tuple(d["mean"]) if d.get("mean") else None,
                   tuple(d["std"]) if d.get("std") else None, str(d.get("detail") or ""))

    def to_json(self) -> dict[str, Any]:
        return {"normalize": self.preset, "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None, "source": self.source,
                "guessed": self.guessed, "detail": self.detail}


def _fmt(v: Sequence[float] | None) -> str:
    if v is None:
        return "-"
    vals = [f"{x + 0.0:.4g}" for x in v]  # + 0.0: no "-0"
    return vals[0] if len(set(vals)) == 1 else "[" + ", ".join(vals) + "]"


def _image_input(model: Any, input_name: str | None) -> Any:
    ins = list(getattr(model, "inputs", []) or [])
    if input_name is not None:
        return next((i for i in ins if i.name == input_name), None)
    return next((i for i in ins if len(i.shape) == 4), ins[0] if ins else None)


def choose_normalization(
    model: Any = None,
    normalize: str | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    input_name: str | None = None,
) -> Normalization:
    """Decide the normalisation of ``model``'s image input (a loaded ``Model``, or None); see the module doc."""
    if mean is not None or std is not None:
        m = tuple(float(x) for x in np.atleast_1d(np.asarray(mean if mean is not None else 0.0, np.float64)))
        s = tuple(float(x) for x in np.atleast_1d(np.asarray(std if std is not None else 1.0, np.float64)))
        return Normalization("mean/std", "user", m, s)
    if normalize is not None:
        return Normalization(normalize, "user")
    if model is None:
        return Normalization("0-1", "guessed")
    meta = getattr(model, "preprocess_defaults", {}) or {}
    if isinstance(meta.get("normalize"), str) and meta["normalize"] in _PRESETS:
        return Normalization(meta["normalize"], "metadata", detail="onnxact.preprocess")
    props = getattr(model, "metadata", {}) or {}
    if "ultralytics" in str(props.get("author", "")).lower() or {"stride", "imgsz", "names"} <= set(props):
        # Ultralytics exports (YOLO) always take RGB pixels / 255 (their predictor's ``im /= 255``)
        return Normalization("0-1", "metadata", detail="an Ultralytics export: RGB pixels / 255")
    inp = _image_input(model, input_name)
    if inp is not None and getattr(inp, "dtype", None) == "uint8":
        return Normalization("none", "graph", detail="the input is uint8: raw pixels")
    affine = graph_normalization(model, inp.name if inp is not None else None)
    if affine is not None:
        mean_, std_ = affine.as_mean_std()
        same = np.allclose(mean_, 0.0, atol=1e-6) and np.allclose(std_, 1.0, rtol=1e-4)
        formula = "x / 255" if same else f"(x / 255 - {_fmt(mean_)}) / {_fmt(std_)}"
        if affine.expects == "0-255":
            return Normalization("none", "graph", detail=f"{' -> '.join(affine.ops)} after the input computes {formula} "
                                                         "from raw pixels")
        return Normalization("0-1", "graph", detail=f"{' -> '.join(affine.ops)} after the input expects 0-1 values")
    return Normalization("0-1", "guessed")


def graph_normalization(model: Any, input_name: str | None = None) -> GraphAffine | None:
    """The affine the graph applies to ``input_name`` right away, when it reads as a normalisation.

    ``model``: a loaded ``Model`` (its result is cached on it) or an ``onnx.ModelProto``.
    """
    cache = getattr(model, "__dict__", {}).setdefault("_onnxact_graph_affine", {}) \
        if not isinstance(model, onnx.ModelProto) else {}
    if input_name in cache:
        return cache[input_name]
    proto = model if isinstance(model, onnx.ModelProto) else model.proto
    g = proto.graph
    if input_name is None:
        inits = {t.name for t in g.initializer}
        names = [i.name for i in g.input if i.name not in inits]
        input_name = names[0] if names else None
    base = getattr(model, "external_data_dir", None)  # external constants: beside the model, not the cwd
    found = _find_affine(g, input_name, base) if input_name else None
    cache[input_name] = found
    return found


def _find_affine(g: onnx.GraphProto, start: str, base_dir: Any = None) -> GraphAffine | None:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in g.node:
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(node)
        for o in node.output:
            if o:
                producers[o] = node
    inits = {t.name: t for t in g.initializer}
    graph_inputs = {i.name for i in g.input} - set(inits)
    scale, shift = np.ones(1), np.zeros(1)
    ops: list[str] = []
    t = start
    for _ in range(16):
        users = [u for u in consumers.get(t, []) if u.op_type not in ("Shape", "Size")]  # size plumbing reads no pixels
        if len(users) != 1:
            break
        node = users[0]
        if node.op_type in _PASS_THROUGH and node.input[0] == t and node.domain in ("", "ai.onnx"):
            if node.op_type == "Cast" and ops:
                break  # a cast after the affine may round: stop at the affine
            t = node.output[0]
            continue
        if node.op_type not in _AFFINE_OPS or len(node.input) != 2 or list(node.input).count(t) != 1:
            break
        other = node.input[1] if node.input[0] == t else node.input[0]
        c = _constant(other, inits, producers, graph_inputs, base_dir=base_dir)
        if c is None or c.size == 0 or c.size > 4 or not np.all(np.isfinite(c)):
            break
        c = c.astype(np.float64).reshape(-1)
        first = node.input[0] == t
        if node.op_type == "Mul":
            scale, shift = scale * c, shift * c
        elif node.op_type == "Add":
            shift = shift + c
        elif node.op_type == "Sub":
            scale, shift = (scale, shift - c) if first else (-scale, c - shift)
        else:  # Div: only x / c is affine
            if not first or np.any(c == 0):
                break
            scale, shift = scale / c, shift / c
        ops.append(node.op_type)
        t = node.output[0]
    if not ops:
        return None
    n = max(scale.size, shift.size)
    scale, shift = np.broadcast_to(scale, n).copy(), np.broadcast_to(shift, n).copy()
    if np.any(scale == 0) or (np.allclose(scale, 1) and np.allclose(shift, 0)):
        return None
    expects = _expected_range(scale, shift)
    if expects is None:
        return None
    return GraphAffine(tuple(map(float, scale)), tuple(map(float, shift)), tuple(ops), expects)


def _expected_range(scale: np.ndarray, shift: np.ndarray) -> str | None:
    """Which input range makes the affine's output look like a network input (spread ~1 to ~255).

    Raw pixels scaled by 1/255, ImageNet mean/std on 0-255 input (span ~4.4 around 0) or
    Caffe mean subtraction (span 255 around 0) read as ``0-255``; ``x * 2 - 1`` or ImageNet
    mean/std written for 0-1 values (span 510 or ~4.4 * 255 on raw pixels) read as ``0-1``, and
    so does ``x - 0.5`` (on raw pixels its output would sit far off centre: 0..255 - 0.5).
    """
    for expects, top in (("0-255", 255.0), ("0-1", 1.0)):
        lo, hi = shift, scale * top + shift
        span = np.abs(hi - lo)
        centre = np.abs(lo + hi) / 2
        if np.all((span >= 0.5) & (span <= 300)) and np.all(centre <= 0.3 * span + 1.0):
            return expects
    return None


def _constant(name: str, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto],
              graph_inputs: set[str], depth: int = 0, base_dir: Any = None) -> np.ndarray | None:
    """The value of a constant tensor: an initializer, a Constant node, or plumbing (Reshape...) of one."""
    from .errors import OnnxactError
    from .model import read_tensor

    if name in graph_inputs or depth > 6:
        return None
    if name in inits:
        t = inits[name]
        if t.data_location == onnx.TensorProto.EXTERNAL and int(np.prod(t.dims, dtype=np.int64)) > 4:
            return None  # a normalisation constant is a few floats: never read a big external tensor for it
        try:
            return read_tensor(inits[name], base_dir)
        except (ValueError, TypeError, OnnxactError):  # unreadable: not a normalisation constant
            return None
    node = producers.get(name)
    if node is None:
        return None
    if node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return read_tensor(a.t, base_dir)
            if a.name == "value_float":
                return np.asarray(a.f, np.float32)
            if a.name == "value_floats":
                return np.asarray(list(a.floats), np.float32)
        return None
    if node.op_type in _CONST_PLUMBING and node.input:
        return _constant(node.input[0], inits, producers, graph_inputs, depth + 1, base_dir)
    if node.op_type in ("Sqrt", "Reciprocal", "Neg") and node.input:
        v = _constant(node.input[0], inits, producers, graph_inputs, depth + 1, base_dir)
        if v is None:
            return None
        with np.errstate(all="ignore"):
            return np.sqrt(v) if node.op_type == "Sqrt" else (1.0 / v if node.op_type == "Reciprocal" else -v)
    return None
