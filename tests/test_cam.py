"""CAM checked against a hand computation on small GAP -> FC ONNX models; EigenCAM properties."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxact.cam import cam_from_features, class_activation_map, eigencam, find_cam_head
from onnxact.errors import InputError


def gap_fc_model(head: str = "gemm", nhwc: bool = False, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """Conv(3->4) -> Relu -> GAP (or ReduceMean over H,W in NHWC) -> Flatten -> FC(4->3) -> Softmax."""
    rng = np.random.default_rng(seed)
    w = {
        "cw": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "cb": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fw": rng.normal(0, 1.0, (4, 3)).astype(np.float32),  # (C, K)
        "fb": rng.normal(0, 0.1, (3,)).astype(np.float32),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["feat"])]
    if nhwc:
        nodes += [helper.make_node("Transpose", ["feat"], ["feat_nhwc"], perm=[0, 2, 3, 1]),
                  helper.make_node("ReduceMean", ["feat_nhwc"], ["pooled"], axes=[1, 2], keepdims=0)]
        flat = "pooled"
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["flat"])]
        flat = "flat"
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", [flat, "fw", "fb"], ["logits"]))
    elif head == "gemm_transb":
        inits[2] = numpy_helper.from_array(np.ascontiguousarray(w["fw"].T), "fw")
        nodes.append(helper.make_node("Gemm", [flat, "fw", "fb"], ["logits"], transB=1))
    else:
        nodes += [helper.make_node("MatMul", [flat, "fw"], ["mm"]), helper.make_node("Add", ["mm", "fb"], ["logits"])]
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    g = helper.make_graph(nodes, "gapfc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 5])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, w


def hand_features(w: dict, x: np.ndarray) -> np.ndarray:
    """Conv 3x3 pad 1 + ReLU in numpy: (C, H, W)."""
    xp = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    c, _, h, wd = w["cw"].shape[0], 3, x.shape[2], x.shape[3]
    out = np.zeros((c, h, wd), np.float64)
    for i in range(h):
        for j in range(wd):
            patch = xp[:, i : i + 3, j : j + 3]
            out[:, i, j] = np.tensordot(w["cw"], patch, axes=3) + w["cb"]
    return np.maximum(out, 0)


@pytest.mark.parametrize("head,nhwc", [("gemm", False), ("gemm_transb", False), ("matmul", False), ("gemm", True)])
def test_cam_matches_hand_computation(head, nhwc):
    model, w = gap_fc_model(head, nhwc)
    found = find_cam_head(model)
    assert found is not None
    assert (found.feature_tensor, found.feature_layout) == (("feat_nhwc", "NHWC") if nhwc else ("feat", "NCHW"))
    assert np.allclose(found.weights, w["fw"].T, atol=1e-6)
    assert np.allclose(found.bias, w["fb"], atol=1e-6)
    x = np.random.default_rng(1).random((1, 3, 6, 5)).astype(np.float32)
    feats = hand_features(w, x)
    logits = w["fw"].T @ feats.mean(axis=(1, 2)) + w["fb"]
    predicted = int(np.argmax(logits))
    for k in (None, (predicted + 1) % 3):
        res = class_activation_map(model, x, class_index=k)
        kk = predicted if k is None else k
        expected = np.tensordot(w["fw"][:, kk], feats, axes=1)
        assert res.method == "cam" and res.class_index == kk
        assert res.map.shape == (6, 5)
        assert np.allclose(res.map, expected, rtol=1e-4, atol=1e-4)
        # the exact-CAM identity: spatial mean + bias is the class logit
        assert np.isclose(res.map.mean() + w["fb"][kk], logits[kk], atol=1e-4)
        n = res.normalized()
        assert n.min() >= 0 and n.max() <= 1 and not np.isnan(n).any()


def test_cam_reuses_captured_activations_and_overlays():
    from onnxact import get_activations

    model, w = gap_fc_model("gemm")
    x = np.random.default_rng(2).random((1, 3, 6, 5)).astype(np.float32)
    acts = get_activations(model, x, all_tensors=True)
    res = class_activation_map(model, acts=acts)
    assert res.method == "cam" and res.score is not None and 0 < res.score <= 1
    img = np.random.default_rng(3).random((40, 33, 3))
    ov = res.overlay(img)
    assert ov.size == (33, 40)


def flatten_dense_model() -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> Gemm -> Softmax: the seed CNN's kind of head (no GAP)."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "cw"),
             numpy_helper.from_array(rng.normal(0, 0.1, (4 * 8 * 8, 3)).astype(np.float32), "fw")]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["feat"]),
             helper.make_node("Flatten", ["feat"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fw"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    g = helper.make_graph(nodes, "flatdense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_eigencam_without_gap_head():
    model = flatten_dense_model()
    assert find_cam_head(model) is None
    x = np.random.default_rng(4).random((1, 3, 8, 8)).astype(np.float32)
    res = class_activation_map(model, x)
    assert res.method == "eigencam" and res.map.shape == (8, 8)
    assert res.class_index is not None and "class-agnostic" in res.title
    with pytest.raises(InputError):
        class_activation_map(model, x, method="cam")


def test_eigencam_properties():
    rng = np.random.default_rng(5)
    base = np.zeros((6, 6))
    base[1:3, 2:5] = 1.0
    feats = np.stack([base * s for s in (1.0, 2.0, 0.5)]) + rng.normal(0, 1e-3, (3, 6, 6))
    m = eigencam(feats)
    assert m.shape == (6, 6)
    assert m[1:3, 2:5].min() > m[4:, :].max()  # the firing region is bright, whatever the SVD sign
    assert not np.any(eigencam(np.zeros((4, 3, 3))))  # dead layer -> flat, no NaN
    with pytest.raises(InputError):
        cam_from_features(feats, np.ones((2, 3)), 5)


def test_cam_loads_the_model_with_the_caller_s_providers_and_threads():
    """``providers`` / ``threads`` reach the session CAM runs (they were taken for preprocessing keywords)."""
    import onnxact

    model_path, image = onnxact.demo_paths()
    default = class_activation_map(str(model_path), str(image))
    one = class_activation_map(str(model_path), str(image), providers="cpu", threads=1)
    assert (one.method, one.class_index, one.reason) == (default.method, default.class_index, default.reason)
    np.testing.assert_allclose(one.map, default.map, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="threads must be a whole number"):
        class_activation_map(str(model_path), str(image), threads=0)
    with pytest.raises(onnxact.ProviderError, match="not available"):
        class_activation_map(str(model_path), str(image), providers="NoSuchExecutionProvider")
