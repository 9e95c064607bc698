"""A registry of tiny ONNX models built with ``onnx.helper``, for tests of every part of onnxact.

Usage::

    from tests.models.make_models import build, save, MODELS
    proto = build("conv_opset13")          # an onnx.ModelProto
    path = save("conv_dynamic", tmp_path)  # tmp_path / "conv_dynamic.onnx"

Each builder is deterministic (fixed seeds) and takes well under a second, except ``qdq_int8``
(onnxruntime.quantization, ~1 s). Models that need files around them (external data) have
their own writers: :func:`save_external`, :func:`save_external_own_folder`,
:func:`save_missing_external`, :func:`save_huge_external`.

Run ``python -m tests.models.make_models OUT_DIR`` to write every in-memory model to OUT_DIR.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "MODELS", "OPSETS", "build", "save", "make_model", "conv_net", "save_external", "save_external_own_folder",
    "save_missing_external", "save_huge_external", "input_for",
]

#: Every opset the conv nets are built at.
OPSETS = tuple(range(7, 22))

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {}


def register(name: str) -> Callable[[Callable[[], onnx.ModelProto]], Callable[[], onnx.ModelProto]]:
    def deco(fn: Callable[[], onnx.ModelProto]) -> Callable[[], onnx.ModelProto]:
        MODELS[name] = fn
        return fn

    return deco


def build(name: str) -> onnx.ModelProto:
    """The model registered as ``name`` (a fresh proto each call)."""
    if name not in MODELS:
        raise KeyError(f"no test model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]()


def save(name: str, directory: str | os.PathLike[str]) -> Path:
    """Write model ``name`` to ``directory/name.onnx`` and return the path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.onnx"
    onnx.save(build(name), str(p))
    return p


def make_model(graph: onnx.GraphProto, opset: int = 17, extra_opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """Wrap ``graph`` in a model at ``opset`` with the lowest IR version that opset allows."""
    ids = [helper.make_opsetid("", opset)] + [helper.make_opsetid(k, v) for k, v in (extra_opsets or {}).items()]
    m = helper.make_model(graph, opset_imports=ids, producer_name="onnxact-tests")
    m.ir_version = max(helper.find_min_ir_version_for(ids), 3)
    if m.ir_version < 4:  # before IR 4 every initializer must also be a graph input
        known = {i.name for i in m.graph.input}
        for t in m.graph.initializer:
            if t.name not in known:
                m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(dtype), name)


def _vi(name: str, elem: int, shape: list[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


# -- conv nets at every opset --------------------------------------------------------------------

def conv_net(
    opset: int = 17,
    shape: tuple[int | str, ...] = (1, 3, 16, 16),
    dtype: int = TensorProto.FLOAT,
    name: str = "conv_net",
) -> onnx.ModelProto:
    """Conv(3->4)+Relu -> MaxPool 2x2 -> Conv(4->6)+Relu -> GlobalAveragePool -> Flatten -> Gemm(6->5).

    Uses only ops that exist unchanged from opset 7, so it builds at every opset in OPSETS.
    """
    rng = np.random.default_rng(0)
    npdt = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    inits = [
        _w(rng, "c1.w", (4, 3, 3, 3), npdt), _w(rng, "c1.b", (4,), npdt),
        _w(rng, "c2.w", (6, 4, 3, 3), npdt), _w(rng, "c2.b", (6,), npdt),
        _w(rng, "fc.w", (5, 6), npdt), _w(rng, "fc.b", (5,), npdt),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    batch = shape[0]
    g = helper.make_graph(nodes, name, [_vi("x", dtype, list(shape))], [_vi("logits", dtype, [batch, 5])], inits)
    return make_model(g, opset)


for _op in OPSETS:
    register(f"conv_opset{_op}")(lambda _op=_op: conv_net(_op, name=f"conv_opset{_op}"))


@register("conv_dynamic")
def conv_dynamic() -> onnx.ModelProto:
    """The conv net with dynamic batch and spatial dims (N, 3, H, W)."""
    return conv_net(13, ("N", 3, "H", "W"), name="conv_dynamic")


@register("conv_nhwc")
def conv_nhwc() -> onnx.ModelProto:
    """Keras style: NHWC input, Transpose to NCHW, conv, pool (1, 16, 16, 3)."""
    m = conv_net(13, name="conv_nhwc")
    g = m.graph
    g.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x"], name="/to_nchw/Transpose", perm=[0, 3, 1, 2]))
    del g.input[:]
    g.input.append(_vi("x_nhwc", TensorProto.FLOAT, [1, 16, 16, 3]))
    return m


@register("float16")
def float16() -> onnx.ModelProto:
    """The conv net entirely in float16 (weights, input, activations)."""
    return conv_net(13, dtype=TensorProto.FLOAT16, name="float16")


@register("two_images")
def two_images() -> onnx.ModelProto:
    """Two image inputs ``left`` and ``right`` (1, 3, 16, 16), one conv each, added, pooled."""
    rng = np.random.default_rng(1)
    inits = [_w(rng, "la.w", (4, 3, 3, 3)), _w(rng, "ra.w", (4, 3, 3, 3))]
    nodes = [
        helper.make_node("Conv", ["left", "la.w"], ["lc"], name="/left_conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["lc"], ["lr"], name="/left_relu/Relu"),
        helper.make_node("Conv", ["right", "ra.w"], ["rc"], name="/right_conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["rc"], ["rr"], name="/right_relu/Relu"),
        helper.make_node("Add", ["lr", "rr"], ["sum"], name="/add/Add"),
        helper.make_node("MaxPool", ["sum"], ["pool"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    img = [1, 3, 16, 16]
    g = helper.make_graph(nodes, "two_images", [_vi("left", TensorProto.FLOAT, img), _vi("right", TensorProto.FLOAT, img)],
                          [_vi("pool", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return make_model(g, 13)


@register("signal_1d")
def signal_1d() -> onnx.ModelProto:
    """A 1-D signal (1, 2, 64): Conv1d(2->4, k=5)+Relu -> MaxPool1d(2) -> Conv1d(4->4, k=3) -> GAP."""
    rng = np.random.default_rng(2)
    inits = [_w(rng, "c1.w", (4, 2, 5)), _w(rng, "c1.b", (4,)), _w(rng, "c2.w", (4, 4, 3))]
    nodes = [
        helper.make_node("Conv", ["sig", "c1.w", "c1.b"], ["c1"], name="/conv1/Conv", pads=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/pool1/MaxPool", kernel_shape=[2], strides=[2]),
        helper.make_node("Conv", ["p1", "c2.w"], ["c2"], name="/conv2/Conv", pads=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="/gap/GlobalAveragePool"),
    ]
    g = helper.make_graph(nodes, "signal_1d", [_vi("sig", TensorProto.FLOAT, [1, 2, 64])],
                          [_vi("gap", TensorProto.FLOAT, [1, 4, 1])], inits)
    return make_model(g, 13)


@register("tokens")
def tokens() -> onnx.ModelProto:
    """A token sequence (1, 12) int64 -> Gather embedding (50x8) -> Transpose -> Conv1d(8->6)+Relu -> MaxPool."""
    rng = np.random.default_rng(3)
    inits = [_w(rng, "emb", (50, 8)), _w(rng, "c.w", (6, 8, 3)), _w(rng, "c.b", (6,))]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="/embed/Gather", axis=0),
        helper.make_node("Transpose", ["e"], ["et"], name="/embed/Transpose", perm=[0, 2, 1]),
        helper.make_node("Conv", ["et", "c.w", "c.b"], ["c"], name="/conv/Conv", pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="/pool/MaxPool", kernel_shape=[2], strides=[2]),
    ]
    g = helper.make_graph(nodes, "tokens", [_vi("ids", TensorProto.INT64, [1, 12])],
                          [_vi("p", TensorProto.FLOAT, [1, 6, 6])], inits)
    return make_model(g, 13)


@register("no_conv")
def no_conv() -> onnx.ModelProto:
    """An MLP on a (1, 10) vector: MatMul -> Relu -> MatMul. No conv or pool layer."""
    rng = np.random.default_rng(4)
    inits = [_w(rng, "w1", (10, 8)), _w(rng, "w2", (8, 3))]
    nodes = [
        helper.make_node("MatMul", ["v", "w1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Relu", ["h"], ["hr"], name="/relu/Relu"),
        helper.make_node("MatMul", ["hr", "w2"], ["y"], name="/fc2/MatMul"),
    ]
    g = helper.make_graph(nodes, "no_conv", [_vi("v", TensorProto.FLOAT, [1, 10])], [_vi("y", TensorProto.FLOAT, [1, 3])],
                          inits)
    return make_model(g, 13)


@register("control_flow")
def control_flow() -> onnx.ModelProto:
    """Top-level Conv+Relu, then an If (Conv in then, MaxPool in else) and a Loop whose body convolves.

    Input (1, 4, 8, 8). The top-level conv ``stem`` is captured; the convs/pools inside the
    branches and the loop body are reported in ``Model.skipped_subgraph_layers``.
    """
    rng = np.random.default_rng(5)
    img = [1, 4, 8, 8]
    inits = [
        _w(rng, "stem.w", (4, 4, 3, 3)), _w(rng, "then.w", (4, 4, 3, 3)), _w(rng, "body.w", (4, 4, 3, 3)),
        numpy_helper.from_array(np.array(2, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "keep_going"),
    ]
    then_g = helper.make_graph(
        [helper.make_node("Conv", ["stem_r", "then.w"], ["then_conv"], name="/then/Conv", pads=[1, 1, 1, 1])],
        "then_branch", [], [_vi("then_conv", TensorProto.FLOAT, img)])
    else_g = helper.make_graph(
        [helper.make_node("MaxPool", ["stem_r"], ["else_pool"], name="/else/MaxPool", kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1])],
        "else_branch", [], [_vi("else_pool", TensorProto.FLOAT, img)])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Conv", ["carry_in", "body.w"], ["body_conv"], name="/loop/Conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["body_conv"], ["carry_out"], name="/loop/Relu"),
        ],
        "loop_body",
        [_vi("iter", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("carry_in", TensorProto.FLOAT, img)],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("carry_out", TensorProto.FLOAT, img)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "stem.w"], ["stem_c"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["stem_c"], ["stem_r"], name="/stem/Relu"),
        helper.make_node("ReduceSum", ["stem_r"], ["total"], name="/cond/ReduceSum", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="/cond/Greater"),
        helper.make_node("If", ["cond"], ["branch"], name="/branch/If", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "keep_going", "branch"], ["looped"], name="/loop/Loop", body=body),
        helper.make_node("GlobalAveragePool", ["looped"], ["gap"], name="/gap/GlobalAveragePool"),
    ]
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    g = helper.make_graph(nodes, "control_flow", [_vi("x", TensorProto.FLOAT, img)],
                          [_vi("gap", TensorProto.FLOAT, [1, 4, 1, 1])], inits)
    return make_model(g, 13)


@register("qdq_int8")
def qdq_int8() -> onnx.ModelProto:
    """The conv net quantized to int8 QDQ by ``onnxruntime.quantization.quantize_static``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(6)
            self.items = iter([{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self):  # type: ignore[override]
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="onnxact-qdq-") as d:
        src, dst = Path(d) / "float.onnx", Path(d) / "qdq.onnx"
        onnx.save(conv_net(13, name="qdq_int8"), str(src))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(dst))


# -- models that live beside files ---------------------------------------------------------------

def _externalise(m: onnx.ModelProto, location: str, min_size: int = 0) -> onnx.ModelProto:
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(m, all_tensors_to_one_file=True, location=location, size_threshold=min_size)
    return m


def save_external(directory: str | os.PathLike[str], name: str = "external") -> Path:
    """The conv net with its weights in ``name.data`` beside ``name.onnx``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.onnx"
    onnx.save(_externalise(conv_net(13, name=name), f"{name}.data"), str(p))
    return p


def save_external_own_folder(directory: str | os.PathLike[str], name: str = "external_folder") -> Path:
    """``directory/name/name.onnx`` whose weights are in ``directory/name/weights/params.bin``."""
    d = Path(directory) / name
    (d / "weights").mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.onnx"
    onnx.save(_externalise(conv_net(13, name=name), "weights/params.bin"), str(p))
    return p


def save_missing_external(directory: str | os.PathLike[str], name: str = "missing_external") -> Path:
    """An external-data model whose data file has been deleted."""
    p = save_external(directory, name)
    (p.parent / f"{name}.data").unlink()
    return p


#: Elements of the big initializer in :func:`save_huge_external` (2.25 GB of float32).
HUGE_ELEMENTS = 9 * 2**26


def save_huge_external(directory: str | os.PathLike[str], name: str = "huge") -> Path:
    """A model over 2 GB: the conv net plus a 2.25 GB float32 initializer (external data).

    The data file is written sparse (``truncate`` to its size, all zeros), so it takes almost no
    disk and is written instantly; onnxruntime still has to map it. The big tensor feeds one tiny
    op, a second graph output ``big_head = Gather(big, [0, 1])``. Delete the folder after use.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    m = conv_net(13, name=name)
    big = onnx.TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[HUGE_ELEMENTS])
    big.data_location = TensorProto.EXTERNAL
    for k, v in (("location", f"{name}.bin"), ("offset", "0"), ("length", str(HUGE_ELEMENTS * 4))):
        big.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    m.graph.initializer.append(big)
    m.graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), "idx"))
    m.graph.node.append(helper.make_node("Gather", ["big", "idx"], ["big_head"], name="/big/Gather", axis=0))
    m.graph.output.append(_vi("big_head", TensorProto.FLOAT, [2]))
    p = d / f"{name}.onnx"
    p.write_bytes(m.SerializeToString())
    with open(d / f"{name}.bin", "wb") as f:
        f.truncate(HUGE_ELEMENTS * 4)
    return p


# -- inputs ------------------------------------------------------------------------------------

def input_for(model: onnx.ModelProto, batch: int = 1, spatial: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input of ``model`` (symbolic dims: batch for axis 0, else ``spatial``)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    np_of = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.INT64: np.int64}
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else spatial)
                for k, d in enumerate(inp.type.tensor_type.shape.dim)]
        dt = np_of[inp.type.tensor_type.elem_type]
        if np.issubdtype(dt, np.integer):
            feeds[inp.name] = rng.integers(0, 50, size=dims).astype(dt)
        else:
            feeds[inp.name] = rng.random(dims, dtype=np.float32).astype(dt)
    return feeds


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "test-models")
    for n in MODELS:
        print(save(n, out))
