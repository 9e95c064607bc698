"""Peak memory of each capture method, one fresh process per measurement.

    python -m bench.memory WHAT CASE BATCH [BOUND]

WHAT: plain | onnxact | bounded | torch_plain | torch_hooks | torchlens | keract. Prints one JSON
line: the peak RSS (VmHWM), the RSS once everything is set up and before the run, and their
difference (what the run itself added).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(what: str, key: str, batch: int, bound: str | None = None) -> dict:
    import numpy as np

    from .common import CACHE, batch_of
    from .models import seed_onnx, seed_torch, tenblock_onnx, tenblock_torch

    if what == "keract":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import keract

        from .keract_run import _model

        model, shape = _model(key)
        x = batch_of(shape, batch)
        model(x[:1])
        before = _rss()
        keract.get_activations(model, x)
    elif what.startswith("torch"):
        import torch

        net = tenblock_torch() if key == "tenblock" else seed_torch()
        x = torch.from_numpy(batch_of((3, 224, 224) if key == "tenblock" else (3, 256, 256), batch))
        with torch.inference_mode():
            net(x[:1])
        before = _rss()
        if what == "torch_plain":
            with torch.inference_mode():
                net(x)
        elif what == "torch_hooks":
            from .capture import torch_hooks_once

            torch_hooks_once(net, x)
        else:
            import torchlens as tl

            tl.trace(net, x) if hasattr(tl, "trace") else tl.log_forward_pass(net, x, layers_to_save="all")
    else:
        import onnxact

        proto = tenblock_onnx(224) if key == "tenblock" else seed_onnx(CACHE / "seed_cnn.onnx")
        m = onnxact.load(proto)
        shape = (3, 224, 224) if key == "tenblock" else (256, 256, 3)
        x = batch_of(shape, batch)
        if what == "plain":
            s = m.build_session(m.proto)
            before = _rss()
            s.run(None, {m.inputs[0].name: x})
        else:
            if what == "onnxact":  # session creation happens once per Model: not part of a capture's peak
                m.session(tuple(layer.tensor for layer in m.layers))
            before = _rss()
            acts = onnxact.get_activations(m, x, max_memory=bound if what == "bounded" else None)
            float(np.asarray(acts[next(iter(acts))][-1]).sum())
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork/exec.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    peak = int(hwm.split()[1]) * 1024
    return {"peak_mb": peak / 1e6, "before_mb": before / 1e6, "delta_mb": (peak - before) / 1e6}


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], a[1], int(a[2]), a[3] if len(a) > 3 else None)))
