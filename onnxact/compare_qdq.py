"""Reading a QDQ side where onnxruntime can still fuse: before its QuantizeLinear, requantized in numpy.

Why: in a graph made by ``quantize_static`` each tensor T is followed by ``Q -> DQ`` and the next
conv reads the DQ output; onnxruntime fuses ``DQ -> Conv -> Q`` into one int8 QLinearConv. Making
a DQ output a graph output stops that fusion (measured on the 10-block net: 9 of 10 QLinearConvs
lost, the QDQ side at ~2.2x its plain time); so does reading the int8 Q output (the s8->u8 pass
must rewrite it). T itself, the float input of the Q node, stays a tensor in the fused graph
(all 10 QLinearConvs kept). The DQ output is ``(clip(rint(T / s) + zp, qmin, qmax) - zp) * s``,
elementwise, so reading T and applying that here gives the same values at a fraction of the cost.

Only where T is made by an op onnxruntime does not fuse with the Q that follows it (``_UNFUSED``:
BatchNormalization, MaxPool; a Conv -> BN graph, as the unfolded 10-block net). A T made by a
Conv, Add, GlobalAveragePool, HardSigmoid, ... is fused with its Q into one int8 op whose output
is rounded differently from "float op, then Q"; reading T there would unfuse it, change the
numbers (3% of SQNR on rapidocr det) and cost more (measured 1.6x vs 1.1x on rapidocr det).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["Requant", "requant_sources"]

#: producers of a Q's input that onnxruntime 1.32 (CPU) leaves as float ops: measured equal within 1e-5
_UNFUSED = frozenset({"BatchNormalization", "MaxPool"})

_INT = {onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8,
        onnx.TensorProto.INT16: np.int16, onnx.TensorProto.UINT16: np.uint16}


@dataclass(frozen=True)
class Requant:
    """A DQ output read at the float tensor ``source`` its Q node quantizes, with that Q's constants."""

    source: str
    scale: float
    lo: float  # qmin - zero_point: the clip range in quantization steps
    hi: float

    def apply(self, x: np.ndarray, in_place: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """DequantizeLinear(QuantizeLinear(x)) for a per-tensor scale, in float32.

        ``out``: a float32 array of x's shape to write into (a chunk buffer of
        ``compare_sums``, so a captured map is requantized chunk by chunk in cache, never
        written back). ``in_place``: overwrite ``x`` when it is a writable float32 array.
        """
        if out is not None:
            y = np.divide(x, np.float32(self.scale), out=out)
        elif in_place and x.dtype == np.float32 and x.flags.writeable and x.flags.c_contiguous:
            y = np.divide(x, np.float32(self.scale), out=x)
        else:
            y = np.divide(x, np.float32(self.scale), dtype=np.float32)
        np.rint(y, out=y)
        np.clip(y, self.lo, self.hi, out=y)
        y *= np.float32(self.scale)
        return y


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: t for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def requant_sources(proto: onnx.ModelProto, dq_tensors: list[str]) -> dict[str, Requant]:
    """``{DQ output: Requant}`` for each of ``dq_tensors`` made by ``DQ(Q(T))`` with per-tensor constants.

    Tensors that are not such a pair (per-channel scales, a DQ fed by a stored int8 weight, a Q
    with a non-constant scale, a float16 scale) or whose T onnxruntime fuses with the Q (see the
    module docstring) are left out: they are read as they are.
    """
    producer = {o: n for n in proto.graph.node for o in n.output}
    consts = _constants(proto)
    graph_inputs = {i.name for i in proto.graph.input}
    out: dict[str, Requant] = {}
    for t in dq_tensors:
        dq = producer.get(t)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or len(dq.input) < 3:
            continue
        if (q.input[1], q.input[2]) != (dq.input[1], dq.input[2]) or q.input[0] in graph_inputs:
            continue
        src = producer.get(q.input[0])
        if src is None or src.op_type not in _UNFUSED or src.domain not in ("", "ai.onnx"):
            continue
        s, z = consts.get(q.input[1]), consts.get(q.input[2])
        if s is None or z is None or z.data_type not in _INT or s.data_type != onnx.TensorProto.FLOAT:
            continue
        sa, za = numpy_helper.to_array(s), numpy_helper.to_array(z)
        if sa.size != 1 or za.size != 1:
            continue
        info = np.iinfo(_INT[z.data_type])
        zp = int(za.reshape(-1)[0])
        out[t] = Requant(q.input[0], float(sa.reshape(-1)[0]), float(info.min - zp), float(info.max - zp))
    return out


def requantized(values: dict[str, Any], plan: dict[str, Requant]) -> dict[str, Any]:
    """``values`` (read at the sources) with each DQ tensor filled in from its source."""
    out = dict(values)
    for t, r in plan.items():
        out[t] = r.apply(np.asarray(values[r.source]))
    return out
