"""Every input from the command line: ``--input NAME=FILE.npy|FILE.npz[:KEY]|VALUE``, zero-filled
inputs, bad inputs, models without inputs, ``inspect`` on folders / globs / lists, EXIF orientation.

The three-input model is a small audio-like net exported by torch's legacy exporter; captured
values are compared with torch forward hooks on the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxact
from onnxact.activations import load_activations
from onnxact.cli import main


def audio_net():
    """waveform [N, 1, T] float32, sample_rate [] int64, gain [1] float32: all three reach the convs."""
    import torch
    from torch import nn

    class AudioNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.relu1, self.pool1 = nn.Conv1d(1, 8, 9, padding=4), nn.ReLU(), nn.MaxPool1d(4)
            self.conv2, self.relu2, self.pool2 = nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(4)
            self.fc = nn.Linear(16, 5)
            with torch.no_grad():  # channel 3 of conv1 fires only on loud input (dead at low gain)
                self.conv1.bias[3] = -4.0

        def forward(self, waveform, sample_rate, gain):
            x = waveform * gain * (sample_rate.float() / 16000.0)
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            return self.fc(x.mean(-1))

    torch.manual_seed(0)
    return AudioNet().eval()


HOOKED = ("relu1", "pool1", "relu2", "pool2")  # graph order of the default capture set


def export_audio_net(d: Path):
    """The audio net exported by the legacy exporter to ``d/audio.onnx``; returns (path, module)."""
    import torch

    net = audio_net()
    args = (torch.randn(1, 1, 512), torch.tensor(16000, dtype=torch.int64), torch.tensor([1.0]))
    torch.onnx.export(net, args, str(d / "audio.onnx"), dynamo=False, opset_version=13,
                      input_names=["waveform", "sample_rate", "gain"], output_names=["logits"],
                      dynamic_axes={"waveform": {0: "batch", 2: "time"}, "logits": {0: "batch"}})
    return d / "audio.onnx", net


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    _, net = export_audio_net(d)
    rng = np.random.default_rng(0)
    np.save(d / "w.npy", rng.standard_normal((1, 1, 2000)).astype(np.float32))
    np.save(d / "waves.npy", rng.standard_normal((6, 1, 1500)).astype(np.float32))
    return d, net


def torch_maps(net, waveform: np.ndarray, sample_rate: int, gain: float) -> list[np.ndarray]:
    import torch

    got: dict[str, np.ndarray] = {}
    hooks = [getattr(net, n).register_forward_hook(lambda mod, i, o, n=n: got.__setitem__(n, o.detach().numpy()))
             for n in HOOKED]
    try:
        with torch.no_grad():
            net(torch.from_numpy(waveform), torch.tensor(sample_rate, dtype=torch.int64), torch.tensor([gain]))
    finally:
        for h in hooks:
            h.remove()
    return [got[n] for n in HOOKED]


def one_error(capsys, argv: list[str], *words: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("onnxact: error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_three_inputs_from_the_command_line_match_torch(audio, tmp_path, capsys):
    d, net = audio
    out = tmp_path / "out"
    rc = main(["inspect", str(d / "audio.onnx"), "--input", f"waveform={d / 'w.npy'}", "--input", "sample_rate=8000",
               "--input", "gain=0.5", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""  # every input given: no note
    acts = load_activations(out)
    want = torch_maps(net, np.load(d / "w.npy"), 8000, 0.5)
    assert len(acts) == len(want)
    for (key, got), ref in zip(acts.items(), want):
        assert got.shape == ref.shape, key
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=key)
    # sample_rate and gain matter: the same waveform at another rate gives other maps
    other = torch_maps(net, np.load(d / "w.npy"), 16000, 0.5)
    assert not np.allclose(other[0], want[0])
    grids = sorted((out / "grids").glob("*.png"))
    assert len(grids) == len(want) and not (out / "input.png").exists()  # no image input: no input picture
    assert "no image input" in (out / "index.html").read_text(encoding="utf-8")


def test_npz_inputs_scalar_from_a_file_and_a_batch(audio, tmp_path, capsys):
    d, net = audio
    waves = np.load(d / "waves.npy")
    np.savez(tmp_path / "two.npz", a=waves[:2], b=waves[2:5])
    np.save(tmp_path / "rate.npy", np.array(12000, np.int64))
    out = tmp_path / "out"
    rc = main(["inspect", str(d / "audio.onnx"), "--input", f"waveform={tmp_path / 'two.npz'}:b",
               "--input", f"sample_rate={tmp_path / 'rate.npy'}", "--input", "gain=2", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    subs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subs == ["0_sample_0", "1_sample_1", "2_sample_2"]
    batch = load_activations(out)  # one npz for the batch at the top of DIR: sample s is image s
    for s, _sub in enumerate(subs):
        want = torch_maps(net, waves[2 + s:3 + s], 12000, 2.0)
        for got, ref in zip(batch.values(), want):
            np.testing.assert_allclose(got[s:s + 1], ref, rtol=1e-5, atol=1e-5)
    # an .npz with several arrays and no key: says which keys there are
    one_error(capsys, ["inspect", str(d / "audio.onnx"), "--input", f"waveform={tmp_path / 'two.npz'}",
                       "-o", str(tmp_path / "o2")], "2 arrays", "a, b", "waveform=")
    assert not (tmp_path / "o2").exists()


def test_inputs_left_out_get_zeros_with_a_note(audio, tmp_path, capsys):
    d, net = audio
    out = tmp_path / "out"
    rc = main(["inspect", str(d / "audio.onnx"), "--input", f"waveform={d / 'w.npy'}", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    notes = [ln for ln in err.splitlines() if ln.strip()]
    assert len(notes) == 1 and "sample_rate" in notes[0] and "gain" in notes[0] and "zeros" in notes[0], err
    # zero gain: the convs see zeros, exactly as torch does
    want = torch_maps(net, np.load(d / "w.npy"), 0, 0.0)
    for got, ref in zip(load_activations(out).values(), want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_missing_input_names_the_option_not_python(audio, tmp_path, capsys):
    d, _ = audio
    err = one_error(capsys, ["inspect", str(d / "audio.onnx"), "--input", "sample_rate=16000", "-o", str(tmp_path / "o")],
                    "--input waveform=", "waveform [batch, 1, time] float32")
    assert "dict" not in err and "pass" not in err
    assert not (tmp_path / "o").exists()
    # nothing at all: the inputs are listed, again with --input
    one_error(capsys, ["inspect", str(d / "audio.onnx"), "-o", str(tmp_path / "o")], "--input", "waveform, sample_rate, gain")
    # the library keeps its Python advice
    with pytest.raises(onnxact.InputError, match="missing"):
        onnxact.get_activations(onnxact.load(d / "audio.onnx"), {"waveform": np.load(d / "w.npy")})


def test_bad_npy_dtype_shape_and_unknown_name(audio, tmp_path, capsys):
    d, _ = audio
    m = str(d / "audio.onnx")
    np.save(tmp_path / "rate_f.npy", np.array(16000.5, np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((1, 2, 100), np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((100,), np.float32))
    np.save(tmp_path / "gains.npy", np.ones((3,), np.float32))
    o = str(tmp_path / "o")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    one_error(capsys, ["inspect", m, "--input", f"waveform={d / 'w.npy'}", "--input", f"sample_rate={tmp_path / 'rate_f.npy'}",
                       "-o", o], "sample_rate", "int64", "float32")
    one_error(capsys, ["inspect", m, "--input", f"waveform={tmp_path / 'wide.npy'}", "-o", o],
              "waveform", "[batch, 1, time]", "[1, 2, 100]")
    one_error(capsys, ["inspect", m, "--input", f"waveform={tmp_path / 'flat.npy'}", "-o", o], "waveform", "rank 3", "rank 1")
    one_error(capsys, ["inspect", m, "--input", f"waveform={d / 'w.npy'}", "--input", f"gain={tmp_path / 'gains.npy'}",
                       "-o", o], "gain", "[1]", "[3]")
    one_error(capsys, ["inspect", m, "--input", "sample_rate=16000.5", "-o", o], "sample_rate", "int64", "16000.5")
    one_error(capsys, ["inspect", m, "--input", "gain=loud", "-o", o], "gain", "'loud'")
    one_error(capsys, ["inspect", m, "--input", f"wave={d / 'w.npy'}", "-o", o],
              "no input 'wave'", "waveform, sample_rate, gain")
    one_error(capsys, ["check", m, str(d / "waves.npy"), "--input", "rate=1"], "no input 'rate'", "waveform, sample_rate, gain")
    one_error(capsys, ["inspect", m, "--input", "waveform", "-o", o], "NAME=FILE.npy", "waveform, sample_rate, gain")
    one_error(capsys, ["inspect", m, "--input", "gain=1", "--input", "gain=2", "-o", o], "gain", "twice")
    assert not (tmp_path / "o").exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing changed


def test_check_feeds_the_same_values_to_every_sample(audio, tmp_path, capsys):
    """The .npy feeds the waveform; sample_rate and gain are broadcast: dead channels as torch finds them."""
    d, net = audio
    m = onnxact.load(d / "audio.onnx")
    names = [layer.name for layer in m.layers]
    assert len(names) == len(HOOKED)
    waves = np.load(d / "waves.npy")
    for gain in (0.05, 50.0):
        report = tmp_path / f"r{gain}.json"
        rc = main(["check", str(d / "audio.onnx"), str(d / "waves.npy"), "--input", "sample_rate=16000",
                   "--input", f"gain={gain}", "--batch-size", "4", "--json", str(report)])
        assert rc in (0, 1), capsys.readouterr().err
        maps = torch_maps(net, waves, 16000, gain)
        want = {(names[k], c) for k, a in enumerate(maps) for c in range(a.shape[1]) if np.abs(a[:, c]).max() == 0}
        got = {(f["layer"], f["channel"]) for f in json.loads(report.read_text())["dead"]}
        assert got == want, gain
        assert json.loads(report.read_text())["images"] == 6
        if gain == 0.05:
            assert (names[0], 3) in got  # the -4 bias: dead on quiet input ...
        else:
            assert (names[0], 3) not in got  # ... alive on loud input, so gain did reach every batch
    capsys.readouterr()


def no_input_model() -> onnx.ModelProto:
    """Constant -> Conv -> Relu -> MaxPool: a graph with no inputs at all."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["x"], value=numpy_helper.from_array(x, "xv")),
             helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    g = helper.make_graph(nodes, "constants", [], [helper.make_tensor_value_info("pool", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _conv_relu(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    p = np.pad(x[0, 0], 1)
    out = np.zeros((w.shape[0], *x.shape[2:]), np.float32)
    for c in range(w.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                out[c, i, j] = (p[i:i + 3, j:j + 3] * w[c, 0]).sum()
    return np.maximum(out, 0)[None]


def test_a_model_without_inputs(tmp_path, capsys):
    proto = no_input_model()
    path = tmp_path / "constants.onnx"
    onnx.save(proto, path)
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (9, 9, 9)).save(img)
    one_error(capsys, ["inspect", str(path), str(img), "-o", str(tmp_path / "o")], "constants.onnx has no inputs", "IMAGE")
    one_error(capsys, ["check", str(path), str(img)], "constants.onnx has no inputs", "no dataset")
    out = tmp_path / "out"
    rc = main(["inspect", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert len(err.splitlines()) == 1 and "no inputs" in err and "constant" in err
    x = numpy_helper.to_array(proto.graph.node[0].attribute[0].t)
    w = numpy_helper.to_array(proto.graph.initializer[0])
    acts = load_activations(out)
    want = _conv_relu(x, w)
    got = list(acts.values())
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want.reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5)), rtol=1e-5, atol=1e-6)


# -- inspect on folders, globs and list files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    (d / "sub").mkdir()
    for name, (h, w) in {"a.png": (40, 60), "b.jpg": (128, 128), "sub/c.png": (90, 30)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / name)
    (d / "notes.txt").write_text("not an image list entry\n")
    return d


def _reports(out: Path) -> dict[str, Path]:
    return {p.name.split("_", 1)[1]: p for p in sorted(out.iterdir()) if (p / "index.html").is_file()}


def test_inspect_a_folder_a_glob_and_a_list(folder, tmp_path, capsys):
    model, _ = onnxact.demo_paths()
    m = onnxact.load(model)
    out = tmp_path / "folder"
    assert main(["inspect", str(model), str(folder), "-o", str(out)]) == 0, capsys.readouterr().err
    reports = _reports(out)
    assert sorted(reports) == ["a", "b", "c"]
    batch = load_activations(out)  # one npz for the batch at the top of DIR: sample s is image s
    for s, (stem, path) in enumerate({"a": folder / "a.png", "b": folder / "b.jpg",
                                      "c": folder / "sub" / "c.png"}.items()):
        want = onnxact.get_activations(m, str(path))
        assert list(batch) == list(want)
        for k in want:
            np.testing.assert_allclose(batch[k][s:s + 1], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{stem} {k}")
    index = (out / "index.html").read_text(encoding="utf-8")
    assert all(n in index for n in ("a.png", "b.jpg", "c.png"))

    out = tmp_path / "glob"
    assert main(["inspect", str(model), str(folder / "*.png"), "-o", str(out)]) == 0
    assert sorted(_reports(out)) == []  # one image: the report is the folder itself
    np.testing.assert_allclose(load_activations(out)["conv1"], onnxact.get_activations(m, str(folder / "a.png"))["conv1"],
                               rtol=1e-5, atol=1e-6)

    listing = tmp_path / "list.txt"
    listing.write_text(f"# two photos\n{folder / 'sub' / 'c.png'}\n{folder / 'b.jpg'}\n")
    out = tmp_path / "list"
    assert main(["inspect", str(model), str(listing), "-o", str(out)]) == 0
    assert sorted(_reports(out)) == ["b", "c"]
    capsys.readouterr()


def test_inspect_caps_the_number_of_images(folder, tmp_path, capsys):
    model, _ = onnxact.demo_paths()
    out = tmp_path / "cap"
    assert main(["inspect", str(model), str(folder), "--max-images", "2", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "3 images found" in err and "first 2" in err and "--max-images" in err
    assert sorted(_reports(out)) == ["a", "b"]
    one_error(capsys, ["inspect", str(model), str(folder), "--max-images", "0", "-o", str(tmp_path / "z")], "--max-images")
    one_error(capsys, ["inspect", str(model), str(folder / "*.gif"), "-o", str(tmp_path / "z")], "matches no files")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(capsys, ["inspect", str(model), str(empty), "-o", str(tmp_path / "z")], "no image files found")
    np.save(tmp_path / "x.npy", np.zeros((1, 128, 128, 3), np.float32))
    one_error(capsys, ["inspect", str(model), str(tmp_path / "x.npy"), "-o", str(tmp_path / "z")], "--input image=")
    assert not (tmp_path / "z").exists()


# -- an image input beside a scalar input ------------------------------------------------------------------------


def scaled_image_model() -> onnx.ModelProto:
    """image [N, 3, H, W] * scale [1] -> Conv -> Relu -> MaxPool."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    b = np.array([0.1, -0.5, 0.2, -2.0], np.float32)
    nodes = [helper.make_node("Mul", ["image", "scale"], ["scaled"], name="scale"),
             helper.make_node("Conv", ["scaled", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    g = helper.make_graph(
        nodes, "scaled", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16]),
                          helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_images_positional_other_inputs_from_the_option(folder, tmp_path, capsys):
    path = tmp_path / "scaled.onnx"
    onnx.save(scaled_image_model(), path)
    m = onnxact.load(path)
    images = [str(folder / "a.png"), str(folder / "b.jpg")]
    out = tmp_path / "out"
    # the option between MODEL and the images, as people type it
    assert main(["inspect", str(path), "--input", "scale=3", *images, "-o", str(out)]) == 0, capsys.readouterr().err
    want = onnxact.get_activations(m, {"image": images, "scale": np.array([3.0], np.float32)})
    assert len(_reports(out)) == len(images)
    for k, got in load_activations(out).items():  # one npz for the batch at the top of DIR
        np.testing.assert_allclose(got, want[k], rtol=1e-5, atol=1e-6)
    # check: the same scale for every image of the folder, in batches of 2 (broadcast per batch)
    report = tmp_path / "r.json"
    rc = main(["check", str(path), "--input", "scale=0", str(folder), "--batch-size", "2", "--json", str(report)])
    assert rc == 1  # scale 0: the convs see only their biases, so the negative-bias channels are dead
    dead = {(f["layer"], f["channel"]) for f in json.loads(report.read_text())["dead"]}
    assert {c for _, c in dead} == {1, 3}
    # left out: zeros, with the note
    rc = main(["check", str(path), str(folder), "--json", str(report)])
    err = capsys.readouterr().err
    assert rc == 1 and "no --input for scale: fed zeros" in err
    assert {c for _, c in {(f["layer"], f["channel"]) for f in json.loads(report.read_text())["dead"]}} == {1, 3}
    rc = main(["check", str(path), str(folder), "--input", "scale=1", "--json", str(report)])
    assert rc in (0, 1)
    stats = onnxact.get_activations(m, {"image": [str(p) for p in sorted(folder.rglob("*.[pj][np]g"))],
                                        "scale": np.ones(1, np.float32)})
    want_dead = {(k, c) for k, a in stats.items() for c in range(a.shape[1]) if np.abs(a[:, c]).max() == 0}
    assert {(f["layer"], f["channel"]) for f in json.loads(report.read_text())["dead"]} == want_dead
    capsys.readouterr()


# -- EXIF orientation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation,turns", [(6, -1), (8, 1)])
def test_exif_rotated_jpeg_is_fed_and_drawn_upright(tmp_path, capsys, orientation, turns):
    from PIL import Image

    from onnxact.preprocess import load_image
    from onnxact.render import load_display_image

    rng = np.random.default_rng(orientation)
    landscape = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    landscape[:, :30] //= 4  # a dark left half, so a wrong turn cannot match by chance
    jpg = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(landscape).save(jpg, quality=95, exif=exif)
    with Image.open(jpg) as im:
        stored = np.asarray(im.convert("RGB"))  # the pixels as stored (landscape), no EXIF applied
    upright = np.rot90(stored, k=turns)  # orientation 6: turn 90 degrees clockwise; 8: counter-clockwise
    assert upright.shape == (60, 40, 3)

    np.testing.assert_array_equal(np.asarray(load_image(jpg).convert("RGB")), upright)
    shown = load_display_image(str(jpg))
    assert shown.shape == (60, 40, 3)
    np.testing.assert_allclose(shown, upright / 255.0, atol=1e-6)

    # a model whose input is portrait 60x40: the upright photo is fed without any resize
    proto = scaled_image_model()
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 60, 40
    proto.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 30
    proto.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 20
    path = tmp_path / "portrait.onnx"
    onnx.save(proto, path)
    m = onnxact.load(path)
    acts = onnxact.get_activations(m, {"image": str(jpg), "scale": np.ones(1, np.float32)})
    fed = acts.inputs["image"]
    assert fed.shape == (1, 3, 60, 40)
    np.testing.assert_allclose(fed[0].transpose(1, 2, 0), upright / 255.0, atol=1e-6)

    out = tmp_path / "out"
    assert main(["inspect", str(path), str(jpg), "--input", "scale=1", "-o", str(out)]) == 0, capsys.readouterr().err
    with Image.open(out / "input.png") as im:
        w, h = im.size
    assert h > w  # portrait in the report too
    got = load_activations(out)
    for k in acts:
        np.testing.assert_allclose(got[k], acts[k], rtol=1e-5, atol=1e-6)


def test_inspect_a_folder_of_mixed_sizes_on_a_dynamic_model(folder, tmp_path, capsys):
    """Height and width dynamic, no --size: each photo is captured on its own, as get_activations does it."""
    proto = scaled_image_model()
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    out_dims[2].dim_param, out_dims[3].dim_param = "h", "w"
    path = tmp_path / "dynamic.onnx"
    onnx.save(proto, path)
    m = onnxact.load(path)
    out = tmp_path / "out"
    assert main(["inspect", str(path), str(folder), "--input", "scale=1", "-o", str(out)]) == 0, capsys.readouterr().err
    reports = _reports(out)
    for stem, photo in {"a": folder / "a.png", "b": folder / "b.jpg", "c": folder / "sub" / "c.png"}.items():
        want = onnxact.get_activations(m, {"image": str(photo), "scale": np.ones(1, np.float32)})
        got = load_activations(reports[stem])
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{stem} {k}")
