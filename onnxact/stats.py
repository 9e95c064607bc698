"""The dead-filter scan's public names in one place (kept for ``from onnxact.stats import ...``).

The code lives in one module per stage: :mod:`onnxact.stats_records` (``LayerStats``,
``ChannelStats``: mergeable per-channel statistics), :mod:`onnxact.stats_graph` (the in-graph
reductions), :mod:`onnxact.stats_runner` (``StatsRunner``, the local engine's ``scan``),
:mod:`onnxact.stats_report` (``DeadFilterReport`` and its writers), :mod:`onnxact.ray_engine` (the
Ray engine) and :mod:`onnxact.dead_filters` (``find_dead_filters``, which picks the engine).
New code imports from those modules.
"""

from __future__ import annotations

from .dead_filters import find_dead_filters
from .stats_records import CONSTANT_RTOL, ChannelStats, LayerStats
from .stats_report import KINDS, DeadFilterReport, Finding, load_allow_list
from .stats_runner import StatsRunner, post_activation_layers, scan, scan_preprocess

__all__ = [
    "LayerStats", "ChannelStats", "StatsRunner", "DeadFilterReport", "Finding", "find_dead_filters", "scan",
    "KINDS", "load_allow_list", "post_activation_layers", "scan_preprocess", "CONSTANT_RTOL",
]
