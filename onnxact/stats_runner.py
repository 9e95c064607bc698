"""The statistics runner over a model, and the local engine's scan.

``StatsRunner`` holds one onnxruntime session of the statistics model (the model with in-graph
per-channel reductions, see :mod:`onnxact.stats_graph`); only size-C vectors leave it, so memory
does not grow with the number of images. ``scan`` is the local engine: it feeds a dataset to one
runner batch by batch and merges the per-batch ``ChannelStats``. The Ray engine
(:mod:`onnxact.ray_engine`) runs one runner per actor. Nothing here imports an engine.

``threshold=`` (or ``extra_stats``) adds sums of squares (variance) and counts of positions above
the threshold; they cost extra passes over the maps, so the default scan leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .activations import LayerInfo
from .errors import InputError, ModelError
from .model import Model
from .run import quiet_run_options, run_failure
from .stats_graph import StatOutputs, add_channel_stats, split_unknown_rank
from .stats_records import ChannelStats, LayerStats

__all__ = ["StatsRunner", "scan", "scan_preprocess", "post_activation_layers"]


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
        self._use(*add_channel_stats(model.proto, self.layers, self.threshold, model.elem_types, count_above=count_above,
                                     nonnegative=nonneg, sum_squares=count_above, pack=True))
        self.input_name = data.name
        b = data.shape[0] if data.shape else None
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        if chunk is None:
            chunk = cache_chunk(self.layers)
        self.chunk = 0 if self.fixed_batch else int(chunk)

    def _use(self, proto: Any, outputs: list[StatOutputs]) -> None:
        """Run this statistics model (``add_channel_stats``'s result) from now on.

        Its session keeps the memory pattern on (the outputs are a few per-channel rows, not maps)
        and runs in onnxruntime's PRIORITY_BASED order, which (with the node order
        ``add_channel_stats`` writes) runs each reduction right after the node that makes its input,
        while the map is still in cache. ``threads`` caps onnxruntime's intra-op pool: a Ray actor
        given 1 CPU must not spin a thread per core of its node, or N actors on one node fight over
        the same cores. Default: the ``Model``'s own.
        """
        self.session = self.model.build_session(proto, threads=self.threads, priority_order=True,
                                                what=f"the statistics model of {self.model.name}")
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


def cache_chunk(layers: Sequence[LayerInfo]) -> int:
    """Images per onnxruntime call so that the largest map stays in cache while its reductions
    read it (``StatsRunner.CHUNK_BYTES``); 0, whole batches, where not even two images' maps fit."""
    biggest = max((_map_bytes(layer) for layer in layers), default=0)
    chunk = StatsRunner.CHUNK_BYTES // biggest if biggest else 0
    return chunk if chunk >= 2 else 0


def _map_bytes(layer: LayerInfo) -> int:
    """Bytes of one image's map of ``layer`` (float32), 0 when its shape isn't static."""
    dims = list(layer.shape or ())[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return 0
    return 4 * int(np.prod(dims))


_NONNEG_OPS = {"Relu", "Sigmoid", "Softplus", "HardSigmoid", "Abs", "Exp", "Softmax"}
_PASS_OPS = {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Identity", "Dropout", "Flatten",
             "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _nonnegative(model: Model, tensor: str, depth: int = 0) -> bool:
    """True when the ops that make ``tensor`` guarantee values >= 0 (ReLU, or a pool of a ReLU)."""
    node = model.producer(tensor)
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
