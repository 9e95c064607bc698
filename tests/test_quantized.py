"""Dynamically quantized int8 models (``onnxruntime.quantization.quantize_dynamic``).

The quantizer rewrites each Conv as ``DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul(x_scale *
w_scale) -> Add(bias)``; the layer a user means is the float product (then its ReLU), which must be
captured exactly as onnxruntime computes it and be close to the float model's conv output.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

import onnxact
from onnxact.cli import main
from onnxact.stats_graph import split_unknown_rank

from .subjects import photo


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.r1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.r2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.pool(self.r1(self.c1(x)))
        return self.fc(torch.flatten(self.gap(self.r2(self.c2(x))), 1))


class ChannelMixer(nn.Module):
    """A 1x1 conv written as a Linear over channels-last maps: a MatMul whose result is a spatial map."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(8, 8)

    def forward(self, x):
        y = torch.relu(self.c1(x)).permute(0, 2, 3, 1)
        return torch.relu(self.mix(y)).mean(dim=(1, 2))


# the float model's tensor for each quantized layer's captured tensor (same legacy-export names)
CONV_TENSORS = ["/r1/Relu_output_0", "/r2/Relu_output_0"]


def _export(module: nn.Module, path, seed: int = 0):
    torch.manual_seed(seed)
    for p in module.parameters():  # deterministic, non-trivial weights
        p.data.normal_(0, 0.3)
    torch.onnx.export(module.eval(), torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return _export(SmallCNN(), tmp_path_factory.mktemp("q") / "float.onnx")


@pytest.fixture(scope="module", params=[QuantType.QInt8, QuantType.QUInt8], ids=["QInt8", "QUInt8"])
def quantized(request, float_model):
    out = float_model.with_name(f"int8_{request.param.name}.onnx")
    if not out.exists():
        quantize_dynamic(str(float_model), str(out), weight_type=request.param, op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return out


def _image_batch() -> np.ndarray:
    x = onnxact.preprocess_image([str(photo("astronaut.png")), str(photo("coffee.png"))], None, size=(32, 32),
                                 normalize="0-1")
    return x.astype(np.float32)


def _promoted_run(path, tensors, x):
    """An independent run: the tensors appended to graph.output by plain onnx editing."""
    m = onnx.load(str(path))
    for t in tensors:
        m.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(tensors, sess.run(tensors, {"x": x})))


def test_conv_integer_chain_is_a_conv_layer(quantized):
    ops = [n.op_type for n in onnx.load(str(quantized)).graph.node]
    assert ops.count("ConvInteger") == 2 and "DynamicQuantizeLinear" in ops  # what quantize_dynamic makes
    m = onnxact.load(quantized)
    convs = [layer for layer in m.layers if layer.op_type == "ConvInteger"]
    assert [c.tensor for c in convs] == CONV_TENSORS  # read after the scale, the bias Add and the ReLU
    assert all(c.activation == "Relu" and c.layout == "NCHW" for c in convs)
    assert [layer.op_type for layer in m.layers] == ["ConvInteger", "MaxPool", "ConvInteger", "GlobalAveragePool"]


def test_captured_values_equal_onnxruntime_and_close_to_the_float_model(quantized, float_model):
    x = _image_batch()
    acts = onnxact.get_activations(onnxact.load(quantized), x, output_format="full")
    ref = _promoted_run(quantized, CONV_TENSORS, x)
    flt = _promoted_run(float_model, CONV_TENSORS, x)
    for t in CONV_TENSORS:
        assert acts[t].dtype == np.float32 and acts[t].shape == ref[t].shape == (2, *acts[t].shape[1:])
        np.testing.assert_array_equal(acts[t], ref[t])  # the same onnxruntime, the same kernels: exact
        # Close to the float model, measured in 8-bit steps of the layer's float range: the input is
        # quantized to 256 levels over its range and the weights to 256 over theirs, so a conv's
        # error is a few such steps. Measured (max / mean steps): QInt8 c1 1.76 / 0.18, c2 2.63 / 0.46;
        # QUInt8 c1 2.03 / 0.25, c2 1.95 / 0.27. Bound: 4 steps at most, 0.75 on average.
        step = (flt[t].max() - flt[t].min()) / 255
        err = np.abs(acts[t] - flt[t])
        assert err.max() <= 4 * step, (t, err.max() / step)
        assert err.mean() <= 0.75 * step, (t, err.mean() / step)
        assert not np.array_equal(acts[t], flt[t])  # it is the int8 model's value, not the float one


def test_matmul_integer_on_a_spatial_map_is_a_layer(tmp_path):
    path = _export(ChannelMixer(), tmp_path / "mixer.onnx", seed=1)
    q = tmp_path / "mixer_int8.onnx"
    quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul"])
    assert "MatMulInteger" in [n.op_type for n in onnx.load(str(q)).graph.node]
    m = onnxact.load(q)
    mm = [layer for layer in m.layers if layer.op_type == "MatMulInteger"]
    assert len(mm) == 1 and mm[0].activation == "Relu" and len(mm[0].shape) == 4
    x = _image_batch()
    acts = onnxact.get_activations(m, x, output_format="full")
    np.testing.assert_array_equal(acts[mm[0].tensor], _promoted_run(q, [mm[0].tensor], x)[mm[0].tensor])


def test_all_tensors_lists_scalars_and_draws_only_maps(quantized, tmp_path, capsys):
    out = tmp_path / "all"
    rc = main(["inspect", str(quantized), str(photo("astronaut.png")), "--all-tensors", "--size", "32", "32",
               "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    m = onnxact.load(quantized)
    scalars = [layer.name for layer in m.all_layers if layer.shape is not None and len(layer.shape) <= 1]
    assert "x_scale" in scalars  # DynamicQuantizeLinear's scale: a 0-d float tensor
    for name in scalars:
        assert name in captured.out  # listed in the table ...
    page = (out / "index.html").read_text()
    assert page.count("not a map; not drawn") >= len(scalars)  # ... with a note, never drawn
    grids = sorted(p.name for p in (out / "grids").glob("*.png"))
    assert not any(p.endswith("_x_scale.png") for p in grids)
    assert any("_r1" in p for p in grids) and len(grids) >= 8


def test_inspect_and_check_on_the_int8_model(quantized, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["inspect", str(quantized), str(photo("coffee.png")), "--size", "32", "32", "-o", str(out)]) == 0
    assert len(list((out / "grids").glob("*.png"))) == 4 and len(list((out / "heatmaps").glob("*.png"))) >= 3
    capsys.readouterr()
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        (images / name).write_bytes(photo(name).read_bytes())
    js = tmp_path / "c.json"
    rc = main(["check", str(quantized), str(images), "--json", str(js)])
    cap = capsys.readouterr()
    assert rc in (0, 1), cap.err
    assert "4 layers" in cap.out and "Traceback" not in cap.err


def test_check_op_types_mul_skips_unknown_rank_with_a_note(quantized, tmp_path, capsys):
    m = onnxact.load(quantized)
    muls = m.select(op_types=["Mul"])
    kept, notes = split_unknown_rank(muls)
    assert notes and len(kept) + len(notes) == len(muls)  # the x_scale * w_scale products have no known rank
    js = tmp_path / "mul.json"
    rc = main(["check", str(quantized), str(photo("astronaut.png")), "--op-types", "Mul", "--json", str(js)])
    cap = capsys.readouterr()
    assert rc in (0, 1), cap.err
    assert cap.err.count("onnxact: note: layer") == min(len(notes), 3) and "unknown rank" in cap.err
    assert len(notes) <= 3 or f"{len(notes) - 3} more layers skipped" in cap.err
    import json

    report = json.loads(js.read_text())
    assert report["notes"] == notes and len(report["layers"]) == len(kept)


# --------------------------------------------------------------------------- the old onnx.quantize 0.1.0 tool


def _old_quantizer_model(dst):
    """(int8 model, float model) in the old ``onnx.quantize`` 0.1.0 layout (ddddocr's ``common_old.onnx``).

    That tool adds the bias to the int32 accumulator, as an int32 tensor computed at run time from
    the input's dynamic scale: ``ConvInteger -> Add(Reshape(Cast(Floor(b / (x_scale * w_scale))))) ->
    Cast -> Mul(x_scale * w_scale)``. Its names are made up from the torch export's (``10``,
    ``10_bias_add_cast_output``, ``Conv_0_quant_scales_mul:0``). conv1 has a ReLU and a max pool
    after it, conv2 no activation (a global pool reads it).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    convs = [(rng.normal(0, 0.3, (8, 3, 3, 3)), rng.normal(0, 0.2, 8)),
             (rng.normal(0, 0.3, (16, 8, 3, 3)), rng.normal(0, 0.2, 16))]
    nodes, inits, fnodes, finits = [], [], [], []

    def init(name, arr, dtype=None, into=inits):
        into.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))

    src, fsrc = "x", "x"
    outs = []
    for k, (w, b) in enumerate(convs):
        wn, bn, out = f"{11 + 10 * k}", f"{12 + 10 * k}", f"{10 + 10 * k}"
        scale = (w.max() - w.min()) / 255
        zp = np.uint8(round(-w.min() / scale))
        init(f"{wn}_quantized", np.clip(np.round(w / scale) + zp, 0, 255), np.uint8)
        init(f"{wn}_zero_point", zp, np.uint8)
        init(f"{wn}_scale", scale, np.float32)
        init(bn, b, np.float32)
        init(f"{bn}_quantized_reshape_shape", [1, -1, 1, 1], np.int64)
        q = f"{src}_quantized"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [src], [q, f"{src}_scale", f"{src}_zero_point"],
                             name=f"{src}_QuantizeLinear"),
            helper.make_node("Mul", [f"{src}_scale", f"{wn}_scale"], [f"{bn}_scale"], name=f"{bn}_scale_node"),
            helper.make_node("Div", [bn, f"{bn}_scale"], [f"{bn}_tmp_quant:0"], name=f"{bn}_tmp_qaunt"),
            helper.make_node("Floor", [f"{bn}_tmp_quant:0"], [f"{bn}_quant_rounded:0"], name=f"{bn}_quant_rounded"),
            helper.make_node("Cast", [f"{bn}_quant_rounded:0"], [f"{bn}_quantized"], to=TensorProto.INT32,
                             name=f"{bn}_quantized_node"),
            helper.make_node("ConvInteger", [q, f"{wn}_quantized", f"{src}_zero_point", f"{wn}_zero_point"],
                             [f"{out}_output_quantized"], pads=[1, 1, 1, 1], name=f"Conv_{3 * k}_quant"),
            helper.make_node("Reshape", [f"{bn}_quantized", f"{bn}_quantized_reshape_shape"], [f"{out}_reshape"],
                             name=f"{bn}_quantizedreshape"),
            helper.make_node("Add", [f"{out}_output_quantized", f"{out}_reshape"], [f"{out}_bias_add"],
                             name=f"{bn}_quantizedbias_add"),
            helper.make_node("Cast", [f"{out}_bias_add"], [f"{out}_bias_add_cast_output"], to=TensorProto.FLOAT,
                             name=f"{out}_bias_add_cast"),
            helper.make_node("Mul", [f"{src}_scale", f"{wn}_scale"], [f"Conv_{3 * k}_quant_scales_mul:0"],
                             name=f"Conv_{3 * k}_quant_scales_mul"),
            helper.make_node("Mul", [f"{out}_bias_add_cast_output", f"Conv_{3 * k}_quant_scales_mul:0"], [out],
                             name=f"Conv_{3 * k}_quant_output_scale_mul"),
        ]
        init(f"w{k}", w, np.float32, finits)
        init(f"b{k}", b, np.float32, finits)
        fnodes.append(helper.make_node("Conv", [fsrc, f"w{k}", f"b{k}"], [out], pads=[1, 1, 1, 1]))
        outs.append(out)
        if k == 0:
            for g in (nodes, fnodes):
                g += [helper.make_node("Relu", [out], ["13"], name="Relu_1"),
                      helper.make_node("MaxPool", ["13"], ["14"], kernel_shape=[2, 2], strides=[2, 2], name="MaxPool_2")]
            src = fsrc = "14"
    for g in (nodes, fnodes):
        g.append(helper.make_node("GlobalAveragePool", [outs[1]], ["y"], name="GlobalAveragePool_6"))
    paths = []
    for tag, g, ii in (("int8", nodes, inits), ("float", fnodes, finits)):
        graph = helper.make_graph(
            g, "old_quantizer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 1, 1])], ii)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="onnx.quantize",
                                  producer_version="0.1.0")
        model.ir_version = 7
        onnx.checker.check_model(model)
        paths.append(dst / f"{tag}.onnx")
        onnx.save(model, str(paths[-1]))
    return paths[0], paths[1], ["13", outs[1]]


def test_old_quantizer_int32_bias_add_is_part_of_the_conv_layer(tmp_path):
    q, flt, tensors = _old_quantizer_model(tmp_path)
    m = onnxact.load(q)
    assert [(la.name, la.op_type, la.tensor, la.activation) for la in m.layers] == [
        ("convinteger", "ConvInteger", "13", "Relu"), ("maxpool", "MaxPool", "14", None),
        ("convinteger_1", "ConvInteger", "20", None), ("y", "GlobalAveragePool", "y", None)]
    # the quantizer's scale and bias plumbing is not a BN / activation of the layer
    assert all(la.fused == () for la in m.layers)
    x = _image_batch()
    acts = onnxact.get_activations(m, x)
    ref = _promoted_run(q, tensors, x)  # independent: plain onnx editing + onnxruntime
    fref = _promoted_run(flt, tensors, x)
    for key, t in zip(("convinteger", "convinteger_1"), tensors):
        assert acts[key].dtype == np.float32
        np.testing.assert_array_equal(acts[key], ref[t])
        # the float result in the float model's units, a few 8-bit steps away from it
        step = (fref[t].max() - fref[t].min()) / 255
        assert np.abs(acts[key] - fref[t]).max() <= 4 * step
        assert not np.array_equal(acts[key], fref[t])
    # conv2 has no ReLU, and its bias is far above that bound: a value read before the bias Add fails it
    bias = onnx.numpy_helper.to_array(next(t for t in onnx.load(str(q)).graph.initializer if t.name == "22"))
    assert np.abs(bias).max() > 8 * step


def test_old_quantizer_model_through_check(tmp_path, capsys):
    q, _flt, _t = _old_quantizer_model(tmp_path)
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        (images / name).write_bytes(photo(name).read_bytes())
    js = tmp_path / "c.json"
    rc = main(["check", str(q), str(images), "--size", "32", "32", "--json", str(js)])
    cap = capsys.readouterr()
    assert rc in (0, 1), cap.err
    import json

    report = json.loads(js.read_text())
    assert [r["layer"] for r in report["layers"]] == ["convinteger", "maxpool", "convinteger_1", "y"]
    assert report["images"] == 2 and not report["failed"]
