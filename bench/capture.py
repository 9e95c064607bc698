"""Capture speed, side by side in one process run: plain onnxruntime (the floor), onnxact's
``get_activations`` on a loaded Model, PyTorch forward hooks, TorchLens, and Keract (in a
tf-keras subprocess, see bench/keract_run.py). Ratios are to plain onnxruntime measured here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import CACHE, batch_of, block_medians, blocks, median_time, round_ratio, run_json
from .models import seed_onnx, seed_torch, tenblock_onnx, tenblock_torch


@dataclass
class Case:
    name: str
    key: str  # short id used by subprocess runners
    proto: Any  # path or ModelProto
    shape: tuple[int, ...]  # one sample
    torch_factory: Callable[[], Any] | None = None
    torch_layout: str = "NCHW"
    keract: bool = False
    notes: list[str] = field(default_factory=list)


def cases(quick: bool) -> list[Case]:
    ten = tenblock_onnx(224)
    out = [
        Case("10-block Conv-BN-ReLU, 224x224", "tenblock", ten, (3, 224, 224),
             lambda: tenblock_torch(proto=ten), keract=True),
        Case("seed CNN (the demo's), 256x256", "seed", seed_onnx(CACHE / "seed_cnn.onnx"), (256, 256, 3),
             seed_torch, torch_layout="NHWC", keract=True),
    ]
    try:
        import sys

        from .common import ROOT

        sys.path.insert(0, str(ROOT / "tests"))
        import subjects

        ocr = subjects.rapidocr_models()
        out.append(Case("rapidocr PP-OCRv4 det, 480x480", "ocr_det", ocr["det"], (3, 480, 480)))
        if not quick:
            out.append(Case("rapidocr PP-OCRv4 rec, 48x320", "ocr_rec", ocr["rec"], (3, 48, 320)))
            out.append(Case("rapidocr mobile cls, 48x192", "ocr_cls", ocr["cls"], (3, 48, 192)))
    except Exception as e:  # noqa: BLE001 - the wheel download can fail offline; say so in the table
        print(f"  rapidocr models unavailable: {e}")
    return out


def _plain_session(proto: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    data = proto.SerializeToString() if hasattr(proto, "SerializeToString") else open(proto, "rb").read()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def torch_hooks(net: Any) -> tuple[Callable[[Any], dict], list]:
    """Forward hooks on the modules matching onnxact's default set: ReLU after a conv, and pools."""
    from torch import nn

    acts: dict[str, np.ndarray] = {}
    handles = []
    mods = list(net.named_modules())
    for i, (name, mod) in enumerate(mods):
        after_conv = i > 0 and isinstance(mods[i - 1][1], (nn.Conv2d, nn.BatchNorm2d))
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)) or (isinstance(mod, nn.ReLU) and after_conv):
            def hook(_m, _inp, out, name=name):
                acts[name] = out.detach().cpu().numpy()
            handles.append(mod.register_forward_hook(hook))

    def run(x: Any) -> dict:
        acts.clear()
        net(x)
        return dict(acts)

    return run, handles


def measure(quick: bool, batches: tuple[int, ...] = (1, 8), log: Callable[[str], None] = print) -> list[dict]:
    import torch

    import onnxact

    rows: list[dict] = []
    keract_cache: dict[str, dict] = {}
    repeats = 5 if quick else 15
    for case in cases(quick):
        log(f"  {case.name}")
        model = onnxact.load(case.proto)
        plain = _plain_session(case.proto)
        in_name = plain.get_inputs()[0].name
        net = case.torch_factory() if case.torch_factory else None
        for b in batches:
            x = batch_of(case.shape, b)
            feeds = {in_name: x}
            onnxact.get_activations(model, x)  # builds the capture session
            t0 = time.perf_counter()
            acts = onnxact.get_activations(model, x)
            once = time.perf_counter() - t0
            captured, n_layers = sum(v.nbytes for v in acts.values()), len(acts)
            del acts
            buf = np.ones(max(captured // 4, 1), np.float32)
            fns: dict[str, Callable[[], Any]] = {
                "plain": lambda feeds=feeds, plain=plain: plain.run(None, feeds),
                "onnxact": lambda x=x, model=model: onnxact.get_activations(model, x),
                "copy": lambda buf=buf: buf.copy(),
            }
            if net is not None:
                xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if case.torch_layout == "NHWC" else x)
                fns["torch_plain"] = lambda xt=xt, net=net: _torch_forward(net, xt)
                fns["torch_hooks"] = lambda xt=xt, net=net: torch_hooks_once(net, xt)
            # Blocks of at least ~0.3 s each: the first calls after switching to another session
            # are slow (its threads wake, caches refill); with blocks of a few calls on a 4 ms model
            # that switching cost, not the function, set the median.
            per_block = int(min(100, max(repeats, 0.3 / max(once, 1e-4))))
            rounds = 3 if quick else 6
            tb = blocks(fns, per_block, warmup=3, rounds=rounds)
            t = block_medians(tb)
            row = {"case": case.name, "key": case.key, "batch": b, "captured_mb": captured / 1e6,
                   "layers": n_layers, **{k: v for k, v in t.items()}}
            row["floor"] = t["plain"] + t["copy"]
            # the ratios judged against the targets: medians of per-round ratios (see round_ratio)
            row["ratio"] = round_ratio(tb, "onnxact", "plain")
            row["floor_ratio"] = round_ratio(tb, "onnxact", ("plain", "copy"))
            if net is not None:
                row["torchlens"] = _torchlens_time(net, xt, 1 if quick or b > 1 else 3)
            if case.keract:
                if case.key not in keract_cache:
                    keract_cache[case.key] = run_json(
                        ["-m", "bench.keract_run", "capture", case.key, ",".join(map(str, batches)),
                         str(2 if quick else 5)], env={"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
                r = keract_cache[case.key]
                row["keract"] = r.get(str(b), {}).get("get_activations")
                row["keract_predict"] = r.get(str(b), {}).get("predict")
                row["keract_error"] = r.get("error")
            rows.append(row)
            log("    batch {batch}: plain {p:.1f} ms, onnxact {o:.1f} ms ({r:.2f}x), floor {f:.1f} ms ({fr:.2f}x)".format(
                batch=b, p=t["plain"] * 1e3, o=t["onnxact"] * 1e3, r=row["ratio"], f=row["floor"] * 1e3,
                fr=row["floor_ratio"]))
    return rows


def _torch_forward(net: Any, xt: Any) -> None:
    import torch

    with torch.inference_mode():
        net(xt)


def torch_hooks_once(net: Any, xt: Any) -> dict:
    """What a user writes: register hooks, run, remove them (registration is part of the cost)."""
    import torch

    run, handles = torch_hooks(net)
    try:
        with torch.inference_mode():
            return run(xt)
    finally:
        for h in handles:
            h.remove()


def _torchlens_time(net: Any, xt: Any, repeats: int) -> float | str:
    try:
        import torchlens as tl
    except Exception as e:  # noqa: BLE001
        return f"not installed ({type(e).__name__})"
    def once() -> None:
        if hasattr(tl, "trace"):  # TorchLens >= 2
            tl.trace(net, xt)  # saves every layer by default
        else:
            tl.log_forward_pass(net, xt, layers_to_save="all", vis_opt="none")

    try:
        return median_time(once, repeats, warmup=1)
    except Exception as e:  # noqa: BLE001 - report, don't crash the whole benchmark
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
