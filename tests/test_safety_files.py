"""Issue 21, files: never lose or overwrite a user's file, external data only beside the model,
saved activations as untrusted input, SIGTERM cleans up like Ctrl-C.

Every case runs the real CLI (in-process, or as a subprocess where a signal or a file-size limit
is needed) on the bundled demo CNN or on models exported here, with real onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxact
from onnxact.cli import main
from onnxact.errors import InputError, ModelError, OutputError
from tests import tiny

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from onnxact.cli import entry; entry()"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _user_error(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("onnxact: error:"), (code, err)
    for w in words:
        assert w.lower() in err.lower(), err
    return err


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def demo(tmp_path):
    """Copies of the demo model and image in tmp_path (the user's files of these tests)."""
    model, image = onnxact.demo_paths()
    shutil.copy(model, tmp_path / "demo.onnx")
    shutil.copy(image, tmp_path / "photo.png")
    return tmp_path / "demo.onnx", tmp_path / "photo.png"


# ------------------------------------------------------------------------------ outputs over inputs
@pytest.mark.parametrize("force", [False, True])
def test_inspect_refuses_a_folder_that_holds_its_image(demo, capsys, force):
    model, image = demo
    photos = image.parent / "photos"
    photos.mkdir()
    cam = photos / "cam.png"  # the name inspect gives its CAM overlay
    shutil.copy(image, cam)
    before = _sha(cam)
    _user_error(capsys, ["inspect", str(model), str(cam), "-o", str(photos)] + (["--force"] if force else []),
                "holds the image", "choose another output folder")
    assert _sha(cam) == before and _tree(photos) == {"cam.png"}


def test_check_refuses_reports_over_its_inputs(demo, capsys):
    model, image = demo
    sha_model, sha_image = _sha(model), _sha(image)
    _user_error(capsys, ["check", str(model), str(image), "--json", str(model)], "--json", "is the model")
    _user_error(capsys, ["check", str(model), str(image.parent), "--junit", str(image)], "--junit", "is the image")
    (model.parent / "hard.json").hardlink_to(model)  # the same file under another name
    _user_error(capsys, ["check", str(model), str(image), "--json", str(model.parent / "hard.json")], "is the model")
    _user_error(capsys, ["check", str(model), str(image), "--json", str(model.parent / "r.json"),
                         "--junit", str(model.parent / "r.json")], "same file")
    assert (_sha(model), _sha(image)) == (sha_model, sha_image)
    assert not (model.parent / "r.json").exists()


def test_convert_refuses_to_write_over_its_source(tmp_path, capsys):
    src = tmp_path / "nets.py"
    src.write_text("def make():\n    raise SystemExit('never called')\n")
    before = _sha(src)
    _user_error(capsys, ["convert", f"{src}:make", "-o", str(src), "--exporter", "legacy"], "is the source model")
    assert _sha(src) == before


# ------------------------------------------------------------------------------ links are never followed
def test_check_refuses_a_symlinked_report_before_the_scan(demo, capsys):
    model, image = demo
    victim = model.parent / "victim.txt"
    victim.write_text("keep me")
    (model.parent / "r.json").symlink_to(victim)
    _user_error(capsys, ["check", str(model), str(image), "--json", str(model.parent / "r.json")], "symbolic link")
    assert victim.read_text() == "keep me"
    with pytest.raises(OutputError, match="symbolic link"):
        onnxact.render.save_png(np.zeros((4, 4), np.uint8), model.parent / "r.json")
    assert victim.read_text() == "keep me"


def test_planted_links_in_a_report_folder_are_refused(demo, capsys):
    model, image = demo
    out = model.parent / "report"
    assert main(["inspect", str(model), str(image), "-o", str(out)]) == 0
    capsys.readouterr()
    victim = model.parent / "victim.txt"
    victim.write_text("keep me")
    (out / "index.html").unlink()
    (out / "index.html").symlink_to(Path("..") / "victim.txt")  # the audit's attack, verbatim
    _user_error(capsys, ["inspect", str(model), str(image), "-o", str(out)], "symbolic link")
    assert victim.read_text() == "keep me" and (out / "index.html").is_symlink()
    # a folder of the report replaced by a link to the user's folder
    (out / "index.html").unlink()
    elsewhere = model.parent / "mine"
    shutil.move(out / "grids", elsewhere)
    (out / "grids").symlink_to(elsewhere)
    mine = {p.name: _sha(p) for p in elsewhere.iterdir()}
    _user_error(capsys, ["inspect", str(model), str(image), "-o", str(out)], "symbolic link")
    assert {p.name: _sha(p) for p in elsewhere.iterdir()} == mine
    assert not [p for p in out.iterdir() if p.name.startswith(".onnxact-partial-")]


# ------------------------------------------------------------------------------ the output folder policy
def test_a_folder_onnxact_did_not_make_needs_force(demo, capsys):
    model, image = demo
    out = model.parent / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "index.html").write_text("my page")
    _user_error(capsys, ["inspect", str(model), str(image), "-o", str(out)], "did not write", "--force")
    assert _tree(out) == {"notes.txt", "index.html"} and (out / "index.html").read_text() == "my page"
    assert main(["inspect", str(model), str(image), "-o", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "my notes"
    assert "<!DOCTYPE html>" in (out / "index.html").read_text()
    assert onnxact.load_activations(out).keys() == onnxact.get_activations(model, image).keys()


def test_an_earlier_report_is_replaced_as_a_whole(demo, capsys):
    model, image = demo
    out = model.parent / "report"
    assert main(["inspect", str(model), str(image), "-o", str(out)]) == 0
    first = _tree(out)
    assert "grids/009_pool5.png" in first and "onnxact-report.json" in first
    (out / "notes.txt").write_text("mine")  # a file the user added to the report
    assert main(["inspect", str(model), str(image), "-o", str(out), "--layers", "conv1"]) == 0
    capsys.readouterr()
    listed = json.loads((out / "onnxact-report.json").read_text())["files"]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == set(listed) | {"notes.txt"}  # nothing of the first run is left, the user's file is
    assert {f for f in files if f.startswith("grids/")} == {"grids/000_conv1.png"}
    assert list(onnxact.load_activations(out)) == ["conv1"]
    assert sorted(p.name for p in model.parent.iterdir()) == ["demo.onnx", "photo.png", "report"]


# ------------------------------------------------------------------------------ failures leave nothing half-written
def _limited(code: str, limit: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose files may not grow past ``limit`` bytes (EFBIG: a full disk)."""
    pre = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
           f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n")
    return subprocess.run([sys.executable, "-c", pre + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_full_disk_leaves_no_truncated_file(demo, tmp_path):
    model, image = demo
    out = tmp_path / "report"
    r = _limited(f"from onnxact.cli import main\nsys.exit(main([r'inspect', r'{model}', r'{image}', '-o', r'{out}']))",
                 200_000, tmp_path)  # the grids fit, activations.npz (1.9 MB) does not
    assert r.returncode == 2 and "File too large" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.onnx", "photo.png"]  # no folder, no staging
    # a library save over an earlier one: the earlier file stays whole
    keep = tmp_path / "keep"
    small = {"a": np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)}
    onnxact.save_activations(small, keep)
    before = {p.name: _sha(p) for p in keep.iterdir()}
    # random values: the npz deflates what compresses, and a map of ones would fit in a few kB
    r = _limited(f"import numpy as np, onnxact\nonnxact.save_activations({{'a': np.random.default_rng(0).random((1, 64, 64, 64))}}, r'{keep}')",
                 200_000, tmp_path)
    assert r.returncode == 1 and "OutputError" in r.stderr and "File too large" in r.stderr
    assert {p.name: _sha(p) for p in keep.iterdir()} == before
    np.testing.assert_array_equal(onnxact.load_activations(keep)["a"], small["a"])


def _stop_when(cmd: list[str], ready, env: dict[str, str]) -> tuple[int, str]:
    """Start ``cmd``, send SIGTERM as soon as ``ready()`` holds, return (exit code, stderr)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None and not ready():
            try:
                p.wait(0.01)
            except subprocess.TimeoutExpired:
                pass
        assert p.poll() is None, "the run ended before it could be stopped: give it more work"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


@pytest.fixture
def many_images(demo):
    model, image = demo
    folder = image.parent / "imgs"
    folder.mkdir()
    for i in range(24):
        shutil.copy(image, folder / f"s{i:02d}.png")
    return model, sorted(folder.iterdir())


def test_sigterm_during_inspect_leaves_no_half_written_report(many_images, tmp_path):
    model, images = many_images
    out = tmp_path / "report"

    def some_picture_written() -> bool:
        return any(p.suffix == ".png" and "imgs" not in p.parts for p in tmp_path.rglob("*.png")
                   if p.name != "photo.png")

    code, err = _stop_when(CLI + ["inspect", str(model), *map(str, images), "-o", str(out)],
                           some_picture_written, dict(os.environ))
    assert code == 143 and err.strip().splitlines()[-1] == "onnxact: stopped (SIGTERM)", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.onnx", "imgs", "photo.png"]


def test_sigterm_during_a_bounded_capture_removes_its_spill_folder(many_images, tmp_path):
    model, images = many_images
    spill = tmp_path / "spill"
    spill.mkdir()

    def spilling() -> bool:
        return any(d.name.startswith("onnxact-capture-") and any(d.iterdir()) for d in spill.iterdir())

    code, err = _stop_when(CLI + ["inspect", str(model), *map(str, images), "-o", str(tmp_path / "report"),
                                  "--max-memory", "1KB", "--heatmaps", "none"],
                           spilling, {**os.environ, "ONNXACT_TMPDIR": str(spill)})
    assert code == 143, err
    assert list(spill.iterdir()) == [] and not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------ external data
@pytest.fixture(scope="module")
def resnet_external(tmp_path_factory):
    """A torch-exported ResNet (GAP -> Gemm head) whose weights live in ``model/W.bin``."""
    import torch
    from onnxact.converters import from_torch

    from tests.models.torch_nets import tiny_resnet

    d = tmp_path_factory.mktemp("ext")
    module, x = tiny_resnet()
    proto = from_torch(module, x, exporter="legacy")
    (d / "model").mkdir()
    onnx.save(proto, str(d / "model" / "r.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="W.bin", size_threshold=0)
    with torch.no_grad():
        feats = module.layer1(module.pool(module.stem(x)))
    return d / "model" / "r.onnx", module, x.numpy(), feats.numpy()[0]


def test_cam_reads_external_weights_beside_the_model_from_any_folder(resnet_external, tmp_path, monkeypatch,
                                                                        capsys):
    path, module, x, feats = resnet_external
    decoy = tmp_path / "W.bin"  # another model's weights in the working directory
    decoy.write_bytes(np.random.default_rng(0).random((path.parent / "W.bin").stat().st_size // 4,
                                                       dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    res = onnxact.class_activation_map(path, x)
    fc = module.fc.weight.detach().numpy()
    assert res.method == "cam"
    np.testing.assert_allclose(res.map, np.tensordot(fc[res.class_index], feats, axes=1), rtol=1e-4, atol=1e-4)
    logits = module(__import__("torch").from_numpy(x)).detach().numpy()[0]
    assert res.class_index == int(np.argmax(logits))
    _, image = onnxact.demo_paths()
    assert main(["inspect", str(path), str(image), "-o", str(tmp_path / "o"), "--cam", "cam"]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "o" / "cam.png").is_file()


def test_normalisation_constants_in_external_data_are_read_beside_the_model(tmp_path, monkeypatch, capsys):
    from onnx import TensorProto, helper, numpy_helper

    from onnxact.normalization import graph_normalization

    w = np.random.default_rng(0).normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Div", ["x", "k"], ["xs"]), helper.make_node("Conv", ["xs", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "div255",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.array(255.0, np.float32), "k"), numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    (tmp_path / "m").mkdir()
    onnx.save(m, str(tmp_path / "m" / "n.onnx"), save_as_external_data=True, location="W.bin", size_threshold=0)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "W.bin").write_bytes(np.full(200, 2.0, np.float32).tobytes())  # a decoy: "x / 2"
    monkeypatch.chdir(tmp_path / "cwd")
    found = graph_normalization(onnxact.load(tmp_path / "m" / "n.onnx"))
    assert found is not None and found.expects == "0-255" and found.scale == pytest.approx((1 / 255,))
    _, image = onnxact.demo_paths()
    assert main(["inspect", str(tmp_path / "m" / "n.onnx"), str(image), "-o", str(tmp_path / "o")]) == 0, \
        capsys.readouterr().err


def _relocate(path: Path, dest: Path, location: str) -> Path:
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    dest.write_bytes(proto.SerializeToString())
    return dest


@pytest.mark.parametrize("case", ["absolute", "dotdot", "link"])
def test_external_data_outside_the_model_folder_is_refused(resnet_external, tmp_path, capsys, case):
    path = resnet_external[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(path.parent / "W.bin", outside / "W.bin")  # readable, valid weights: only the place is wrong
    folder = tmp_path / "m"
    folder.mkdir()
    location = {"absolute": str(outside / "W.bin"), "dotdot": "../outside/W.bin", "link": "W.bin"}[case]
    if case == "link":
        (folder / "W.bin").symlink_to(outside / "W.bin")
    model = _relocate(path, folder / "r.onnx", location)
    why = {"absolute": "absolute path", "dotdot": "climbs out", "link": "through a link"}[case]
    with pytest.raises(ModelError, match=f"{why}.*only from files inside the model's folder"):
        onnxact.load(model)
    _, image = onnxact.demo_paths()
    _user_error(capsys, ["inspect", str(model), str(image), "-o", str(tmp_path / "o")], why)
    from onnxact.cam import find_cam_head

    with pytest.raises(ModelError, match=why):  # the CAM reader, handed the proto directly
        find_cam_head(onnx.load(str(model), load_external_data=False), folder)


# ------------------------------------------------------------------------------ saved activations
@pytest.fixture
def saved(tmp_path):
    acts = onnxact.get_activations(tiny.conv_net(), np.random.default_rng(0).random((1, 3, 16, 16), np.float32))
    onnxact.save_activations(acts, tmp_path / "s")
    return tmp_path / "s"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("change, words", [
    (lambda m: [m], "JSON list"),
    (lambda m: {k: v for k, v in m.items() if k != "layers"}, '"layers"'),
    (lambda m: {**m, "layers": [{"array": "a00000"}]}, '"key"'),
    (lambda m: {**m, "layers": [{**m["layers"][0], "info": {"name": 5, "tensor": "t", "op_type": "Conv",
                                                              "layout": "NCHW"}}]}, "not text"),
    (lambda m: {**m, "layers": [{**m["layers"][0], "info": {"bogus": 1}}]}, "lacks fields"),
    (lambda m: {**m, "npz": 5}, '"npz" must be'),
    (lambda m: {**m, "npz": "../../etc/passwd"}, '"npz" must be'),
    (lambda m: {**m, "class_names": "cat"}, "class_names"),
])
def test_hostile_manifests_are_input_errors(saved, change, words):
    (saved / "manifest.json").write_text(json.dumps(change(_manifest(saved))))
    with pytest.raises(InputError, match=words):
        onnxact.load_activations(saved)


def test_deep_json_and_an_npz_outside_the_folder(saved, tmp_path):
    (saved / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="manifest.json"):
        onnxact.load_activations(saved)
    other = tmp_path / "other.npz"
    np.savez(other, a00000=np.ones(3))
    onnxact.save_activations({"a": np.ones(3)}, tmp_path / "t")
    (tmp_path / "t" / "activations.npz").unlink()
    (tmp_path / "t" / "activations.npz").symlink_to(other)  # beside by name, elsewhere in fact
    with pytest.raises(InputError, match="outside its folder"):
        onnxact.load_activations(tmp_path / "t")


def _npy(shape: tuple[int, ...], payload: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_arrays_over_the_bound_are_refused_before_they_are_read(saved):
    m = _manifest(saved)
    with zipfile.ZipFile(saved / "activations.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for e in m["layers"]:  # 1 TiB declared in a few bytes on disk
            z.writestr(f"{e['array']}.npy", _npy((2**38,), b"\0" * 64))
    with pytest.raises(InputError, match=r"over the bound of 4 GiB.*max_bytes"):
        onnxact.load_activations(saved)
    onnxact.save_activations({"a": np.ones((256, 1024), np.float32)}, saved)  # 1 MiB of real arrays
    with pytest.raises(InputError, match="over the bound"):
        onnxact.load_activations(saved, max_bytes=2**20 - 1)
    assert onnxact.load_activations(saved, max_bytes=2**20)["a"].shape == (256, 1024)
