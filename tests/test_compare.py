"""``onnxact.compare`` / ``compare_activations`` / ``onnxact compare``: real models, real onnxruntime.

Metrics are checked against an independent numpy computation on the same captured arrays; the
divergence finder against a model with one channel's weights scaled by 1.5; framework sides
against their own exports (both torch exporters, Keras).
"""

from __future__ import annotations

import importlib
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxact
from bench.models import tenblock_onnx
from onnxact.cli import main
from onnxact.compare import compare, compare_activations

from .models.make_models import conv_net, qdq_int8

WIDTHS = (8, 8, 16, 16, 16, 24)
POOLS = (1, 3)
SCALED_BLOCK, SCALED_CHANNEL = 3, 5


def _x(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def _scaled(proto: onnx.ModelProto, block: int, channel: int) -> onnx.ModelProto:
    """A copy with conv ``block``'s weights (and bias) scaled by 1.5 in output ``channel``."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for t in m.graph.initializer:
        if t.name in (f"w{block}", f"b{block}"):
            arr = numpy_helper.to_array(t).copy()
            arr[channel] *= 1.5
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return m


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    base = tenblock_onnx(size=32, widths=WIDTHS, pool_after=POOLS)
    paths = {"base": d / "base.onnx", "scaled": d / "scaled.onnx", "fp32": d / "fp32.onnx", "qdq": d / "qdq.onnx"}
    onnx.save(base, paths["base"])
    onnx.save(_scaled(base, SCALED_BLOCK, SCALED_CHANNEL), paths["scaled"])
    onnx.save(conv_net(13, name="fp32"), paths["fp32"])
    onnx.save(qdq_int8(), paths["qdq"])
    x = _x(6)
    np.save(d / "x.npy", x)
    np.save(d / "x16.npy", _x(5, 16, seed=3))
    return d, paths


def _numpy_metrics(a: np.ndarray, b: np.ndarray, axis: int) -> dict[str, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = a64 - b64
    sa, sd = (a64 ** 2).sum(), (d ** 2).sum()
    other = tuple(i for i in range(a.ndim) if i != axis)
    ch_a, ch_d = (a64 ** 2).sum(axis=other), (d ** 2).sum(axis=other)
    rel_ch = ch_d / np.maximum(ch_a, max(ch_a.mean() * 1e-2, 1e-30))
    return {"rel_l2": math.sqrt(sd / sa), "cosine": float((a64 * b64).sum() / math.sqrt(sa * (b64 ** 2).sum())),
            "sqnr_db": 10 * math.log10(sa / sd) if sd else math.inf, "max_abs": float(np.abs(d).max()),
            "worst_channel": int(np.argmax(rel_ch))}


def test_streamed_metrics_equal_numpy_on_the_same_arrays(nets):
    d, p = nets
    x = np.load(d / "x16.npy")
    a = onnxact.get_activations(str(p["fp32"]), x)
    b = onnxact.get_activations(str(p["qdq"]), x)
    streamed = compare(str(p["fp32"]), str(p["qdq"]), x, batch_size=2)  # 3 batches: 2 + 2 + 1
    assert streamed.images == 5 and [r.name for r in streamed.layers] == list(a)
    whole = compare_activations(a, b)
    for r, w in zip(streamed.layers, whole.layers):
        ref = _numpy_metrics(a[r.name], b[r.name], 1)
        for k, v in ref.items():
            if k == "worst_channel":
                assert r.worst_channel == w.worst_channel == v, r.name
            else:
                assert getattr(r, k) == pytest.approx(v, rel=1e-6), (r.name, k)
                assert getattr(w, k) == pytest.approx(v, rel=1e-6), (r.name, k)


def test_scaled_channel_is_the_first_divergence_and_nothing_before(nets):
    _d, p = nets
    r = compare(str(p["base"]), str(p["scaled"]), _x(4), batch_size=3)
    names = [la.name for la in r.layers]
    # block 3's Conv -> BN -> Relu, read after the Relu
    scaled_layer = next(la.name for la in r.layers if la.a_tensor == f"relu{SCALED_BLOCK}")
    assert r.first_divergence == scaled_layer, r.table()
    i = names.index(scaled_layer)
    assert all(la.rel_l2 == 0 and la.sqnr_db == math.inf and la.passed for la in r.layers[:i])
    hit = r.layers[i]
    assert hit.worst_channel == SCALED_CHANNEL and not hit.passed and hit.sqnr_db < 60
    assert not r.layers[i + 1].passed  # it propagates
    assert bool(r) and not r.unmatched_a and not r.unmatched_b


def test_fp32_vs_qdq_has_finite_sqnr_everywhere_and_min_sqnr_gates(nets):
    d, p = nets
    x = np.load(d / "x16.npy")
    r = compare(str(p["fp32"]), str(p["qdq"]), x)
    assert len(r.layers) == 4 and not r.unmatched_a and not r.unmatched_b
    assert all(math.isfinite(la.sqnr_db) and 15 < la.sqnr_db < 80 for la in r.layers), r.table()
    assert r.first_divergence == r.layers[0].name  # int8 is past rel 1e-3 at once
    low = min(la.sqnr_db for la in r.layers)
    assert not compare(str(p["fp32"]), str(p["qdq"]), x, min_sqnr=low - 1)
    gate = compare(str(p["fp32"]), str(p["qdq"]), x, min_sqnr=low + 0.5)
    assert gate.first_divergence == next(la.name for la in r.layers if la.sqnr_db < low + 0.5)


def _quantized(src, dst) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = iter([{"x": _x(1, seed=10 + i)} for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):  # type: ignore[override]
            return next(feeds, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def _close(u, v, rel=1e-5):
    if isinstance(u, dict):
        assert u.keys() == v.keys()
        return all(_close(u[k], v[k], rel) for k in u)
    if isinstance(u, list):
        assert len(u) == len(v)
        return all(_close(p, q, rel) for p, q in zip(u, v))
    if isinstance(u, float):
        assert u == v or abs(u - v) <= rel * max(abs(u), abs(v)), (u, v)
        return True
    assert u == v, (u, v)
    return True


def test_qdq_side_read_before_its_quantize_equals_its_dq_outputs(nets, monkeypatch):
    """Conv -> BN -> ReLU vs its QDQ: each layer is paired with the same tensor's DQ copy (not the
    conv's DQ output that keeps the scope name), and reading that copy at its QuantizeLinear input,
    requantized in numpy (what keeps onnxruntime's int8 fusions), gives the same report."""
    cmp = importlib.import_module("onnxact.compare")

    d, p = nets
    qdq = d / "base_qdq.onnx"
    _quantized(p["base"], qdq)
    x = _x(5, seed=4)
    fast = compare(str(p["base"]), str(qdq), x, batch_size=2, keep_samples=True)
    back = compare(str(qdq), str(p["base"]), x, batch_size=2)  # the QDQ side as A: its own set, by tensor
    assert back.layers and all(la.a_tensor == la.b_tensor + "_DequantizeLinear_Output" for la in back.layers)
    assert all(15 < la.sqnr_db < 80 for la in back.layers), back.table()
    side = cmp._OnnxSide(str(qdq), None, None, None)
    cmp._OnnxSide(str(p["base"]), None, None, None).align(side)
    # every layer read before its Q but the GAP, which onnxruntime fuses with its Q (QLinearGlobalAveragePool)
    assert sorted(side.requant) == sorted(la.b_tensor for la in fast.layers if la.name != "gap")
    monkeypatch.setattr(cmp, "_REQUANT", False)
    slow = compare(str(p["base"]), str(qdq), x, batch_size=2, keep_samples=True)
    for k, (_a, b_fast) in fast.samples.items():  # the HTML page's B grids: requantized like the sums
        np.testing.assert_array_equal(b_fast, slow.samples[k][1])
    base = onnxact.load(str(p["base"]))
    assert [la.b_tensor for la in fast.layers] == [la.tensor + "_DequantizeLinear_Output" for la in base.select()]
    assert all(15 < la.sqnr_db < 80 for la in fast.layers), fast.table()
    assert _close(json.loads(fast.to_json()), json.loads(slow.to_json()))


def test_cpu_thread_counts_agree_within_1e5(nets):
    _d, p = nets
    one = onnxact.load(str(p["base"]), threads=1)
    two = onnxact.load(str(p["base"]), threads=2)
    r = compare(one, two, _x(4), rtol=1e-5)
    assert not r and len(r.layers) == len(one.layers)
    assert all(la.rel_l2 <= 1e-5 and la.cosine > 1 - 1e-6 for la in r.layers)


def test_layouts_folders_and_hand_built_dicts(nets, tmp_path):
    d, p = nets
    a = onnxact.get_activations(str(p["fp32"]), np.load(d / "x16.npy"))
    nhwc = {k: np.ascontiguousarray(v.transpose(0, 2, 3, 1)) for k, v in a.items() if v.shape[-1] > 1}
    r = compare_activations(a, nhwc)
    assert [la.name for la in r.layers] == list(nhwc) and all(la.rel_l2 == 0 for la in r.layers)
    assert [u.name for u in r.unmatched_a] == ["gap"]  # listed with its reason, never dropped
    onnxact.save_activations(a, tmp_path / "a")
    saved = compare_activations(tmp_path / "a", a)
    assert not saved and len(saved.layers) == 4
    # position matching: every name differs, the conv/pool shapes line up
    renamed = {f"z{i}": v for i, v in enumerate(a.values())}
    byp = compare_activations(a, renamed)
    assert [la.matched_by for la in byp.layers] == ["position"] * 4 and not byp
    # map overrides, and naming an unknown layer is one line
    with pytest.raises(onnxact.InputError, match="--map names 'nope'"):
        compare_activations(a, renamed, map={"nope": "z0"})
    with pytest.raises(onnxact.InputError, match="no layer in common.*A has conv1.*B has q.*map"):
        compare_activations(a, {"q": np.zeros((5, 9))})
    forced = compare_activations(a, {"q": a["conv2"] * 2}, map={"conv2": "q"})
    assert [la.name for la in forced.layers] == ["conv2"] and forced.layers[0].matched_by == "map"
    assert forced.layers[0].sqnr_db == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def torch_net():
    pytest.importorskip("torch")
    from .models.torch_nets import tiny_resnet

    return tiny_resnet()


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_module_vs_its_export_within_1e4(torch_net, exporter, tmp_path):
    from onnxact.converters import from_torch

    module, example = torch_net
    path = tmp_path / "m.onnx"
    from_torch(module, example, path, exporter=exporter)
    x = _x(3)
    r = compare(module, str(path), x, rtol=1e-4)
    onnx_layers = [la.name for la in onnxact.load(str(path)).layers]
    assert not r.unmatched_b, r.table()  # every ONNX layer found its module
    assert [la.name for la in r.layers] == [n for n in onnx_layers]
    assert not r and all(la.rel_l2 <= 1e-4 for la in r.layers), r.table()
    back = compare(str(path), module, x, rtol=1e-4)  # either side may be the framework
    assert [la.name for la in back.layers] == onnx_layers and not back and not back.unmatched_a


def test_keras_model_vs_its_export_within_1e4(tmp_path):
    pytest.importorskip("keras")
    from onnxact.converters import from_keras

    from .models.keras_nets import branchy_net

    k = branchy_net()
    path = tmp_path / "k.onnx"
    from_keras(k, path)
    x = np.random.default_rng(2).random((3, 32, 32, 3), dtype=np.float32)
    r = compare(str(path), k, x, rtol=1e-4)
    names = {la.name for la in r.layers}
    assert {"stem_conv", "stem_pool", "a_sep", "b_conv", "head_conv", "head_avgpool", "gap"} <= names, r.table()
    assert not r and all(la.rel_l2 <= 1e-4 for la in r.layers), r.table()
    # only the separable conv's inner depthwise step has no Keras layer of its own
    assert [u.name for u in r.unmatched_a] == ["a_sep/depthwise"]


def test_cli_json_schema_junit_html_and_exit_codes(nets, capsys, monkeypatch):
    d, p = nets
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    out = d / "cli"
    out.mkdir(exist_ok=True)
    rc = main(["compare", str(p["fp32"]), str(p["qdq"]), str(d / "x16.npy"), "--json", str(out / "r.json"),
               "--junit", str(out / "r.xml"), "--html", str(out / "html")])
    text, err = capsys.readouterr()
    assert rc == 1, err
    assert ">>  conv1" in text and "FAILED: first divergence at conv1" in text
    assert f"::error file={p['qdq']},title=onnxact compare::first divergence at layer conv1" in text
    rep = json.loads((out / "r.json").read_text())
    assert list(rep) == ["a", "b", "images", "first_divergence", "layers", "unmatched_a", "unmatched_b"]
    assert rep["a"] == "fp32.onnx" and rep["b"] == "qdq.onnx" and rep["images"] == 5
    assert rep["first_divergence"] == "conv1" and rep["unmatched_a"] == [] and rep["unmatched_b"] == []
    types = {"name": str, "a_tensor": str, "b_tensor": str, "rel_l2": float, "cosine": float, "sqnr_db": float,
             "max_abs": float, "worst_channel": int}
    for la in rep["layers"]:
        assert list(la) == list(types) and all(type(la[k]) is t for k, t in types.items()), la
    assert [la["name"] for la in rep["layers"]] == ["conv1", "pool1", "conv2", "gap"]
    assert rep["layers"][0]["b_tensor"] == "r1_DequantizeLinear_Output"
    root = ET.parse(out / "r.xml").getroot()
    assert root.get("tests") == "4" and root.get("failures") == "4"
    page = (out / "html" / "index.html").read_text()
    assert "<svg" in page and "first divergence: conv1" in page
    assert (out / "html" / "first_conv1_diff.png").stat().st_size > 100
    assert main(["compare", str(p["fp32"]), str(p["qdq"]), str(d / "x16.npy"), "--min-sqnr", "15"]) == 0
    assert "OK: 4 layers within tolerance" in capsys.readouterr()[0]
    eq = out / "eq.json"
    assert main(["compare", str(p["fp32"]), str(p["fp32"]), str(d / "x16.npy"), "--json", str(eq)]) == 0
    assert "Infinity" in eq.read_text() and json.loads(eq.read_text())["layers"][0]["sqnr_db"] == math.inf


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_exit_2(nets, capsys, tmp_path):
    d, p = nets
    big = tmp_path / "big.onnx"
    onnx.save(conv_net(13, shape=(1, 3, 32, 32), name="big"), big)
    err = _one_line_error(capsys, ["compare", str(p["fp32"]), str(big), str(d / "x16.npy")])
    assert "A's input x has shape [1, 3, 16, 16] but B's input x has [1, 3, 32, 32]" in err
    other = tenblock_onnx(size=16, widths=(4, 4), pool_after=())  # same input, no name, tensor or position in common
    for n in other.graph.node:
        n.output[:] = ["gpool" if o == "gap" else o for o in n.output]
        n.input[:] = ["gpool" if i == "gap" else i for i in n.input]
        n.name = "gpool" if n.name == "gap" else n.name
    onnx.save(other, tmp_path / "other.onnx")
    err = _one_line_error(capsys, ["compare", str(p["fp32"]), str(tmp_path / "other.onnx"), str(d / "x16.npy")])
    assert "A has conv1, pool1, conv2, gap; B has" in err and "--map" in err
    bad_map = tmp_path / "map.json"
    bad_map.write_text('{"conv9": "conv1"}')
    err = _one_line_error(capsys, ["compare", str(p["fp32"]), str(p["qdq"]), str(d / "x16.npy"), "--map", str(bad_map)])
    assert "'conv9', which is not a layer of A" in err
    bad_map.write_text("[1, 2]")
    err = _one_line_error(capsys, ["compare", str(p["fp32"]), str(p["qdq"]), str(d / "x16.npy"), "--map", str(bad_map)])
    assert "must hold one JSON object" in err
    err = _one_line_error(capsys, ["compare", str(p["fp32"]), str(p["qdq"]), str(d / "x16.npy"),
                                   "--json", str(p["qdq"])])
    assert "never writes over its inputs" in err
    module = pytest.importorskip("torch").nn.Conv2d(3, 4, 3)
    with pytest.raises(onnxact.InputError, match="neither side is an ONNX model"):
        compare(module, module, "photo.jpg")
    with pytest.raises(onnxact.InputError, match="needs an example input"):
        compare(module, str(p["fp32"]), None)


def test_rapidocr_det_fp32_vs_its_qdq_has_finite_sqnr_on_every_layer(tmp_path, monkeypatch):
    """A real Paddle export quantized by quantize_static: every layer of A is read in B too
    (where B's own capture set stops at each conv's DequantizeLinear, before BN / HardSwish)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from .subjects import photo, rapidocr_models

    det = rapidocr_models()["det"]
    m = onnxact.load(det)
    photos = [str(photo("astronaut.png")), str(photo("coffee.png"))]
    feeds = iter([{"x": onnxact.preprocess_image(p, m, size=(192, 192))} for p in photos])

    class Reader(CalibrationDataReader):
        def get_next(self):  # type: ignore[override]
            return next(feeds, None)

    quantize_static(str(det), str(tmp_path / "det_qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    r = compare(m, str(tmp_path / "det_qdq.onnx"), photos, size=(192, 192))
    assert len(r.layers) == len(m.layers) and not r.unmatched_a, r.table()
    assert all(math.isfinite(la.sqnr_db) for la in r.layers), r.table()
    assert sum(la.b_tensor.endswith("_DequantizeLinear_Output") for la in r.layers) > len(r.layers) // 2
    assert r.layers[0].sqnr_db > 20 and r.first_divergence is not None
    # its Q inputs made by Conv / HardSigmoid / Add are fused by onnxruntime: read as DQ outputs, so
    # the report is the one reading every DQ output (reading those Q inputs changed SQNR by 3%)
    monkeypatch.setattr(importlib.import_module("onnxact.compare"), "_REQUANT", False)
    assert _close(json.loads(r.to_json()), json.loads(compare(m, str(tmp_path / "det_qdq.onnx"), photos,
                                                              size=(192, 192)).to_json()))


def test_fp32_vs_fp16_feeds_b_its_own_dtype():
    from .models.make_models import build

    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    r = compare(conv_net(13), build("float16"), x)
    assert [la.name for la in r.layers] == ["conv1", "pool1", "conv2", "gap"]
    assert all(50 < la.sqnr_db < 100 for la in r.layers), r.table()  # fp16 rounding: ~70 dB, not equal


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_fp32_vs_its_onnxconverter_common_fp16_copy(nets, tmp_path, keep_io_types):
    """The usual fp16 path: ``convert_float_to_float16`` of the Conv-BN-ReLU net, with float16 or
    float32 inputs; every layer pairs with its own tensor, SQNR is finite and fp16-sized, and
    nothing diverges at rtol 1e-2 (while rtol 1e-5 does: the copy is not the same model)."""
    from onnxconverter_common import float16

    _d, p = nets
    half = tmp_path / "half.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(str(p["base"])), keep_io_types=keep_io_types), half)
    x = _x(4, seed=7)
    r = compare(str(p["base"]), str(half), x, rtol=1e-2)
    base = onnxact.load(str(p["base"]))
    assert [la.b_tensor for la in r.layers] == [la.a_tensor for la in r.layers] == [la.tensor for la in base.select()]
    assert all(math.isfinite(la.sqnr_db) and 40 < la.sqnr_db < 100 for la in r.layers), r.table()
    assert r.first_divergence is None and not r.unmatched_a and not r.unmatched_b
    assert compare(str(p["base"]), str(half), x, rtol=1e-5).first_divergence == r.layers[0].name


def test_wild_yolo_module_vs_its_export_on_photos(yolo_detector):
    """The YOLOv8-shaped detector (legacy exporter, Ultralytics metadata, dynamic H/W) against its
    own torch module, on photos the ONNX side preprocesses (one 512x512, one 400x600)."""
    from .models.wild import yolo_module
    from .subjects import photo

    onnx_layers = [la.name for la in onnxact.load(yolo_detector).layers]
    r = compare(yolo_module(), str(yolo_detector), [str(photo("astronaut.png")), str(photo("coffee.png"))],
                rtol=1e-4)
    assert r.images == 2 and [la.name for la in r.layers] == onnx_layers and not r.unmatched_b, r.table()
    assert not r, r.table()


def test_command_smoke_in_a_subprocess(nets):
    import subprocess
    import sys

    d, p = nets
    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "compare", str(p["fp32"]), str(p["fp32"]), str(d / "x16.npy")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK: 4 layers within tolerance" in out.stdout and out.stderr == "", out.stderr
