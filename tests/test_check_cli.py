"""``onnxact check``: exit codes, reports, baselines and CI annotations, run in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from test_stats import KILLED0, KILLED1, _write_images, inputs, killed_net

from onnxact.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    onnx.save(killed_net(), d / "killed.onnx")
    np.save(d / "x.npy", inputs(16))
    return d


def test_dead_filters_fail_with_exit_1(files, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    rc = main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--json", str(files / "r.json"),
               "--junit", str(files / "r.xml")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "FAILED: 4 dead filters" in out and "::error" not in out
    assert err == ""  # no progress bar when stderr is not a terminal
    d = json.loads((files / "r.json").read_text())
    assert d["images"] == 16 and len(d["dead"]) == len(KILLED0) + 2 * len(KILLED1)
    assert set(d) >= {"model", "images", "layers", "dead", "dormant", "constant"}
    root = ET.parse(files / "r.xml").getroot()
    assert root.get("tests") == "4" and root.get("failures") == "3"


def test_clean_when_only_constant_is_not_asked(files, capsys):
    rc = main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--fail-on", "constant"])
    assert rc == 1 and "FAILED: 1 constant" in capsys.readouterr().out
    rc = main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--fail-on", "dormant"])
    assert rc == 0 and "OK" in capsys.readouterr().out


def test_baseline_accepts_known_findings(files, capsys):
    base = files / "baseline.json"
    assert main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--write-baseline", str(base)]) == 0
    assert "baseline with 5 findings" in capsys.readouterr().out
    rc = main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--allow", str(base),
               "--fail-on", "dead,constant"])
    assert rc == 0, capsys.readouterr()
    # a baseline missing one dead channel: only that one fails
    d = json.loads(base.read_text())
    d["dead"] = d["dead"][1:]
    base.write_text(json.dumps(d))
    assert main(["check", str(files / "killed.onnx"), str(files / "x.npy"), "--allow", str(base)]) == 1
    assert "FAILED: 1 dead" in capsys.readouterr().out


def test_github_actions_annotations(files, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["check", str(files / "killed.onnx"), str(files / "x.npy")]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("::error file=")]
    assert len(lines) == 4 and "channel" in lines[0]


def test_unreadable_images_and_strict(files, tmp_path, capsys):
    _write_images(tmp_path, 3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xffjunk")
    rc = main(["check", str(files / "killed.onnx"), str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1 and "1 unreadable images skipped" in err and "3 images" in out
    rc = main(["check", str(files / "killed.onnx"), str(tmp_path), "--strict"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "bad.jpg" in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["{d}/killed.onnx", "{d}/empty"], "no image files found"),
    (["{d}/killed.onnx", "{d}/nothing*.png"], "matches no files"),
    (["{d}/missing.onnx", "{d}/x.npy"], "model file not found"),
    (["{d}/killed.onnx", "{d}/x.npy", "--fail-on", "sleepy"], "--fail-on"),
    (["{d}/killed.onnx", "{d}/x.npy", "--allow", "{d}/nope.json"], "baseline file not found"),
    (["{d}/killed.onnx", "{d}/small.npy"], "expects"),
    (["{d}/killed.onnx", "{d}/x.npy", "--workers", "2"], "--engine ray"),
])
def test_bad_input_exit_2(files, capsys, args, message):
    (files / "empty").mkdir(exist_ok=True)
    np.save(files / "small.npy", np.zeros((2, 3, 8, 8), np.float32))
    rc = main(["check", *[a.format(d=files) for a in args]])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


def test_command_smoke_in_a_subprocess(files):
    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.run([sys.executable, "-c", code, "check", str(files / "killed.onnx"), str(files / "x.npy")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "dead" in p.stdout and p.stderr == ""
