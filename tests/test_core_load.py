"""onnxact.load: sources, external data, and bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnxact
from onnxact.errors import ModelError
from tests import tiny


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_path_bytes_and_proto_agree(tmp_path):
    proto = tiny.conv_net()
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    before = _sha(path)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    results = [onnxact.get_activations(src, x, output_format="full") for src in (path, str(path), path.read_bytes(), proto)]
    for r in results[1:]:
        for k in r:
            np.testing.assert_array_equal(r[k], results[0][k])
    assert _sha(path) == before  # the user's file is never modified
    m = onnxact.load(path)
    assert m.inputs[0].name == "input" and m.inputs[0].layout == "NCHW" and m.inputs[0].dtype == "float32"
    assert m.inputs[0].shape == (1, 3, 16, 16)
    assert onnxact.load(m) is m


def test_external_data_beside_the_model(tmp_path):
    proto = tiny.conv_net()
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=0)
    assert (tmp_path / "ext.bin").exists()
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    acts = onnxact.get_activations(path, x, output_format="full")
    ref = onnxact.get_activations(tiny.conv_net(), x, output_format="full")  # onnx.save mutated ``proto``
    for k in ref:
        np.testing.assert_array_equal(acts[k], ref[k])
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ModelError, match="external data file 'ext.bin'.*missing"):
        onnxact.load(path)


def test_external_data_without_a_path_is_refused(tmp_path):
    proto = tiny.conv_net()
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    with pytest.raises(ModelError, match="load it by path"):
        onnxact.load(path.read_bytes())


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 40, "PNG image"),
        (bytes(range(256)) * 8, "not a valid ONNX model"),
    ],
)
def test_bad_model_files(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        onnxact.load(path)


def test_directory_and_truncated(tmp_path):
    with pytest.raises(ModelError, match="directory"):
        onnxact.load(tmp_path)
    data = tiny.conv_net().SerializeToString()
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        onnxact.load(path)


def test_wrong_type():
    with pytest.raises(ModelError, match="cannot load a model from int"):
        onnxact.load(42)


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(onnxact.ProviderError, match="not available"):
        onnxact.load(tiny.conv_net(), providers="NoSuchExecutionProvider")


def test_provider_names_aliases_and_cpu_fallback():
    """Short names map to onnxruntime's; CPU is always appended as the fallback for unsupported ops."""
    from onnxact.model import resolve_providers

    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    m = onnxact.load(tiny.conv_net(), providers="cpu")
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    assert m.session(("relu0",)).get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_allclose(acts["relu0"], tiny.reference_tensor(tiny.conv_net(), "relu0", {"input": x}),
                               rtol=1e-5, atol=1e-6)


def test_threads_reach_onnxruntime_and_give_the_same_maps():
    """``threads=1`` is onnxruntime's intra-op setting on every session the Model builds (capture
    and statistics); the maps equal those of the default pool."""
    proto = tiny.conv_net()
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    one = onnxact.load(proto, threads=1)
    default = onnxact.load(proto)
    a, b = onnxact.get_activations(one, x), onnxact.get_activations(default, x)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    opts = one.session(tuple(lay.tensor for lay in one.layers)).get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert default.session(()).get_session_options().intra_op_num_threads == 0  # onnxruntime's choice
    from onnxact.stats import StatsRunner

    assert StatsRunner(one, list(one.layers), 0.0).session.get_session_options().intra_op_num_threads == 1
    assert onnxact.get_activations(proto, x, threads=2).keys() == a.keys()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_input_errors(bad):
    with pytest.raises(onnxact.InputError, match="threads must be a whole number"):
        onnxact.load(tiny.conv_net(), threads=bad)


def test_import_onnxact_stays_light():
    code = (
        "import sys, onnxact; heavy = [m for m in ('torch', 'tensorflow', 'keras', 'matplotlib', 'PIL', 'fastapi', 'ray')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
