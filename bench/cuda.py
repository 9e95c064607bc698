"""Capture on another execution provider (CUDA by default) vs plain inference on it, in one run.

    python -m bench.cuda                       # needs onnxruntime-gpu and a GPU; writes bench/results_cuda.md
    python -m bench.cuda --provider cpu --quick --out /tmp/cpu.md   # the same measurement elsewhere

Why a separate entry point: the main benchmark runs on the CPU machines everyone has; this one
is for a machine with a GPU, where the question is what promoting every map costs when each map
must also travel from the device to host memory (plain inference brings back only the model's
own outputs). Both sides use the same provider list and the default session options; plain
inference is ``InferenceSession.run`` on the original model, onnxact is ``get_activations`` on a
loaded ``Model``, timed in blocks taken in turn (``bench.common.blocks``); the ratio is the median
of per-round ratios (``bench.common.round_ratio``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .capture import cases
from .common import ROOT, batch_of, block_medians, blocks, machine, round_ratio, versions


def _gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi"
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip().replace("\n", "; ") or out.stderr.strip()[:200]


def measure(provider: str, quick: bool, batches: tuple[int, ...], log=print) -> list[dict]:
    import onnxruntime as ort

    import onnxact
    from onnxact.model import resolve_providers

    providers = resolve_providers(provider)
    rows = []
    for case in cases(quick):
        data = case.proto.SerializeToString() if hasattr(case.proto, "SerializeToString") else Path(case.proto).read_bytes()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        plain = ort.InferenceSession(data, so, providers=providers)
        model = onnxact.load(case.proto, providers=provider)
        name = plain.get_inputs()[0].name
        for b in batches:
            x = batch_of(case.shape, b)
            acts = onnxact.get_activations(model, x)  # builds the capture session
            captured = sum(v.nbytes for v in acts.values())
            used = model.session(tuple(lay.tensor for lay in model.layers)).get_providers()[0]
            del acts
            t0 = time.perf_counter()
            plain.run(None, {name: x})
            once = time.perf_counter() - t0
            per_block = int(min(100, max(10, 0.3 / max(once, 1e-4))))
            tb = blocks({"plain": lambda x=x, s=plain, n=name: s.run(None, {n: x}),
                         "onnxact": lambda x=x, m=model: onnxact.get_activations(m, x)},
                        per_block, warmup=3, rounds=3 if quick else 6)
            t = block_medians(tb)
            ratio = round_ratio(tb, "onnxact", "plain")
            rows.append({"case": case.name, "batch": b, "captured_mb": captured / 1e6, "provider": used,
                         "ratio": ratio, **t})
            log(f"  {case.name} batch {b} on {used}: plain {t['plain'] * 1e3:.2f} ms, "
                f"onnxact {t['onnxact'] * 1e3:.2f} ms ({ratio:.2f}x)")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cuda", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provider", default="cuda", help="execution provider(s), as onnxact's providers= (default cuda)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and subjects")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results_cuda.md"))
    args = ap.parse_args(argv)
    from onnxact.errors import OnnxactError

    t0 = time.time()
    try:
        rows = measure(args.provider, args.quick, (1, 8), log=lambda s: print(s, file=sys.stderr, flush=True))
    except OnnxactError as e:  # e.g. no onnxruntime-gpu here
        print(f"bench.cuda: {e}", file=sys.stderr)
        return 2
    cmd = "python -m bench.cuda" + (f" --provider {args.provider}" if args.provider != "cuda" else "") + \
          (" --quick" if args.quick else "")
    md = [f"# Capture on {args.provider} (`{cmd}`)", "",
          f"Written on {time.strftime('%Y-%m-%d %H:%M')} in {time.time() - t0:.0f} s.", "",
          f"- Machine: {machine()}; GPU: {_gpu_name()}",
          "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
          "Medians of calls timed in blocks taken in turn (ratio: median of per-round ratios); plain = `InferenceSession.run` on the original",
          "model (its own outputs copied to the host), onnxact = `get_activations` (every map copied to",
          "the host). Same providers and default session options on both sides.", "",
          "| model | batch | provider used | captured | plain ms | onnxact ms | onnxact / plain |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['batch']} | {r['provider']} | {r['captured_mb']:.0f} MB | "
                  f"{r['plain'] * 1e3:.2f} | {r['onnxact'] * 1e3:.2f} | **{r['ratio']:.2f}x** |")
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
