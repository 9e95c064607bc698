"""Streaming dataset statistics per channel, and the dead / dormant / constant filter report.

Why mergeable statistics: a scan is a sum over batches of per-channel reductions (min, max,
sum, sum of squares, count above a threshold, positions). Those combine exactly in any order,
so a scan split in halves, across processes or across a Ray cluster gives the same report.
The reductions run inside onnxruntime (see :mod:`onnxact.stats_graph`); only size-C vectors
leave it, so memory does not grow with the number of images.

Definitions (per channel, over every image and position of the layer's output tensor, which is
read after the activation that follows a conv/pool):

- **dead**: max |a| <= eps (default 0): the filter never fires.
- **dormant**: not dead, the layer's outputs are non-negative (ReLU-like), and the channel's mean
  divided by the layer's mean over all its channels is <= tau (default 0).
- **constant**: not dead, and zero variance over the dataset: max == min (layers that can be
  negative), max == mean (non-negative layers, where min is not computed), within float32 rounding.

``threshold=`` (or ``extra_stats``) adds sums of squares (variance) and counts of positions above
the threshold; they cost extra passes over the maps, so the default scan leaves them out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from .activations import LayerInfo
from .errors import InputError, ModelError
from .model import Model, load
from .run import quiet_run_options, run_failure
from .stats_graph import StatOutputs, add_channel_stats, split_unknown_rank

__all__ = [
    "LayerStats", "ChannelStats", "StatsRunner", "DeadFilterReport", "Finding", "find_dead_filters", "scan",
    "KINDS", "load_allow_list",
]

KINDS = ("dead", "dormant", "constant")
CONSTANT_RTOL = 1e-6


@dataclass
class LayerStats:
    """Per-channel accumulators of one layer (arrays of length C, float64 / int64)."""

    min: np.ndarray  # NaN where not computed (layers known to be non-negative, e.g. after a ReLU)
    max: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray | None  # None unless asked for (extra_stats)
    above: np.ndarray | None  # count of positions > threshold; None unless asked for
    positions: int = 0  # positions per channel seen so far (images x spatial)

    @classmethod
    def empty(cls, channels: int, min_known: bool = True, counted: bool = False) -> LayerStats:
        return cls(np.full(channels, np.inf if min_known else np.nan), np.full(channels, -np.inf), np.zeros(channels),
                   np.zeros(channels) if counted else None, np.zeros(channels, np.int64) if counted else None, 0)

    @property
    def channels(self) -> int:
        return int(self.min.shape[0])

    def merge(self, other: LayerStats) -> LayerStats:
        if other.channels != self.channels:
            raise ValueError(f"cannot merge statistics of {self.channels} and {other.channels} channels")
        above = None if self.above is None or other.above is None else self.above + other.above
        sumsq = None if self.sumsq is None or other.sumsq is None else self.sumsq + other.sumsq
        return LayerStats(np.minimum(self.min, other.min), np.maximum(self.max, other.max), self.sum + other.sum,
                          sumsq, above, self.positions + other.positions)

    @property
    def min_known(self) -> bool:
        return not bool(np.isnan(self.min).any())

    @property
    def nonnegative(self) -> bool:
        """True when the layer's values are never negative (min not computed, or min >= 0)."""
        return not self.min_known or bool((self.min >= 0).all())

    @property
    def max_abs(self) -> np.ndarray:
        return np.fmax(np.abs(self.max), np.abs(self.min))

    @property
    def constant(self) -> np.ndarray:
        """Channels with zero variance: max == min where min is known, else max == mean (every value
        equals the max exactly when the mean does), within float32 rounding."""
        if self.min_known:
            return (self.max - self.min) <= CONSTANT_RTOL * np.maximum(1.0, np.abs(self.max))
        return (self.max - self.mean) <= 10 * CONSTANT_RTOL * np.maximum(np.abs(self.max), 1e-30)

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.positions, 1)

    @property
    def var(self) -> np.ndarray | None:
        if self.sumsq is None:
            return None
        m = self.mean
        return np.maximum(self.sumsq / max(self.positions, 1) - m * m, 0.0)

    @property
    def fraction_above(self) -> np.ndarray | None:
        return None if self.above is None else self.above / max(self.positions, 1)

    def to_json(self) -> dict[str, Any]:
        return {"min": [None if np.isnan(v) else v for v in self.min.tolist()], "max": self.max.tolist(),
                "sum": self.sum.tolist(), "sumsq": None if self.sumsq is None else self.sumsq.tolist(),
                "above": None if self.above is None else self.above.tolist(), "positions": self.positions}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LayerStats:
        mn = np.asarray([np.nan if v is None else v for v in d["min"]], float)
        above = None if d.get("above") is None else np.asarray(d["above"], np.int64)
        sumsq = None if d.get("sumsq") is None else np.asarray(d["sumsq"], float)
        return cls(mn, np.asarray(d["max"], float), np.asarray(d["sum"], float), sumsq, above, int(d["positions"]))


@dataclass
class ChannelStats:
    """Statistics of a scan: ``{layer name: LayerStats}`` plus image and failure counts. Mergeable."""

    layers: dict[str, LayerStats]
    infos: dict[str, LayerInfo]
    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.0

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Combine two partial scans (any split of the images gives the whole scan's statistics)."""
        if list(self.layers) != list(other.layers):
            raise ValueError("cannot merge statistics of different layer sets")
        if self.threshold != other.threshold:
            raise ValueError("cannot merge statistics computed with different thresholds")
        return ChannelStats({k: v.merge(other.layers[k]) for k, v in self.layers.items()}, dict(self.infos),
                            self.images + other.images, self.failed + other.failed, self.threshold)

    @classmethod
    def empty(cls, layers: Sequence[LayerInfo], channels: Sequence[int], threshold: float = 0.0) -> ChannelStats:
        return cls({li.name: LayerStats.empty(c) for li, c in zip(layers, channels)},
                   {li.name: li for li in layers}, 0, [], threshold)

    @classmethod
    def from_activations(cls, acts: Mapping[str, np.ndarray], threshold: float = 0.0) -> ChannelStats:
        """Statistics of an activation mapping already in memory (any ``{name: array}``)."""
        from . import layout as layoutmod

        guess = getattr(layoutmod, "guess_layout_of_array", None) or (lambda a: layoutmod.guess_input_layout(a.shape))

        infos = getattr(acts, "layers", {}) or {}
        layers: dict[str, LayerStats] = {}
        names: dict[str, LayerInfo] = {}
        n = 0
        for key, arr in acts.items():
            a = np.asarray(arr, np.float64)
            info = infos.get(key) or LayerInfo(key, key, "", guess(a), tuple(a.shape))
            ca = info.channel_axis if info.channel_axis is not None and info.channel_axis < a.ndim else min(1, a.ndim - 1)
            axes = tuple(i for i in range(a.ndim) if i != ca)
            c = a.shape[ca]
            layers[key] = LayerStats(a.min(axis=axes), a.max(axis=axes), a.sum(axis=axes), (a * a).sum(axis=axes),
                                     (a > threshold).sum(axis=axes).astype(np.int64), a.size // max(c, 1))
            names[key] = info
            n = a.shape[0] if a.ndim else 1
        return cls(layers, names, int(n), [], threshold)

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "threshold": self.threshold, "failed": [list(f) for f in self.failed],
                "layers": {k: {"info": self.infos[k].to_json(), **v.to_json()} for k, v in self.layers.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ChannelStats:
        layers = {k: LayerStats.from_json(v) for k, v in d["layers"].items()}
        infos = {k: LayerInfo.from_json(v["info"]) for k, v in d["layers"].items()}
        return cls(layers, infos, int(d["images"]), [tuple(f) for f in d.get("failed", [])],  # type: ignore[misc]
                   float(d.get("threshold", 0.0)))


class StatsRunner:
    """One onnxruntime session of the statistics model; ``run(x)`` returns one batch's ChannelStats.

    Built once per scan (and once per Ray actor). ``chunk``: images per onnxruntime call. By
    default a batch runs in chunks whose largest map fits in ``CHUNK_BYTES`` (the L2 caches of two
    cores), so each map is still in cache when its reductions read it right after it is made: on
    the demo model (8 images a chunk, batches of 32) that was worth ~+0.05x of plain inference's
    speed on 2 threads and ~+0.1x on one (interleaved runs on the 2-CPU dev machine). Where fewer
    than two images fit, or with 0, every batch runs whole.
    """

    CHUNK_BYTES = 8 << 20

    def __init__(self, model: Model, layers: Sequence[LayerInfo] | None = None, threshold: float = 0.0,
                 count_above: bool = False, chunk: int | None = None, threads: int | None = None,
                 inputs: Mapping[str, np.ndarray] | None = None) -> None:
        from .feeds import MissingInputError, check_array, describe_input, scan_input

        self.model = model
        self.threads = threads  # onnxruntime intra-op threads; None: onnxruntime's default (all cores)
        self.layers, self.notes = split_unknown_rank(
            post_activation_layers(model, list(model.layers if layers is None else layers)))
        if not self.layers:
            raise ModelError(
                f"{model.name} has no capturable conv/pool layers to check; pass layer_names= or op_types= to pick tensors"
            )
        # The dataset feeds one input; ``inputs`` holds the same values for every image for the others.
        self.extra = {k: check_array(model, k, v) for k, v in (inputs or {}).items()}
        data = scan_input(model, list(self.extra))
        missing = [i for i in model.inputs if i.name != data.name and i.name not in self.extra]
        if missing:
            raise MissingInputError(
                f"the images feed '{data.name}'; give the other inputs ({', '.join(map(describe_input, missing))}) "
                "with inputs={name: array} (onnxact.feeds.fill_missing makes zeros for fixed shapes)", missing)
        self.threshold = float(threshold)
        nonneg = [_nonnegative(model, layer.tensor) for layer in self.layers]
        self._use(*add_channel_stats(model.proto, self.layers, self.threshold, model._elem, count_above=count_above,
                                     nonnegative=nonneg, sum_squares=count_above, pack=True))
        self.input_name = data.name
        b = data.shape[0] if data.shape else None
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        if chunk is None:  # whole batches where not even two images' maps would stay in cache
            biggest = max((_map_bytes(layer) for layer in self.layers), default=0)
            chunk = self.CHUNK_BYTES // biggest if biggest else 0
            chunk = chunk if chunk >= 2 else 0
        self.chunk = 0 if self.fixed_batch else int(chunk)

    def _use(self, proto: Any, outputs: list[StatOutputs]) -> None:
        """Run this statistics model (``add_channel_stats``'s result) from now on."""
        self.session = _stats_session(self.model, proto, self.threads)
        self.outputs = outputs
        self._fetch = [o.name for o in proto.graph.output]
        self._columns = {n: (out, a, b) for o in outputs for n, out, a, b in o.packed}

    def _run_session(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return dict(zip(self._fetch, self.session.run(self._fetch, self._feeds(x), quiet_run_options())))
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors: input values that don't fit
            raise InputError(run_failure(self.model, {self.input_name: x}, e)) from None

    def _feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not self.extra:
            return {self.input_name: x}
        from .feeds import broadcast_batch

        return broadcast_batch(self.model, {self.input_name: x, **self.extra}, batch=int(x.shape[0]))

    def run(self, x: np.ndarray) -> ChannelStats:
        if self.fixed_batch and x.shape[0] != self.fixed_batch:
            if x.shape[0] % self.fixed_batch:
                raise InputError(
                    f"{self.model.name} has a fixed batch of {self.fixed_batch}; "
                    f"give a number of images that is a multiple of it (got a batch of {x.shape[0]})"
                )
            parts = [self.run(x[i:i + self.fixed_batch]) for i in range(0, x.shape[0], self.fixed_batch)]
            out = parts[0]
            for p in parts[1:]:
                out = out.merge(p)
            return out
        n = int(x.shape[0])
        if self.chunk and n > self.chunk:
            parts = [self._run_session(x[i:i + self.chunk]) for i in range(0, n, self.chunk)]
            values = {k: np.concatenate([p[k] for p in parts]) if v.ndim else sum(p[k] for p in parts)
                      for k, v in parts[0].items()}
        else:
            values = self._run_session(x)
        # Outputs are per image ([N, C] or [N, C, 1, ...]); reduce over the batch here, in float64.
        rows = {k: v.reshape(v.shape[0], -1) for k, v in values.items() if v.ndim}
        done: dict[tuple[str, str], np.ndarray] = {}

        def over_batch(kind: str, name: str) -> np.ndarray:
            out, a, b = self._columns.get(name, (name, 0, None))  # packed: reduce once, then slice
            key = (kind, out)
            if key not in done:
                v = rows[out]
                done[key] = v.max(axis=0).astype(np.float64) if kind == "max" else \
                    v.min(axis=0).astype(np.float64) if kind == "min" else v.sum(axis=0, dtype=np.float64)
            return done[key][a:b]

        layers: dict[str, LayerStats] = {}
        for o in self.outputs:
            mx = over_batch("max", o.max)
            c = mx.shape[0]
            if o.size:
                per_image = int(values[o.size]) // max(c * n, 1)
            else:
                per_image = o.per_image
            mn = over_batch("min", o.min) if o.min else np.full(c, np.nan)
            above = np.rint(over_batch("sum", o.above)).astype(np.int64) if o.above else None
            sumsq = over_batch("sum", o.sumsq) * per_image if o.sumsq else None
            layers[o.layer.name] = LayerStats(mn, mx, over_batch("sum", o.sum) * per_image, sumsq, above,
                                              per_image * n)
        return ChannelStats(layers, {li.name: li for li in self.layers}, int(x.shape[0]), [], self.threshold)


def _map_bytes(layer: LayerInfo) -> int:
    """Bytes of one image's map of ``layer`` (float32), 0 when its shape isn't static."""
    dims = list(layer.shape or ())[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return 0
    return 4 * int(np.prod(dims))


def _stats_session(model: Model, proto: Any, threads: int | None = None) -> Any:
    """The statistics model's session: ``Model.build_session``'s settings plus the PRIORITY_BASED
    execution order, which (with the node order ``add_channel_stats`` writes) runs each reduction
    right after the node that makes its input, while the map is still in cache. The memory
    pattern stays on: the outputs are a few per-channel rows, not maps (DESIGN.md 4). ``threads``
    caps onnxruntime's intra-op pool: a Ray actor given 1 CPU must not spin a thread per core of
    its node, or N actors on one node fight over the same cores. Default: the ``Model``'s own."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    threads = threads or model.threads
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    order = getattr(getattr(ort, "ExecutionOrder", None), "PRIORITY_BASED", None)
    if order is not None:
        so.execution_order = order
    if model.external_data_dir is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                    str(model.external_data_dir))
    try:
        return ort.InferenceSession(proto.SerializeToString(), so, providers=model.providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises many types; all mean "cannot run"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"onnxruntime cannot load the statistics model of {model.name}: {msg[:300]}") from None


_NONNEG_OPS = {"Relu", "Sigmoid", "Softplus", "HardSigmoid", "Abs", "Exp", "Softmax"}
_PASS_OPS = {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Identity", "Dropout", "Flatten",
             "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _nonnegative(model: Model, tensor: str, depth: int = 0) -> bool:
    """True when the ops that make ``tensor`` guarantee values >= 0 (ReLU, or a pool of a ReLU)."""
    node = model._producers.get(tensor)
    if node is None or depth > 8:
        return False
    if node.op_type in _NONNEG_OPS:
        return True
    if node.op_type in _PASS_OPS and node.input:
        return _nonnegative(model, node.input[0], depth + 1)
    return False


_AFFINE_OPS = {"BatchNormalization", "InstanceNormalization"}


def post_activation_layers(model: Model, layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Step each layer over a following BatchNormalization and activation (Conv -> BN -> ReLU).

    The dead-filter definitions are about the post-activation tensor, and reading the Conv's
    own output would stop onnxruntime from fusing Conv+BN+ReLU (slower, and a different tensor).
    """
    from .graph import ACTIVATION_OPS

    consumers: dict[str, list[Any]] = {}
    for node in model.proto.graph.node:
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in model.proto.graph.output}
    out: list[LayerInfo] = []
    for layer in layers:
        t, act = layer.tensor, layer.activation
        for ops in (_AFFINE_OPS, ACTIVATION_OPS):
            users = consumers.get(t, [])
            if act is None and t not in outputs and len(users) == 1 and users[0].op_type in ops \
                    and users[0].input[0] == t:
                t = users[0].output[0]
                if users[0].op_type in ACTIVATION_OPS:
                    act = users[0].op_type
        if t != layer.tensor:
            layer = LayerInfo(layer.name, t, layer.op_type, model.layouts.get(t, layer.layout), layer.shape, act,
                              layer.index, layer.node)
        out.append(layer)
    return out


def _merge_all(parts: Iterable[ChannelStats | None]) -> ChannelStats | None:
    out = None
    for p in parts:
        if p is None:
            continue
        out = p if out is None else out.merge(p)
    return out


def scan(
    model: Model,
    images: Any,
    *,
    layers: Sequence[LayerInfo] | None = None,
    threshold: float = 0.0,
    batch_size: int = 32,
    strict: bool = False,
    show_progress: bool = True,
    count_above: bool = False,
    inputs: Mapping[str, np.ndarray] | None = None,
    **preprocess_kw: Any,
) -> ChannelStats:
    """Scan ``images`` (see :mod:`onnxact.images`) with the local engine and return their statistics.

    ``inputs``: values for the model's other inputs, the same for every image.
    """
    from .images import count_samples, expand_sources, iter_batches
    from .progress import progress

    items = expand_sources(images)
    runner = StatsRunner(model, layers, threshold, count_above, inputs=inputs)
    total = count_samples(items)
    batches = iter_batches(model, items, batch_size=batch_size, strict=strict, input_name=runner.input_name,
                           **preprocess_kw)
    if show_progress:
        batches = progress(batches, total=math.ceil(total / batch_size), desc="scanning")
    result: ChannelStats | None = None
    failed: list[tuple[str, str]] = []
    for b in batches:
        failed += b.failed
        if b.x is not None:
            part = runner.run(b.x)
            result = part if result is None else result.merge(part)
    if result is None:
        raise InputError(f"none of the {len(failed)} images could be read; first: {failed[0][1] if failed else '-'}")
    result.failed = failed
    return result


@dataclass(frozen=True)
class Finding:
    kind: str  # dead | dormant | constant
    layer: str
    tensor: str
    channel: int
    value: float  # max_abs (dead), mean ratio (dormant), the constant value (constant)

    def to_json(self) -> dict[str, Any]:
        key = {"dead": "max_abs", "dormant": "ratio", "constant": "value"}[self.kind]
        return {"layer": self.layer, "tensor": self.tensor, "channel": self.channel, key: self.value}


def load_allow_list(path: Any) -> set[tuple[str, str, int]]:
    """Read a baseline (a ``--json`` report or ``--write-baseline`` file): {(kind, layer, channel)}."""
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"baseline file not found: {p}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read baseline {p}: it is not a JSON report ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"baseline {p} is not a JSON object like the --json report")
    out: set[tuple[str, str, int]] = set()
    for kind in KINDS:
        for e in data.get(kind, []) or []:
            try:
                out.add((kind, str(e["layer"]), int(e["channel"])))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"baseline {p}: each '{kind}' entry needs 'layer' and 'channel'") from None
    return out


class DeadFilterReport:
    """Dead / dormant / constant channels found by a scan (see the module docstring for definitions)."""

    def __init__(self, stats: ChannelStats, eps: float = 0.0, tau: float = 0.0, model_name: str = "model") -> None:
        self.stats = stats
        self.eps = float(eps)
        self.tau = float(tau)
        self.model_name = model_name
        self.findings: dict[str, list[Finding]] = {k: [] for k in KINDS}
        self.per_layer: list[dict[str, Any]] = []
        #: why layers asked for were left out (e.g. unknown rank); shown by ``check`` and in the JSON
        self.notes: list[str] = []
        #: the image preprocessing the scan used (``normalization.Normalization.to_json()``), if known
        self.preprocessing: dict[str, Any] | None = None
        #: ``{"size": [h, w], "resize": mode, "dynamic": bool}``: the one size every image was fed
        #: at (``dynamic``: resolved by onnxact.sizing, the model's own size is not fixed), if known
        self.input_size: dict[str, Any] | None = None
        for name, st in stats.layers.items():
            info = stats.infos[name]
            max_abs = st.max_abs
            dead = max_abs <= self.eps
            mean = st.mean
            counts = {"dead": int(dead.sum()), "dormant": 0, "constant": 0}
            for c in np.flatnonzero(dead):
                self.findings["dead"].append(Finding("dead", name, info.tensor, int(c), float(max_abs[c])))
            layer_mean = float(mean.mean()) if mean.size else 0.0
            if st.nonnegative and layer_mean > 0:
                ratio = mean / layer_mean
                for c in np.flatnonzero((ratio <= self.tau) & ~dead):
                    self.findings["dormant"].append(Finding("dormant", name, info.tensor, int(c), float(ratio[c])))
                    counts["dormant"] += 1
            const = st.constant & ~dead
            for c in np.flatnonzero(const):
                self.findings["constant"].append(Finding("constant", name, info.tensor, int(c), float(st.max[c])))
                counts["constant"] += 1
            self.per_layer.append({
                "layer": name, "tensor": info.tensor, "op_type": info.op_type, "activation": info.activation,
                "channels": st.channels, "positions": st.positions, **counts,
            })

    # -- the public lists ---------------------------------------------------------------------
    @property
    def dead(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["dead"]]

    @property
    def dormant(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["dormant"]]

    @property
    def constant(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["constant"]]

    @property
    def images(self) -> int:
        return self.stats.images

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.stats.failed

    def failing(self, fail_on: Sequence[str] = ("dead",), allow: set[tuple[str, str, int]] | None = None) -> list[Finding]:
        """Findings of the kinds in ``fail_on`` that are not in the ``allow`` baseline."""
        bad = [k for k in fail_on if k not in KINDS]
        if bad:
            raise InputError(f"unknown kind '{bad[0]}' to fail on; use {', '.join(KINDS)}")
        allow = allow or set()
        return [f for k in fail_on for f in self.findings[k] if (k, f.layer, f.channel) not in allow]

    def __bool__(self) -> bool:  # truthy when anything was found
        return any(self.findings.values())

    def __repr__(self) -> str:
        return (f"DeadFilterReport({self.model_name!r}, images={self.images}, dead={len(self.dead)}, "
                f"dormant={len(self.dormant)}, constant={len(self.constant)})")

    # -- outputs ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "images": self.images, "failed": len(self.failed),
            "failed_images": [{"path": p, "reason": r} for p, r in self.failed],
            "eps": self.eps, "tau": self.tau, "layers": self.per_layer,
            **{k: [f.to_json() for f in self.findings[k]] for k in KINDS},
            "notes": list(self.notes), "preprocessing": self.preprocessing, "input_size": self.input_size,
        }

    def to_json(self, path: Any = None, indent: int | None = 2) -> str:
        """The JSON report (also a valid ``--allow`` baseline); written to ``path`` when given."""
        text = json.dumps(self.as_dict(), indent=indent)
        if path is not None:
            _write(path, text + "\n")
        return text

    def worst_layers(self) -> list[dict[str, Any]]:
        def badness(r: dict[str, Any]) -> float:
            return (r["dead"] + r["dormant"] + r["constant"]) / max(r["channels"], 1)
        return sorted(self.per_layer, key=lambda r: -badness(r))

    def table(self) -> str:
        """Human table, worst layers first."""
        rows = [(r["layer"], str(r["channels"]), str(r["dead"]), str(r["dormant"]), str(r["constant"]))
                for r in self.worst_layers()]
        head = ("layer", "channels", "dead", "dormant", "constant")
        w = [max(len(x[i]) for x in [head, *rows]) for i in range(5)]
        lines = ["  ".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head))]
        lines += ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        tot = [sum(r[k] for r in self.per_layer) for k in KINDS]
        lines.append(f"{self.images} images, {len(self.per_layer)} layers: {tot[0]} dead, {tot[1]} dormant, "
                     f"{tot[2]} constant" + (f"; {len(self.failed)} unreadable images skipped" if self.failed else ""))
        return "\n".join(lines)

    def to_junit(self, path: Any = None, fail_on: Sequence[str] = ("dead",),
                 allow: set[tuple[str, str, int]] | None = None) -> str:
        """JUnit XML with one testcase per layer; a layer fails when it has a finding in ``fail_on``."""
        failing = self.failing(fail_on, allow)
        by_layer: dict[str, list[Finding]] = {}
        for f in failing:
            by_layer.setdefault(f.layer, []).append(f)
        cases = []
        for r in self.per_layer:
            name = r["layer"]
            found = by_layer.get(name, [])
            body = ""
            if found:
                msg = "; ".join(f"{k}: {', '.join(str(f.channel) for f in found if f.kind == k)}"
                                for k in KINDS if any(f.kind == k for f in found))
                body = f"<failure message={quoteattr(f'{len(found)} channels: {msg}')}>{escape(msg)}</failure>"
            cases.append(f'  <testcase classname={quoteattr("onnxact.check." + self.model_name)} name={quoteattr(name)}>'
                         f"{body}</testcase>")
        text = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="onnxact check" '
                f'tests="{len(self.per_layer)}" failures="{len(by_layer)}" errors="0">\n' + "\n".join(cases)
                + "\n</testsuite>\n")
        if path is not None:
            _write(path, text)
        return text


def _write(path: Any, text: str) -> None:
    from .safeio import write_text

    write_text(path, text)  # atomic, never through a link; OutputError when it cannot


def scan_preprocess(model: Model, images: Any, preprocess_kw: Mapping[str, Any]) -> dict[str, Any]:
    """``preprocess_kw`` with one ``size`` for the whole scan, so every batch has one shape
    whatever the photo sizes in the folder (a model with dynamic height/width would otherwise
    get each photo at its own size). Resolved from the first readable image (see
    :func:`onnxact.sizing.scan_size`); a fixed-size model or a scan of arrays is left as is."""
    from .images import ArrayRef, expand_sources
    from .preprocess import load_image
    from .sizing import image_input, resolve_size, scan_size

    kw = dict(preprocess_kw)
    inp = image_input(model)
    if inp is None:
        return kw
    if kw.get("size") is not None:
        kw["size"] = resolve_size(model, None, kw["size"])  # checked once, before any image
        return kw
    first = None
    for item in expand_sources(images)[:16]:
        if isinstance(item, ArrayRef):
            return kw
        try:
            first = load_image(item)
            break
        except InputError:
            continue
    kw["size"] = scan_size(model, first)
    return kw


def _reads_images(sources: Any) -> bool:
    """Are any of the scan's sources image files (preprocessed), not ready arrays (.npy/.npz, ndarrays)?"""
    import os
    from pathlib import Path

    from .images import ARRAY_SUFFIXES

    if isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    return any(not isinstance(s, np.ndarray) and Path(os.fspath(s)).suffix.lower() not in ARRAY_SUFFIXES
               for s in sources)


def find_dead_filters(
    model: Any,
    images: Any,
    *,
    eps: float = 0.0,
    tau: float = 0.0,
    threshold: float | None = None,
    layer_names: Sequence[str | int] | None = None,
    op_types: Sequence[str] | None = None,
    batch_size: int = 32,
    strict: bool = False,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    providers: Any = None,
    threads: int | None = None,
    show_progress: bool = True,
    inputs: Mapping[str, Any] | None = None,
    **preprocess_kw: Any,
) -> DeadFilterReport:
    """Scan a dataset for dead / dormant / constant filters; returns a ``DeadFilterReport``.

    ``images``: folders (recursive), globs, a text file listing paths, ``.npy``/``.npz`` arrays
    of ready inputs, or an ndarray (or a list of any of these). ``eps``: max |a| at or below which
    a channel is dead; ``tau``: the dormant ratio; ``threshold``: when given, the statistics also
    count positions above it per channel (``LayerStats.fraction_above``; three extra passes). ``engine="ray"`` runs the scan on a Ray
    cluster (``address``, ``workers``); results are identical to the local engine's.
    ``inputs``: ``{name: array}`` for a model's other inputs (a sample rate, ``im_info``), the same
    for every image (one sample is repeated to each batch); the images feed the remaining input.
    """
    m = load(model, providers=providers, threads=threads)
    layers = m.select(layer_names, op_types) if (layer_names or op_types) else list(m.layers)
    layers, notes = split_unknown_rank(layers)
    if not layers:
        why = f" ({notes[0]})" if notes else ""
        raise ModelError(f"{m.name} has no capturable conv/pool layers to check{why}; pass layer_names= or op_types=")
    thr = eps if threshold is None else threshold
    preprocess_kw = scan_preprocess(m, images, preprocess_kw)
    if engine == "local":
        stats = scan(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                     show_progress=show_progress, count_above=threshold is not None, inputs=inputs, **preprocess_kw)
    elif engine == "ray":
        if inputs:
            raise InputError("fixed values for other inputs (inputs= / --input) work with the local engine only")
        try:
            from .ray_engine import scan_ray
        except ImportError as e:
            from .errors import DependencyError

            raise DependencyError(f"the Ray engine is unavailable ({e}); install it with: pip install 'onnxact[ray]'") from None

        stats = scan_ray(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                         count_above=threshold is not None, address=address, workers=workers, show_progress=show_progress, **preprocess_kw)
    else:
        raise InputError(f"unknown engine '{engine}'; use 'local' or 'ray'")
    report = DeadFilterReport(stats, eps=eps, tau=tau, model_name=m.name)
    report.notes = notes
    if any(len(i.shape) == 4 for i in m.inputs) and _reads_images(images):
        from .normalization import choose_normalization

        chosen = {k: preprocess_kw[k] for k in ("normalize", "mean", "std") if preprocess_kw.get(k) is not None}
        report.preprocessing = choose_normalization(m, **chosen).to_json()
        report.input_size = _input_size_record(m, preprocess_kw)
    return report


def _input_size_record(model: Model, kw: Mapping[str, Any]) -> dict[str, Any] | None:
    from .sizing import default_resize, fixed_hw, image_input

    inp = image_input(model)
    if inp is None or not kw.get("size"):
        return None
    fixed = fixed_hw(inp)
    return {"size": list(kw["size"]), "resize": kw.get("resize") or default_resize(model),
            "dynamic": not (fixed[0] and fixed[1])}
