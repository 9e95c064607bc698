"""Dead-filter statistics with known answers, on real onnxruntime."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxact
from onnxact.activations import LayerInfo
from onnxact.errors import InputError, ModelError
from onnxact.images import expand_sources, iter_batches
from onnxact.stats import (
    ChannelStats,
    DeadFilterReport,
    StatsRunner,
    find_dead_filters,
    post_activation_layers,
    scan,
)
from onnxact.stats_graph import add_channel_stats

KILLED0 = (1, 4)  # conv0 channels with weights and bias set to zero
KILLED1 = (3,)  # conv1
CONST2 = (2,)  # conv2 (no activation): zero weights, bias 0.5 -> constant
WEAK1 = (6,)  # conv1 channel with tiny weights: dormant for tau=0.05


def killed_net(size: int = 12, seed: int = 0) -> onnx.ModelProto:
    """Conv(3->6)+Relu, Conv(6->8)+Relu, MaxPool, Conv(8->4) with chosen channels killed."""
    rng = np.random.default_rng(seed)

    def conv_params(cout: int, cin: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(0, 0.3, (cout, cin, 3, 3)), np.full(cout, 0.5) + rng.random(cout) * 0.1

    w0, b0 = conv_params(6, 3)
    w0[list(KILLED0)] = 0
    b0[list(KILLED0)] = 0
    w1, b1 = conv_params(8, 6)
    w1[list(KILLED1)] = 0
    b1[list(KILLED1)] = 0
    w1[list(WEAK1)] *= 1e-3
    b1[list(WEAK1)] = 1e-3
    w2, b2 = conv_params(4, 8)
    w2[list(CONST2)] = 0
    b2[list(CONST2)] = 0.5
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for n, a in [("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="/conv0/Conv"),
        helper.make_node("Relu", ["c0"], ["r0"], name="/relu0/Relu"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="/pool1/MaxPool"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], name="/conv2/Conv"),
    ]
    g = helper.make_graph(nodes, "killed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def inputs(n: int = 24, size: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> onnxact.Model:
    return onnxact.load(killed_net())


def test_killed_filters_are_exactly_the_dead_ones(model):
    report = find_dead_filters(model, inputs(), batch_size=5)
    names = [layer.name for layer in model.layers]
    assert len(names) == 4  # relu0, relu1, pool1, conv2
    r0, r1, p1, c2 = names
    expected = {(r0, c) for c in KILLED0} | {(r1, c) for c in KILLED1} | {(p1, c) for c in KILLED1}
    assert set(report.dead) == expected
    assert set(report.constant) == {(c2, c) for c in CONST2}
    assert report.dormant == []  # tau 0: the weak channel still fires
    assert report.images == 24
    d = json.loads(report.to_json())
    assert d["images"] == 24 and d["model"] == report.model_name
    assert {(e["layer"], e["channel"]) for e in d["dead"]} == expected
    assert all(e["max_abs"] == 0.0 and e["tensor"] for e in d["dead"])
    assert d["constant"][0]["value"] == pytest.approx(0.5)
    assert [r["layer"] for r in d["layers"]] == names


def test_dormant_with_tau(model):
    report = find_dead_filters(model, inputs(), tau=0.05)
    r1 = model.layers[1].name
    assert (r1, WEAK1[0]) in report.dormant
    assert not set(report.dormant) & set(report.dead)


def test_in_graph_stats_match_numpy(model):
    x = inputs(10)
    stats = scan(model, x, batch_size=4, show_progress=False, count_above=True)
    ref = ChannelStats.from_activations(onnxact.get_activations(model, x))
    for name, st in stats.layers.items():
        want = ref.layers[name]
        np.testing.assert_allclose(st.max, want.max, rtol=1e-5, atol=1e-6)
        if st.min_known:
            np.testing.assert_allclose(st.min, want.min, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.sum, want.sum, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(st.sumsq, want.sumsq, rtol=1e-4, atol=1e-4)
        assert st.positions == want.positions
        assert np.abs(st.above - want.above).max() <= 1  # > 0 on values within rounding of 0


def test_merged_halves_equal_whole(model):
    x = inputs(30)
    whole = scan(model, x, batch_size=10, show_progress=False)
    a = scan(model, x[:10], batch_size=10, show_progress=False)
    b = scan(model, x[10:], batch_size=10, show_progress=False)
    merged = a.merge(b)
    assert merged.images == whole.images == 30
    for name, st in whole.layers.items():
        m = merged.layers[name]
        assert np.array_equal(m.min, st.min, equal_nan=True) and np.array_equal(m.max, st.max)
        assert m.positions == st.positions
        np.testing.assert_allclose(m.sum, st.sum, rtol=1e-12)
    assert DeadFilterReport(merged).dead == DeadFilterReport(whole).dead
    roundtrip = ChannelStats.from_json(json.loads(json.dumps(merged.to_json())))
    assert DeadFilterReport(roundtrip).dead == DeadFilterReport(whole).dead


def test_nhwc_layer_reduces_over_the_right_axes():
    x = np.random.default_rng(0).random((3, 5, 6, 4)).astype(np.float32)  # NHWC, 4 channels
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 6, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    derived, outs = add_channel_stats(proto, [LayerInfo("y", "y", "Relu", "NHWC", (None, 5, 6, 4))], threshold=0.5,
                                      count_above=True, sum_squares=True)
    assert [o.name for o in derived.graph.output] == outs[0].names()
    import onnxruntime as ort

    mn, mx, s, ss, above = ort.InferenceSession(derived.SerializeToString()).run(outs[0].names(), {"x": x})
    assert mx.shape == (3, 4)  # per image: the host reduces over the batch
    np.testing.assert_allclose(mx.max(0), x.max(axis=(0, 1, 2)))
    np.testing.assert_allclose(mn.min(0), x.min(axis=(0, 1, 2)))
    # sum and sumsq come as per-image means
    np.testing.assert_allclose(s.sum(0) * 30, x.sum(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ss.sum(0) * 30, (x * x).sum(axis=(0, 1, 2)), rtol=1e-5)
    assert above.sum(0).tolist() == (x > 0.5).sum(axis=(0, 1, 2)).tolist() and outs[0].per_image == 30


def test_stats_model_returns_only_per_channel_outputs(model):
    runner = StatsRunner(model)
    # max, sum (static shapes: no size); conv2 (can be negative) also min; relu1's max is pool1's
    assert len({n for o in runner.outputs for n in o.names()}) == 3 * 2 + 3 - 1
    # ... all packed into one output: one row of 6*2 + 8 + 8*2 + 4*3 channel values per image
    assert len(runner.session.get_outputs()) == 1
    values = runner.session.run(None, {"x": inputs(4)})
    assert values[0].shape == (4, 48, 1, 1)
    assert sum(v.nbytes for v in values) < 1000


def test_real_model_rapidocr_cls():
    from subjects import rapidocr_models

    m = onnxact.load(rapidocr_models()["cls"])
    x = np.random.default_rng(0).random((6, 3, 48, 192)).astype(np.float32)
    report = find_dead_filters(m, x, batch_size=3)
    assert len(report.per_layer) == len(m.layers) > 10
    # against the activations themselves (promoted outputs are the unfused values: relative tolerance)
    # the scan reads each conv after its BatchNormalization and activation
    layers = post_activation_layers(m, m.layers)
    # the default capture set already steps over BN and the activation, so the scan agrees with it
    assert [layer.tensor for layer in layers] == [layer.tensor for layer in m.layers]
    assert sum(layer.activation is not None for layer in m.layers) > 5
    acts = onnxact.get_activations(m, x, layer_names=[layer.tensor for layer in layers], output_format="full")
    ref = ChannelStats.from_activations(acts)
    dead_ref = []
    for layer in layers:
        st, want = report.stats.layers[layer.name], ref.layers[layer.tensor]
        np.testing.assert_allclose(st.max_abs, want.max_abs, rtol=1e-3, atol=1e-3)
        dead_ref += [(layer.name, int(c)) for c in np.flatnonzero(want.max_abs <= 0)]
    assert report.dead == dead_ref


def test_demo_model_if_present():
    model_path, image = onnxact.demo_paths()
    report = find_dead_filters(model_path, [str(image)] * 3)
    assert report.images == 3 and len(report.per_layer) == len(onnxact.load(model_path).layers)


def _write_images(folder: Path, n: int, size: int = 12) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b" / Path("deep"))
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img{i}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


def test_image_sources(tmp_path, model):
    paths = _write_images(tmp_path / "imgs", 5)
    assert len(expand_sources(tmp_path / "imgs")) == 5  # recursive
    assert len(expand_sources(str(tmp_path / "imgs" / "**" / "*.png"))) == 5
    lst = tmp_path / "list.txt"
    lst.write_text("# images\n" + "\n".join(str(p.relative_to(tmp_path)) for p in paths[:3]) + "\n")
    assert len(expand_sources(lst)) == 3
    np.savez(tmp_path / "arr.npz", a=inputs(4), b=inputs(2))
    items = expand_sources([tmp_path / "arr.npz", str(lst)])
    batches = list(iter_batches(model, items, batch_size=3))
    assert sum(b.n for b in batches) == 4 + 2 + 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        expand_sources(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        expand_sources(tmp_path / "missing")
    with pytest.raises(InputError, match="matches no files"):
        expand_sources(str(tmp_path / "*.jpeg"))


def test_unreadable_images_counted_or_strict(tmp_path, model):
    _write_images(tmp_path, 4)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    report = find_dead_filters(model, tmp_path, batch_size=2)
    assert report.images == 4 and len(report.failed) == 1 and "broken.png" in report.failed[0][0]
    with pytest.raises(InputError, match="cannot decode"):
        find_dead_filters(model, tmp_path, strict=True)


def test_bad_inputs(tmp_path, model):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 12), np.float32))
    with pytest.raises(InputError, match="wrong.npy.*expects"):
        find_dead_filters(model, tmp_path / "wrong.npy")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(ModelError, match="no capturable"):
        find_dead_filters(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), np.zeros((1, 4)))


def test_progress_on_a_terminal_only(monkeypatch, model):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    scan(model, inputs(8), batch_size=2)
    assert "scanning" in tty.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    scan(model, inputs(8), batch_size=2)
    assert pipe.getvalue() == ""


def test_junit_and_table(model):
    report = find_dead_filters(model, inputs(8))
    root = ET.fromstring(report.to_junit(fail_on=("dead", "constant")))
    cases = root.findall("testcase")
    assert len(cases) == 4 and root.get("failures") == "4"
    assert all(c.find("failure") is not None for c in cases)
    allow = {("dead", layer, c) for layer, c in report.dead}
    root = ET.fromstring(report.to_junit(fail_on=("dead",), allow=allow))
    assert root.get("failures") == "0"
    table = report.table().splitlines()
    assert table[0].split()[:2] == ["layer", "channels"] and "8 images" in table[-1]


def test_threads_caps_onnxruntimes_pool_and_keeps_the_statistics(model):
    # Ray actors take 1 CPU each: their session must not spin a thread per core of the node.
    one, default = StatsRunner(model, threads=1), StatsRunner(model)
    assert one.session.get_session_options().intra_op_num_threads == 1
    assert default.session.get_session_options().intra_op_num_threads == 0  # onnxruntime's own choice
    x = inputs(8)
    a, b = one.run(x), default.run(x)
    for name in a.layers:
        np.testing.assert_array_equal(a.layers[name].max, b.layers[name].max)
        np.testing.assert_allclose(a.layers[name].sum, b.layers[name].sum, rtol=1e-6)
