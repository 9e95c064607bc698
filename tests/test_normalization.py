"""Preprocessing that was guessed says so; normalisation the graph does itself is recognised.

Real exports only: a Keras model with a ``Rescaling(1/255)`` layer (``model.export(format="onnx")``)
and a tf_keras ``Normalization`` layer through tf2onnx, torch models with and without an in-graph
``(x / 255 - mean) / std``, the demo model (metadata) and the rapidocr models (Paddle, none).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxact
from onnxact.cli import main
from onnxact.normalization import choose_normalization, graph_normalization

from .subjects import photo, rapidocr_models

WARNING = "onnxact: warning:"
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class Net(nn.Module):
    def __init__(self, normalise: str = "") -> None:
        super().__init__()
        self.normalise = normalise
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        if self.normalise == "raw":  # the model takes 0-255 pixels
            x = (x / 255.0 - self.mean) / self.std
        elif self.normalise == "unit":  # the model takes 0-1 values
            x = x * 2.0 - 1.0
        y = self.pool(torch.relu(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


def _torch_model(path, normalise: str = ""):
    torch.manual_seed(0)
    torch.onnx.export(Net(normalise).eval(), torch.rand(1, 3, 32, 32), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"])
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("norm")
    return {k: _torch_model(d / f"{k or 'plain'}.onnx", k) for k in ("", "raw", "unit")}


@pytest.fixture(scope="module")
def keras_rescaling(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((40, 40, 3), name="image")
    x = L.Rescaling(1 / 255.0, name="rescale")(inp)
    x = L.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    out = L.Dense(3, activation="softmax", name="predictions")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, out, name="rescaled")
    model(np.zeros((1, 40, 40, 3), np.float32))
    path = tmp_path_factory.mktemp("keras") / "rescaled.onnx"
    model.export(str(path), format="onnx", verbose=False)
    return model, path


def test_guessed_when_nothing_states_it(models):
    m = onnxact.load(models[""])
    n = choose_normalization(m)
    img = str(photo("coffee.png"))
    assert onnxact.get_activations(m, img).preprocessing == n.to_json()  # the Python API records it too
    assert onnxact.get_activations(m, img, normalize="imagenet").preprocessing["source"] == "user"
    assert onnxact.get_activations(m, onnxact.preprocess_image(img, m)).preprocessing is None  # ready arrays
    assert (n.preset, n.source, n.guessed) == ("0-1", "guessed", True)
    line = n.warning(m.name)
    assert line.startswith(WARNING) and "--normalize" in line and "--mean/--std" in line and "0-1" in line
    assert "\n" not in line


def test_user_and_metadata_win_and_never_warn(models):
    m = onnxact.load(models["raw"])
    assert choose_normalization(m, normalize="caffe").source == "user"
    n = choose_normalization(m, mean=[0.5, 0.5, 0.5], std=0.25)
    assert (n.preset, n.mean, n.std, n.source) == ("mean/std", (0.5, 0.5, 0.5), (0.25,), "user")
    demo = onnxact.load(onnxact.demo_paths()[0])
    d = choose_normalization(demo)
    assert (d.preset, d.source, d.warning()) == ("0-1", "metadata", None)


def test_torch_forward_normalisation_is_read_from_the_graph(models):
    raw = onnxact.load(models["raw"])
    affine = graph_normalization(raw)
    assert affine is not None and affine.expects == "0-255" and affine.ops == ("Div", "Sub", "Div")
    mean, std = affine.as_mean_std()
    np.testing.assert_allclose(mean, MEAN, rtol=1e-5)
    np.testing.assert_allclose(std, STD, rtol=1e-5)
    n = choose_normalization(raw)
    assert (n.preset, n.source, n.warning()) == ("none", "graph", None)
    x = onnxact.preprocess_image(str(photo("coffee.png")), raw)
    assert x.max() > 200  # raw pixels: the graph divides by 255 itself
    unit = choose_normalization(onnxact.load(models["unit"]))  # x * 2 - 1 is written for 0-1 values
    assert (unit.preset, unit.source) == ("0-1", "graph")
    assert onnxact.preprocess_image(str(photo("coffee.png")), onnxact.load(models["unit"])).max() <= 1.0


def test_the_same_numbers_as_torch_when_the_graph_normalises(models):
    m = onnxact.load(models["raw"])
    x = onnxact.preprocess_image(str(photo("astronaut.png")), m)
    acts = onnxact.get_activations(m, x, output_format="full")
    torch.manual_seed(0)
    net = Net("raw").eval()
    with torch.no_grad():
        ref = net.pool(torch.relu(net.conv((torch.from_numpy(x) / 255.0 - net.mean) / net.std))).numpy()
    pool = next(layer.tensor for layer in m.layers if layer.op_type == "MaxPool")
    np.testing.assert_allclose(acts[pool], ref, rtol=1e-4, atol=1e-5)


def test_keras_rescaling_layer_gets_raw_pixels_and_matches_keras(keras_rescaling, tmp_path, capsys):
    import keras

    model, path = keras_rescaling
    ops = [n.op_type for n in onnx.load(str(path)).graph.node][:2]
    assert ops == ["Mul", "Add"]  # how Keras 3 exports Rescaling: x * scale + offset
    m = onnxact.load(path)
    n = choose_normalization(m)
    assert (n.preset, n.source) == ("none", "graph") and "x / 255" in n.detail
    out = tmp_path / "r"
    assert main(["inspect", str(path), str(photo("chelsea.png")), "-o", str(out)]) == 0
    assert WARNING not in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["source"] == "graph" and manifest["preprocessing"]["guessed"] is False
    x = onnxact.preprocess_image(str(photo("chelsea.png")), m)
    assert x.shape == (1, 40, 40, 3) and x.max() > 200 and x.min() >= 0
    acts = onnxact.get_activations(m, x, output_format="full")
    conv = next(layer for layer in m.layers if layer.op_type == "Conv")
    ref = keras.Model(model.inputs, model.get_layer("conv").output)({"image": x}).numpy()  # Keras, same pixels
    np.testing.assert_allclose(acts[conv.tensor].transpose(0, 2, 3, 1), ref, rtol=1e-4, atol=1e-5)


def test_tf2onnx_normalization_layer_is_recognised(tmp_path):
    import tensorflow as tf
    import tf2onnx
    import tf_keras  # Keras 3's own export turns Normalization's mean into an extra graph input
    L = tf_keras.layers
    inp = tf_keras.Input((32, 32, 3))
    x = L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 1600.0])(inp)
    x = L.Conv2D(4, 3, activation="relu")(x)
    model = tf_keras.Model(inp, L.GlobalAveragePooling2D()(x))
    path = tmp_path / "normalization.onnx"
    tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32, name="x")],
                               opset=13, output_path=str(path))
    affine = graph_normalization(onnx.load(str(path)))
    assert affine is not None and affine.expects == "0-255"
    mean, std = affine.as_mean_std()
    np.testing.assert_allclose(np.asarray(mean) * 255, [120, 110, 100], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(std) * 255, [60, 50, 40], rtol=1e-5)
    assert choose_normalization(onnxact.load(path)).warning() is None


def test_rapidocr_paddle_models_do_not_normalise_in_graph():
    # rapidocr feeds all three (x / 255 - 0.5) / 0.5 in Python; the graphs start with a Conv on x.
    for key, path in rapidocr_models().items():
        n = choose_normalization(onnxact.load(path))
        assert n.guessed, key


def test_warning_line_on_inspect_check_and_serve(models, tmp_path, capsys):
    img = str(photo("astronaut.png"))
    for args in (["inspect", str(models[""]), img, "-o", str(tmp_path / "a")],
                 ["check", str(models[""]), img, "--json", str(tmp_path / "c.json")]):
        rc = main(args)
        cap = capsys.readouterr()
        assert rc in (0, 1) and cap.err.count(WARNING) == 1 and "guessed" in cap.err, cap.err
    assert "depend on the guessed preprocessing" in cap.out  # check's summary says so
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["preprocessing"] == {"normalize": "0-1", "mean": None, "std": None, "source": "guessed",
                                       "guessed": True, "detail": ""}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["preprocessing"]["guessed"] is True
    assert "guessed" in (tmp_path / "a" / "index.html").read_text()
    for model, warned in ((models[""], 1), (onnxact.demo_paths()[0], 0)):
        err = _serve_stderr(model)
        assert err.count(WARNING) == warned and err.count("guessed --normalize 0-1") == warned, err


def _serve_stderr(model) -> str:
    """What ``onnxact serve`` printed on stderr by the time it listens (then it is stopped)."""
    import subprocess
    import sys

    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "serve", str(model), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "http://127.0.0.1:" in p.stdout.readline()  # the warning, if any, is printed before this line
    finally:
        p.terminate()
        _, err = p.communicate(timeout=20)
    return err


def test_serve_passes_the_users_normalisation_to_the_viewer(models):
    from onnxact.viewer.app import create_app

    app = create_app(models[""], preprocess={"normalize": "imagenet"}, scan_dead=False)
    assert app.state.viewer.preprocess == {"normalize": "imagenet"}
    app.state.viewer.close()


@pytest.mark.parametrize("extra", [["--normalize", "imagenet"], ["--mean", "0.5", "--std", "0.25"]])
def test_no_warning_once_the_user_chose(models, tmp_path, capsys, extra):
    img = str(photo("astronaut.png"))
    assert main(["check", str(models[""]), img, "--json", str(tmp_path / "c.json"), *extra]) in (0, 1)
    cap = capsys.readouterr()
    assert WARNING not in cap.err and "guessed" not in cap.out
    assert json.loads((tmp_path / "c.json").read_text())["preprocessing"]["source"] == "user"
    assert main(["inspect", str(models[""]), img, "-o", str(tmp_path / "i"), *extra]) == 0
    assert WARNING not in capsys.readouterr().err


def test_no_warning_for_metadata_or_graph(models, tmp_path, capsys):
    img = str(photo("astronaut.png"))
    for model in (onnxact.demo_paths()[0], models["raw"]):
        assert main(["check", str(model), img]) in (0, 1)
        cap = capsys.readouterr()
        assert WARNING not in cap.err and "guessed" not in cap.out


def test_ultralytics_metadata_states_pixels_over_255(yolo_detector, torch_no_metadata, capsys):
    n = choose_normalization(onnxact.load(yolo_detector))
    assert (n.preset, n.source, n.warning()) == ("0-1", "metadata", None) and "Ultralytics" in n.detail
    plain = choose_normalization(onnxact.load(torch_no_metadata))  # a torch export without metadata: a guess
    assert plain.guessed and plain.warning() is not None


def _affine_model(ops: list[tuple[str, list[float]]], uint8: bool = False) -> onnx.ModelProto:
    """input -> [Cast] -> Transpose -> the given ops by constants -> Conv (a graph as exporters write it)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, t = [], [], "x"
    if uint8:
        nodes.append(helper.make_node("Cast", [t], ["xf"], to=TensorProto.FLOAT))
        t = "xf"
    nodes.append(helper.make_node("Transpose", [t], ["xt"], perm=[0, 3, 1, 2]))
    t = "xt"
    for i, (op, value) in enumerate(ops):
        c = np.asarray(value, np.float32).reshape(1, -1, 1, 1)
        inits.append(numpy_helper.from_array(c, f"c{i}"))
        nodes.append(helper.make_node(op, [t, f"c{i}"], [f"t{i}"]))
        t = f"t{i}"
    inits.append(numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w"))
    nodes.append(helper.make_node("Conv", [t, "w"], ["y"]))
    g = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("ops, expects", [
    ([("Div", [255.0])], "0-255"),  # x / 255
    ([("Sub", [123.68, 116.78, 103.94])], "0-255"),  # Caffe mean subtraction on raw pixels
    ([("Mul", [1 / 127.5]), ("Add", [-1.0])], "0-255"),  # -1..1 from raw pixels
    ([("Sub", [0.5])], "0-1"),  # x - 0.5 is written for 0-1 values
    ([("Sub", MEAN), ("Div", STD)], "0-1"),  # ImageNet mean/std on 0-1 values
    ([("Mul", [2.0]), ("Sub", [1.0])], "0-1"),
    ([("Mul", [1.0])], None),  # an identity is no normalisation
    ([("Mul", [1e4])], None),  # nothing a network takes: not recognised (a guess, with the warning)
])
def test_which_input_range_the_graph_expects(ops, expects):
    found = graph_normalization(_affine_model(ops))
    assert (found.expects if found is not None else None) == expects


def test_uint8_input_takes_raw_pixels(tmp_path):
    path = tmp_path / "u8.onnx"
    onnx.save(_affine_model([("Div", [255.0])], uint8=True), str(path))
    m = onnxact.load(path)
    n = choose_normalization(m)
    assert (n.preset, n.source) == ("none", "graph")
    x = onnxact.preprocess_image(str(photo("coffee.png")), m)
    assert x.dtype == np.uint8 and x.max() > 200
