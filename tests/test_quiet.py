"""Framework noise is hidden during onnxact's own calls; real warnings and errors still show.

The subprocess tests run the converters the way a user does (a fresh Python, onnxact imports
TensorFlow itself) and read the real stderr; each also runs once with ``ONNXACT_FRAMEWORK_LOGS=1``
to show the noise it hides is really printed on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from onnxact.converters.quiet import framework_quiet, is_noise

ROOT = Path(__file__).resolve().parents[1]

# Lines printed on this project's machines (TF 2.21, torch 2.13), verbatim.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796226949.303129   17954 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796226949.303760   17954 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796226952.189717   17954 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "W1202 15:57:37.894000 20645 site-packages/torch/onnx/_internal/exporter/_registration.py:107] torchvision is "
    "not installed. Skipping torchvision::nms",
    "2024-03-01 10:00:00.123456: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] Unable to register "
    "cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered",
]
REAL = [
    "E0000 00:00:1796226952.189717   17954 op_kernel.cc:1818] OP_REQUIRES failed at conv_ops.cc:1 : INVALID_ARGUMENT",
    "W0000 00:00:1796226952.189717   17954 loader.cc:10] SavedModel has a signature that uses a deprecated op",
    "onnxact: error: can't load the Keras model bad.keras: ValueError: File is not a zip file",
    "/x/model.py:7: TracerWarning: Converting a tensor to a Python boolean might cause the trace to be incorrect.",
    "F0000 00:00:1.0 1 check.cc:1] Check failed: failed call to cuInit is not the message here",
]


@pytest.mark.parametrize("line", NOISE)
def test_known_noise_lines_are_noise(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", REAL[:4])
def test_real_lines_are_kept(line):
    assert not is_noise(line)


def test_fd_filter_forwards_real_lines_in_order_and_restores_fd2(capfd):
    threads = threading.active_count()
    os.write(2, b"before\n")
    with framework_quiet():
        with framework_quiet():  # nested calls (from_keras -> load_keras_model) share one filter
            os.write(2, (NOISE[0] + "\nreal one\n" + NOISE[3] + "\n").encode())
        os.write(2, b"real two\n")
        os.write(2, b"no newline at the end")
    os.write(2, b"\nafter\n")
    assert capfd.readouterr().err == "before\nreal one\nreal two\nno newline at the end\nafter\n"
    assert threading.active_count() == threads


def test_fd_filter_is_removed_when_the_call_raises(capfd):
    with pytest.raises(ValueError), framework_quiet():
        os.write(2, (NOISE[3] + "\n").encode())
        raise ValueError("boom")
    os.write(2, (NOISE[3] + "\n").encode())  # outside a call: the user's own output is never filtered
    assert capfd.readouterr().err == NOISE[3] + "\n"


SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    from onnxact.converters import from_keras, from_torch

    from_keras(sys.argv[1], sys.argv[2])            # onnxact imports TensorFlow and runs Keras first

    import keras, torch

    class Loud(keras.layers.Layer):
        def call(self, x):
            warnings.warn("onnxact-test: a warning from the user's Keras layer")
            os.write(2, b"onnxact-test: a C-level line from the user's Keras layer\\n")
            return x

    inp = keras.Input((16, 16, 3))
    x = Loud(name="loud")(keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp))
    from_keras(keras.Model(inp, keras.layers.MaxPooling2D(name="p1")(x)))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            warnings.warn("onnxact-test: a warning from the user's torch forward")
            return torch.relu(self.c(x))

    from_torch(Net(), torch.rand(1, 3, 16, 16))
    print("converted")
''')


def _run(args: list[str], tmp_path: Path, logs: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ONNXACT_FRAMEWORK_LOGS")}
    if logs:
        env["ONNXACT_FRAMEWORK_LOGS"] = "1"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    keras = pytest.importorskip("keras")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    path = tmp_path_factory.mktemp("quiet") / "plain.keras"
    keras.Model(inp, keras.layers.MaxPooling2D(name="p1")(x)).save(path)
    return path


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if is_noise(line) or "np.object" in line or "LeafSpec" in line]


@pytest.mark.parametrize("logs", [False, True], ids=["quiet", "ONNXACT_FRAMEWORK_LOGS=1"])
def test_converting_keras_and_torch_prints_only_real_warnings(keras_file, tmp_path, logs):
    script = tmp_path / "convert.py"
    script.write_text(SCRIPT)
    r = _run([str(script), str(keras_file), str(tmp_path / "plain.onnx")], tmp_path, logs)
    assert r.returncode == 0 and r.stdout.strip() == "converted", r.stderr
    for real in ("a warning from the user's Keras layer", "a C-level line from the user's Keras layer",
                 "a warning from the user's torch forward"):
        assert f"onnxact-test: {real}" in r.stderr
    if logs:  # the frameworks really print it here: the quiet run below is not empty by luck
        assert _noise(r.stderr), r.stderr
    else:
        assert _noise(r.stderr) == [], r.stderr


def test_convert_cli_error_is_its_one_line(keras_file, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file")
    cli = ["-c", "from onnxact.cli import entry; entry()", "convert"]
    r = _run([*cli, str(bad), "-o", str(tmp_path / "bad.onnx")], tmp_path, logs=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("onnxact: error: "), r.stderr
    r = _run([*cli, str(keras_file), "-o", str(tmp_path / "ok.onnx")], tmp_path, logs=False)
    assert r.returncode == 0 and r.stderr == "" and "wrote" in r.stdout, r.stderr
