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
