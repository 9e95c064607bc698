"""Property tests: random conv graphs are captured exactly or refused with OnnxactError; random and
mutated bytes as model or image files raise OnnxactError, never anything else.

The reference for every captured tensor is an independent onnxruntime run of the model with only
that one tensor appended to the graph outputs (no optimisations), built here without onnxact.
Examples are kept few so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxact
from tests.models.make_models import build, make_model

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
BYTES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

CONV_LIKE = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}


@dataclass
class Spec:
    opset: int
    rank: int  # 3 (1-D signal) or 4 (image)
    channels: int
    size: int  # concrete spatial size fed
    dyn_batch: bool
    dyn_spatial: bool
    fp16: bool
    ops: list[tuple]  # (op, params...)


@st.composite
def graph_specs(draw: st.DrawFn) -> Spec:
    opset = draw(st.integers(7, 21))
    rank = draw(st.sampled_from([3, 4, 4]))
    channels = draw(st.integers(1, 4))
    size = draw(st.integers(3, 12))
    n_ops = draw(st.integers(1, 6))
    ops: list[tuple] = []
    for _ in range(n_ops):
        op = draw(st.sampled_from(["Conv", "Conv", "Conv", "Relu", "LeakyRelu", "Sigmoid", "Clip", "MaxPool",
                                   "AveragePool", "GlobalAveragePool", "BatchNormalization", "Add", "Concat",
                                   "Transpose2"]))
        k = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        pad = draw(st.integers(0, 1))
        out_c = draw(st.integers(1, 5))
        group = draw(st.sampled_from([1, 1, 2]))
        ops.append((op, k, stride, pad, out_c, group))
    return Spec(opset, rank, channels, size, draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), ops)


def build_graph(spec: Spec, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray, int]:
    """The model, one input array, and the number of conv/pool layers in it."""
    rng = np.random.default_rng(seed)
    elem, npdt = (TensorProto.FLOAT16, np.float16) if spec.fp16 else (TensorProto.FLOAT, np.float32)
    nd = spec.rank - 2
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cur, c, s = "x", spec.channels, spec.size
    n_layers = 0

    def t(i: int) -> str:
        return f"t{i}"

    for i, (op, k, stride, pad, out_c, group) in enumerate(spec.ops):
        out = t(i)
        if op == "Conv":
            if k > s + 2 * pad:
                k = 1
            g = group if c % group == 0 and out_c % group == 0 else 1
            w = (rng.standard_normal((out_c, c // g) + (k,) * nd) * 0.5).astype(npdt)
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(rng.standard_normal(out_c).astype(npdt), f"b{i}")]
            nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [out], name=f"conv{i}", kernel_shape=[k] * nd,
                                          strides=[stride] * nd, pads=[pad] * (2 * nd), group=g))
            c, s, n_layers = out_c, (s + 2 * pad - k) // stride + 1, n_layers + 1
        elif op in ("MaxPool", "AveragePool"):
            if k > s:
                k = 1
            nodes.append(helper.make_node(op, [cur], [out], name=f"pool{i}", kernel_shape=[k] * nd, strides=[stride] * nd))
            s, n_layers = (s - k) // stride + 1, n_layers + 1
        elif op == "GlobalAveragePool":
            nodes.append(helper.make_node(op, [cur], [out], name=f"gap{i}"))
            s, n_layers = 1, n_layers + 1
        elif op == "BatchNormalization":
            for nm, v in (("sc", 1 + rng.random(c)), ("bi", rng.random(c)), ("mu", rng.random(c)), ("va", 1 + rng.random(c))):
                inits.append(numpy_helper.from_array(v.astype(npdt), f"{nm}{i}"))
            nodes.append(helper.make_node(op, [cur, f"sc{i}", f"bi{i}", f"mu{i}", f"va{i}"], [out], name=f"bn{i}"))
        elif op == "Add":
            nodes.append(helper.make_node("Add", [cur, cur], [out], name=f"add{i}"))
        elif op == "Concat":
            nodes.append(helper.make_node("Concat", [cur, cur], [out], name=f"cat{i}", axis=1))
            c *= 2
        elif op == "Transpose2":  # to channels-last and back: layout must survive the round trip
            perm = [0] + list(range(2, spec.rank)) + [1]
            back = [0, spec.rank - 1] + list(range(1, spec.rank - 1))
            nodes.append(helper.make_node("Transpose", [cur], [f"{out}_last"], name=f"tl{i}", perm=perm))
            nodes.append(helper.make_node("Transpose", [f"{out}_last"], [out], name=f"tf{i}", perm=back))
        elif op == "LeakyRelu":
            nodes.append(helper.make_node(op, [cur], [out], name=f"act{i}", alpha=0.1))
        else:
            nodes.append(helper.make_node(op, [cur], [out], name=f"act{i}"))
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="final"))
    batch: int | str = "N" if spec.dyn_batch else 1
    sp: list[int | str] = [f"S{j}" if spec.dyn_spatial else spec.size for j in range(nd)]
    g = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", elem, [batch, spec.channels, *sp])],
                          [helper.make_tensor_value_info("y", elem, None)], inits)
    m = make_model(g, spec.opset)
    x = rng.standard_normal((2 if spec.dyn_batch else 1, spec.channels) + (spec.size,) * nd).astype(npdt)
    return m, x, n_layers


def reference(model: onnx.ModelProto, x: np.ndarray, tensor: str) -> np.ndarray:
    """Run ``model`` with ``tensor`` as its only extra output, in a fresh unoptimised session."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=tensor))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run([tensor], {"x": x})[0]


@FUZZ
@given(graph_specs())
def test_random_conv_graphs_match_independent_run(spec: Spec) -> None:
    model, x, n_layers = build_graph(spec)
    try:
        m = onnxact.load(model)
        acts = onnxact.get_activations(m, x, output_format="full")
    except onnxact.OnnxactError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert len(acts) == n_layers
    tensors = list(acts)
    positions = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    assert [positions[t] for t in tensors] == sorted(positions[t] for t in tensors), "not in graph order"
    tol = dict(rtol=2e-2, atol=2e-2) if spec.fp16 else dict(rtol=1e-4, atol=1e-4)
    for tensor, arr in acts.items():
        ref = reference(model, x, tensor)
        assert arr.shape == ref.shape and arr.dtype == ref.dtype
        np.testing.assert_allclose(arr.astype(np.float64), ref.astype(np.float64), **tol, err_msg=tensor)
        info = acts.layers[tensor]
        if info.layout != "other":
            assert info.layout == ("NCHW" if spec.rank == 4 else "NCW"), (tensor, info.layout)


def _assert_refused_cleanly(fn) -> None:
    try:
        fn()
    except onnxact.OnnxactError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg


@BYTES
@given(st.binary(min_size=0, max_size=512))
def test_random_bytes_as_model(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_refused_cleanly(lambda: onnxact.get_activations(data, np.zeros((1, 3, 16, 16), np.float32)))


_MODEL_BYTES = build("conv_opset13").SerializeToString()


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            break
        p = pos % len(b)
        if kind == 0:
            b[p] = val
        elif kind == 1:
            del b[p:p + 1 + val % 16]
        elif kind == 2:
            b[p:p] = bytes([val]) * (1 + val % 8)
        else:
            b = b[:p]
    return bytes(b)


MUTATIONS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4)


@BYTES
@given(MUTATIONS)
def test_mutated_model_bytes(ops: list[tuple[int, int, int]]) -> None:
    data = _mutate(_MODEL_BYTES, ops)
    _assert_refused_cleanly(lambda: onnxact.get_activations(data, np.zeros((1, 3, 16, 16), np.float32)))


def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


_IMAGES = {fmt: _image_bytes(fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")}
_MODEL = onnxact.load(build("conv_opset13"))


@BYTES
@given(fmt=st.sampled_from(sorted(_IMAGES)), ops=MUTATIONS)
def test_mutated_image_files(fmt: str, ops: list[tuple[int, int, int]], tmp_path_factory: pytest.TempPathFactory) -> None:
    p = tmp_path_factory.mktemp("img") / f"mutated.{fmt.lower()}"
    p.write_bytes(_mutate(_IMAGES[fmt], ops))

    def run() -> None:
        x = onnxact.preprocess_image(p, _MODEL)
        assert x.shape == (1, 3, 16, 16) and np.isfinite(x).all()

    _assert_refused_cleanly(run)


@BYTES
@given(st.binary(min_size=0, max_size=256))
def test_random_bytes_as_image(data: bytes) -> None:
    _assert_refused_cleanly(lambda: onnxact.preprocess_image(data, _MODEL))
