"""The in-graph statistics' shortcuts (stats_graph.py), each checked on real onnxruntime runs:
a map's max read through a covering MaxPool, the channels-first side of a Transpose, [N, C, 1, 1]
maps read as they are; and the cases where a shortcut would be wrong and must not be taken."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxact
from onnxact.activations import LayerInfo
from onnxact.stats import ChannelStats, StatsRunner, scan
from onnxact.stats_graph import add_channel_stats, max_pool_source


def _model(nodes, inits=(), shape=("N", 3, 12, 12), opset=13, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, list(shape))],
                          [helper.make_tensor_value_info(nodes[-1].output[0], elem, None)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def conv_pool_net(size: int = 12, pool: dict | None = None, pool2: dict | None = None, seed: int = 0) -> onnx.ModelProto:
    """Conv(3->8)+Relu -> MaxPool(**pool) [-> MaxPool(**pool2)] -> Conv(8->4)+Relu; channel 2 of conv0 killed."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b0 = rng.normal(0, 0.2, 8).astype(np.float32)
    w0[2], b0[2] = 0, 0
    w1 = rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    pool = pool or {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="/conv0/Conv"),
             helper.make_node("Relu", ["c0"], ["r0"], name="/relu0/Relu"),
             helper.make_node("MaxPool", ["r0"], ["p0"], name="/pool0/MaxPool", **pool)]
    last = "p0"
    if pool2 is not None:
        nodes.append(helper.make_node("MaxPool", ["p0"], ["p1"], name="/pool1/MaxPool", **pool2))
        last = "p1"
    nodes += [helper.make_node("Conv", [last, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
              helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu")]
    inits = [numpy_helper.from_array(a, n) for n, a in [("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1)]]
    return _model(nodes, inits, ("N", 3, size, size))


def _x(n: int = 6, size: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, size, size)).astype(np.float32)


def _stats(m: onnxact.Model, x: np.ndarray, through_pools: bool, **kw) -> tuple[ChannelStats, StatsRunner]:
    runner = StatsRunner(m, **kw)
    if not through_pools:  # the direct reduction of every map, for reference
        runner._use(*add_channel_stats(m.proto, runner.layers, nonnegative=[True] * len(runner.layers),
                                       max_through_pools=False))
    return runner.run(x), runner


def _reduced(derived: onnx.ModelProto) -> set[str]:
    """The model tensors the statistics nodes read."""
    ours = [n for n in derived.graph.node if n.name.startswith("onnxact_stats")]
    made = {o for n in ours for o in n.output} | {i.name for i in derived.graph.initializer}
    return {i for n in ours for i in n.input if i not in made}


def _assert_same(a: ChannelStats, b: ChannelStats) -> None:
    assert list(a.layers) == list(b.layers)
    for name, sa in a.layers.items():
        sb = b.layers[name]
        np.testing.assert_array_equal(sa.max, sb.max, err_msg=name)
        np.testing.assert_array_equal(sa.sum, sb.sum, err_msg=name)
        assert sa.positions == sb.positions


def test_conv_max_read_through_a_covering_pool_is_identical():
    m = onnxact.load(conv_pool_net())
    x = _x()
    fast, runner = _stats(m, x, True)
    direct, _ = _stats(m, x, False)
    by_name = {o.layer.tensor: o for o in runner.outputs}
    assert by_name["r0"].max_from == "p0" and by_name["r0"].max == by_name["p0"].max  # one shared reduction
    assert by_name["r1"].max_from == ""  # nothing pools it
    _assert_same(fast, direct)
    ref = ChannelStats.from_activations(onnxact.get_activations(m, x, output_format="full"))
    np.testing.assert_allclose(fast.layers[m.layers[0].name].max, ref.layers["r0"].max, rtol=1e-5)
    assert fast.layers[m.layers[0].name].max[2] == 0.0  # the killed channel


def test_chained_pools_are_followed():
    m = onnxact.load(conv_pool_net(size=16, pool2={"kernel_shape": [2, 2], "strides": [2, 2]}))
    x = _x(size=16)
    fast, runner = _stats(m, x, True)
    assert {o.layer.tensor: o.max_from for o in runner.outputs}["r0"] == "p1"
    assert max_pool_source(m.proto, "r0", (None, 8, 16, 16)) == ("p1", (None, 8, 4, 4))
    _assert_same(fast, _stats(m, x, False)[0])


@pytest.mark.parametrize("size, pool", [
    (13, {"kernel_shape": [2, 2], "strides": [2, 2]}),  # odd map: the last row and column are never pooled
    (12, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),  # padding
    (12, {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    (12, {"kernel_shape": [1, 1], "strides": [2, 2]}),  # stride > kernel skips positions
    (12, {"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 2]}),
])
def test_pools_that_do_not_cover_every_position_are_not_used(size, pool):
    m = onnxact.load(conv_pool_net(size=size, pool=pool))
    x = _x(size=size)
    fast, runner = _stats(m, x, True)
    assert all(o.max_from == "" for o in runner.outputs)
    _assert_same(fast, _stats(m, x, False)[0])


def test_odd_map_max_outside_the_pool_windows_is_still_found():
    """The values that would make the pool shortcut wrong: the max sits in the unpooled last row."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    proto = _model(nodes, shape=("N", 2, 5, 5))
    x = np.zeros((3, 2, 5, 5), np.float32)
    x[1, 0, 4, 2] = 7.0  # row 4 of 5: outside every 2x2 window
    x[2, 1, 0, 0] = 1.0
    layers = [LayerInfo("r", "r", "Relu", "NCHW", ("N", 2, 5, 5)), LayerInfo("p", "p", "MaxPool", "NCHW", ("N", 2, 2, 2))]
    derived, outs = add_channel_stats(proto, layers, nonnegative=[True, True])
    assert outs[0].max_from == "" and outs[0].max != outs[1].max
    got = dict(zip([o.name for o in derived.graph.output],
                   ort.InferenceSession(derived.SerializeToString()).run(None, {"x": x})))
    np.testing.assert_array_equal(got[outs[0].max].reshape(3, 2).max(0), [7.0, 1.0])
    np.testing.assert_array_equal(got[outs[1].max].reshape(3, 2).max(0), [0.0, 1.0])
    # with an even map the same pool covers everything and its output stands in for the map's max
    derived, outs = add_channel_stats(_model(nodes, shape=("N", 2, 4, 4)), [
        LayerInfo("r", "r", "Relu", "NCHW", ("N", 2, 4, 4)), LayerInfo("p", "p", "MaxPool", "NCHW", ("N", 2, 2, 2))])
    assert outs[0].max_from == "p" and outs[0].max == outs[1].max


def test_pool_shortcut_with_min_and_extras_matches_numpy():
    """A layer that can be negative still gets its own min; sumsq and counts above are unchanged."""
    m = onnxact.load(conv_pool_net())
    x = _x(10)
    stats = scan(m, x, batch_size=4, show_progress=False, count_above=True, threshold=0.1)
    ref = ChannelStats.from_activations(onnxact.get_activations(m, x), threshold=0.1)
    for name, st in stats.layers.items():
        want = ref.layers[name]
        np.testing.assert_allclose(st.max, want.max, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.sum, want.sum, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(st.sumsq, want.sumsq, rtol=1e-4, atol=1e-4)
        assert np.abs(st.above - want.above).max() <= 1
        assert st.positions == want.positions


def test_merged_halves_equal_whole_with_the_shortcuts():
    m = onnxact.load(conv_pool_net(size=16, pool2={"kernel_shape": [2, 2], "strides": [2, 2]}))
    x = _x(20, size=16)
    whole = scan(m, x, batch_size=10, show_progress=False)
    merged = scan(m, x[:10], batch_size=10, show_progress=False).merge(scan(m, x[10:], batch_size=10,
                                                                             show_progress=False))
    for name, st in whole.layers.items():
        np.testing.assert_array_equal(merged.layers[name].max, st.max)
        np.testing.assert_allclose(merged.layers[name].sum, st.sum, rtol=1e-12)


def test_nhwc_tensor_made_by_a_transpose_is_reduced_on_its_nchw_side():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1])]
    proto = _model(nodes, shape=("N", 4, 5, 6))
    layer = LayerInfo("t", "t", "Transpose", "NHWC", ("N", 5, 6, 4))
    derived, outs = add_channel_stats(proto, [layer], threshold=0.5, count_above=True, sum_squares=True)
    assert _reduced(derived) == {"r"}  # and the transpose itself is pruned
    assert "Transpose" not in {n.op_type for n in derived.graph.node}
    x = np.random.default_rng(0).normal(0, 1, (3, 4, 5, 6)).astype(np.float32)
    got = dict(zip(outs[0].names(), ort.InferenceSession(derived.SerializeToString()).run(outs[0].names(), {"x": x})))
    t = np.maximum(x, 0).transpose(0, 2, 3, 1)
    axes = (0, 1, 2)
    np.testing.assert_array_equal(got[outs[0].max].reshape(3, 4).max(0), t.max(axis=axes))
    np.testing.assert_array_equal(got[outs[0].min].reshape(3, 4).min(0), t.min(axis=axes))
    np.testing.assert_allclose(got[outs[0].sum].reshape(3, 4).sum(0) * 30, t.sum(axis=axes), rtol=1e-5)
    np.testing.assert_allclose(got[outs[0].sumsq].reshape(3, 4).sum(0) * 30, (t * t).sum(axis=axes), rtol=1e-5)
    assert got[outs[0].above].reshape(3, 4).sum(0).tolist() == (t > 0.5).sum(axis=axes).tolist()


def test_a_transpose_that_moves_the_batch_axis_is_not_followed():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[3, 1, 2, 0])]
    proto = _model(nodes, shape=(2, 3, 4, 5))
    derived, _ = add_channel_stats(proto, [LayerInfo("t", "t", "Transpose", "NHWC", (5, 3, 4, 2))])
    assert _reduced(derived) == {"t"}


def test_single_position_maps_are_read_as_they_are():
    """[N, C, 1, 1] (a global pool): min, max and mean per image are the values themselves."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"])]
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (5, 3, 3, 3)).astype(np.float32), "w")
    m = onnxact.load(_model(nodes, [w], ("N", 3, 6, 6)))
    x = _x(4, size=6)
    stats, runner = _stats(m, x, True)
    gap = [o for o in runner.outputs if o.layer.tensor == "g"][0]
    assert gap.max == gap.min == gap.sum and gap.per_image == 1
    ref = ChannelStats.from_activations(onnxact.get_activations(m, x, output_format="full"))
    st = stats.layers[gap.layer.name]
    np.testing.assert_allclose(st.max, ref.layers["g"].max, rtol=1e-5)
    np.testing.assert_allclose(st.min, ref.layers["g"].min, rtol=1e-5)
    np.testing.assert_allclose(st.sum, ref.layers["g"].sum, rtol=1e-5, atol=1e-6)


def test_dynamic_spatial_dims_count_positions_in_the_graph():
    m = onnxact.load(conv_pool_net())
    proto = onnx.ModelProto()
    proto.CopyFrom(m.proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    dyn = onnxact.load(proto)
    x = _x(5, size=10)
    stats, runner = _stats(dyn, x, True)
    assert all(o.size and not o.max_from for o in runner.outputs)  # sizes unknown: no pool shortcut
    ref = ChannelStats.from_activations(onnxact.get_activations(dyn, x))
    for name, st in stats.layers.items():
        assert st.positions == ref.layers[name].positions
        np.testing.assert_allclose(st.max, ref.layers[name].max, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.sum, ref.layers[name].sum, rtol=1e-4, atol=1e-4)


def test_float16_maps_are_cast_once_and_shared():
    m32 = conv_pool_net()
    m16 = onnx.ModelProto()
    m16.CopyFrom(m32)
    for init in m16.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    m16.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    m16.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    m = onnxact.load(m16)
    x = _x(4).astype(np.float16)
    stats, runner = _stats(m, x, True)
    ref = ChannelStats.from_activations(onnxact.get_activations(m, x))
    for name, st in stats.layers.items():
        np.testing.assert_allclose(st.max, ref.layers[name].max, rtol=1e-3)
        np.testing.assert_allclose(st.sum, ref.layers[name].sum, rtol=1e-2, atol=1e-2)


def test_min_of_a_wide_layer_that_can_be_negative():
    """32 channels (onnxruntime's blocked layout): min is -max(-x) through a depthwise -1 Conv."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (32, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 32).astype(np.float32)
    w[5], b[5] = 0, 0.25  # a constant channel
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="/conv/Conv")]
    m = onnxact.load(_model(nodes, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
                            ("N", 3, 16, 16)))
    x = _x(6, size=16)
    runner = StatsRunner(m)
    assert all(o.min for o in runner.outputs)
    stats = runner.run(x)
    ref = ChannelStats.from_activations(onnxact.get_activations(m, x))
    for name, st in stats.layers.items():
        np.testing.assert_allclose(st.min, ref.layers[name].min, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.max, ref.layers[name].max, rtol=1e-5, atol=1e-6)
        assert st.constant.tolist() == [c == 5 for c in range(32)]


def test_batches_run_in_chunks_give_the_same_statistics():
    m = onnxact.load(conv_pool_net(size=16))
    x = _x(11, size=16)
    whole = StatsRunner(m, chunk=0)
    chunked = StatsRunner(m, chunk=3)
    assert StatsRunner(m).chunk >= 1  # the default: chunks sized from the largest map
    a, b = whole.run(x), chunked.run(x)
    assert a.images == b.images == 11
    for name, st in a.layers.items():
        np.testing.assert_allclose(b.layers[name].max, st.max, rtol=1e-6)
        np.testing.assert_allclose(b.layers[name].sum, st.sum, rtol=1e-6)
        assert b.layers[name].positions == st.positions
