"""The ``index.html`` report of ``onnxact inspect``: one self-contained page, no network.

Why plain HTML with inline CSS: it opens from a file (``file://``) in any browser, in CI
artifacts and over SSH copies, with nothing to serve. Images are referenced by relative path
(so the folder can be moved as a whole) or embedded as base64 with ``embed=True`` (one file).
"""

from __future__ import annotations

import base64
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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8dc;font-size:13px}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 8px}table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
td.dead{color:#b71c1c;font-weight:600}.muted{color:#777;font-size:12px}
img{max-width:100%;height:auto;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.bar{display:inline-block;height:10px;background:#42a5f5;vertical-align:middle;margin-right:6px}
"""


def _img(src: Path | str, directory: Path, embed: bool, alt: str) -> str:
    p = Path(src)
    full = p if p.is_absolute() else directory / p
    if embed:
        try:
            data = base64.b64encode(full.read_bytes()).decode()
        except OSError as e:
            raise OutputError(f"cannot read {full} to embed it in the report: {e.strerror or e}") from None
        url = f"data:image/png;base64,{data}"
    else:
        url = os.path.relpath(full, directory).replace(os.sep, "/")
        url = "/".join(_quote(part) for part in url.split("/"))
    return f'<img src="{html.escape(url, quote=True)}" alt="{html.escape(alt, quote=True)}">'


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part)


def write_report(directory: str | os.PathLike[str], stats: Sequence[LayerStats], *, title: str = "onnxact report",
                 subtitle: str = "", grids: Mapping[str, Path | str] | None = None,
                 heatmaps: Mapping[str, Path | str] | None = None, inputs: Sequence[Path | str] = (),
                 cam: tuple[Path | str, str] | None = None,
                 predictions: Sequence[tuple[int, str | None, float]] | Predictions = (), notes: Sequence[str] = (),
                 embed: bool = False, filename: str = "index.html") -> Path:
    """Write ``index.html`` into ``directory``: summary table, predictions, CAM, a section per layer.

    ``predictions``: a :class:`Predictions` (one table per classifier output, or its "no
    classifier head" reason) or a plain top-k list. Image paths are relative to ``directory``
    (or absolute); they are linked relatively, or embedded as base64 when ``embed`` is true.
    """
    d = Path(directory)
    grids = grids or {}
    heatmaps = heatmaps or {}
    e = html.escape
    anchors = {s.key: f"layer-{i}" for i, s in enumerate(stats)}
    out: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
                      f"<header><h1>{e(title)}</h1><p>{e(subtitle)}</p></header><main>"]
    top: list[str] = []
    if inputs:
        top.append("<section><h2>Input</h2><div class='row'>"
                   + "".join(_img(p, d, embed, "input image") for p in inputs) + "</div></section>")
    top += _prediction_sections(predictions)
    if cam is not None:
        top.append(f"<section><h2>Class activation map</h2><p class='muted'>{e(cam[1])}</p>"
                   f"{_img(cam[0], d, embed, 'class activation map')}</section>")
    if len(top) > 1:
        out.append("<div class='row'>" + "".join(top) + "</div>")
    else:
        out.extend(top)
    rows = []
    for s in stats:
        cells = s.row()
        cells[0] = f"<a href='#{anchors[s.key]}'>{e(cells[0])}</a>" if s.key in grids else e(cells[0])
        tds = [f"<td>{c if i == 0 else e(c)}</td>" for i, c in enumerate(cells)]
        if s.dead_channels:
            tds[-1] = f"<td class='dead'>{e(cells[-1])}</td>"
        rows.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th>{e(h)}</th>" for h in STAT_HEADERS)
    out.append(f"<section><h2>Layers ({len(stats)})</h2><table><tr>{head}</tr>{''.join(rows)}</table>"
               "<p class='muted'>zeros: fraction of exactly-zero values; all-zero ch: channels that are zero "
               "everywhere for this input.</p></section>")
    for note in notes:
        out.append(f"<p class='muted'>{e(note)}</p>")
    for s in stats:
        if s.key not in grids and s.key not in heatmaps:
            continue
        parts = [f"<section id='{anchors[s.key]}'><h2>{e(s.key)} <span class='muted'>{e(s.op)} "
                 f"{e('x'.join(map(str, s.shape)))}</span></h2><div class='row'>"]
        if s.key in grids:
            parts.append(_img(grids[s.key], d, embed, f"activation grid of {s.key}"))
        if s.key in heatmaps:
            parts.append(_img(heatmaps[s.key], d, embed, f"heatmap of {s.key}"))
        parts.append("</div></section>")
        out.append("".join(parts))
    out.append("</main></body></html>")
    page = d / filename
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {page}: {err.strerror or err}; choose a writable folder") from None
    return write_text(page, "\n".join(out))  # atomic, never through a link


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
