"""`onnxact inspect` in-process (exit code, stdout, stderr, files) and once as a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxact.activations import load_activations
from onnxact.cli import main


def run_cli(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def gap_model(tmp_path_factory):
    from PIL import Image

    from tests.tiny import conv_net

    d = tmp_path_factory.mktemp("gap")
    onnx.save(conv_net(channels=(4, 8), size=32), d / "gap.onnx")
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 50), (32, 32)]):
        Image.fromarray((rng.random(size + (3,)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    (d / "labels.txt").write_text("ant\nbee\ncat\ndog\neel\n")
    return d


def test_demo_default_writes_everything(tmp_path, capsys):
    out = tmp_path / "rep"
    rc, stdout, stderr = run_cli(capsys, "inspect", "-o", str(out))
    assert rc == 0, stderr
    assert stderr == ""  # no progress bar when stderr is not a terminal
    for name in ("index.html", "activations.npz", "manifest.json", "cam.png", "input.png"):
        assert (out / name).is_file(), name
    acts = load_activations(out)
    grids = sorted((out / "grids").glob("*.png"))
    assert len(grids) == len(acts) >= 10 and grids[0].name.startswith("000_")
    assert len(list((out / "heatmaps").glob("*.png"))) >= 5
    assert "layer" in stdout.splitlines()[0] and "report:" in stdout
    assert "%" in stdout  # top predictions with class names from the model metadata
    page = (out / "index.html").read_text()
    assert "Top 5 predictions" in page and "EigenCAM" in page
    names = json.loads((out / "manifest.json").read_text())["class_names"]
    assert names and names[0] in page


def test_gap_model_labels_layers_scale_and_exact_cam(gap_model, tmp_path, capsys):
    out = tmp_path / "r"
    rc, stdout, stderr = run_cli(capsys, "inspect", str(gap_model / "gap.onnx"), str(gap_model / "img1.png"),
                                 "-o", str(out), "--labels", str(gap_model / "labels.txt"), "--scale", "layer",
                                 "--heatmaps", "filters", "--op-types", "Conv", "--top", "3", "--cmap", "magma")
    assert rc == 0, stderr
    page = (out / "index.html").read_text()
    assert "Top 3 predictions" in page and "CAM |" in page
    assert any(n in stdout for n in ("ant", "bee", "cat", "dog", "eel"))
    acts = load_activations(out)
    assert all(info.op_type == "Conv" for info in acts.layers.values())
    assert len(list((out / "grids").glob("*.png"))) == len(acts) >= 2


def test_several_images_get_a_folder_each(gap_model, tmp_path, capsys):
    out = tmp_path / "multi"
    rc, _, stderr = run_cli(capsys, "inspect", str(gap_model / "gap.onnx"), str(gap_model / "img0.png"),
                            str(gap_model / "img1.png"), "-o", str(out), "--size", "32", "32", "--heatmaps", "none")
    assert rc == 0, stderr
    subs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subs == ["0_img0", "1_img1"]
    assert (out / "0_img0" / "index.html").is_file() and "0_img0/index.html" in (out / "index.html").read_text()


@pytest.mark.parametrize("case", ["unknown_layer", "missing_image", "bad_image", "unwritable", "no_image",
                                  "bad_labels", "bad_alpha", "bad_cmap"])
def test_bad_input_exit_2_one_line(case, gap_model, tmp_path, capsys):
    model, img = str(gap_model / "gap.onnx"), str(gap_model / "img1.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    argv = {
        "unknown_layer": [model, img, "--layers", "nope"],
        "missing_image": [model, str(tmp_path / "missing.png")],
        "bad_image": [model, str(bad)],
        "unwritable": [model, img, "-o", str(blocker / "sub")],
        "no_image": [model],
        "bad_labels": [model, img, "--labels", str(tmp_path / "missing.txt")],
        "bad_alpha": [model, img, "--alpha", "3"],
        "bad_cmap": [model, img, "--cmap", "nosuchmap"],
    }[case]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "o")]
    rc, stdout, stderr = run_cli(capsys, "inspect", *argv)
    assert rc == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxact: error:"), stderr
    assert "Traceback" not in stderr


def test_installed_command_smoke(tmp_path):
    # the script installed beside this interpreter (a venv's bin/), else the one on PATH
    beside = Path(sys.executable).with_name("onnxact")
    exe = str(beside) if beside.is_file() else shutil.which("onnxact")
    cmd = [exe] if exe else [sys.executable, "-c", "from onnxact.cli import entry; entry()"]
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(cmd + ["inspect", "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
                       cwd=root)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "index.html").is_file() and "report:" in r.stdout
    r = subprocess.run(cmd + ["inspect", str(tmp_path / "missing.onnx"), "x.png"], capture_output=True, text=True,
                       timeout=60, cwd=root)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
