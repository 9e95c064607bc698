"""``onnxact.feeds`` through the library: batch broadcasting, fixed-batch splitting beside unbatched
inputs, zero-filling, dtype casts; every value compared with a plain onnxruntime run."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxact
from onnxact.feeds import MissingInputError, check_array, fill_missing, scan_input


def biased_model(batch: int | str = "N") -> onnx.ModelProto:
    """image [B, 3, 8, 8] + shift [B, 3, 1, 1] (batched), * scale [1] (not batched) -> Conv -> Relu."""
    rng = np.random.default_rng(11)
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Add", ["image", "shift"], ["shifted"]),
             helper.make_node("Mul", ["shifted", "scale"], ["scaled"]),
             helper.make_node("Conv", ["scaled", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu")]
    g = helper.make_graph(
        nodes, "biased", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8]),
                          helper.make_tensor_value_info("shift", TensorProto.FLOAT, [batch, 3, 1, 1]),
                          helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, [batch, 4, 8, 8])], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def plain(proto: onnx.ModelProto, feeds: dict) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["relu"], feeds)[0]


def test_one_sample_is_repeated_to_the_batch():
    proto = biased_model()
    m = onnxact.load(proto)
    x = np.random.default_rng(0).random((3, 3, 8, 8), np.float32)
    shift = np.array([0.5, -0.5, 0.1], np.float32).reshape(1, 3, 1, 1)
    scale = np.array([2.0], np.float32)
    acts = onnxact.get_activations(m, {"image": x, "shift": shift, "scale": scale})
    want = plain(proto, {"image": x, "shift": np.repeat(shift, 3, axis=0), "scale": scale})
    np.testing.assert_allclose(acts["relu"], want, rtol=1e-5, atol=1e-6)
    assert acts.inputs["shift"].shape == (3, 3, 1, 1) and acts.inputs["scale"].shape == (1,)
    with pytest.raises(onnxact.InputError, match="'shift' has 2 samples but 'image' has 3"):
        onnxact.get_activations(m, {"image": x, "shift": np.repeat(shift, 2, axis=0), "scale": scale})


def test_fixed_batch_splits_only_the_batched_inputs():
    """A [1, ...] model fed 3 samples runs 3 times; scale [1] goes whole to every run, never sliced."""
    proto = biased_model(batch=1)
    m = onnxact.load(proto)
    x = np.random.default_rng(1).random((3, 3, 8, 8), np.float32)
    shift = np.random.default_rng(2).random((3, 3, 1, 1), np.float32)
    scale = np.array([-1.5], np.float32)
    acts = onnxact.get_activations(m, {"image": x, "shift": shift, "scale": scale})
    assert acts["relu"].shape == (3, 4, 8, 8)
    for i in range(3):
        want = plain(proto, {"image": x[i:i + 1], "shift": shift[i:i + 1], "scale": scale})
        np.testing.assert_allclose(acts["relu"][i:i + 1], want, rtol=1e-5, atol=1e-6)


def test_fill_missing_and_scan_input():
    m = onnxact.load(biased_model())
    x = np.ones((2, 3, 8, 8), np.float32)
    feeds, filled = fill_missing(m, {"image": x})
    assert filled == ["shift", "scale"]
    assert feeds["shift"].shape == (1, 3, 1, 1) and feeds["scale"].shape == (1,) and not feeds["scale"].any()
    assert scan_input(m, ["shift", "scale"]).name == "image"
    assert scan_input(m).name == "image"  # the one image input among several without a value
    dyn = biased_model()
    dyn.graph.input[1].type.tensor_type.shape.dim[1].dim_param = "c"  # shift [N, c, 1, 1]: no zeros for it
    with pytest.raises(MissingInputError, match=r"shift \[N, c, 1, 1\] float32") as e:
        fill_missing(onnxact.load(dyn), {"image": x})
    assert [i.name for i in e.value.missing] == ["shift"]
    # the dataset scan asks for the other inputs, in Python terms
    with pytest.raises(MissingInputError, match="inputs="):
        onnxact.find_dead_filters(m, x, show_progress=False)


def test_casts_and_refusals():
    m = onnxact.load(biased_model())
    assert check_array(m, "scale", 3).dtype == np.float32  # an int scalar for a float [1]
    assert check_array(m, "scale", np.float64(0.25)).shape == (1,)
    assert check_array(m, "image", np.zeros((3, 8, 8), np.uint8)).shape == (1, 3, 8, 8)  # batch axis added
    with pytest.raises(onnxact.InputError, match=r"expects shape \[1\], got \[2\]"):
        check_array(m, "scale", np.ones(2, np.float32))
    with pytest.raises(onnxact.InputError, match="not a real number type"):
        check_array(m, "scale", np.array([1 + 2j]))
    with pytest.raises(onnxact.InputError, match="no input 'bias'; its inputs are: image, shift, scale"):
        check_array(m, "bias", 1.0)


def test_preprocessing_keywords_with_arrays_are_refused_not_ignored(tmp_path, capsys):
    """``size=`` / ``normalize=`` shape images; an array (or .npy file) is fed as it is, so giving them
    with one is an InputError that says so, never silently dropped. A keyword preprocessing does
    not take is a TypeError whatever the input (it was swallowed with an array)."""
    from onnxact.cli import main
    from onnxact.preprocess import preprocess_image

    model_path, image = onnxact.demo_paths()
    m = onnxact.load(model_path)
    name = m.inputs[0].name
    x = preprocess_image(image, m)
    np.save(tmp_path / "x.npy", x)
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    first = want.get_outputs()[0].name
    for given in (x, {name: x}, str(tmp_path / "x.npy")):
        with pytest.raises(onnxact.InputError, match=r"^preprocessing \(normalize, size\) applies to images .*the "
                                                     r"input is an (array|array file), fed as it is: leave them out"):
            onnxact.get_activations(m, given, normalize="imagenet", size=(128, 128))
        with pytest.raises(TypeError, match="unexpected keyword argument 'sizes'"):
            onnxact.get_activations(m, given, sizes=(128, 128))
        acts = onnxact.get_activations(m, given, normalize=None)  # None: not given
        np.testing.assert_allclose(acts.outputs[first], want.run([first], {name: x})[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sizes'"):
        onnxact.get_activations(m, str(image), sizes=(128, 128))
    # With an image the keywords are used: imagenet scaling gives other maps than the default 0-1
    plain = onnxact.get_activations(m, str(image))
    scaled = onnxact.get_activations(m, {name: str(image)}, normalize="imagenet")
    assert not np.allclose(plain["conv1"], scaled["conv1"])
    # The CLI: one line, exit 2
    assert main(["inspect", str(model_path), "--input", f"{name}={tmp_path / 'x.npy'}", "--normalize", "imagenet",
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preprocessing (normalize) applies to images" in err[0], err
    assert not (tmp_path / "out").exists()
