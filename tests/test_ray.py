import os
import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from onnxact.stats import find_dead_filters  # noqa: E402

MODEL = "models/demo_cnn.onnx"
KW = dict(batch_size=8, show_progress=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "kill_once"
    os.environ["ONNXACT_RAY_KILL_ONCE"] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False)
    yield marker
    ray.shutdown()
    os.environ.pop("ONNXACT_RAY_KILL_ONCE", None)


def _same(a, b):
    assert a.dead == b.dead and a.dormant == b.dormant and a.constant == b.constant
    assert a.images == b.images
    for k, la in a.stats.layers.items():
        lb = b.stats.layers[k]
        for f in ("max", "sum", "min"):
            np.testing.assert_allclose(getattr(la, f), getattr(lb, f), rtol=1e-12, atol=0, equal_nan=True)


def _x():
    return np.random.default_rng(0).random((40, 128, 128, 3)).astype(np.float32)


def test_ray_matches_local(cluster):
    loc = find_dead_filters(MODEL, _x(), **KW)
    rem = find_dead_filters(MODEL, _x(), engine="ray", workers=2, **KW)
    _same(rem, loc)
    assert rem.images == 40


def test_ray_counts_unreadable_images(cluster, tmp_path):
    for i in range(5):
        shutil.copy("models/sample.png", tmp_path / f"ok{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    loc = find_dead_filters(MODEL, str(tmp_path), **KW)
    rem = find_dead_filters(MODEL, str(tmp_path), engine="ray", workers=2, **KW)
    _same(rem, loc)
    assert len(rem.failed) == len(loc.failed) == 1


def test_ray_worker_death_retried_without_double_count(cluster):
    cluster.write_text("x")
    rem = find_dead_filters(MODEL, _x(), engine="ray", workers=2, **KW)
    assert not cluster.exists()  # an actor did die once
    _same(rem, find_dead_filters(MODEL, _x(), **KW))
    assert rem.images == 40
