"""``onnxact convert``: in-process main(argv), exit codes, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxact
from onnxact.cli import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_torch_factory(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from .models.torch_nets import hook_outputs, tiny_resnet

    out = tmp_path / "r.onnx"
    code, stdout, err = _run(["convert", "tests.models.torch_nets:tiny_resnet", "-o", str(out), "--exporter", "legacy",
                              "--class-names", "a,b,c,d,e", "--normalize", "0-1"], capsys)
    assert code == 0, err
    assert "wrote" in stdout and str(out) in stdout
    model = onnxact.load(out)
    assert model.class_names == list("abcde")
    assert json.loads(model.metadata["onnxact.preprocess"]) == {"normalize": "0-1"}
    module, x = tiny_resnet()
    ref = hook_outputs(module, x)
    acts = onnxact.get_activations(model, x.numpy())
    for k, v in acts.items():  # a conv read after its BN / ReLU: the last fused module's hook
        fused = acts.layers[k].fused
        np.testing.assert_allclose(v, ref[fused[-1] if fused else k], rtol=1e-4, atol=1e-5)
    del torch


def test_torch_module_only_needs_input_shape(tmp_path, capsys):
    pytest.importorskip("torch")
    f = tmp_path / "nets.py"
    f.write_text("import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n")
    out = tmp_path / "m.onnx"
    code, _, err = _run(["convert", f"{f}:make", "-o", str(out), "--exporter", "legacy"], capsys)
    assert code == 2 and "--input-shape" in err and err.count("\n") == 1
    code, _, err = _run(["convert", f"{f}:make", "-o", str(out), "--exporter", "legacy", "--input-shape", "1,3,8,8"],
                        capsys)
    assert code == 0, err
    acts = onnxact.get_activations(out, np.zeros((1, 3, 8, 8), "float32"))
    assert list(acts) == ["0"] and acts.layers["0"].fused == ("1",)  # the conv, read after its ReLU


def test_keras_file(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    keras.Model(inp, x).save(tmp_path / "m.keras")
    out = tmp_path / "m.onnx"
    code, stdout, err = _run(["convert", str(tmp_path / "m.keras"), "-o", str(out)], capsys)
    assert code == 0, err
    assert "keras" in stdout
    assert list(onnxact.get_activations(out, np.zeros((1, 16, 16, 3), "float32"))) == ["c1", "p1"]


@pytest.mark.parametrize("argv, message", [
    (["nope.module:factory"], "can't import 'nope.module'"),
    (["tests.models.torch_nets:failing_factory"], "raised RuntimeError: this factory fails on purpose"),
    (["tests.models.torch_nets:not_a_pair"], "must return (torch.nn.Module, example_input)"),
    (["tests.models.torch_nets:missing"], "has no callable 'missing'"),
    (["missing.keras"], "Keras file not found"),
    (["no_colon_here"], "neither an existing Keras file nor"),
])
def test_bad_sources_are_one_line_exit_2(tmp_path, capsys, argv, message):
    if "torch_nets" in argv[0]:
        pytest.importorskip("torch")
    code, _, err = _run(["convert", *argv, "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_not_a_keras_file_and_bad_output(tmp_path, capsys):
    bad = tmp_path / "model.txt"
    bad.write_text("x")
    code, _, err = _run(["convert", str(bad), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "not a Keras file" in err
    code, _, err = _run(["convert", str(bad), "-o", str(tmp_path / "no" / "such" / "o.onnx")], capsys)
    assert code == 2 and "does not exist" in err
