"""The real-world-shaped models of ``tests/models/wild.py`` are what they claim: onnxruntime on the
exported file gives the framework's own forward, names and metadata are the exporter's."""

from __future__ import annotations

import ast

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from .models import wild


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 4  # the odd-size failure below is expected; keep its red line off the terminal
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (1, 3, h, w)).astype(np.float32)


@pytest.mark.parametrize("hw", [(320, 320), (256, 320)])
def test_yolo_detector_matches_torch(yolo_detector, hw):
    import torch

    x = _image(*hw)
    (got,) = _session(yolo_detector).run(None, {"images": x})
    with torch.no_grad():
        ref = wild.yolo_module()(torch.from_numpy(x)).numpy()
    anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    assert got.shape == ref.shape == (1, 4 + len(wild.YOLO_NAMES), anchors)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_yolo_detector_is_shaped_like_an_ultralytics_export(yolo_detector):
    m = onnx.load(str(yolo_detector))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["stride"] == "32" and meta["imgsz"] == "[320, 320]" and meta["task"] == "detect"
    assert ast.literal_eval(meta["names"]) == wild.YOLO_NAMES
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert m.graph.input[0].name == "images" and dims == ["batch", 3, "height", "width"]
    convs = {n.name for n in m.graph.node if n.op_type == "Conv"}
    assert {"/model.0/conv/Conv", "/model.2/m.0/cv1/conv/Conv", "/model.22/dfl/conv/Conv"} <= convs
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node)  # folded, as Ultralytics exports
    assert {n.op_type for n in m.graph.node} >= {"Resize", "Concat", "MaxPool", "Softmax"}
    assert yolo_detector.stat().st_size < 2_000_000


def test_yolo_detector_rejects_sizes_off_its_stride(yolo_detector):
    """The neck concatenates upsampled maps: a 600x400 photo fed as is fails, as on a real YOLOv8."""
    with pytest.raises(Exception, match="Concat"):
        _session(yolo_detector).run(None, {"images": _image(400, 600)})


@pytest.mark.parametrize("hw", [(224, 224), (256, 320)])
def test_torch_no_metadata_matches_torch(torch_no_metadata, hw):
    import torch

    x = _image(*hw)
    (got,) = _session(torch_no_metadata).run(None, {"input": x})
    with torch.no_grad():
        ref = wild.resnet_module()(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 10)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    m = onnx.load(str(torch_no_metadata))
    assert not [p for p in m.metadata_props if p.key.startswith("onnxact")]
    assert "/layer1/layer1.0/conv1/Conv" in {n.name for n in m.graph.node}


def test_keras_bn_act_matches_keras(keras_bn_act):
    import keras

    km = keras.models.load_model(wild.keras_path_of(keras_bn_act), compile=False)
    names = [la.name for la in km.layers]
    assert {"conv2d_1", "separable_conv2d_1", "batch_normalization_1", "activation_1", "predictions"} <= set(names)
    x = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    sess = _session(keras_bn_act)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    ref = np.asarray(km(x, training=False))
    assert got.shape == (2, wild.KERAS_CLASSES)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    nodes = " ".join(n.name for n in onnx.load(str(keras_bn_act)).graph.node)
    assert "separable_conv2d_1" in nodes and "predictions" in nodes
