"""The size of what ``inspect`` writes: arrays deflated where it pays, ``--no-arrays``, the size printed,
and one arrays file for several images."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest

import onnxact
from onnxact.activations import _write_npz, load_activations
from onnxact.cli import main

from .subjects import photo


def _files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def _wrote(stdout: str) -> tuple[int, str]:
    m = re.search(r"^wrote (\d+) files, ([\d.]+ (?:bytes|kB|MB|GB)) to (.+)$", stdout, re.M)
    assert m, stdout
    return int(m.group(1)), m.group(2)


def _human(n: int) -> str:
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} bytes"


def test_npz_deflates_what_compresses_and_reads_back_exactly():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=(1, 16, 64, 64)), 0).astype(np.float32)  # half zeros
    noise = rng.normal(size=(1, 16, 64, 64)).astype(np.float32)  # float noise: incompressible
    arrays = {"relu": relu, "noise": noise, "scale": np.float32(0.5), "half": noise.astype(np.float16),
              "flags": relu > 0, "ids": np.arange(7, dtype=np.int64), "empty": np.zeros((1, 0, 3), np.float32)}
    buf = io.BytesIO()
    _write_npz(buf, arrays)
    buf.seek(0)
    with zipfile.ZipFile(buf) as z:
        kinds = {i.filename: i.compress_type for i in z.infolist()}
    assert kinds["relu.npy"] == zipfile.ZIP_DEFLATED and kinds["noise.npy"] == zipfile.ZIP_STORED
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        for k, v in arrays.items():
            assert z[k].dtype == np.asarray(v).dtype and np.array_equal(z[k], v), k


def test_inspect_prints_what_it_wrote_and_compresses(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["inspect", "-o", str(out)]) == 0  # the demo model and image
    stdout = capsys.readouterr().out
    files, size = _wrote(stdout)
    written = _files(out)
    assert files == len(written) and size == _human(sum(p.stat().st_size for p in written))
    model, image = onnxact.demo_paths()
    acts = onnxact.get_activations(model, str(image))
    raw = sum(v.nbytes for v in acts.values())
    npz = (out / "activations.npz").stat().st_size
    assert npz < 0.6 * raw  # ReLU maps: about half zeros (measured 1.10 of 2.40 MB)
    saved = load_activations(out)
    assert list(saved) == list(acts) and all(np.array_equal(saved[k], acts[k]) for k in acts)
    assert json.loads((out / "manifest.json").read_text())["preprocessing"]["source"] == "metadata"


def test_no_arrays_writes_pictures_only(tmp_path, capsys):
    full, bare = tmp_path / "full", tmp_path / "bare"
    img = str(photo("astronaut.png"))
    assert main(["inspect", str(onnxact.demo_paths()[0]), img, "-o", str(full)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(onnxact.demo_paths()[0]), img, "-o", str(bare), "--no-arrays"]) == 0
    files, _ = _wrote(capsys.readouterr().out)
    names = {p.relative_to(bare).as_posix() for p in _files(bare)}
    assert "activations.npz" not in names and "manifest.json" not in names and "index.html" in names
    assert files == len(names)
    assert names | {"activations.npz", "manifest.json"} == {p.relative_to(full).as_posix() for p in _files(full)}
    assert sum(p.stat().st_size for p in _files(bare)) < sum(p.stat().st_size for p in _files(full))


def test_several_images_share_one_arrays_file(tmp_path, capsys):
    out = tmp_path / "multi"
    images = [str(photo("astronaut.png")), str(photo("coffee.png")), str(photo("chelsea.png"))]
    model = onnxact.demo_paths()[0]
    assert main(["inspect", str(model), *images, "-o", str(out), "--heatmaps", "none", "--cam", "none"]) == 0
    capsys.readouterr()
    npzs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    manifests = sorted(p.relative_to(out).as_posix() for p in out.rglob("manifest.json"))
    assert npzs == ["activations.npz"] and manifests == ["manifest.json"]  # the layer metadata once
    saved = load_activations(out)
    acts = onnxact.get_activations(model, images)
    for k in acts:
        assert saved[k].shape[0] == 3 and np.array_equal(saved[k], acts[k]), k  # sample i = image i
    subs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subs == ["0_astronaut", "1_coffee", "2_chelsea"]
    assert all((out / s / "index.html").is_file() and list((out / s / "grids").glob("*.png")) for s in subs)


@pytest.mark.parametrize("flag", [[], ["--no-arrays"]])
def test_quantized_scalars_in_the_arrays_file(tmp_path, capsys, flag):
    """0-d tensors (--all-tensors on a model with a scalar) are saved whole, not sliced per image."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.asarray(2.0, np.float32), "two")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("ReduceMax", ["r"], ["m"], keepdims=0), helper.make_node("Mul", ["m", "two"], ["s"])],
        "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])], [w, two])
    path = tmp_path / "scalar.onnx"
    import onnx

    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "r"
    imgs = [str(photo("astronaut.png")), str(photo("coffee.png"))]
    assert main(["inspect", str(path), *imgs, "-o", str(out), "--all-tensors", "--normalize", "0-1",
                 "--output-format", "full", *flag]) == 0
    capsys.readouterr()
    if not flag:
        saved = load_activations(out)
        assert saved["m"].shape == () and saved["r"].shape[0] == 2
