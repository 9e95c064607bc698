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
- **constant**: not dead, and max - min <= 1e-6 * max(1, |max|): zero variance over the dataset
  (the useful test for layers without a following activation).
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
from .stats_graph import add_channel_stats

__all__ = [
    "LayerStats", "ChannelStats", "StatsRunner", "DeadFilterReport", "Finding", "find_dead_filters", "scan",
    "KINDS", "load_allow_list",
]

KINDS = ("dead", "dormant", "constant")
CONSTANT_RTOL = 1e-6


@dataclass
class LayerStats:
    """Per-channel accumulators of one layer (arrays of length C, float64 / int64)."""

    min: np.ndarray
    max: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray
    above: np.ndarray
    positions: int = 0  # positions per channel seen so far (images x spatial)

    @classmethod
    def empty(cls, channels: int) -> LayerStats:
        return cls(np.full(channels, np.inf), np.full(channels, -np.inf), np.zeros(channels), np.zeros(channels),
                   np.zeros(channels, np.int64), 0)

    @property
    def channels(self) -> int:
        return int(self.min.shape[0])

    def merge(self, other: LayerStats) -> LayerStats:
        if other.channels != self.channels:
            raise ValueError(f"cannot merge statistics of {self.channels} and {other.channels} channels")
        return LayerStats(np.minimum(self.min, other.min), np.maximum(self.max, other.max), self.sum + other.sum,
                          self.sumsq + other.sumsq, self.above + other.above, self.positions + other.positions)

    @property
    def max_abs(self) -> np.ndarray:
        return np.maximum(np.abs(self.max), np.abs(self.min))

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.positions, 1)

    @property
    def var(self) -> np.ndarray:
        m = self.mean
        return np.maximum(self.sumsq / max(self.positions, 1) - m * m, 0.0)

    @property
    def fraction_above(self) -> np.ndarray:
        return self.above / max(self.positions, 1)

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min.tolist(), "max": self.max.tolist(), "sum": self.sum.tolist(),
                "sumsq": self.sumsq.tolist(), "above": self.above.tolist(), "positions": self.positions}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LayerStats:
        return cls(np.asarray(d["min"], float), np.asarray(d["max"], float), np.asarray(d["sum"], float),
                   np.asarray(d["sumsq"], float), np.asarray(d["above"], np.int64), int(d["positions"]))


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

    Built once per scan (and once per Ray actor).
    """

    def __init__(self, model: Model, layers: Sequence[LayerInfo] | None = None, threshold: float = 0.0) -> None:
        self.model = model
        self.layers = list(model.layers if layers is None else layers)
        if not self.layers:
            raise ModelError(
                f"{model.name} has no capturable conv/pool layers to check; pass layer_names= or op_types= to pick tensors"
            )
        if len(model.inputs) != 1:
            raise InputError(f"{model.name} has {len(model.inputs)} inputs; the dataset scan supports one image input")
        self.threshold = float(threshold)
        proto, self.outputs = add_channel_stats(model.proto, self.layers, self.threshold, model._elem)
        self.session = model.build_session(proto)
        self.input_name = model.inputs[0].name
        b = model.inputs[0].shape[0] if model.inputs[0].shape else None
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None

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
        names = [n for o in self.outputs for n in o.names()]
        try:
            values = self.session.run(names, {self.input_name: x})
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors: input values that don't fit
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"onnxruntime failed to run {self.model.name} on the images: {msg[:300]}") from None
        layers: dict[str, LayerStats] = {}
        for k, o in enumerate(self.outputs):
            mn, mx, s, ss, above, size = values[6 * k:6 * k + 6]
            c = int(np.asarray(mn).shape[0]) if np.ndim(mn) else 1
            layers[o.layer.name] = LayerStats(
                np.asarray(mn, np.float64).reshape(c), np.asarray(mx, np.float64).reshape(c),
                np.asarray(s, np.float64).reshape(c), np.asarray(ss, np.float64).reshape(c),
                np.rint(np.asarray(above, np.float64)).astype(np.int64).reshape(c), int(size) // max(c, 1))
        return ChannelStats(layers, {li.name: li for li in self.layers}, int(x.shape[0]), [], self.threshold)


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
    **preprocess_kw: Any,
) -> ChannelStats:
    """Scan ``images`` (see :mod:`onnxact.images`) with the local engine and return their statistics."""
    from .images import count_samples, expand_sources, iter_batches
    from .progress import progress

    items = expand_sources(images)
    runner = StatsRunner(model, layers, threshold)
    total = count_samples(items)
    batches = iter_batches(model, items, batch_size=batch_size, strict=strict, **preprocess_kw)
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
        for name, st in stats.layers.items():
            info = stats.infos[name]
            max_abs = st.max_abs
            dead = max_abs <= self.eps
            mean = st.mean
            counts = {"dead": int(dead.sum()), "dormant": 0, "constant": 0}
            for c in np.flatnonzero(dead):
                self.findings["dead"].append(Finding("dead", name, info.tensor, int(c), float(max_abs[c])))
            layer_mean = float(mean.mean()) if mean.size else 0.0
            if st.min.size and float(st.min.min()) >= 0.0 and layer_mean > 0:
                ratio = mean / layer_mean
                for c in np.flatnonzero((ratio <= self.tau) & ~dead):
                    self.findings["dormant"].append(Finding("dormant", name, info.tensor, int(c), float(ratio[c])))
                    counts["dormant"] += 1
            const = ((st.max - st.min) <= CONSTANT_RTOL * np.maximum(1.0, np.abs(st.max))) & ~dead
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
    from pathlib import Path

    from .errors import OutputError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


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
    show_progress: bool = True,
    **preprocess_kw: Any,
) -> DeadFilterReport:
    """Scan a dataset for dead / dormant / constant filters; returns a ``DeadFilterReport``.

    ``images``: folders (recursive), globs, a text file listing paths, ``.npy``/``.npz`` arrays
    of ready inputs, or an ndarray (or a list of any of these). ``eps``: max |a| at or below which
    a channel is dead; ``tau``: the dormant ratio; ``threshold``: the activation level counted as
    "firing" in the statistics (defaults to ``eps``). ``engine="ray"`` runs the scan on a Ray
    cluster (``address``, ``workers``); results are identical to the local engine's.
    """
    m = load(model, providers=providers)
    layers = m.select(layer_names, op_types) if (layer_names or op_types) else list(m.layers)
    if not layers:
        raise ModelError(f"{m.name} has no capturable conv/pool layers to check; pass layer_names= or op_types=")
    thr = eps if threshold is None else threshold
    if engine == "local":
        stats = scan(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                     show_progress=show_progress, **preprocess_kw)
    elif engine == "ray":
        from .ray_engine import scan_ray

        stats = scan_ray(m, images, layers=layers, threshold=thr, batch_size=batch_size, strict=strict,
                         address=address, workers=workers, show_progress=show_progress, **preprocess_kw)
    else:
        raise InputError(f"unknown engine '{engine}'; use 'local' or 'ray'")
    return DeadFilterReport(stats, eps=eps, tau=tau, model_name=m.name)
