"""get_activations on tiny models and the three real rapidocr models vs independent onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxact
from onnxact.errors import InputError, LayerError, OnnxactError
from tests import tiny
from tests.subjects import rapidocr_models


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> None:
    scale = float(np.max(np.abs(b))) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(scale, 1e-6))


def test_default_set_is_conv_and_pool_after_activation():
    m = onnxact.load(tiny.conv_net())
    assert [(lay.tensor, lay.op_type, lay.activation) for lay in m.layers] == [
        ("relu0", "Conv", "Relu"), ("pool0", "MaxPool", None),
        ("relu1", "Conv", "Relu"), ("pool1", "MaxPool", None), ("gap", "GlobalAveragePool", None),
    ]
    # legacy-exporter style node names give module names
    assert [lay.name for lay in m.layers] == ["block0.conv", "block0.pool", "block1.conv", "block1.pool", "gap"]
    assert m.layers[0].fused == ("block0.relu",)  # the ReLU module read with its conv, selectable by name


def test_capture_matches_independent_runs_and_original_outputs():
    proto = tiny.conv_net()
    m = onnxact.load(proto)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    assert list(acts) == ["relu0", "pool0", "relu1", "pool1", "gap"]
    for t, arr in acts.items():
        _close(arr, tiny.reference_tensor(proto, t, {"input": x}))
        _close(arr, tiny.reference_tensor(proto, t, {"input": x}, level="none"))
    # the model's own output is returned unchanged
    _close(acts.outputs["probs"], tiny.reference_tensor(proto, "probs", {"input": x}))
    assert acts.layers["relu0"].layout == "NCHW"
    assert acts.layers["relu0"].shape == (1, 4, 16, 16)


def test_batch_and_formats():
    m = onnxact.load(tiny.conv_net(batch="N"))
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    full = onnxact.get_activations(m, x, output_format="full")
    num = onnxact.get_activations(m, x, output_format="numbered")
    simple = onnxact.get_activations(m, x)
    assert list(num) == [str(i) for i in range(5)]
    assert len(simple) == 5
    for a, b, c in zip(full.values(), num.values(), simple.values()):
        assert a.shape[0] == 3
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    single = onnxact.get_activations(m, x[1:2], output_format="full")
    for k in full:
        _close(full[k][1:2], single[k])


def test_fixed_batch_one_model_splits_larger_batches():
    m = onnxact.load(tiny.conv_net(batch=1))
    x = np.random.default_rng(2).random((4, 3, 16, 16), dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    assert acts["relu0"].shape == (4, 4, 16, 16)
    _close(acts["pool1"][2:3], onnxact.get_activations(m, x[2:3], output_format="full")["pool1"])


def test_filters_and_unknown_layer():
    m = onnxact.load(tiny.conv_net())
    x = np.zeros((1, 3, 16, 16), np.float32)
    acts = onnxact.get_activations(m, x, op_types=["MaxPool"], output_format="full")
    assert list(acts) == ["pool0", "pool1"]
    acts = onnxact.get_activations(m, x, layer_names=["conv1"], output_format="full")
    assert list(acts) == ["conv1"]  # the raw conv output, before its Relu
    with pytest.raises(LayerError, match="did you mean"):
        onnxact.get_activations(m, x, layer_names=["relu_9"])
    with pytest.raises(LayerError, match="no layer has op type"):
        onnxact.get_activations(m, x, op_types=["LSTM"])
    every = onnxact.get_activations(m, x, all_tensors=True, output_format="full")
    assert {"conv0", "relu0", "flat", "logits", "probs"} <= set(every)


def test_no_conv_model_says_which_option():
    m = onnxact.load(tiny.no_conv_net())
    with pytest.raises(LayerError, match="all_tensors"):
        onnxact.get_activations(m, np.ones((1, 4), np.float32))
    acts = onnxact.get_activations(m, np.ones((1, 4), np.float32), all_tensors=True, output_format="full")
    assert list(acts) == ["h", "y"]


def test_multi_input_dict_and_errors():
    m = onnxact.load(tiny.two_input_net())
    a = np.ones((1, 3, 8, 8), np.float32)
    b = np.ones((1, 1, 8, 8), np.float32)
    acts = onnxact.get_activations(m, {"a": a, "b": b}, output_format="full")
    assert list(acts) == ["ca", "cb"]
    with pytest.raises(InputError, match="pass a dict"):
        onnxact.get_activations(m, a)
    with pytest.raises(InputError, match="missing"):
        onnxact.get_activations(m, {"a": a})
    with pytest.raises(InputError, match="rank"):
        onnxact.get_activations(m, {"a": np.ones((1, 1, 3, 8, 8), np.float32), "b": b})


def test_silu_is_folded_into_the_conv_layer():
    m = onnxact.load(tiny.silu_net())
    assert [(lay.tensor, lay.activation) for lay in m.layers] == [("silu", "SiLU"), ("y", None)]


def test_wrong_input_shape_is_an_onnxact_error():
    m = onnxact.load(tiny.conv_net())
    with pytest.raises(OnnxactError, match="expects"):
        onnxact.get_activations(m, np.ones((1, 3, 15, 16), np.float32))
    with pytest.raises(InputError, match="rank"):
        onnxact.get_activations(m, np.ones((3, 3), np.float32))


def test_session_created_once_per_capture_set():
    m = onnxact.load(tiny.conv_net())
    x = np.zeros((1, 3, 16, 16), np.float32)
    onnxact.get_activations(m, x)
    s = m.session(tuple(lay.tensor for lay in m.layers))
    onnxact.get_activations(m, x)
    assert m.session(tuple(lay.tensor for lay in m.layers)) is s


@pytest.mark.parametrize("which", ["det", "rec", "cls"])
def test_rapidocr_models_match_one_tensor_at_a_time(which):
    path = rapidocr_models()[which]
    proto = onnx.load(str(path))
    m = onnxact.load(path)
    assert len(m.layers) > 20
    size = {"det": (1, 3, 96, 96), "rec": (1, 3, 48, 96), "cls": (1, 3, 48, 192)}[which]
    x = np.random.default_rng(3).random(size, dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    assert len(acts) == len(m.layers)
    rng = np.random.default_rng(4)
    picks = sorted(set(rng.choice(len(acts), size=min(8, len(acts)), replace=False).tolist()) | {0, len(acts) - 1})
    keys = list(acts)
    for i in picks:
        ref = tiny.reference_tensor(proto, keys[i], {"x": x})
        _close(acts[keys[i]], ref)


@pytest.mark.parametrize("views_from_run", [True, False], ids=["ort-run-views", "ort-values-path"])
def test_captured_arrays_are_the_callers_after_later_runs(views_from_run):
    """Both run paths (onnxruntime's own views, and run_with_ort_values for an onnxruntime that
    copies) give the same arrays, and those arrays are not reused by the session's next runs."""
    proto = tiny.conv_net(batch="N")
    m = onnxact.load(proto)
    key = tuple(lay.tensor for lay in m.layers)
    if not views_from_run:
        m.session(key)._onnxact_views = False  # what run_session records for an onnxruntime that copies
    rng = np.random.default_rng(3)
    x1, x2 = rng.random((2, 3, 16, 16), dtype=np.float32), rng.random((2, 3, 16, 16), dtype=np.float32)
    first = onnxact.get_activations(m, x1, output_format="full")
    kept = {k: v.copy() for k, v in first.items()}
    for _ in range(5):
        later = onnxact.get_activations(m, x2, output_format="full")
    for t, arr in first.items():
        np.testing.assert_array_equal(arr, kept[t])
        _close(arr, tiny.reference_tensor(proto, t, {"input": x1}))
        _close(later[t], tiny.reference_tensor(proto, t, {"input": x2}))
        assert arr.flags.writeable
    assert list(m._sessions) == [key]  # the session whose path was set is the one that ran
    # the first run found out which path this session needs; a forced fallback stays put
    assert m.session(key)._onnxact_views is not None if views_from_run else m.session(key)._onnxact_views is False
