"""Per-layer numbers as node data for Google's Model Explorer (a colour per node of the graph).

Why: graph viewers are where people read a model, and Model Explorer (``ai-edge-model-explorer``
with the ``model-explorer-onnx`` adapter) overlays a value per node from a JSON file given with
``--node_data_paths``. This module turns a dead-filter report, a comparison, exemplars or any
``{layer: float}`` into that file, without importing Model Explorer (onnxact's core stays light).

The file is what ``model_explorer.node_data_builder.ModelNodeData.to_json_string()`` writes and
what Model Explorer 0.1.34's web app reads: ``{graph id: {"results": {node id: {"value": v}},
"thresholds" | "gradient": [...]}}``. (The app does not unwrap a ``{"graphsData": ...}`` object:
it reads either one graph's data or a dict keyed by graph id.)

Names, exactly as ``model-explorer-onnx`` 0.4.2 builds its graph: the graph id is the ONNX graph's
name (``main_graph``, ``tf2onnx``; ``""`` stays ``""``); a node's id is its ONNX name after the
adapter's ``onnx_ir`` ``NameFixPass``: an unnamed node becomes ``node``, ``node_1``, ... and a
repeated name ``name_1``, ... in graph order, subgraphs included (one counter, names unique per
graph) -- reproduced by :func:`adapter_node_ids`. Keys are node ids only: the web app maps an
output tensor's name to its node through a ``tensor_name`` output attribute, which the ONNX
adapter does not set, so a tensor-name key would colour nothing.

Which nodes a layer colours: every node from the op that defines the layer to the one that made
the captured tensor (a Keras ``Conv -> BatchNormalization -> Relu`` read as ``conv2d_3`` colours
all three; a torch SiLU colours ``Conv``, ``Sigmoid`` and ``Mul``), so the value shows on the conv
(where the filters are) and on the node whose output was measured. A node that made another
captured layer's tensor keeps that layer's value.
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

__all__ = ["NodeData", "to_node_data", "adapter_node_ids", "SQNR_CAP_DB", "DEAD_THRESHOLDS", "SQNR_THRESHOLDS",
           "MEAN_GRADIENT"]

#: SQNR written for identical tensors (+inf dB: no noise), so the file stays valid JSON. Rounding
#: float64 values to float32 once gives ~152 dB (measured on normal samples), and two float32 runs
#: differ by more, so 200 dB reads as "equal" and is never reached otherwise; -inf (A is all zeros,
#: B is not) is written as -200 dB.
SQNR_CAP_DB = 200.0

# Colours: ColorBrewer RdYlGn (red bad, green good); Model Explorer picks the text colour itself.
_GREEN, _LIGHT_GREEN, _YELLOW, _ORANGE, _RED = "#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027"

#: Dead fraction (0 = no dead filter, green; 1 = all dead, red). A threshold item colours values
#: ``<= value`` not taken by an earlier item: fixed bounds, so a layer with 5 % dead filters is never
#: drawn red just because it is the worst of the model (a gradient is relative to min..max).
DEAD_THRESHOLDS: list[dict[str, Any]] = [
    {"value": 0.0, "bgColor": _GREEN}, {"value": 0.1, "bgColor": _LIGHT_GREEN},
    {"value": 0.25, "bgColor": _YELLOW}, {"value": 0.5, "bgColor": _ORANGE}, {"value": 1.0, "bgColor": _RED},
]
#: SQNR in dB, red low to green high (fixed bounds, as for the dead fraction): under 10 dB the
#: error is a third of the signal, 40 dB and more is what a good int8 quantization keeps.
SQNR_THRESHOLDS: list[dict[str, Any]] = [
    {"value": 10.0, "bgColor": _RED}, {"value": 20.0, "bgColor": _ORANGE}, {"value": 30.0, "bgColor": _YELLOW},
    {"value": 40.0, "bgColor": _LIGHT_GREEN}, {"value": SQNR_CAP_DB, "bgColor": _GREEN},
]
#: Mean activation has no good or bad side and no fixed range: a gradient from the model's least
#: active layer (white) to its most active (dark blue).
MEAN_GRADIENT: list[dict[str, Any]] = [{"stop": 0, "bgColor": "#f7fbff"}, {"stop": 1, "bgColor": "#08306b"}]


@dataclass
class NodeData:
    """One graph's node data: ``results`` {adapter node id: value} plus how to colour them.

    ``layers`` says which nodes each layer coloured (producer of the captured tensor last);
    ``skipped`` {layer: why} lists layers that could not be placed on the graph (a tensor that is
    not in it, a value that is NaN). ``as_dict()`` / ``to_json(path)`` give Model Explorer's file.
    """

    graph_id: str
    metric: str
    results: dict[str, float]
    layers: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    gradient: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        graph: dict[str, Any] = {"results": {k: {"value": v} for k, v in self.results.items()}}
        if self.gradient:
            graph["gradient"] = [dict(g) for g in self.gradient]
        elif self.thresholds:
            graph["thresholds"] = [dict(t) for t in self.thresholds]
        return {self.graph_id: graph}

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
        """The JSON text (strict: no NaN / Infinity); written atomically to ``path`` when given."""
        text = json.dumps(self.as_dict(), indent=indent, allow_nan=False)
        if path is not None:
            from .safeio import write_text

            write_text(path, text + "\n")
        return text


def adapter_node_ids(graph: onnx.GraphProto) -> list[str]:
    """The id ``model-explorer-onnx`` gives each node of ``graph`` (same order as ``graph.node``).

    Reproduces ``onnx_ir.passes.common.NameFixPass`` as the adapter runs it: nodes in graph order,
    each followed by the nodes of its subgraphs; a node keeps its name when the name is unused in
    its own graph, else gets the first free ``name_<k>`` (unnamed: ``node``, ``node_<k>``), with one
    counter per preferred name shared by every graph.
    """
    counter: collections.Counter[str] = collections.Counter()

    def unique(preferred: str, used: set[str]) -> str:
        name = preferred
        while name in used:
            counter[preferred] += 1
            name = f"{preferred}_{counter[preferred]}"
        used.add(name)
        return name

    def walk(g: onnx.GraphProto) -> list[str]:
        used: set[str] = set()
        ids: list[str] = []
        for node in g.node:
            ids.append(unique(node.name or "node", used))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub)
        return ids

    return walk(graph)


class _Graph:
    """A model's main graph as Model Explorer names it: tensor -> producing node, node -> id."""

    def __init__(self, model: Any) -> None:
        self.model = model
        graph = model.proto.graph
        self.id = graph.name
        self.node_ids = {id(n): nid for n, nid in zip(graph.node, adapter_node_ids(graph))}
        self.order = {id(n): k for k, n in enumerate(graph.node)}
        self.producers = {o: n for n in graph.node for o in n.output if o}
        self.op_of = {layer.tensor: layer.op_type for layer in model.all_layers}
        self.op_of.update({layer.tensor: layer.op_type for layer in model.layers})  # defining op (Conv for Conv->Relu)

    def nodes(self, tensor: str, op_type: str | None = None) -> list[str] | None:
        """Ids of the nodes from the layer's defining op to the producer of ``tensor`` (producer
        last), or None when no node of the main graph makes ``tensor``."""
        from .naming import _chain

        tail = self.producers.get(tensor)
        if tail is None:
            return None
        op = op_type or self.op_of.get(tensor) or tail.op_type
        chain = [n for n in _chain(tensor, op, self.producers, self.order) if n is not tail] + [tail]
        return [self.node_ids[id(n)] for n in chain]


def _load(model: Any) -> Any:
    from .model import Model, load

    return model if isinstance(model, Model) else load(model)


def _entries(result: Any, graph: _Graph, side: str) -> tuple[str, list[tuple[str, str, str | None, Any]], str]:
    """(metric, [(layer, tensor, defining op or None, value)], scale) for each kind of result."""
    if hasattr(result, "per_layer") and hasattr(result, "findings"):  # DeadFilterReport
        rows = [(r["layer"], r["tensor"], r.get("op_type") or None, r["dead"] / r["channels"])
                for r in result.per_layer if r.get("channels")]
        return "dead filter fraction", rows, "dead"
    if hasattr(result, "layers") and hasattr(result, "first_divergence"):  # Comparison
        if side not in ("a", "b"):
            from .errors import InputError

            raise InputError(f"side must be 'a' or 'b', not {side!r}")
        rows = [(r.name, r.a_tensor if side == "a" else r.b_tensor, None, r.sqnr_db) for r in result.layers]
        return "SQNR dB", rows, "sqnr"
    means = getattr(result, "means", None)
    infos: Mapping[str, Any] = {}
    if isinstance(means, Mapping):  # Exemplars: mean activation per layer, with each layer's record
        result, metric, infos = means, "mean activation", getattr(result, "infos", None) or {}
    elif isinstance(result, Mapping):
        metric = "value"
    else:
        from .errors import InputError

        raise InputError(f"node data is made from a DeadFilterReport, a Comparison, Exemplars or a "
                         f"{{layer: number}} mapping, not {type(result).__name__}")
    rows = []
    for name, value in result.items():
        info = infos.get(name) or _find_layer(graph.model, name)
        rows.append((name, info.tensor if info is not None else "", info.op_type if info is not None else None, value))
    return metric, rows, "gradient"


def _find_layer(model: Any, name: str) -> Any:
    from .errors import LayerError

    try:
        return model.layer(name)
    except LayerError:
        return None


def to_node_data(result: Any, model: Any, path: str | os.PathLike[str] | None = None, *,
                 side: str = "a") -> NodeData:
    """Model Explorer node data for ``result`` on ``model``'s graph; written to ``path`` when given.

    ``result``: a ``DeadFilterReport`` (the fraction of dead filters per layer, 0 green -> 1 red),
    a ``Comparison`` (SQNR in dB per matched layer, drawn on A's graph, or on B's with ``side="b"``
    and B's model; red under 10 dB, green from 40 dB; +inf is written as :data:`SQNR_CAP_DB`),
    ``Exemplars`` (mean activation per layer, as a gradient) or any ``{layer name: number}``.
    ``model``: the ``onnxact.Model`` (or path / bytes / ModelProto) the result was computed on.
    Layers whose tensor is not made by a node of the main graph, and NaN values, are left out and
    listed in ``.skipped``.
    """
    graph = _Graph(_load(model))
    metric, rows, scale = _entries(result, graph, side)
    results: dict[str, float] = {}
    layers: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    own: set[str] = set()
    for name, tensor, op, raw in rows:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            from .errors import InputError

            raise InputError(f"node data values are numbers; layer {name!r} has {raw!r}") from None
        if math.isnan(value) or (math.isinf(value) and scale != "sqnr"):
            skipped[name] = f"the value is {value} (non-finite activations)"
            continue
        if math.isinf(value):  # SQNR of identical tensors (+inf) or of B against an all-zero A (-inf)
            value = math.copysign(SQNR_CAP_DB, value)
        nodes = graph.nodes(tensor, op) if tensor else None
        if not nodes:
            skipped[name] = (f"no node of graph '{graph.id}' makes tensor '{tensor}'" if tensor
                             else f"no layer named '{name}' in {graph.model.name}")
            continue
        layers[name] = nodes
        results[nodes[-1]] = value  # the captured tensor's own node always shows its layer
        own.add(nodes[-1])
    for nodes in layers.values():  # then the rest of each chain, where no other layer was read
        value = results[nodes[-1]]
        for nid in nodes[:-1]:
            if nid not in own:
                results.setdefault(nid, value)
    rank = {nid: k for k, nid in enumerate(graph.node_ids.values())}
    results = dict(sorted(results.items(), key=lambda kv: rank[kv[0]]))  # graph order, as the file is read
    data = NodeData(graph.id, metric, results, layers, skipped)
    if scale == "dead":
        data.thresholds = [dict(t) for t in DEAD_THRESHOLDS]
    elif scale == "sqnr":
        data.thresholds = [dict(t) for t in SQNR_THRESHOLDS]
    else:
        data.gradient = [dict(g) for g in MEAN_GRADIENT]
    if path is not None:
        data.to_json(path)
    return data

