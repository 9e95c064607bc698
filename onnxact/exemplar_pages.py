"""Write an exemplar scan to a folder: ``exemplars.json``, crop PNGs and HTML pages.

Layout of the folder::

    exemplars.json                  the whole result (issue 15 schema)
    index.html                      the layers, linked
    layers/<layer>/index.html       per channel: its top crops in a row, its activation map beside them
    layers/<layer>/c<ch>_map.png    the channel's map on its top image, colour-mapped
    crops/<n>.png                   one crop per distinct (image, box) (each entry's ``crop`` in the
                                    JSON): the box of the original image, upscaled (nearest) so
                                    that a 7-pixel field is still visible

Why maps are re-captured here: the scan keeps only K values per channel (bounded memory), so
the map beside each row is computed again, one capture per distinct top-1 image (all layers at
once), after the scan. Crops are cut image by image (each original decoded once).

Staged like the ``inspect`` report (:func:`onnxact.safeio.output_folder`): nothing appears in the
folder until every file is written, and an interrupted run leaves it as it was. Pages use the
report's inline style (no network, no external file) and escape every name.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

__all__ = ["write_exemplars", "CROP_MIN_SIDE", "CROP_MAX_SIDE", "MAP_SIDE"]

#: a crop's short side is scaled up (nearest) to at least this many px
CROP_MIN_SIDE = 96
#: ... and its long side down to at most this many
CROP_MAX_SIDE = 192
#: the activation map beside each row: longest side in px
MAP_SIDE = 96


def _scaled(img: Any, min_side: int = CROP_MIN_SIDE, max_side: int = CROP_MAX_SIDE) -> Any:
    from PIL import Image

    w, h = img.size
    f = max(1.0, min_side / max(1, min(w, h)))
    f = min(f, max_side / max(1, max(w, h))) if max(w, h) * f > max_side else f
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return img if size == img.size else img.resize(size, Image.NEAREST if f >= 1 else Image.BILINEAR)


def _layer_dirs(names: Sequence[str]) -> dict[str, str]:
    """A distinct safe folder name per layer (two names may sanitise alike)."""
    from .render import safe_filename

    out: dict[str, str] = {}
    used: set[str] = set()
    for i, n in enumerate(names):
        s = safe_filename(n, 60)
        if s in used:
            s = f"{s}_{i}"
        used.add(s)
        out[n] = s
    return out


def _crops(ex: Any, root: Path) -> dict[tuple[str, int, int], str]:
    """Cut every entry's box from its original image; {(layer, channel, rank): path under ``root``}.

    One PNG per distinct (image, box): channels that share their top image and box (a whole-image
    field, dead channels at (0, 0)) share the file. Each original is decoded once; crops are scaled
    and encoded on a few threads (Pillow's resize and zlib release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from .preprocess import load_image
    from .render import save_png

    jobs: dict[str, dict[tuple[int, int, int, int], list[tuple[str, int, int]]]] = {}
    for name, chans in ex.layers.items():
        for c, entries in enumerate(chans):
            for r, e in enumerate(entries):
                jobs.setdefault(e.image, {}).setdefault(tuple(e.box), []).append((name, c, r))
    out: dict[tuple[str, int, int], str] = {}
    (root / "crops").mkdir(parents=True, exist_ok=True)
    n = 0
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for image, boxes in jobs.items():
            try:
                img = load_image(image).convert("RGB")
            except Exception:  # noqa: BLE001 - an array sample, or an image gone since the scan: no crop
                continue
            futures = []
            for box, users in boxes.items():
                rel = f"crops/{n}.png"
                n += 1
                piece = img.crop(box)  # cut here, scaled and encoded on the pool
                futures.append(pool.submit(lambda p=piece, rel=rel: save_png(_scaled(p), root / rel)))
                for u in users:
                    out[u] = rel
            for f in futures:  # one original in memory at a time; errors surface here
                f.result()
    return out


def _maps(ex: Any, dirs: dict[str, str], root: Path) -> dict[tuple[str, int], str]:
    """Each channel's map on its top image (one capture per distinct top image); {(layer, ch): path}."""
    from PIL import Image

    from .capture import get_activations
    from .preprocess import preprocess_image
    from .render import save_png
    from .render.colors import apply_colormap

    model = getattr(ex, "_model", None)
    if model is None:
        return {}
    kw = getattr(ex, "_preprocess", {}) or {}
    wanted: dict[str, list[tuple[str, int]]] = {}
    for name, chans in ex.layers.items():
        for c, entries in enumerate(chans):
            if entries:
                wanted.setdefault(entries[0].image, []).append((name, c))
    out: dict[tuple[str, int], str] = {}
    for image, todo in wanted.items():
        try:
            x = preprocess_image(image, model, **kw)
        except Exception:  # noqa: BLE001 - an array sample or an image gone: no map
            continue
        acts = get_activations(model, x, layer_names=sorted({n for n, _ in todo}))
        for name, c in todo:
            a = np.asarray(acts[name])[0]
            info = acts.layers.get(name) if hasattr(acts, "layers") else None
            if info is not None and info.layout in ("NHWC", "NWC"):
                a = np.moveaxis(a, -1, 0)
            m = a[c].astype(np.float64).reshape(a[c].shape if a[c].ndim == 2 else (1, -1))
            lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
            unit = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
            rgb = apply_colormap(unit)
            pic = _scaled(Image.fromarray(rgb), MAP_SIDE, MAP_SIDE)
            rel = f"layers/{dirs[name]}/c{c}_map.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            save_png(pic, root / rel)
            out[(name, c)] = rel
    return out


def _href(rel: str) -> str:
    return "/".join(quote(p) for p in rel.split("/"))


def _layer_page(ex: Any, name: str, crops: dict[tuple[str, int, int], str], maps: dict[tuple[str, int], str],
                depth: str) -> str:
    from .report_page import page

    e = html.escape
    rows = []
    for c, entries in enumerate(ex.layers[name]):
        cells = []
        note = ""
        if entries and all(x.value == 0 for x in entries) and ex.images >= len(entries):
            note = ("<div class='muted'>max 0 on every image shown: this filter does not fire on these images "
                    "(see <code>onnxact check</code>)</div>")
        m = maps.get((name, c))
        if m:
            cells.append(f"<figure class='map'><img src='{e(_href(m.rsplit('/', 1)[1]), quote=True)}' "
                         f"alt='{e(f'channel {c} map', quote=True)}'><figcaption>map on #1</figcaption></figure>")
        for r, x in enumerate(entries):
            rel = crops.get((name, c, r))
            what = f"{os.path.basename(x.image)} max {x.value:.4g} at {x.position}"
            tip = f"{x.image}: max {x.value:.6g} at row {x.position[0]}, col {x.position[1]}; box {list(x.box)}"
            img = (f"<img src='{e(depth + _href(rel), quote=True)}' alt='{e(what, quote=True)}' "
                   f"title='{e(tip, quote=True)}' loading='lazy'>" if rel else f"<span class='muted'>{e(what)}</span>")
            cells.append(f"<figure>{img}<figcaption>{e(os.path.basename(x.image))}<br>{x.value:.4g}</figcaption></figure>")
        if not entries:
            cells.append("<span class='muted'>no image</span>")
        rows.append(f"<tr id='c{c}'><th>{c}</th><td><div class='ex'>{''.join(cells)}</div>{note}</td></tr>")
    style = ("<style>.ex{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-end}figure{margin:0;text-align:center;"
             "font-size:11px;color:#555}figure img{image-rendering:pixelated;display:block}figure.map{padding-right:8px;"
             "border-right:2px solid #cfd8dc}th{vertical-align:middle}td{text-align:left}</style>")
    mean = ex.means.get(name)
    sub = (f"{ex.model} | {ex.images} images | top {ex.top} per channel | layer mean {mean:.4g}"
           if mean is not None and np.isfinite(mean) else f"{ex.model} | {ex.images} images | top {ex.top}")
    body = [style, f"<p><a href='{depth}index.html'>all layers</a></p>",
            "<section><table><tr><th>channel</th><th style='text-align:left'>its activation map on its top image, "
            "then its top images (crop of the strongest position's receptive field)</th></tr>"
            + "".join(rows) + "</table></section>"]
    return page(f"exemplars: {name}", sub, body)


def _index_page(ex: Any, dirs: dict[str, str]) -> str:
    from .report_page import page

    e = html.escape
    rows = []
    for name, chans in ex.layers.items():
        info = ex.infos.get(name)
        op = info.op_type if info is not None else ""
        mean = ex.means.get(name, float("nan"))
        link = _href(f"layers/{dirs[name]}/index.html")
        rows.append(f"<tr><td><a href='{e(link, quote=True)}'>{e(name)}</a></td><td>{e(op)}</td><td>{len(chans)}</td>"
                    f"<td>{mean:.4g}</td></tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in ex.notes)
    skipped = f"<p class='muted'>{len(ex.skipped)} unreadable images skipped</p>" if ex.skipped else ""
    body = [f"<section><h2>Layers</h2>{skipped}<table><tr><th>layer</th><th>op</th><th>channels</th>"
            "<th>mean activation</th></tr>" + "".join(rows) + "</table>"
            + (f"<ul class='muted'>{notes}</ul>" if notes else "") + "</section>",
            "<p class='muted'>Boxes are receptive fields computed from the graph (kernels, strides, padding, "
            "dilation); where branches merge the largest branch's field is used (an approximation).</p>"]
    size = f" | fed at {ex.input_size[0]}x{ex.input_size[1]} ({ex.resize})" if ex.input_size else ""
    return page(f"exemplars: {ex.model}", f"{ex.images} images | top {ex.top} per channel{size}", body)


def write_exemplars(ex: Any, folder: str | os.PathLike[str], *, force: bool = False, crops: bool = True,
                    pages: bool = True) -> Path:
    """See :meth:`onnxact.exemplars.Exemplars.save`."""
    from .safeio import output_folder, write_text

    inputs = {"image": sorted({e.image for chans in ex.layers.values() for entries in chans for e in entries})}
    if ex.model_path:
        inputs["model"] = [ex.model_path]
    with output_folder(folder, force=force, inputs=inputs) as out:
        root = out.staging
        doc = ex.to_json()
        dirs = _layer_dirs(list(ex.layers))
        cut = _crops(ex, root) if crops else {}
        for (name, c, r), rel in cut.items():  # each entry's crop file, beside its box
            doc["layers"][name][c]["top"][r]["crop"] = rel
        write_text(root / "exemplars.json", json.dumps(doc, indent=1) + "\n")
        if crops or pages:
            maps = _maps(ex, dirs, root) if pages else {}
            if pages:
                for name in ex.layers:
                    p = root / "layers" / dirs[name] / "index.html"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    write_text(p, _layer_page(ex, name, cut, maps, "../../"))
                write_text(root / "index.html", _index_page(ex, dirs))
    return Path(folder)
