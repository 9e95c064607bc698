"""The HTML pieces of the ``inspect`` report: style, script, picture tags, previews, hover maps.

Why its own stage: :mod:`onnxact.report` decides *what* the page says (statistics, predictions);
this module decides how a page of 70 layers stays light. What a real detector taught (issue 14):
a page that shows every grid at full size is 84 MB and 57,000 px tall, so here

- pictures below the first screen load lazily (``loading="lazy"`` with their width and height,
  so the page does not jump while scrolling) and layer sections are ``<details>``, closed by
  default when there are many;
- a grid larger than :data:`PREVIEW_BOX` is shown as a downscaled preview PNG, linked to the
  full-size PNG (with ``embed``: the full picture itself, shown shrunk, a click zooms it);
- hovering a tile shows its channel number and value range from a small JSON map of the grid's
  geometry (no per-tile elements: 256 channels x 70 layers would be 18,000 nodes).

No network, no external file: the style and the script are inline, so the page opens from
``file://`` and an ``embed`` page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .errors import OutputError

#: (width, height) px of the largest grid shown as is (about the page's content width, and a
#: screen's height); a larger one is shown as a preview that fits in this box
PREVIEW_BOX = (1280, 960)
#: longest side (px) of the photo under each layer's heatmap: 67 heatmaps over a 600x400 photo
#: were 31 MB of a detector's report; at 400 px they are 14 MB and still show where a layer fires
HEATMAP_SIDE = 400
#: layer sections start open up to this many layers (the demo's 10), closed past it
OPEN_SECTIONS_UP_TO = 12

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8dc;font-size:13px}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 8px}summary h2,h2.inline{display:inline}table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
td.dead{color:#b71c1c;font-weight:600}.muted{color:#777;font-size:12px}
td.zeroch{color:#37474f}td.zeroch span{background:#eceff1;border-radius:3px;padding:0 5px}
td.zeroch.onebyone{color:#9e9e9e}td.zeroch.onebyone span{background:none}
img{max-width:100%;height:auto;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.first{flex-wrap:nowrap}.first>section{margin:0;flex:0 1 auto;min-width:0;max-width:400px}
.first img{max-height:340px;width:auto}@media (max-width:900px){.first{flex-wrap:wrap}}
.bar{display:inline-block;height:10px;background:#42a5f5;vertical-align:middle;margin-right:6px}
summary{cursor:pointer;padding:2px 0}details[open] summary{margin-bottom:8px}
.pic{position:relative;display:inline-block;max-width:100%}
.pic img.zoomable{max-width:100%;max-height:960px;width:auto;cursor:zoom-in}
.pic.zoom{max-width:none;overflow:auto}.pic.zoom img.zoomable{max-width:none;max-height:none;cursor:zoom-out}
#tip{position:fixed;pointer-events:none;background:#263238;color:#fff;font-size:12px;padding:2px 6px;
border-radius:3px;display:none;z-index:9;white-space:nowrap}
button{font-size:12px;margin-left:8px}
"""

# Hover: the tile under the pointer, from the grid's geometry in the picture's own pixels
# (scaled by how wide the picture is shown). Section links open a closed section.
SCRIPT = """
(function(){
var tip=document.createElement('div');tip.id='tip';document.body.appendChild(tip);
function info(ev){var img=ev.target;if(!img||img.tagName!=='IMG')return null;var box=img.closest('.pic[data-tiles]');
if(!box)return null;var t=JSON.parse(box.getAttribute('data-tiles'));var r=img.getBoundingClientRect();
var s=r.width/t.w,px=(ev.clientX-r.left)/s,py=(ev.clientY-r.top)/s,i=-1;
if(t.b){for(var k=0;k<t.b.length;k++){var b=t.b[k];if(px>=b[0]&&py>=b[1]&&px<b[0]+b[2]&&py<b[1]+b[3]){i=k;break;}}}
else{var x=px-t.ox,y=py-t.oy,cw=t.tw+t.sep,chh=t.th+t.sep;if(x<0||y<0)return null;
var c=Math.floor(x/cw),rw=Math.floor(y/chh);if(c>=t.cols||x-c*cw>=t.tw||y-rw*chh>=t.th)return null;i=rw*t.cols+c;}
if(i<0||i>=t.r.length)return null;var v=t.r[i];
return 'channel '+(t.ch?t.ch[i]:i)+': '+(v[0]===v[1]?v[0]:v[0]+' .. '+v[1]);}
document.addEventListener('mousemove',function(ev){var txt=info(ev);if(!txt){tip.style.display='none';return;}
tip.textContent=txt;tip.style.left=(ev.clientX+12)+'px';tip.style.top=(ev.clientY+12)+'px';tip.style.display='block';});
document.addEventListener('click',function(ev){var img=ev.target;if(img&&img.classList&&img.classList.contains('zoomable')){
img.parentNode.classList.toggle('zoom');}});
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));var t=id&&document.getElementById(id);
if(!t)return;var d=t.tagName==='DETAILS'?t:t.querySelector('details');if(d&&!d.open){d.open=true;t.scrollIntoView();}}
window.addEventListener('hashchange',openTarget);openTarget();
window.setSections=function(open,root){(root||document).querySelectorAll('details.layer').forEach(function(d){d.open=open;});};
})();
"""

ZERO_COLUMN_NOTE = ("all-zero ch (grey): channels that are zero everywhere on this input, a property of this one "
                    "input (usually ReLU sparsity), not a defect; filters dead over a dataset are what "
                    "`onnxact check` reports (red).")


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header (24 bytes read), None when it is not a readable PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def _url(full: Path, directory: Path) -> str:
    rel = os.path.relpath(full, directory).replace(os.sep, "/")
    return "/".join(quote(part) for part in rel.split("/"))


def _data_url(full: Path) -> str:
    try:
        data = base64.b64encode(full.read_bytes()).decode()
    except OSError as e:
        raise OutputError(f"cannot read {full} to embed it in the report: {e.strerror or e}") from None
    return f"data:image/png;base64,{data}"


def img_tag(src: Path | str, directory: Path, embed: bool, alt: str, *, lazy: bool = False,
            preview: Path | str | None = None, tiles: Mapping[str, Any] | None = None,
            zoom: bool = False) -> str:
    """One picture of the page.

    ``preview`` (a smaller PNG of ``src``) is shown instead of ``src`` and links to it; ``embed``
    puts ``src`` itself in the page (``zoom``: shown at most 960 px high, a click
    shows it at full size). ``tiles`` (see :func:`tile_map`) adds the hover text of each tile.
    """
    e = html.escape
    full = Path(src) if Path(src).is_absolute() else directory / src
    size = png_size(full)
    shown = full
    if preview is not None and not embed:
        shown = Path(preview) if Path(preview).is_absolute() else directory / preview
        size = png_size(shown) or size
    url = _data_url(shown) if embed else _url(shown, directory)
    attrs = [f'src="{e(url, quote=True)}"', f'alt="{e(alt, quote=True)}"']
    if size is not None:
        attrs.append(f'width="{size[0]}" height="{size[1]}"')
    if lazy:
        attrs.append('loading="lazy" decoding="async"')
    if embed and zoom:
        attrs.append('class="zoomable" title="click: full size"')
    tag = f"<img {' '.join(attrs)}>"
    if not embed and (preview is not None or zoom):
        link_title = "full-size picture" if preview is not None else "open the picture"
        tag = f'<a href="{e(_url(full, directory), quote=True)}" target="_blank" title="{link_title}">{tag}</a>'
    if tiles is None and not (embed and zoom):
        return tag
    data = f" data-tiles='{_attr(json.dumps(tiles, separators=(',', ':')))}'" if tiles is not None else ""
    return f"<span class='pic'{data}>{tag}</span>"


def _attr(text: str) -> str:
    """``text`` inside a single-quoted attribute (JSON keeps its double quotes: half the bytes)."""
    return text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")


def heatmap_base(rgb: np.ndarray, side: int = HEATMAP_SIDE) -> np.ndarray:
    """The picture (float ``H x W x 3`` in [0, 1]) under the layer heatmaps, longest side at most
    ``side`` (aspect kept; the CAM keeps the full picture). Returned as is when small enough."""
    h, w = rgb.shape[:2]
    if max(h, w) <= side:
        return rgb
    from PIL import Image

    f = side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


def write_preview(image: Any, path: Path, box: tuple[int, int] = PREVIEW_BOX) -> Path | None:
    """A downscaled copy of ``image`` (PIL) when it does not fit in ``box`` (width, height), else None.

    Why an integer reduction: ``Image.reduce`` averages k x k blocks (sharp tiles, ~10 ms for a
    1600 px grid); the preview then fits in ``box``."""
    from .render import _prepare_dir, save_png

    w, h = image.size
    k = math.ceil(max(w / box[0], h / box[1]))
    if k <= 1:
        return None
    _prepare_dir(path.parent)
    return save_png(image.reduce(k), path)


def tile_map(picture: Any, arr: Any, info: Any = None, sample: int = 0) -> dict[str, Any] | None:
    """Where each tile (or bar, or row) of a layer picture is, and what it holds, for the hover text.

    ``picture``: the ``LayerPicture`` of :func:`onnxact.render.render_layer`. When the renderer
    gives ``tile_boxes`` / ``channels`` / ``tile_ranges`` (boxes in the picture's pixels) they are
    used as is (grids, bar charts, channels x time rows alike); otherwise the grid's geometry
    (``origin``, ``tile_shape``, ``cols``, ``count``, 1-px separators) and each channel's range
    from ``arr``. None when neither describes one tile per channel.
    """
    try:
        width, height = (int(v) for v in picture.image.size)
    except (AttributeError, TypeError, ValueError):
        return None
    boxes = list(getattr(picture, "tile_boxes", None) or [])
    channels = list(getattr(picture, "channels", None) or [])
    ranges = list(getattr(picture, "tile_ranges", None) or [])
    if boxes and len(ranges) == len(boxes) and len(channels) in (0, len(boxes)):
        out: dict[str, Any] = {"w": width, "b": [[int(v) for v in box] for box in boxes],
                               "r": [[_round(lo), _round(hi)] for lo, hi in ranges]}
        if channels:
            out["ch"] = [int(c) for c in channels]
        return out
    return _grid_map(picture, arr, info, sample, width, height)


def _grid_map(picture: Any, arr: Any, info: Any, sample: int, width: int, height: int) -> dict[str, Any] | None:
    """The hover map of a plain tile grid (a renderer that gives no tile boxes)."""
    try:
        ox, oy = (int(v) for v in picture.origin)
        th, tw = (int(v) for v in picture.tile_shape)
        cols, count = int(picture.cols), int(picture.count)
    except (AttributeError, TypeError, ValueError):
        return None
    sep = 1
    rows = math.ceil(count / max(cols, 1))
    if count < 2 or ox + cols * (tw + sep) - sep > width or oy + rows * (th + sep) - sep > height:
        return None
    ranges = _channel_ranges(arr, info, sample, count)
    if ranges is None:
        return None
    return {"w": width, "ox": ox, "oy": oy, "tw": tw, "th": th, "sep": sep, "cols": cols, "n": count,
            "r": [[_round(lo), _round(hi)] for lo, hi in ranges]}


def _round(v: float) -> float:
    """3 significant digits (what the hover shows; keeps the page small)."""
    return float(f"{float(v):.3g}")


def _channel_ranges(arr: Any, info: Any, sample: int, count: int) -> list[tuple[float, float]] | None:
    """(min, max) of each channel of one sample of a channels-first or -last map; None otherwise."""
    from .render import guess_array_layout

    a = np.asarray(arr)
    if a.ndim != 4:
        return None
    layout = getattr(info, "layout", None) or guess_array_layout(a)
    if layout not in ("NCHW", "NHWC"):
        return None
    s = a[sample] if layout == "NCHW" else np.moveaxis(a[sample], -1, 0)
    if s.shape[0] != count or s.shape[1] * s.shape[2] <= 1:
        return None
    s = s.reshape(count, -1)
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(s), s, np.nan)
        lo, hi = np.nanmin(finite, axis=1), np.nanmax(finite, axis=1)
    return list(zip(np.nan_to_num(lo).tolist(), np.nan_to_num(hi).tolist()))


def layer_section(anchor: str, title: str, detail: str, pictures: Sequence[str], open_: bool) -> str:
    """One layer as a collapsible section (summary: name, op, shape; body: its pictures)."""
    e = html.escape
    return (f"<section id='{anchor}'><details class='layer'{' open' if open_ else ''}><summary><h2>{e(title)}</h2> "
            f"<span class='muted'>{e(detail)}</span></summary><div class='row'>{''.join(pictures)}</div>"
            "</details></section>")


def page(title: str, subtitle: str, body: Sequence[str]) -> str:
    """The whole HTML document around ``body`` (inline style and script: opens from ``file://``)."""
    e = html.escape
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
                      f"<header><h1>{e(title)}</h1><p>{e(subtitle)}</p></header><main>",
                      *body, f"</main><script>{SCRIPT}</script></body></html>"])
