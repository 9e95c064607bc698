"""Issue 15 benchmark: the exemplar scan vs plain onnxruntime, and its memory vs image count.

    python -m bench.exemplars                 # both subjects; prints markdown rows for BENCHMARKS.md
    python -m bench.exemplars --rss MODEL N   # (child) find_exemplars over N images, print peak RSS as JSON

Speed: the same random batches through (a) a plain onnxruntime session of the model and (b) the
exemplar scan's session plus its host side (``ExemplarRunner.run``: in-graph max and position per
channel, then the top-K merge), medians of interleaved blocks (``bench.common.interleaved``).
Memory: peak RSS (VmHWM) of a whole ``find_exemplars`` run (top 9, every default layer) over a
list file of N image paths (50 distinct PNGs repeated), each N in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.check import _images, subjects
from bench.common import interleaved, run_json

TARGET = 0.7  # exemplar scan throughput / plain inference throughput (issue 15)


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def speed(path: Path, batch: int, batches: int = 4, repeats: int = 10, rounds: int = 5) -> dict[str, float]:
    import onnxact
    from onnxact.exemplar_scan import ExemplarRunner
    from onnxact.stats_runner import post_activation_layers

    m = onnxact.load(path)
    shape = tuple(d if isinstance(d, int) else batch for d in m.inputs[0].shape)
    xs = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(batches)]
    plain = m.build_session(m.proto)
    runner = ExemplarRunner(m, post_activation_layers(m, list(m.layers)), 9)
    name = m.inputs[0].name

    def run_plain() -> None:
        for x in xs:
            plain.run(None, {name: x})

    def run_exemplars() -> None:
        acc = None
        for k, x in enumerate(xs):
            part = runner.run(x, range(k * batch, (k + 1) * batch))
            acc = part if acc is None else acc.merge(part)

    load = os.getloadavg()[0]
    t = interleaved({"plain": run_plain, "exemplars": run_exemplars}, repeats=repeats, rounds=rounds)
    n = batch * batches
    return {"batch": batch, "plain_ips": n / t["plain"], "ex_ips": n / t["exemplars"],
            "ratio": t["plain"] / t["exemplars"], "load": max(load, os.getloadavg()[0])}


def rss_child(model: str, n: int, batch: int) -> None:
    import onnxact

    folder = _images(Path(model))
    lst = folder / f"list_{n}.txt"
    lst.write_text("".join(f"{i % 50}.png\n" for i in range(n)))
    t0 = time.perf_counter()
    ex = onnxact.find_exemplars(model, lst, top=9, batch_size=batch)
    dt = time.perf_counter() - t0
    print(json.dumps({"images": ex.images, "peak_rss_mb": _vmhwm_mb(), "seconds": dt, "ips": ex.images / dt}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rss", nargs=2, metavar=("MODEL", "N"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="50,500")
    a = ap.parse_args()
    if a.rss:
        rss_child(a.rss[0], int(a.rss[1]), a.batch)
        return
    ns = a.sizes.split(",")
    print("| model | batch | plain ORT (img/s) | exemplar scan (img/s) | scan / plain | load avg (1 min) |")
    print("|---|---|---|---|---|---|")
    mem = []
    for label, (path, batch) in subjects().items():
        s = speed(path, batch)
        print(f"| {label} | {batch} | {s['plain_ips']:.1f} | {s['ex_ips']:.1f} | **{s['ratio']:.2f}** "
              f"(target {TARGET}) | {s['load']:.1f} |", flush=True)
        res = {n: run_json(["-m", "bench.exemplars", "--rss", str(path), n, "--batch", str(batch)]) for n in ns}
        first, last = res[ns[0]].get("peak_rss_mb"), res[ns[-1]].get("peak_rss_mb")
        growth = f"{(last / first - 1) * 100:+.1f}%" if first and last else json.dumps(res)
        mem.append(f"| {label} | " + " | ".join(f"{res[n].get('peak_rss_mb', float('nan')):.0f}" for n in ns)
                   + f" | {growth} | {res[ns[-1]].get('ips', float('nan')):.1f} |")
    print()
    print("| model | " + " | ".join(f"peak RSS at {n} images (MB)" for n in ns) + " | growth | "
          f"end-to-end img/s at {ns[-1]} (decode included) |")
    print("|---|" + "---|" * (len(ns) + 2))
    print("\n".join(mem))


if __name__ == "__main__":
    sys.exit(main())
