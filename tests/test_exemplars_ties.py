"""Exemplar positions where the maximum is reached at many places (issue 15, the blocked path).

The scan finds each top entry's position from row and column maxima; when several rows AND
several columns hold the maximum (ReLU6 saturation, constant channels) it asks the exact graph.
A torch model (exported by torch.onnx.export) whose maps saturate heavily, with an all-zero
channel, a constant channel and a channel <= 0 whose maximum 0 is reached at many places, must
give exactly the independent whole-map capture (first maximum in reading order) on real photos.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxact
from onnxact.exemplar_scan import ExemplarRunner, sample_keys
from tests.test_exemplars import PHOTOS, photos, reference  # noqa: F401 - fixture

torch = pytest.importorskip("torch")
nn = torch.nn


class Saturated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(8, 3, 3, 3, generator=g) * 6)  # ReLU6 saturates widely
            self.conv1.weight[0] = 0
            self.conv1.bias[0] = -1  # all zero after ReLU6
            self.conv1.weight[1] = 0
            self.conv1.bias[1] = 3  # 3 everywhere: every row and column holds the maximum
            self.conv2.weight.copy_(torch.randn(8, 8, 3, 3, generator=g) * 2)
            self.conv3.weight.copy_(torch.randn(4, 8, 1, 1, generator=g))
            self.conv3.weight[0] = 0
            self.conv3.bias[0] = 0  # all zero, no activation after it
            self.conv3.weight[1] = -self.conv3.weight[1].abs()
            self.conv3.bias[1] = 0  # <= 0, maximum 0 wherever conv2's ReLU6 is all zero

    def forward(self, x):
        a = self.pool(nn.functional.relu6(self.conv1(x)))
        return self.conv3(nn.functional.relu6(self.conv2(a)))


@pytest.fixture(scope="module")
def saturated(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sat") / "saturated.onnx"
    torch.onnx.export(Saturated().eval(), torch.rand(1, 3, 48, 64), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return str(path)


def test_saturated_maps_equal_the_whole_map_capture(saturated, photos):  # noqa: F811
    m = onnxact.load(saturated)
    for layer in [li.name for li in m.layers]:
        ex = onnxact.find_exemplars(m, photos, top=4, layers=[layer], batch_size=3)
        ref = reference(saturated, photos, layer)
        assert ex.images == len(PHOTOS)
        for c, entries in enumerate(ex.layers[layer]):
            want = ref[c][:4]
            assert [e.image for e in entries] == [w[0] for w in want], (layer, c)
            np.testing.assert_allclose([e.value for e in entries], [w[1] for w in want], rtol=1e-5, atol=1e-6)
            assert [e.position for e in entries] == [w[2] for w in want], (layer, c)


def test_the_tied_entries_take_the_fallback_and_all_zero_maps_do_not(saturated, photos):  # noqa: F811
    """The blocked path is the one taken, ties do reach the exact graph (else the test above would
    not exercise it), and an all-zero map is settled without it."""
    from onnxact.exemplar_scan import positions
    from onnxact.stats import scan_preprocess

    m = onnxact.load(saturated)
    paths = sorted(str(p) for p in photos.iterdir())
    kw = scan_preprocess(m, str(photos), {})
    x = np.concatenate([onnxact.preprocess_image(p, m, **kw) for p in paths])
    runner = ExemplarRunner(m, list(m.layers), 4)
    assert all(o.blocked for o in runner.outputs)
    runner.run(x, sample_keys(paths))
    assert runner._exact is not None
    # the first pool: channel 0 all zero (settled: (0, 0), not tied), channel 1 3 everywhere (tied)
    o = next(o for o in runner.outputs if o.layer.op_type == "MaxPool")
    v = runner._run_all(x)
    n = len(paths)
    index = np.tile(np.arange(n), (8, 1))
    rows, cols, tied = positions(index, np.ones_like(index, bool), v[o.value].reshape(n, 8), v[o.mean].reshape(n, 8),
                                 v[o.rowmax].reshape(n, 8, -1), v[o.colmax].reshape(n, 8, -1))
    assert not tied[0].any() and (rows[0] == 0).all() and (cols[0] == 0).all()
    assert tied[1].all()


@pytest.mark.parametrize(("opset", "dynamic"), [(9, False), (9, True), (10, True)])
def test_exact_graph_before_opset_11_equals_the_whole_map_capture(photos, tmp_path, opset, dynamic):  # noqa: F811
    """Opset 9/10 have no GatherElements / batched GatherND (tf2onnx 1.8's open-nsfw is opset 9):
    the exact graph picks the maximum's row with OneHot + Where instead, and must give the same
    value and first position in reading order as a whole-map capture, static or dynamic H and W."""
    import onnx
    import onnxruntime as ort

    from onnxact.exemplar_graph import add_channel_argmax

    path = tmp_path / f"sat{opset}.onnx"
    axes = {"x": {0: "n", 2: "h", 3: "w"}} if dynamic else {"x": {0: "n"}}
    torch.onnx.export(Saturated().eval(), torch.rand(1, 3, 48, 64), str(path), dynamo=False, opset_version=opset,
                      input_names=["x"], dynamic_axes=axes)
    m = onnxact.load(path)
    derived, outs = add_channel_argmax(onnx.load(path), list(m.layers), blocked=False)
    assert derived.opset_import[0].version == opset and not any(o.blocked for o in outs)
    sess = ort.InferenceSession(derived.SerializeToString(), providers=["CPUExecutionProvider"])
    for p in sorted(photos.iterdir())[:3]:
        x = onnxact.preprocess_image(str(p), m, **({} if dynamic else {"size": (48, 64)}))
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))
        acts = onnxact.get_activations(m, x)
        for o in outs:
            a = np.asarray(acts[o.layer.name])[0]
            flat = a.reshape(a.shape[0], -1)
            first = flat.argmax(axis=1)
            np.testing.assert_array_equal(got[o.value].reshape(-1), flat.max(axis=1))
            np.testing.assert_array_equal(got[o.row].reshape(-1), first // a.shape[-1])
            np.testing.assert_array_equal(got[o.col].reshape(-1), first % a.shape[-1])
