"""Which height x width an image is fed at, how it is fitted there, and how maps go back onto it.

Why its own stage: a model with dynamic height/width does not take any size. A detector whose
neck concatenates upsampled maps needs sides that are multiples of its total stride (a 600x400
photo fed as is fails inside onnxruntime with ``Concat ... 19 and 20``), a text recogniser keeps
its fixed height and lets the width follow the line, and a classifier with a fixed input is
stretched. So the size is resolved once, here, in this order:

1. ``size=`` / ``--size H W`` (checked against the model's fixed dims);
2. the model's own metadata: ``onnxact.preprocess`` ``{"size": [h, w]}``, Ultralytics ``imgsz``
   (``"[320, 320]"`` or ``"640"``), other common keys (``img_size``, ``image_size``,
   ``input_size``);
3. the image's aspect ratio, the long side at most :data:`DEFAULT_LONG_SIDE` (640), each free side
   rounded up to a multiple of the network's stride (Ultralytics ``stride`` metadata, else the
   product of conv/pool strides down the deepest path of the graph); fixed dims are kept;
4. only when the graph shows no stride at all: the image's own size.

How the image is fitted (``resize=``): ``stretch`` (fixed-size classifiers, as they were trained),
``letterbox`` (aspect kept, centred, padded with grey 114 as Ultralytics does; the default for
dynamic models and Ultralytics detectors) or ``crop`` (aspect kept, centre crop; the default for
Ultralytics classifiers). Each fit is recorded as a
:class:`Geometry`, and :func:`map_to_image` uses it to put a model-input-sized map back on the
ORIGINAL image (un-pad / un-crop, then resize), so heatmaps and CAM overlays line up in every mode.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .graph import node_attr

__all__ = ["DEFAULT_LONG_SIDE", "RESIZE_MODES", "PAD_VALUE", "Geometry", "network_stride", "metadata_size",
           "image_input", "fixed_hw", "resolve_size", "default_resize", "check_size", "plan", "fit_image", "map_to_image",
           "scan_size"]

#: Long side (pixels) of a dynamic model's input when neither size= nor the metadata says otherwise.
DEFAULT_LONG_SIDE = 640
RESIZE_MODES = ("stretch", "letterbox", "crop")
#: Grey of the letterbox padding (Ultralytics' value, on 0-255 pixels before normalisation).
PAD_VALUE = 114

_STRIDED = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"}
_SIZE_KEYS = ("imgsz", "img_size", "image_size", "input_size")
_strides: dict[str, tuple[int, int] | None] = {}  # model sha256 -> stride (graphs are immutable once loaded)


@dataclass(frozen=True)
class Geometry:
    """How one image was fitted into the model input.

    ``image_size`` and ``input_size`` are (height, width). The rectangle ``content`` of the input
    (top, left, height, width, in input pixels) shows the rectangle ``source`` of the image (in
    image pixels): the whole image for stretch and letterbox, the crop box for crop; outside
    ``content`` is letterbox padding.
    """

    mode: str
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    content: tuple[float, float, float, float]
    source: tuple[float, float, float, float]

    @property
    def scale(self) -> tuple[float, float]:
        """Input pixels per image pixel, (y, x)."""
        return self.content[2] / self.source[2], self.content[3] / self.source[3]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the network's stride, from the graph ------------------------------------------------------
def _const(graph: Any, name: str, producers: Mapping[str, Any]) -> np.ndarray | None:
    """The value of a small constant tensor (initializer or Constant node), else None."""
    import onnx
    from onnx import numpy_helper

    if not name:
        return None
    for t in graph.initializer:
        if t.name == name:
            # never external data (it would be read from wherever we stand) nor anything big
            if t.data_location == onnx.TensorProto.EXTERNAL or math.prod(t.dims) > 64:
                return None
            try:
                return numpy_helper.to_array(t)
            except Exception:  # noqa: BLE001 - a malformed tensor: not a usable constant
                return None
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
    return None


def _shape_source(tensor: str, producers: Mapping[str, Any]) -> str | None:
    """The tensor whose ``Shape`` a computed ``sizes`` input of Resize comes from (upsample to match),
    searched a few nodes back."""
    todo, seen = [(tensor, 0)], set()
    while todo:
        t, depth = todo.pop(0)
        node = producers.get(t)
        if node is None or depth > 8 or t in seen:
            continue
        seen.add(t)
        if node.op_type == "Shape":
            return node.input[0]
        todo.extend((i, depth + 1) for i in node.input if i)
    return None


def network_stride(model: Any) -> tuple[int, int] | None:
    """(height, width) total stride of the first image input: the product of conv/pool strides
    down the deepest path, divided back by Resize/Upsample factors, times Slice steps and
    SpaceToDepth blocks. None when the graph has no strided op (nothing to round to).

    Why the deepest path: a neck that upsamples a stride-32 map and concatenates it with a
    stride-16 one only matches when the input is a multiple of 32.
    """
    sha = getattr(model, "sha256", None)
    if sha is not None and sha in _strides:
        return _strides[sha]
    proto = getattr(model, "proto", model)
    g = proto.graph
    inp = image_input(model)
    result = None if inp is None else _graph_stride(g, inp.name)
    if sha is not None:
        _strides[sha] = result
    return result


def _graph_stride(g: Any, input_name: str) -> tuple[int, int] | None:
    producers = {o: n for n in g.node for o in n.output}
    stride: dict[str, tuple[float, float]] = {input_name: (1.0, 1.0)}
    best = (1.0, 1.0)
    strided = False
    for node in g.node:
        ins = [stride[i] for i in node.input if i in stride]
        if not ins:
            continue
        sy, sx = max(s[0] for s in ins), max(s[1] for s in ins)
        op = node.op_type
        if op in _STRIDED or op == "ConvTranspose":
            st = list(node_attr(node, "strides", []) or [])
            if len(st) == 2:
                strided = strided or op != "ConvTranspose" and (st[0] > 1 or st[1] > 1)
                sy, sx = (sy / st[0], sx / st[1]) if op == "ConvTranspose" else (sy * st[0], sx * st[1])
        elif op in ("Resize", "Upsample"):
            scales = node_attr(node, "scales", None)
            if scales is None:
                idx = 1 if op == "Upsample" or len(node.input) == 2 else 2
                c = _const(g, node.input[idx], producers) if len(node.input) > idx else None
                scales = None if c is None or c.size != 4 else [float(v) for v in c.reshape(-1)]
            if scales and len(scales) == 4 and scales[2] > 0 and scales[3] > 0:
                sy, sx = sy / scales[2], sx / scales[3]
            else:  # sizes= computed at run time: usually the Shape of the map it is concatenated with
                src = _shape_source(node.input[-1], producers) if len(node.input) >= 3 else None
                sy, sx = stride.get(src, (sy / 2, sx / 2)) if src else (sy / 2, sx / 2)
        elif op == "SpaceToDepth":
            b = int(node_attr(node, "blocksize", 1))
            sy, sx = sy * b, sx * b
            strided = strided or b > 1
        elif op == "DepthToSpace":
            b = int(node_attr(node, "blocksize", 1))
            sy, sx = sy / b, sx / b
        elif op == "Slice" and len(node.input) >= 5:  # YOLOv5's Focus: x[..., ::2, ::2]
            axes = _const(g, node.input[3], producers)
            steps = _const(g, node.input[4], producers)
            if axes is not None and steps is not None and axes.size == steps.size:
                for a, s in zip(axes.reshape(-1).tolist(), steps.reshape(-1).tolist()):
                    if a in (2, -2) and abs(s) > 1:
                        sy *= abs(s)
                        strided = True
                    elif a in (3, -1) and abs(s) > 1:
                        sx *= abs(s)
                        strided = True
        for o in node.output:
            if o:
                stride[o] = (sy, sx)
        best = (max(best[0], sy), max(best[1], sx))
    if not strided:
        return None
    return max(1, round(best[0])), max(1, round(best[1]))


# -- metadata --------------------------------------------------------------------------------------
def _parse_size(v: Any) -> tuple[int, int] | None:
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = json.loads(s)
        except ValueError:
            try:
                v = ast.literal_eval(s)  # "(640, 640)" - literals only, never eval
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and v > 0:
        return int(v), int(v)
    if isinstance(v, (list, tuple)) and len(v) in (1, 2) and all(
            isinstance(i, (int, float)) and not isinstance(i, bool) and i > 0 for i in v):
        return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))
    return None


def metadata_size(metadata: Mapping[str, str]) -> tuple[tuple[int, int] | None, int | None]:
    """((height, width) or None, stride or None) from a model's metadata_props."""
    size = None
    raw = metadata.get("onnxact.preprocess")
    if raw:
        try:
            pre = json.loads(raw)
        except ValueError:
            pre = None
        if isinstance(pre, dict):
            size = _parse_size(pre.get("size"))
    for key in _SIZE_KEYS:
        if size is None and key in metadata:
            size = _parse_size(metadata[key])
    stride = None
    s = _parse_size(metadata.get("stride", ""))
    if s is not None:
        stride = s[0]
    return size, stride


# -- resolution -------------------------------------------------------------------------------------
def image_input(model: Any) -> Any:
    """The first 4-D NCHW/NHWC input of ``model`` (an InputInfo), or None."""
    for i in getattr(model, "inputs", []) or []:
        if len(i.shape) == 4 and i.layout in ("NCHW", "NHWC"):
            return i
    return None


def fixed_hw(inp: Any) -> tuple[int | None, int | None]:
    """(height, width) of an image input where fixed, None where dynamic."""
    if inp is None:
        return None, None
    h, w = (inp.shape[1], inp.shape[2]) if inp.layout == "NHWC" else (inp.shape[2], inp.shape[3])

    def fixed(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    return fixed(h), fixed(w)


def check_size(size: Any) -> tuple[int, int]:
    """``size`` as a (height, width) pair of positive ints, or InputError saying how to write it."""
    try:
        h, w = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = " ".join(str(v) for v in size) if isinstance(size, (list, tuple)) else repr(size)
        raise InputError(f"size must be two positive whole numbers H W (e.g. --size 640 640), not {shown}")
    return int(h), int(w)


#: Ultralytics ``task`` metadata -> how its own predictor fits images (classify: resize + centre crop).
_ULTRALYTICS_FIT = {"detect": "letterbox", "segment": "letterbox", "pose": "letterbox", "obb": "letterbox",
                    "classify": "crop"}


def default_resize(model: Any, input_info: Any = None) -> str:
    """How images are fitted when ``resize=`` is not given: as an Ultralytics export's ``task``
    says (a fixed 640x640 YOLO export still wants letterboxing), else ``stretch`` for a model
    whose image input is fully fixed (classifiers, as they were trained), else ``letterbox``."""
    meta = getattr(model, "metadata", None) or {}
    if "imgsz" in meta and meta.get("task") in _ULTRALYTICS_FIT:
        return _ULTRALYTICS_FIT[meta["task"]]
    inp = input_info or image_input(model)
    h, w = fixed_hw(inp)
    return "stretch" if inp is None or (h and w) else "letterbox"


def _round_up(v: float, step: int) -> int:
    return max(step, int(math.ceil(v / step - 1e-9)) * step)


def resolve_size(model: Any, image_size: tuple[int, int] | None, size: Any = None,
                 input_info: Any = None, upscale: bool = False) -> tuple[int, int] | None:
    """The (height, width) to feed an image of ``image_size`` (h, w) at; None = its own size.

    See the module docstring for the order. ``image_size`` may be None (a scan that has not read
    an image yet): the free sides are then a square of the default long side. ``input_info``
    picks another input than the first image input. ``upscale``: a small image is scaled up to
    the default long side too (a scan's one size must not follow a thumbnail that comes first).
    """
    inp = input_info or image_input(model)
    fh, fw = fixed_hw(inp)
    if size is not None:
        h, w = check_size(size)
        if (fh and h != fh) or (fw and w != fw):
            want = f"{fh or 'H'} {fw or 'W'}"
            raise InputError(
                f"size {h}x{w} does not fit: the model's input '{inp.name}' is fixed at "
                f"{fh or 'any'} x {fw or 'any'} (height x width); drop --size or give --size {want}")
        return h, w
    if fh and fw:
        return fh, fw
    if inp is None:
        return None
    meta, meta_stride = metadata_size(getattr(model, "metadata", None) or {})
    if meta is not None:
        return fh or meta[0], fw or meta[1]
    st = (meta_stride, meta_stride) if meta_stride else network_stride(model)
    if st is None and not (fh or fw):
        return None
    sy, sx = st or (1, 1)
    if not (fh or fw) and max(sy, sx) >= 4 * min(sy, sx):
        # A much larger stride on one axis: the network collapses it (a text-line recogniser
        # pools its height down to one row), so that axis takes exactly one stride.
        fh, fw = (sy, None) if sy > sx else (None, sx)
    ih, iw = image_size or (DEFAULT_LONG_SIDE, DEFAULT_LONG_SIDE)
    ih, iw = max(1, ih), max(1, iw)
    if fh:
        cap = max(DEFAULT_LONG_SIDE, fh)
        return fh, min(_round_up(iw * fh / ih, sx), _round_up(cap, sx))
    if fw:
        cap = max(DEFAULT_LONG_SIDE, fw)
        return min(_round_up(ih * fw / iw, sy), _round_up(cap, sy)), fw
    f = DEFAULT_LONG_SIDE / max(ih, iw)
    f = f if upscale else min(1.0, f)
    return _round_up(ih * f, sy), _round_up(iw * f, sx)


def scan_size(model: Any, first_image: Any, size: Any = None) -> tuple[int, int] | None:
    """One size for a whole scan (every batch of ``check``): the first image's aspect, the long
    side at the default (up or down), free sides rounded to the stride; fixed sides kept.
    ``first_image`` is a PIL image, or None (a square of the default long side)."""
    hw = None
    if first_image is not None:
        w, h = first_image.size
        hw = (h, w)
    return resolve_size(model, hw, size, upscale=True)


# -- fitting and mapping back --------------------------------------------------------------------------
def plan(image_size: tuple[int, int], input_size: tuple[int, int], mode: str) -> Geometry:
    """The geometry of fitting an image of ``image_size`` into ``input_size`` (both (h, w))."""
    if mode not in RESIZE_MODES:
        raise InputError(f"resize must be one of {', '.join(RESIZE_MODES)}, not '{mode}'")
    ih, iw = image_size
    th, tw = input_size
    if mode == "stretch":
        return Geometry(mode, (ih, iw), (th, tw), (0.0, 0.0, float(th), float(tw)), (0.0, 0.0, float(ih), float(iw)))
    if mode == "letterbox":
        r = min(th / ih, tw / iw)
        nh, nw = max(1, min(th, round(ih * r))), max(1, min(tw, round(iw * r)))
        top, left = (th - nh) // 2, (tw - nw) // 2
        return Geometry(mode, (ih, iw), (th, tw), (float(top), float(left), float(nh), float(nw)),
                        (0.0, 0.0, float(ih), float(iw)))
    r = max(th / ih, tw / iw)
    ch, cw = min(ih, th / r), min(iw, tw / r)
    return Geometry(mode, (ih, iw), (th, tw), (0.0, 0.0, float(th), float(tw)),
                    ((ih - ch) / 2, (iw - cw) / 2, ch, cw))


def fit_image(img: Any, input_size: tuple[int, int], mode: str) -> tuple[Any, Geometry]:
    """Fit a PIL image into ``input_size`` (h, w) by ``mode``; returns (PIL image, Geometry)."""
    from PIL import Image

    g = plan((img.size[1], img.size[0]), input_size, mode)
    th, tw = g.input_size
    if mode == "stretch":
        return (img if img.size == (tw, th) else img.resize((tw, th), Image.BILINEAR)), g
    if mode == "crop":
        top, left, h, w = g.source
        return img.resize((tw, th), Image.BILINEAR, box=(left, top, left + w, top + h)), g
    top, left, nh, nw = (int(v) for v in g.content)
    inner = img if img.size == (nw, nh) else img.resize((nw, nh), Image.BILINEAR)
    fill: Any = PAD_VALUE if img.mode in ("L", "I", "F") else (PAD_VALUE,) * 3 + (255,) * (len(img.getbands()) - 3)
    canvas = Image.new(img.mode, (tw, th), fill)
    canvas.paste(inner, (left, top))
    return canvas, g


def _sample_matrix(n_out: int, n_img: int, src0: float, src_len: float, cont0: float, cont_len: float,
                   n_input: int, n_map: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights (n_out x n_map) from a map over the model input to ``n_out`` image pixels,
    and which output pixels the model saw (False outside a crop)."""
    u = (np.arange(n_out) + 0.5) * (n_img / n_out)  # image coordinate of each output pixel centre
    seen = (u >= src0 - 1e-6) & (u <= src0 + src_len + 1e-6)
    v = cont0 + (u - src0) * (cont_len / src_len)  # model-input coordinate
    from .render.heatmaps import bilinear_rows

    return bilinear_rows(v * (n_map / n_input) - 0.5, n_map), seen  # map index (half-pixel centres)


def map_to_image(maps: np.ndarray, geometry: Geometry, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Put ``(h, w)`` or ``(n, h, w)`` maps over the model input onto the original image.

    Returns maps of ``out_size`` (default: the image's size), a picture of the original image at
    any scale: the letterbox padding is dropped, a crop is put back where it came from, and pixels
    the model never saw (outside a crop) are NaN. One bilinear resampling, no double blur.
    """
    a = np.asarray(maps, dtype=np.float32)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"maps must be (h, w) or (n, h, w), not shape {np.shape(maps)}")
    oh, ow = out_size or geometry.image_size
    ih, iw = geometry.image_size
    th, tw = geometry.input_size
    ct, cl, ch, cw = geometry.content
    st, sl, sh, sw = geometry.source
    ry, seen_y = _sample_matrix(oh, ih, st, sh, ct, ch, th, a.shape[1])
    rx, seen_x = _sample_matrix(ow, iw, sl, sw, cl, cw, tw, a.shape[2])
    out = np.matmul(np.matmul(ry, a), rx.T)
    if not (seen_y.all() and seen_x.all()):
        out[:, ~(seen_y[:, None] & seen_x[None, :])] = np.nan
    return out[0] if single else out

