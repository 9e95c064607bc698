"""Keract side of the benchmark, run in a subprocess with ``TF_USE_LEGACY_KERAS=1`` (Keract 4.5
works only under tf-keras) so Keras 3 in the parent process is untouched. Prints one JSON line.

    python -m bench.keract_run capture {seed|tenblock} BATCHES(1,8) REPEATS
    python -m bench.keract_run render ACTS.npz IMAGE.npy OUTDIR [--no-heatmaps]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _model(key: str):
    import tf_keras as k

    from .models import TENBLOCK_POOL_AFTER, TENBLOCK_WIDTHS, seed_keras

    if key == "seed":
        return seed_keras(256, keras_module=k), (256, 256, 3)
    k.utils.set_random_seed(0)
    layers = [k.Input((224, 224, 3))]
    for i, c in enumerate(TENBLOCK_WIDTHS):
        layers += [k.layers.Conv2D(c, 3, padding="same"), k.layers.BatchNormalization(), k.layers.ReLU()]
        if i in TENBLOCK_POOL_AFTER:
            layers.append(k.layers.MaxPooling2D(2))
    layers += [k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)]
    return k.Sequential(layers, name="tenblock"), (224, 224, 3)


def capture(key: str, batches: str, repeats: int) -> dict:
    """Median times per batch size (``batches``: "1,8"): {batch: {predict, get_activations}}."""
    import keract
    import numpy as np

    from .common import median_time

    model, shape = _model(key)
    out = {}
    for b in (int(v) for v in batches.split(",")):
        x = np.random.default_rng(0).random((b, *shape), dtype=np.float32)
        out[str(b)] = {
            "predict": median_time(lambda x=x: model(x, training=False), repeats),
            "get_activations": median_time(lambda x=x: keract.get_activations(model, x), repeats),
        }
    return out


def render(npz: str, image: str, outdir: str, heatmaps: bool = True) -> dict:
    import keract
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    acts = dict(np.load(npz))
    img = np.load(image)
    with tempfile.TemporaryDirectory(dir=outdir) as d:
        t0 = time.perf_counter()
        keract.display_activations(acts, save=True, directory=d)
        t1 = time.perf_counter()
        if heatmaps:
            keract.display_heatmaps(acts, img, save=True, directory=d)
        t2 = time.perf_counter()
    return {"display_activations": t1 - t0, "display_heatmaps": t2 - t1 if heatmaps else None}


def main(argv: list[str]) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # Keract prints shapes; keep stdout for the JSON
        if argv[0] == "capture":
            out = capture(argv[1], argv[2], int(argv[3]))
        else:
            out = render(argv[1], argv[2], argv[3], heatmaps="--no-heatmaps" not in argv)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
