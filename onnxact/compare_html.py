"""The ``--html`` page of a comparison: SQNR and relative error against depth, and A / B / |A-B| grids.

Why an inline SVG chart: two polylines need no matplotlib; the page is one file plus the PNG
grids (drawn by ``onnxact.render``, written by ``render.save_png``) for the first divergence and
the worst layer, where a user looks first.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .compare_report import Comparison, _db

__all__ = ["write_html", "depth_chart"]

_W, _H, _PAD = 760, 220, 48


def _series_svg(values: list[float], title: str, unit: str, line: float | None, first: int | None,
                log: bool = False) -> str:
    """One chart: ``values`` against layer depth; inf is drawn at the top edge, marked with a triangle."""
    n = len(values)
    tr = [math.log10(v) if log and v > 0 and math.isfinite(v) else (-12.0 if log and v == 0 else v) for v in values]
    finite = [v for v in tr if math.isfinite(v)]
    ref = [math.log10(line) if log and line and line > 0 else line] if line is not None else []
    lo = min(finite + ref, default=0.0)
    hi = max(finite + ref, default=1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def x(i: int) -> float:
        return _PAD + (i / max(n - 1, 1)) * (_W - 2 * _PAD)

    def y(v: float) -> float:
        if not math.isfinite(v):
            v = hi if v > 0 else lo
        return _H - _PAD + (_PAD - _H + _PAD) * (v - lo) / (hi - lo) + 0.0

    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(tr) if not math.isnan(v))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
             f'aria-label="{escape(title)}"><rect width="100%" height="100%" fill="#fff"/>',
             f'<text x="{_PAD}" y="18" font-size="13" font-family="sans-serif">{escape(title)}</text>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>',
             f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#999"/>']
    for v in (lo, (lo + hi) / 2, hi):
        label = f"{10 ** v:.2g}" if log else f"{v:.1f}"
        parts.append(f'<text x="{_PAD - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end" '
                     f'font-family="sans-serif">{label}{"" if log else " " + unit}</text>')
    if ref and ref[0] is not None:
        parts.append(f'<line x1="{_PAD}" y1="{y(ref[0]):.1f}" x2="{_W - _PAD}" y2="{y(ref[0]):.1f}" '
                     'stroke="#d62728" stroke-dasharray="4 3"><title>tolerance</title></line>')
    if first is not None:
        parts.append(f'<line x1="{x(first):.1f}" y1="{_PAD}" x2="{x(first):.1f}" y2="{_H - _PAD}" stroke="#ff7f0e">'
                     '<title>first divergence</title></line>')
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>')
    for i, (v, raw) in enumerate(zip(tr, values)):
        if math.isnan(v):
            continue
        shape = "circle" if math.isfinite(v) else "path"
        tip = f"<title>layer {i}: {raw:.4g}</title>"
        if shape == "circle":
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#1f77b4">{tip}</circle>')
        else:
            parts.append(f'<path d="M{x(i) - 4:.1f},{y(v) + 4:.1f} L{x(i):.1f},{y(v) - 4:.1f} '
                         f'L{x(i) + 4:.1f},{y(v) + 4:.1f} Z" fill="#2ca02c">{tip}</path>')
    parts.append(f'<text x="{_W / 2:.0f}" y="{_H - 12}" font-size="11" text-anchor="middle" '
                 'font-family="sans-serif">layer depth (graph order)</text></svg>')
    return "".join(parts)


def depth_chart(report: Comparison) -> str:
    """Two inline SVG charts: SQNR (dB) and relative L2 error (log scale) against depth."""
    names = [r.name for r in report.layers]
    first = names.index(report.first_divergence) if report.first_divergence in names else None
    sqnr = _series_svg([r.sqnr_db for r in report.layers], "SQNR (dB) against depth; triangles: inf (equal)",
                       "dB", report.min_sqnr, first)
    rel = _series_svg([r.rel_l2 for r in report.layers], "relative L2 error against depth (log scale)", "",
                      report.rtol, first, log=True)
    return sqnr + "<br>" + rel


def _grids(report: Comparison, name: str, folder: Path, tag: str) -> str:
    from .render import render_layer, safe_filename, save_png

    if name not in report.samples:
        return f"<p>no sample kept for {escape(name)}</p>"
    a, b = report.samples[name]
    info = report.sample_info.get(name)
    cells = []
    for label, arr in (("A", a), ("B", b), ("|A-B|", np.abs(a.astype(np.float64) - b).astype(np.float32))):
        pic = render_layer(f"{name} {label}", arr, info, normalize="layer")
        file = f"{tag}_{safe_filename(name)}_{'diff' if label == '|A-B|' else label}.png"
        save_png(pic.image, folder / file)
        cells.append(f'<figure><img src="{escape(file)}" alt="{escape(label)} of {escape(name)}">'
                     f"<figcaption>{escape(label)}</figcaption></figure>")
    return '<div class="row">' + "".join(cells) + "</div>"


def write_html(report: Comparison, directory: Any) -> Path:
    """Write ``index.html`` and the grid PNGs into ``directory`` (created); returns the page's path."""
    from .safeio import write_text

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(report.layers):
        cls = ' class="bad"' if not r.passed else ""
        rows.append(f"<tr{cls}><td>{i}</td><td>{escape(r.name)}</td><td>{r.rel_l2:.3g}</td><td>{r.cosine:.6f}</td>"
                    f"<td>{_db(r.sqnr_db)}</td><td>{r.max_abs:.3g}</td><td>{r.worst_channel}</td>"
                    f"<td>{escape(r.matched_by)}</td></tr>")
    unmatched = "".join(f"<li>only in {u.side.upper()}: {escape(u.name)} ({escape(u.reason)})</li>"
                        for u in report.unmatched_a + report.unmatched_b)
    sections = []
    worst = report.worst
    shown = [(report.first_divergence, "first divergence", "first")] if report.first_divergence else []
    if worst is not None and worst.name != report.first_divergence:
        shown.append((worst.name, "worst layer (lowest SQNR)", "worst"))
    for name, what, tag in shown:
        r = report.layer(name)
        sections.append(f"<h2>{escape(what)}: {escape(name)}</h2><p>rel_l2 {r.rel_l2:.3g}, SQNR {_db(r.sqnr_db)} dB, "
                        f"worst channel {r.worst_channel}; first image, A / B / |A-B| (each on its own scale)</p>"
                        + _grids(report, name, folder, tag))
    verdict = (f"first divergence at <b>{escape(report.first_divergence)}</b>" if report.first_divergence
               else "every layer within tolerance")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>onnxact compare</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}td:nth-child(2){{text-align:left}}
tr.bad{{background:#fde0dc}}.row{{display:flex;gap:1em;flex-wrap:wrap}}figure{{margin:0}}img{{max-width:100%}}</style>
</head><body><h1>{escape(report.a)} vs {escape(report.b)}</h1>
<p>{report.images} images, {len(report.layers)} layers ({escape(report.tolerance_text())}): {verdict}</p>
{depth_chart(report)}
<table><tr><th>#</th><th>layer</th><th>rel_l2</th><th>cosine</th><th>SQNR dB</th><th>max |A-B|</th><th>worst ch</th>
<th>matched by</th></tr>{"".join(rows)}</table><ul>{unmatched}</ul>{"".join(sections)}</body></html>
"""
    return write_text(folder / "index.html", page)
