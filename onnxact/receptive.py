"""Receptive fields from the graph: which input pixels a cell of a layer's map sees.

Why from the graph: an exemplar is a dataset image plus the patch of it that made a filter fire
most. The patch is the field of the map cell holding the maximum: its centre and extent in
input pixels follow from the kernel, stride, padding and dilation of every conv and pool between
the input and the layer (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). One forward pass over the nodes in graph order gives, per tensor and
spatial axis, a :class:`Axis`: ``jump`` (input pixels between neighbouring cells), ``size``
(input pixels one cell sees) and ``start`` (the centre of cell 0, in continuous input
coordinates where pixel ``i`` covers ``[i, i + 1)``).

Rules (per axis, y = rows, x = columns of a channels-first map):

- Conv / ConvTranspose / QLinearConv / ConvInteger and MaxPool / AveragePool / LpPool: kernel
  ``k`` with dilation ``d`` (``k' = d (k - 1) + 1``), stride ``s``, leading pad ``p`` (``auto_pad``
  SAME_* resolved from the map size, tracked from the fed input size): ``size += (k' - 1) jump``,
  ``start += ((k' - 1) / 2 - p) jump``, ``jump *= s`` (a transposed conv divides instead).
- Resize / Upsample by ``f``: ``jump /= f``; the centre of cell 0 moves as the coordinate
  transformation mode says (half_pixel: ``(0.5 / f - 0.5) jump``; asymmetric: none).
- Pad shifts ``start``; SpaceToDepth / Slice steps multiply ``jump``; DepthToSpace divides it.
- Global pools, reductions over space, Flatten, Reshape, Gemm, attention MatMuls: the whole image.
- Every other op passes its input's field on. Where branches merge (Add, Concat, Mul, ...), the
  output takes the LARGEST field of its inputs: an APPROXIMATION (the true field of a sum is the
  union of its branches' fields, which the largest one contains when the branches are aligned,
  as in residual and FPN blocks). An input that is broadcast over space (a squeeze-excite
  gate, 1x1) does not count.

The box of a cell is its field's extent, ``[centre - size / 2, centre + size / 2)``, mapped from
the fed input onto the original image through the :class:`~onnxact.sizing.Geometry` of the fit
(letterbox padding removed, crop put back) and clipped to the image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Axis", "Field", "receptive_fields", "cell_box", "box_to_image"]

_CONV = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool",
         "QLinearAveragePool", "NhwcMaxPool", "QLinearConvTranspose"}
_GLOBAL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool", "Flatten", "Reshape",
           "Gemm", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceProd", "Einsum"}


@dataclass(frozen=True)
class Axis:
    """The field along one spatial axis, in input pixels (see the module docstring)."""

    jump: float
    size: float
    start: float
    length: int | None = None  # cells of the map along this axis, when known

    def centre(self, cell: int) -> float:
        return self.start + cell * self.jump


@dataclass(frozen=True)
class Field:
    """The receptive field of one tensor: ``y`` (rows) and ``x`` (columns); ``whole``: every pixel."""

    y: Axis
    x: Axis
    whole: bool = False


def _attr(node: Any, name: str, default: Any) -> Any:
    """``graph.node_attr`` with strings (auto_pad, modes) as str."""
    from .graph import node_attr

    v = node_attr(node, name, default)
    return v.decode() if isinstance(v, bytes) else v


def _kernel(node: Any, axes: int, weights: Mapping[str, tuple[int, ...]]) -> list[int] | None:
    k = list(_attr(node, "kernel_shape", []) or [])
    if not k:
        w = node.input[3] if node.op_type == "QLinearConv" and len(node.input) > 3 else (
            node.input[1] if len(node.input) > 1 else "")
        shape = weights.get(w)
        if shape and len(shape) == axes + 2:
            k = list(shape[2:])
    return k if len(k) == axes else None


def _conv(node: Any, f: Field, weights: Mapping[str, tuple[int, ...]]) -> Field:
    spatial = (f.y, f.x)
    k = _kernel(node, 2, weights) or _kernel(node, 1, weights)
    if k is None:
        return f
    n = len(k)
    axes = list(spatial[-n:])  # a 1-D conv works along x
    strides = list(_attr(node, "strides", []) or [1] * n)
    dil = list(_attr(node, "dilations", []) or [1] * n)
    pads = list(_attr(node, "pads", []) or [0] * (2 * n))
    auto = str(_attr(node, "auto_pad", "NOTSET"))
    ceil_mode = bool(_attr(node, "ceil_mode", 0))
    transposed = node.op_type.endswith("ConvTranspose")
    out = []
    for i, a in enumerate(axes):
        ke = dil[i] * (k[i] - 1) + 1
        s = strides[i] if i < len(strides) else 1
        p_begin = pads[i] if len(pads) == 2 * n else 0
        p_end = pads[i + n] if len(pads) == 2 * n else 0
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if a.length is not None and not transposed:
                total = max((math.ceil(a.length / s) - 1) * s + ke - a.length, 0)
            else:
                total = max(ke - s, 0)
            p_begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            p_end = total - p_begin
        elif auto == "VALID":
            p_begin = p_end = 0
        if transposed:
            out_pad = (list(_attr(node, "output_padding", []) or [0] * n) + [0] * n)[i]
            length = None if a.length is None else (a.length - 1) * s + ke - p_begin - p_end + out_pad
            out.append(Axis(a.jump / s, a.size + (ke - 1) * a.jump / s,
                            a.start + (p_begin - (ke - 1) / 2) * a.jump / s, length))
            continue
        if a.length is None:
            length = None
        else:
            span = a.length + p_begin + p_end - ke
            length = (math.ceil(span / s) if ceil_mode else span // s) + 1 if span >= 0 else None
        out.append(Axis(a.jump * s, a.size + (ke - 1) * a.jump, a.start + ((ke - 1) / 2 - p_begin) * a.jump, length))
    if n == 1:
        return Field(f.y, out[0], f.whole)
    return Field(out[0], out[1], f.whole)


def _scale_axis(a: Axis, factor: float, mode: str) -> Axis:
    if factor <= 0:
        return a
    if mode in ("asymmetric", "tf_crop_and_resize"):
        shift = 0.0
    elif mode == "align_corners":
        shift = 0.0
    else:  # half_pixel, pytorch_half_pixel, half_pixel_symmetric, tf_half_pixel_for_nn
        shift = 0.5 / factor - 0.5
    length = None if a.length is None else int(math.floor(a.length * factor))
    return Axis(a.jump / factor, a.size, a.start + shift * a.jump, length)


def _resize(node: Any, f: Field, consts: Any, fields: Mapping[str, Field], layout: str) -> Field:
    from .sizing import _shape_source

    ya, xa = (1, 2) if layout == "NHWC" else (2, 3)
    scales = _attr(node, "scales", None)
    if scales is None:
        idx = 1 if node.op_type == "Upsample" or len(node.input) == 2 else 2
        c = consts(node.input[idx]) if len(node.input) > idx and node.input[idx] else None
        if c is not None and c.size == 4:
            scales = [float(v) for v in c.reshape(-1)]
    fy = fx = None
    if scales and len(scales) == 4:
        fy, fx = scales[ya], scales[xa]
    elif len(node.input) >= 4 and node.input[3]:
        sizes = consts(node.input[3])
        if sizes is not None and sizes.size == 4 and f.y.length and f.x.length:
            fy, fx = sizes.reshape(-1)[ya] / f.y.length, sizes.reshape(-1)[xa] / f.x.length
        else:  # sizes computed at run time: the Shape of the map it is concatenated with
            src = _shape_source(node.input[3], {})
            ref = fields.get(src) if src else None
            if ref is not None and ref.y.length and f.y.length and ref.x.length and f.x.length:
                fy, fx = ref.y.length / f.y.length, ref.x.length / f.x.length
    if fy is None or fx is None:
        fy = fx = 2.0  # an upsample of unknown factor: the usual one
    mode = str(_attr(node, "coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else "asymmetric"))
    return Field(_scale_axis(f.y, fy, mode), _scale_axis(f.x, fx, mode), f.whole)


def _whole(f: Field, pooled: bool) -> Field:
    """Every input pixel; ``pooled``: a global pool or reduction (one cell, broadcast when merged)."""
    n = 1 if pooled else None
    return Field(Axis(f.y.jump, math.inf, f.y.start, n), Axis(f.x.jump, math.inf, f.x.start, n), True)


def _largest(fs: Sequence[Field]) -> Field:
    """The field of a merge: the largest of the inputs that are not broadcast over space (a
    squeeze-excite gate, one cell, multiplying a map keeps the map's field)."""
    spatial = [f for f in fs if not (f.y.length == 1 and f.x.length == 1)]
    pool = spatial or list(fs)
    return max(pool, key=lambda f: (f.whole, f.y.size * f.x.size))


def receptive_fields(model: Any, tensors: Sequence[str] | None = None,
                     input_size: tuple[int, int] | None = None) -> dict[str, Field]:
    """``{tensor: Field}`` for the tensors computed from the image input (``tensors`` only, when
    given). ``model``: an ``onnxact.Model``; ``input_size``: the fed (height, width), which
    resolves SAME padding and Resize sizes exactly (else they are estimated)."""
    from .sizing import _const, image_input

    proto = model.proto
    g = proto.graph
    inp = image_input(model)
    if inp is None:
        return {}
    producers = {o: n for n in g.node for o in n.output if o}
    weights = {t.name: tuple(t.dims) for t in g.initializer}
    layouts = getattr(model, "layouts", {}) or {}
    h, w = input_size or (None, None)
    if input_size is None:
        from .sizing import fixed_hw

        h, w = fixed_hw(inp)
    fields: dict[str, Field] = {inp.name: Field(Axis(1.0, 1.0, 0.5, h), Axis(1.0, 1.0, 0.5, w))}

    def consts(name: str) -> np.ndarray | None:
        return _const(g, name, producers)

    for node in g.node:
        ins = [fields[i] for i in node.input if i in fields]
        if not ins:
            continue
        op = node.op_type
        f = _largest(ins)
        if op in _CONV and not f.whole:
            f = _conv(node, fields.get(node.input[0], f), weights)
        elif op in ("Resize", "Upsample") and not f.whole:
            f = _resize(node, fields.get(node.input[0], f), consts, fields, layouts.get(node.input[0], "NCHW"))
        elif op in _GLOBAL or (op == "MatMul" and len(ins) > 1):
            f = _whole(f, op.startswith(("Global", "QLinearGlobal", "Reduce")))
        elif op in ("SpaceToDepth", "DepthToSpace") and not f.whole:
            b = int(_attr(node, "blocksize", 1)) or 1
            if op == "SpaceToDepth":
                f = Field(*(Axis(a.jump * b, a.size + (b - 1) * a.jump, a.start + (b - 1) / 2 * a.jump,
                                 None if a.length is None else a.length // b) for a in (f.y, f.x)))
            else:
                f = Field(*(Axis(a.jump / b, a.size, a.start - (b - 1) / (2 * b) * a.jump,
                                 None if a.length is None else a.length * b) for a in (f.y, f.x)))
        elif op == "Pad" and not f.whole:
            f = _pad(node, f, consts, layouts.get(node.input[0], "NCHW"))
        elif op == "Slice" and not f.whole and len(node.input) >= 5:
            f = _slice(node, f, consts, layouts.get(node.input[0], "NCHW"))
        for o in node.output:
            if o:
                fields[o] = f
    if tensors is None:
        return fields
    return {t: fields[t] for t in tensors if t in fields}


def _pad(node: Any, f: Field, consts: Any, layout: str) -> Field:
    pads = _attr(node, "pads", None)
    if pads is None and len(node.input) > 1:
        c = consts(node.input[1])
        pads = None if c is None else [int(v) for v in c.reshape(-1)]
    if not pads or len(pads) != 8 or len(node.input) > 3 and node.input[3]:
        return f
    ya, xa = (1, 2) if layout == "NHWC" else (2, 3)

    def moved(a: Axis, i: int) -> Axis:
        length = None if a.length is None else a.length + pads[i] + pads[i + 4]
        return Axis(a.jump, a.size, a.start - pads[i] * a.jump, length)

    return Field(moved(f.y, ya), moved(f.x, xa), f.whole)


def _slice(node: Any, f: Field, consts: Any, layout: str) -> Field:
    starts, axes, steps = consts(node.input[1]), consts(node.input[3]), consts(node.input[4])
    if starts is None or axes is None or steps is None or not (starts.size == axes.size == steps.size):
        return f
    ya, xa = (1, 2) if layout == "NHWC" else (2, 3)
    y, x = f.y, f.x
    for a, s0, st in zip(axes.reshape(-1).tolist(), starts.reshape(-1).tolist(), steps.reshape(-1).tolist()):
        if st <= 0:
            continue
        a = a + 4 if a < 0 else a
        s0 = max(0, s0)
        if a == ya:
            y = Axis(y.jump * st, y.size, y.start + s0 * y.jump, None if y.length is None else -(-(y.length - s0) // st))
        elif a == xa:
            x = Axis(x.jump * st, x.size, x.start + s0 * x.jump, None if x.length is None else -(-(x.length - s0) // st))
    return Field(y, x, f.whole)


def cell_box(field: Field, row: int, col: int, input_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in fed-input pixels (continuous, not clipped) of the field of cell (row, col);
    the whole input for a global field."""
    ih, iw = input_size
    if field.whole or math.isinf(field.y.size) or math.isinf(field.x.size):
        return 0.0, 0.0, float(iw), float(ih)
    cy, cx = field.y.centre(row), field.x.centre(col)
    return cx - field.x.size / 2, cy - field.y.size / 2, cx + field.x.size / 2, cy + field.y.size / 2


def box_to_image(box: tuple[float, float, float, float], geometry: Any) -> tuple[int, int, int, int]:
    """A fed-input box onto the original image through a ``sizing.Geometry``: integer pixels
    ``(x0, y0, x1, y1)`` (x1, y1 exclusive, as PIL's ``crop``), clipped to the image, at least 1 px."""
    x0, y0, x1, y1 = box
    ct, cl, ch, cw = geometry.content
    st, sl, sh, sw = geometry.source
    ih, iw = geometry.image_size

    def to_img(v: float, c0: float, clen: float, s0: float, slen: float) -> float:
        return s0 + (v - c0) * (slen / clen) if clen else s0

    ax0, ax1 = to_img(x0, cl, cw, sl, sw), to_img(x1, cl, cw, sl, sw)
    ay0, ay1 = to_img(y0, ct, ch, st, sh), to_img(y1, ct, ch, st, sh)
    (bx0, bx1), (by0, by1) = _clip(ax0, ax1, iw), _clip(ay0, ay1, ih)
    return bx0, by0, bx1, by1


def _clip(a0: float, a1: float, n: int) -> tuple[int, int]:
    """[a0, a1) as whole pixels inside [0, n), at least one (a field in the letterbox padding
    still names the nearest edge pixels)."""
    lo = min(max(math.floor(a0 + 1e-6), 0), max(n - 1, 0))
    hi = min(max(math.ceil(a1 - 1e-6), lo + 1), max(n, 1))
    return int(lo), int(hi)
