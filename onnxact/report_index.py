"""The top ``index.html`` of an ``inspect`` run over several images.

Why not a bare list of links: the first thing a user wants is which image gave what, so the
index is a table (input thumbnail, top prediction or why there is none, layers) linking to
each image's report. With ``embed`` the reports themselves go into this one page, each in a
collapsible section (element ids kept apart by the ``s{n}-`` prefix each report was written
with), so the page is one self-contained file like the one-image report; each image's own page
then links its pictures (it sits beside them), so no picture is embedded twice.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report_page import img_tag, page
from .safeio import write_text


def _best(predictions: Any) -> str:
    top = getattr(predictions, "top", None) or []
    if top:
        i, name, p = top[0]
        return f"{name or i} {100 * p:.1f}%"
    return str(getattr(predictions, "reason", "") or "")


def write_index(out: Path, pages: Sequence[tuple[str, Path, Sequence[Any], Any]], *,
                bodies: Sequence[str] | None = None, title: str = "onnxact reports") -> Path:
    """Write ``out/index.html`` over ``pages``: ``(image name, its index.html, its layer stats, its
    Predictions)`` each, as ``inspect`` makes them. ``bodies`` (``--embed``): each report's
    embedded page body (:func:`onnxact.report.report_body`), put into this page."""
    e = html.escape
    embed = bodies is not None
    rows, parts = [], []
    for s, (name, report, stats, predictions) in enumerate(pages):
        rel = report.relative_to(out)
        link = f"#img-{s}" if embed else rel.as_posix()
        thumb = ""
        if not embed and (report.parent / "input.png").is_file():
            thumb = img_tag(report.parent / "input.png", out, False, f"input {name}", lazy=True)
            thumb = thumb.replace("<img ", "<img style='max-height:64px;width:auto' ", 1)
        rows.append(("" if embed else f"<td>{thumb}</td>") + f"<td><a href='{e(link, quote=True)}'>{e(name)}</a></td>"
                    f"<td>{e(_best(predictions))}</td><td>{len(stats)}</td></tr>")
        if bodies is not None:
            opened = " open" if s == 0 or len(pages) <= 3 else ""  # many images: the first open, the rest a click away
            parts.append(f"<section id='img-{s}'><details class='image'{opened}><summary><h2>"
                         f"{e(name)}</h2> <span class='muted'>{e(_best(predictions))}</span></summary>"
                         f"<div class='report'>{bodies[s]}</div></details></section>")
    head = "" if embed else "<th></th>"
    table = (f"<section><h2>Images</h2><table><tr>{head}<th>image</th><th>prediction</th><th>layers</th></tr>"
             + "".join("<tr>" + r for r in rows) + "</table></section>")
    subtitle = f"{len(pages)} images" + (" | every report below, in this one file" if embed else "")
    return write_text(out / "index.html", page(title, subtitle, [table, *parts]))
