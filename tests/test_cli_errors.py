"""The CLI's error contract: a user error is one line on stderr with exit 2 and no traceback; an
internal error is exit 3 with a "please report" line; ``--traceback`` shows the traceback for
either. Input files are never modified, also when the command fails.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxact
from onnxact.cli import main
from tests.models.make_models import save


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "in"
    d.mkdir()
    model = save("conv_opset13", d)
    signal = save("signal_1d", d)
    img = d / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(img)
    text = d / "notes.png"
    text.write_text("not an image\n")
    junk = d / "junk.onnx"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return {"model": model, "signal": signal, "img": img, "text": text, "junk": junk, "dir": d}


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxact: error:") and "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), err
    return err


def test_missing_model(files, tmp_path, capsys) -> None:
    user_error(capsys, ["inspect", str(tmp_path / "nope.onnx"), str(files["img"]), "-o", str(tmp_path / "o")], "nope.onnx")


def test_junk_model(files, tmp_path, capsys) -> None:
    before = _hashes(files["dir"])
    user_error(capsys, ["inspect", str(files["junk"]), str(files["img"]), "-o", str(tmp_path / "o")], "not a valid onnx")
    assert _hashes(files["dir"]) == before


def test_text_image(files, tmp_path, capsys) -> None:
    before = _hashes(files["dir"])
    user_error(capsys, ["inspect", str(files["model"]), str(files["text"]), "-o", str(tmp_path / "o")], "cannot decode")
    assert _hashes(files["dir"]) == before


def test_inspect_says_input_is_not_an_image(files, tmp_path, capsys) -> None:
    user_error(capsys, ["inspect", str(files["signal"]), str(files["img"]), "-o", str(tmp_path / "o")], "not an image")


def test_unwritable_output_folder(files, tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    user_error(capsys, ["inspect", str(files["model"]), str(files["img"]), "-o", str(blocker / "out")])
    assert blocker.read_text() == "x"


def test_check_missing_model(files, tmp_path, capsys) -> None:
    user_error(capsys, ["check", str(tmp_path / "nope.onnx"), str(files["img"])], "nope.onnx")


@pytest.mark.parametrize("cmd", ["inspect", "check"])
def test_unavailable_provider_is_one_line(files, tmp_path, capsys, cmd) -> None:
    """``--provider cuda`` on a CPU-only onnxruntime: says so and how to get it, exit 2."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # a GPU build: ask for one that is absent
        provider, words = "NoSuchExecutionProvider", ("NoSuchExecutionProvider", "not available")
    else:
        provider, words = "cuda", ("cuda", "not available", "onnxruntime-gpu")
    argv = [cmd, str(files["model"]), str(files["img"]), "--provider", provider]
    if cmd == "inspect":
        argv += ["-o", str(tmp_path / "o")]
    user_error(capsys, argv, *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", ["inspect", "check"])
def test_zero_threads_is_one_line(files, tmp_path, capsys, cmd) -> None:
    argv = [cmd, str(files["model"]), str(files["img"]), "--threads", "0"]
    user_error(capsys, argv + (["-o", str(tmp_path / "o")] if cmd == "inspect" else []), "threads", "at least 1")


def test_usage_error_one_line(capsys) -> None:
    user_error(capsys, ["inspect", "--no-such-option"], "--no-such-option")
    user_error(capsys, ["no-such-command"])


def test_user_error_with_traceback_flag(files, tmp_path, capsys) -> None:
    code = main(["--traceback", "inspect", str(files["junk"]), str(files["img"]), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "ModelError" in err
    assert err.rstrip().splitlines()[-1].startswith("onnxact: error:")


def _boom(*args, **kwargs):
    raise RuntimeError("boom from a test")


def test_internal_error_exit_3_please_report(files, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(onnxact, "get_activations", _boom)
    code = main(["inspect", str(files["model"]), str(files["img"]), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "please report" in err and "RuntimeError: boom from a test" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_internal_error_with_traceback_flag(files, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(onnxact, "get_activations", _boom)
    code = main(["inspect", str(files["model"]), str(files["img"]), "-o", str(tmp_path / "o"), "--traceback"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" in err and "_boom" in err and "please report" in err


def test_ctrl_c_is_not_a_traceback(files, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxact, "get_activations", interrupted)
    code = main(["inspect", str(files["model"]), str(files["img"]), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and "interrupted" in err


def test_successful_inspect_leaves_inputs_unchanged(files, tmp_path, capsys) -> None:
    before = _hashes(files["dir"])
    code = main(["inspect", str(files["model"]), str(files["img"]), "-o", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    assert _hashes(files["dir"]) == before
    assert (tmp_path / "o" / "index.html").is_file()


def test_subprocess_user_error_has_no_traceback(files, tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from onnxact.cli import main; sys.exit(main())",
         "inspect", str(files["junk"]), str(files["img"]), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert [line for line in r.stderr.splitlines() if line.strip()][-1].startswith("onnxact: error:")
