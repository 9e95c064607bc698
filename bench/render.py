"""Rendering speed on the same activations: onnxact's display_activations / display_heatmaps vs
Keract's (in a tf-keras subprocess, fed the very same arrays in Keras' channels-last layout)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import CACHE, batch_of, block_medians, blocks, round_ratio, run_json
from .models import seed_onnx


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(quick: bool, keract: bool = True) -> dict[str, Any]:
    import onnxact

    try:
        from onnxact.render import display_activations, display_heatmaps
    except ImportError as e:
        return {"error": f"onnxact.render unavailable: {e}"}
    model = onnxact.load(seed_onnx(CACHE / "seed_cnn.onnx"))
    x = batch_of((256, 256, 3), 1)
    acts = onnxact.get_activations(model, x)
    out: dict[str, Any] = {"layers": len(acts), "model": "seed CNN, batch 1"}
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as d:
        display_activations(acts, save=True, directory=d)  # warm-up: fonts, colormap tables
        out["onnxact_activations"] = float(np.median([_timed(lambda: display_activations(acts, save=True, directory=d))
                                                      for _ in range(repeats)]))
        out["onnxact_heatmaps"] = float(np.median([_timed(lambda: display_heatmaps(acts, x[0], save=True, directory=d))
                                                   for _ in range(repeats)]))
        out["pngs"] = len(list(Path(d).glob("*.png")))
        if keract:
            src = onnxact.get_activations(model, x, layout="source")  # NHWC, as Keras gives them
            np.savez(Path(d) / "acts.npz", **{k: np.asarray(v) for k, v in src.items()})
            np.save(Path(d) / "image.npy", x[0])
            args = ["-m", "bench.keract_run", "render", str(Path(d) / "acts.npz"), str(Path(d) / "image.npy"), d]
            r = run_json(args + (["--no-heatmaps"] if quick else []),
                         env={"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
            out["keract_activations"] = r.get("display_activations")
            out["keract_heatmaps"] = r.get("display_heatmaps")
            out["keract_error"] = r.get("error")
    return out


def measure_inspect(repeats: int = 3) -> dict[str, Any]:
    """``onnxact inspect`` on the demo model vs its floor: capture alone plus writing the grid PNGs.

    Both are in-process; inspect includes loading the model, heatmaps, CAM, npz and index.html.
    """
    import onnxact
    from onnxact.cli import main
    from onnxact.render import display_activations

    model_path, image = onnxact.demo_paths()
    model = onnxact.load(model_path)
    x = onnxact.preprocess_image(image, model)
    with tempfile.TemporaryDirectory() as d:
        def floor() -> None:
            acts = onnxact.get_activations(model, x)
            display_activations(acts, save=True, directory=d)

        def inspect() -> None:
            assert main(["inspect", str(model_path), str(image), "-o", str(Path(d) / "report")]) == 0

        floor()
        inspect()  # warm-up
        # taken in turn, 3 calls a block; the ratio is the median of per-round ratios
        t = blocks({"floor": floor, "inspect": inspect}, 3, warmup=0, rounds=max(1, repeats))
    med = block_medians(t)
    return {"floor_s": med["floor"], "inspect_s": med["inspect"], "ratio": round_ratio(t, "inspect", "floor")}


if __name__ == "__main__":  # python -m bench.render [REPEATS]
    import contextlib
    import io
    import json
    import sys

    with contextlib.redirect_stdout(io.StringIO()):
        result = measure_inspect(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(json.dumps(result))
