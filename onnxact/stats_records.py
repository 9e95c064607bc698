"""Per-channel statistics of a scan: ``LayerStats`` (one layer) and ``ChannelStats`` (a scan), mergeable.

Why mergeable statistics: a scan is a sum over batches of per-channel reductions (min, max,
sum, sum of squares, count above a threshold, positions). Those combine exactly in any order,
so a scan split in halves, across processes or across a Ray cluster gives the same report.
The records are plain arrays of length C; they know nothing of models, sessions or engines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import LayerInfo

__all__ = ["LayerStats", "ChannelStats", "CONSTANT_RTOL"]

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
