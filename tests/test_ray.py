"""The Ray engine (issue 9) on a real local Ray (num_cpus=2), started once for the module.

The Ray engine must give the *identical* report (not a close one) to the local engine's: the same
batches are formed on the driver from path strings, decoded on the workers and merged in order.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import onnxact  # noqa: E402
from onnxact.errors import InputError  # noqa: E402
from onnxact.ray_engine import KILL_ONCE_ENV, _merge_in_order  # noqa: E402
from onnxact.stats import ChannelStats, LayerStats, find_dead_filters  # noqa: E402

MODEL = str(onnxact.demo_paths()[0])
KW = dict(batch_size=8, show_progress=False)
CLI = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """37 real PNGs of two sizes (the last batch is partial) and two files that are not images."""
    d = tmp_path_factory.mktemp("ray_images")
    rng = np.random.default_rng(0)
    for i in range(37):
        h, w = (128, 128) if i % 3 else (96, 160)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(d / f"img{i:03d}.png")
    (d / "img010b.png").write_bytes(b"not an image")
    (d / "sub").mkdir()
    (d / "sub" / "empty.png").write_bytes(b"")
    return d


def _same(a, b):
    """Exactly equal: the JSON report, the failures, and every accumulator bit for bit."""
    assert a.to_json() == b.to_json()
    assert a.failed == b.failed and a.images == b.images
    assert a.stats.to_json() == b.stats.to_json()
    for k, la in a.stats.layers.items():
        lb = b.stats.layers[k]
        for f in ("min", "max", "sum"):
            np.testing.assert_array_equal(getattr(la, f), getattr(lb, f))
        assert la.positions == lb.positions


def test_ray_matches_local_on_png_folder_and_counts_unreadable(cluster, folder):
    loc = find_dead_filters(MODEL, str(folder), **KW)
    rem = find_dead_filters(MODEL, str(folder), engine="ray", workers=2, **KW)
    _same(rem, loc)
    assert rem.images == 37
    assert [Path(p).name for p, _ in rem.failed] == ["img010b.png", "empty.png"]
    assert all("cannot decode" in why or "empty" in why for _, why in rem.failed), rem.failed


def test_ray_matches_local_on_arrays_mixed_with_files(cluster, folder, tmp_path):
    x = np.random.default_rng(1).random((21, 128, 128, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x[:11])
    src = [str(tmp_path / "x.npy"), str(folder / "img001.png"), str(folder / "img002.png"), x[11:]]
    # threshold: the extra statistics too; layers named out of graph order keep that order
    kw = dict(threshold=0.05, layer_names=["pool2", "conv1", "conv4"], **KW)
    loc = find_dead_filters(MODEL, src, **kw)
    rem = find_dead_filters(MODEL, src, engine="ray", workers=2, **kw)
    _same(rem, loc)
    assert list(rem.stats.layers) == ["pool2", "conv1", "conv4"]
    assert rem.images == 23
    for k, la in rem.stats.layers.items():
        np.testing.assert_array_equal(la.above, loc.stats.layers[k].above)
        np.testing.assert_array_equal(la.sumsq, loc.stats.layers[k].sumsq)


def test_ray_strict_fails_like_local(cluster, folder):
    with pytest.raises(InputError) as loc:
        find_dead_filters(MODEL, str(folder), strict=True, **KW)
    with pytest.raises(InputError) as rem:
        find_dead_filters(MODEL, str(folder), strict=True, engine="ray", workers=1, **KW)
    assert str(rem.value) == str(loc.value)


def test_ray_worker_death_is_retried_without_double_count(cluster, folder, tmp_path, monkeypatch):
    marker = tmp_path / "kill_once"
    marker.write_text("x")
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    rem = find_dead_filters(MODEL, str(folder), engine="ray", workers=2, **KW)
    assert not marker.exists()  # one actor did kill its own process, mid-scan
    monkeypatch.delenv(KILL_ONCE_ENV)
    _same(rem, find_dead_filters(MODEL, str(folder), **KW))
    assert rem.images == 37


def test_merge_ignores_a_retried_chunk_and_keeps_order():
    def part(v, n):
        return ChannelStats({"a": LayerStats(np.array([v]), np.array([v]), np.array([v * n]), None, None, n)},
                            {"a": None}, n)

    rows = [{"idx": k, "result": pickle.dumps(("ok", [(part(v, 1), [])]))} for k, v in enumerate([0.1, 0.2, 0.3])]
    out, failed = _merge_in_order([rows[2], rows[0], rows[2], rows[1], rows[0]], 3)
    assert out.images == 3 and failed == []
    assert out.layers["a"].sum[0] == (0.1 + 0.2) + 0.3  # chunk order, like the local engine


def test_cli_ray_json_equals_local(cluster, folder, tmp_path):
    p = subprocess.run([sys.executable, "-c", CLI, "check", MODEL, str(folder), "--engine", "ray", "--address",
                        cluster, "--workers", "2", "--batch-size", "8", "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr  # the demo model has dead filters on random images
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["onnxact: warning: 2 unreadable images skipped (first: "
                                             f"{find_dead_filters(MODEL, str(folder), **KW).failed[0][1]})"]
    local = find_dead_filters(MODEL, str(folder), **KW)
    assert (tmp_path / "r.json").read_text() == local.to_json() + "\n"
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 37


def test_cli_ray_address_nowhere_is_one_line_exit_2(folder):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = subprocess.run([sys.executable, "-c", CLI, "check", MODEL, str(folder), "--engine", "ray", "--address",
                        f"ray://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert lines[0].startswith("onnxact: error: cannot reach the Ray cluster at ray://127.0.0.1:")
    assert p.stdout == ""


def test_ray_matches_local_on_a_dynamic_model_with_mixed_photo_sizes(cluster, tmp_path):
    """PP-OCR det takes any height/width but only multiples of 32: both engines feed every image at
    the one size resolved for the scan, whatever the photo sizes (issue 20)."""
    from tests import subjects

    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate([(400, 600), (50, 40), (1, 1), (640, 427), (300, 451)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / f"p{i}.png")
    det = str(subjects.rapidocr_models()["det"])
    kw = dict(batch_size=2, show_progress=False, layer_names=None, op_types=["Conv"])
    loc = find_dead_filters(det, str(tmp_path), **kw)
    rem = find_dead_filters(det, str(tmp_path), engine="ray", workers=2, **kw)
    _same(rem, loc)
    assert rem.images == 5 and not rem.failed
