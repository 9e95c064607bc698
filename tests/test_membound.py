"""Memory-bounded capture (onnxact.membound): same arrays as the unbounded capture, bounded peak
memory (measured in subprocesses), temporary files cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import onnxact
from bench.models import tenblock_onnx
from onnxact.errors import InputError
from onnxact.membound import parse_bytes, plan_capture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net():
    return onnxact.load(tenblock_onnx(64))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).random((5, 3, 64, 64), dtype=np.float32)


def test_parse_bytes():
    assert parse_bytes("2GB") == 2_000_000_000
    assert parse_bytes("512MB") == 512_000_000
    assert parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert parse_bytes(1234) == 1234
    for bad in ("lots", "-1MB", 0, "2XB", True):
        with pytest.raises(InputError):
            parse_bytes(bad)


def test_within_bound_is_a_plain_capture(net, batch):
    acts = onnxact.get_activations(net, batch, max_memory="1GB")
    assert all(type(v) is np.ndarray for v in acts.values())


def test_sample_chunks_give_identical_arrays(net, batch, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXACT_TMPDIR", str(tmp_path))
    ref = onnxact.get_activations(net, batch)
    per_sample = sum(v[0].nbytes for v in ref.values())
    plan = plan_capture(net, {"x": batch}, [layer.tensor for layer in net.layers], 2 * per_sample)
    assert plan.mode == "samples" and plan.chunk == 2 and plan.passes == 1
    acts = onnxact.get_activations(net, batch, max_memory=2 * per_sample)
    assert list(acts) == list(ref)
    for k in ref:
        assert isinstance(acts[k], np.memmap)
        assert acts[k].shape == ref[k].shape and acts[k].dtype == ref[k].dtype
        np.testing.assert_array_equal(acts[k], ref[k])
    for k in ref.outputs:
        np.testing.assert_array_equal(acts.outputs[k], ref.outputs[k])
    # The files are unlinked once mapped and the folder removed: nothing is left on disk.
    assert list(tmp_path.iterdir()) == []
    del acts


def test_layer_groups_when_one_sample_is_over_the_bound(net, batch, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXACT_TMPDIR", str(tmp_path))
    ref = onnxact.get_activations(net, batch)
    per_sample = sum(v[0].nbytes for v in ref.values())
    bound = per_sample // 3
    plan = plan_capture(net, {"x": batch}, [layer.tensor for layer in net.layers], bound)
    assert plan.mode == "groups" and plan.passes >= 3
    acts = onnxact.get_activations(net, batch, max_memory=bound)
    assert list(acts) == list(ref)
    for k in ref:
        # Later passes promote fewer tensors, so onnxruntime fuses Conv+BN there: same values up to rounding.
        np.testing.assert_allclose(acts[k], ref[k], rtol=1e-4, atol=1e-5)
    assert list(tmp_path.iterdir()) == []


_RSS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxact
    from bench.models import tenblock_onnx
    mode, bound = sys.argv[1], sys.argv[2]
    m = onnxact.load(tenblock_onnx(224))
    x = np.random.default_rng(0).random((6, 3, 224, 224), dtype=np.float32)
    if mode == "plain":
        m.session(()).run(None, {"x": x})
    elif mode == "capture":
        acts = onnxact.get_activations(m, x)
    else:
        acts = onnxact.get_activations(m, x, max_memory=bound)
        assert all(isinstance(v, np.memmap) for v in acts.values())
        last = list(acts)[-1]
        assert float(acts[last][-1].sum()) == float(acts[last][-1].sum())
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork/exec.
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(int(hwm.split()[1]) * 1024)
""")


def _peak(mode: str, bound: str = "0") -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, mode, bound], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_stays_under_bound_plus_plain_peak():
    plain = _peak("plain")
    unbounded = _peak("capture")
    bounded = _peak("bounded", "32MB")
    captured = 6 * 31_700_000  # ~190 MB of conv/pool maps at 224x224
    assert unbounded > plain + captured * 0.8  # the unbounded capture holds every map
    assert bounded <= plain + 32_000_000 + 24_000_000, (plain, bounded, unbounded)
