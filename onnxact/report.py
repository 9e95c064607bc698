"""The ``index.html`` report of ``onnxact inspect``: what it says (layer statistics, predictions).

Why plain HTML with inline CSS: it opens from a file (``file://``) in any browser, in CI
artifacts and over SSH copies, with nothing to serve. Images are referenced by relative path
(so the folder can be moved as a whole) or embedded as base64 with ``embed=True`` (one file).
How the page stays light on 70-layer models (lazy pictures, collapsible sections, previews,
hover text) is :mod:`onnxact.report_page`; several images' index is :mod:`onnxact.report_index`.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError
from .safeio import write_text

__all__ = ["LayerStats", "layer_stats", "Predictions", "predict", "top_predictions", "read_labels", "write_report"]


@dataclass
class LayerStats:
    """Summary numbers of one captured layer (one row of the report and of the CLI table)."""

    key: str
    op: str
    shape: tuple[int, ...]
    min: float
    max: float
    mean: float
    zero_fraction: float
    channels: int | None
    dead_channels: int | None  # channels that are zero everywhere in the (whole) capture

    def row(self) -> list[str]:
        dead = "-" if self.dead_channels is None else f"{self.dead_channels}/{self.channels}"
        return [self.key, self.op or "-", "x".join(map(str, self.shape)), f"{self.min:.3g}", f"{self.max:.3g}",
                f"{self.mean:.3g}", f"{100 * self.zero_fraction:.1f}%", dead]


STAT_HEADERS = ["layer", "op", "shape", "min", "max", "mean", "zeros", "all-zero ch"]


def layer_stats(key: str, arr: Any, info: Any = None) -> LayerStats:
    """Min / max / mean, fraction of exact zeros and all-zero channels of one activation."""
    a = np.asarray(arr)
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" and not np.isfinite(a).all() else a
    op = getattr(info, "op_type", "") or ""
    act = getattr(info, "activation", None)
    if op and act:
        op = f"{op}+{act}"
    ch_axis = getattr(info, "channel_axis", None) if info is not None else None
    if ch_axis is None and a.ndim >= 2:
        from .layout import channel_axis
        from .render import guess_array_layout

        ch_axis = channel_axis(guess_array_layout(a))
    channels = dead = None
    if ch_axis is not None and a.ndim > ch_axis:
        other = tuple(i for i in range(a.ndim) if i != ch_axis)
        channels = int(a.shape[ch_axis])
        dead = int(np.sum(~np.any(a != 0, axis=other))) if a.size else 0
    if finite.size == 0:
        mn = mx = mean = float("nan")
    else:
        mn, mx, mean = float(finite.min()), float(finite.max()), float(finite.mean(dtype=np.float64))
    zeros = float(np.count_nonzero(a == 0) / a.size) if a.size else 0.0
    return LayerStats(key, op, tuple(int(d) for d in a.shape), mn, mx, mean, zeros, channels, dead)


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a file: a JSON list, or one name per line (blank lines ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read labels file {p}: {e.strerror or e}") from None
    s = text.strip()
    if s.startswith("["):
        try:
            names = json.loads(s)
        except ValueError as e:
            raise InputError(f"labels file {p} looks like JSON but is not valid: {e}") from None
        if not isinstance(names, list):
            raise InputError(f"labels file {p} must hold a JSON list of names")
        return [str(n) for n in names]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"labels file {p} is empty; write one class name per line")
    return names


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


@dataclass
class Predictions:
    """Top-k predictions of each classifier output (``groups``: ``(output name, [(class index,
    class name or None, probability), ...])``), or none with ``reason`` saying why (a detector or
    segmentation head has no class vector: "no classifier head: ...")."""

    groups: list[tuple[str, list[tuple[int, str | None, float]]]]
    reason: str

    def __bool__(self) -> bool:
        return any(top for _, top in self.groups)

    @property
    def top(self) -> list[tuple[int, str | None, float]]:
        """The first classifier output's top-k (what a one-output classifier shows)."""
        return self.groups[0][1] if self.groups else []


def predict(outputs: Mapping[str, Any], class_names: Sequence[str] | None = None, k: int = 5, sample: int = 0,
            model: Any = None, output: str | None = None, batch: int | None = None) -> Predictions:
    """Top-k classes of each output that :func:`onnxact.heads.classifier_outputs` calls a
    classifier (``output`` names one; ``model`` lets the graph say which op made each output).

    Scores that are not probabilities already (made by Softmax / Sigmoid, or in [0, 1] summing to
    1) get a softmax. Class names apply to an output with as many classes as names (or to the
    only classifier output). ``batch`` (the number of inputs fed) keeps out outputs with one row
    per detection rather than per input.
    """
    from .heads import classifier_outputs, probability_op

    choice = classifier_outputs(outputs, model, output, batch=batch)
    names = list(class_names) if class_names else []
    groups: list[tuple[str, list[tuple[int, str | None, float]]]] = []
    for name in choice.outputs:
        v = np.asarray(outputs[name], dtype=np.float64)
        if not -v.shape[0] <= sample < v.shape[0]:
            continue
        s = v[sample].reshape(-1)
        tensor = (getattr(outputs, "tensors", None) or {}).get(name, name)
        made_by = probability_op(model, tensor) if model is not None else None
        if made_by != "Sigmoid" and not (s.min() >= 0 and s.max() <= 1 and abs(s.sum() - 1) < 1e-3):
            s = _softmax(s)
        own = names if names and (len(names) == s.size or len(choice.outputs) == 1) else []
        order = np.argsort(-s)[:k]
        groups.append((name, [(int(i), own[i] if i < len(own) else None, float(s[i])) for i in order]))
    return Predictions(groups, choice.reason)


def top_predictions(outputs: Mapping[str, Any], class_names: Sequence[str] | None = None, k: int = 5,
                    sample: int = 0, model: Any = None, output: str | None = None
                    ) -> list[tuple[int, str | None, float]]:
    """Top-k ``(class index, class name or None, probability)`` of the model's classifier output
    (the first one :func:`predict` finds); empty when the model has no classifier head."""
    return predict(outputs, class_names, k, sample, model, output).top


def write_report(directory: str | os.PathLike[str], stats: Sequence[LayerStats], *, title: str = "onnxact report",
                 subtitle: str = "", grids: Mapping[str, Path | str] | None = None,
                 heatmaps: Mapping[str, Path | str] | None = None, inputs: Sequence[Path | str] = (),
                 cam: tuple[Path | str, str] | None = None,
                 predictions: Sequence[tuple[int, str | None, float]] | Predictions = (), notes: Sequence[str] = (),
                 embed: bool = False, filename: str = "index.html",
                 previews: Mapping[str, Path | str] | None = None, tiles: Mapping[str, Mapping[str, Any]] | None = None,
                 open_sections: bool | None = None, anchor_prefix: str = "") -> Path:
    """Write ``index.html`` into ``directory``: input, predictions, CAM, layer table, a section per layer.

    ``predictions``: a :class:`Predictions` (one table per classifier output, or its "no
    classifier head" reason) or a plain top-k list. Image paths are relative to ``directory``
    (or absolute); they are linked relatively, or embedded as base64 when ``embed`` is true.
    ``previews``: {layer: smaller PNG of its grid} shown instead of the grid, linking to it;
    ``tiles``: {layer: :func:`onnxact.report_page.tile_map`} for the hover text of each tile.
    ``open_sections``: layer sections start open (default: when there are at most 12 layers).
    ``anchor_prefix`` keeps element ids apart when several reports share one page.
    """
    from . import report_page as rp

    d = Path(directory)
    body = report_body(d, stats, grids=grids, heatmaps=heatmaps, inputs=inputs, cam=cam, predictions=predictions,
                       notes=notes, embed=embed, previews=previews, tiles=tiles, open_sections=open_sections,
                       anchor_prefix=anchor_prefix)
    target = d / filename
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}; choose a writable folder") from None
    return write_text(target, rp.page(title, subtitle, body))  # atomic, never through a link


def report_body(d: Path, stats: Sequence[LayerStats], *, grids: Mapping[str, Path | str] | None = None,
                heatmaps: Mapping[str, Path | str] | None = None, inputs: Sequence[Path | str] = (),
                cam: tuple[Path | str, str] | None = None,
                predictions: Sequence[tuple[int, str | None, float]] | Predictions = (), notes: Sequence[str] = (),
                embed: bool = False, previews: Mapping[str, Path | str] | None = None,
                tiles: Mapping[str, Mapping[str, Any]] | None = None, open_sections: bool | None = None,
                anchor_prefix: str = "") -> list[str]:
    """The page's ``<main>`` parts (see :func:`write_report`): the first screen (input,
    predictions, CAM, layer table) loads at once; the layer sections' pictures load lazily."""
    from . import report_page as rp

    grids = grids or {}
    heatmaps = heatmaps or {}
    previews = previews or {}
    tiles = tiles or {}
    e = html.escape
    anchors = {s.key: f"{anchor_prefix}layer-{i}" for i, s in enumerate(stats)}
    out: list[str] = []
    top: list[str] = []
    if inputs:
        top.append("<section><h2>Input</h2><div class='row'>"
                   + "".join(rp.img_tag(p, d, embed, "input image") for p in inputs) + "</div></section>")
    top += _prediction_sections(predictions)
    if cam is not None:
        top.append(f"<section><h2>Class activation map</h2><p class='muted'>{e(cam[1])}</p>"
                   f"{rp.img_tag(cam[0], d, embed, 'class activation map')}</section>")
    if len(top) > 1:
        out.append("<div class='row first'>" + "".join(top) + "</div>")
    else:
        out.extend(top)
    drawn = [s for s in stats if s.key in grids or s.key in heatmaps]
    drawn_keys = {s.key for s in drawn}
    opened = len(drawn) <= rp.OPEN_SECTIONS_UP_TO if open_sections is None else open_sections
    rows = []
    for s in stats:
        cells = s.row()
        cells[0] = f"<a href='#{anchors[s.key]}'>{e(cells[0])}</a>" if s.key in drawn_keys else e(cells[0])
        tds = [f"<td>{c if i == 0 else e(c)}</td>" for i, c in enumerate(cells)]
        tds[-1] = _zero_cell(s, cells[-1])
        rows.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th>{e(h)}</th>" for h in STAT_HEADERS)
    buttons = ("<button type='button' onclick='setSections(true, this.closest(\"main,.report\"))'>expand all</button>"
               "<button type='button' onclick='setSections(false, this.closest(\"main,.report\"))'>collapse all</button>"
               if drawn else "")
    out.append(f"<section><h2 class='inline'>Layers ({len(stats)})</h2>{buttons}<table><tr>{head}</tr>{''.join(rows)}</table>"
               "<p class='muted'>zeros: fraction of exactly-zero values.</p>"
               f"<p class='muted zero-note'>{e(rp.ZERO_COLUMN_NOTE)}</p></section>")
    for note in notes:
        out.append(f"<p class='muted'>{e(note)}</p>")
    for s in drawn:
        pics = []
        if s.key in grids:
            pics.append(rp.img_tag(grids[s.key], d, embed, f"activation grid of {s.key}", lazy=True,
                                   preview=previews.get(s.key), tiles=tiles.get(s.key), zoom=True))
        if s.key in heatmaps:
            pics.append(rp.img_tag(heatmaps[s.key], d, embed, f"heatmap of {s.key}", lazy=True))
        detail = f"{s.op} {'x'.join(map(str, s.shape))}".strip()
        out.append(rp.layer_section(anchors[s.key], s.key, detail, pics, opened))
    return out


def _zero_cell(s: LayerStats, text: str) -> str:
    """The "all-zero ch" cell: neutral grey (zero on this one input is usually ReLU sparsity, not a
    dead filter: ``check`` finds those over a dataset); on a 1x1 map (one value per channel) the
    count is plainer still, since every channel whose single value is <= 0 counts."""
    e = html.escape
    if not s.dead_channels:
        return f"<td>{e(text)}</td>"
    spatial = math.prod(s.shape) // max(1, s.shape[0] * (s.channels or 1)) if s.shape else 0
    if spatial <= 1:
        return (f"<td class='zeroch onebyone' title='1x1 map: one value per channel, so a channel is all-zero "
                f"whenever its single value is zero on this input'><span>{e(text)}</span></td>")
    return (f"<td class='zeroch' title='zero everywhere on this input (not a dead filter: onnxact check "
            f"finds those over a dataset)'><span>{e(text)}</span></td>")


def _prediction_sections(predictions: Sequence[tuple[int, str | None, float]] | Predictions) -> list[str]:
    """One table per classifier output (titled by the output's name when there are several),
    or a "no classifier head" line: a detector never shows invented classes."""
    e = html.escape
    if isinstance(predictions, Predictions):
        groups = [(out, list(top)) for out, top in predictions.groups if top]
        if not groups:
            return [f"<section><h2>Predictions</h2><p class='muted'>{e(predictions.reason)}</p></section>"]
    else:
        groups = [("", list(predictions))] if predictions else []
    out = []
    for name, top in groups:
        rows = "".join(
            f"<tr><td>{i}</td><td>{e(cname or '')}</td><td><span class='bar' style='width:{max(1, round(120 * p))}px'>"
            f"</span>{100 * p:.1f}%</td></tr>" for i, cname, p in top)
        label = f" of output {e(name)}" if len(groups) > 1 else ""
        out.append(f"<section><h2>Top {len(top)} predictions{label}</h2><table><tr><th>class</th><th>name</th>"
                   f"<th>probability</th></tr>{rows}</table></section>")
    return out


def nan_safe(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
