"""Issue 5 benchmark: the dead-filter scan vs plain onnxruntime, and its memory vs image count.

    python -m bench.check                 # both subjects, writes bench/results_check.md
    python -m bench.check --rss MODEL N   # (child) scan N images, print peak RSS as JSON

Speed: the same random batches through (a) a plain onnxruntime session of the model and (b) the
scan's statistics session (``StatsRunner.run``, i.e. in-graph reductions plus merging), medians
of interleaved runs. The scan runs each batch in cache-sized chunks (``StatsRunner.chunk``), so
(c) plain onnxruntime on the same chunks is timed too, to show how much of the ratio that is.
Memory: peak RSS of a whole ``find_dead_filters`` run over a list file of N image paths (50
distinct PNGs repeated), each N in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, interleaved, machine, random_images, run_json, versions

DEMO = ROOT / "models" / "demo_cnn.onnx"


def subjects() -> dict[str, tuple[Path, int]]:
    from bench.nets import tenblock_path

    out = {}
    if DEMO.exists():
        out["demo_cnn (128x128 NHWC, Keras)"] = (DEMO, 32)
    out["10-block Conv-BN-ReLU 224x224"] = (tenblock_path(), 8)
    return out


def speed(path: Path, batch: int, batches: int = 4, repeats: int = 10, rounds: int = 5) -> dict[str, float]:
    """images/s of plain onnxruntime and of the scan on the same ``batches`` random batches."""
    import onnxact
    from onnxact.stats import StatsRunner

    m = onnxact.load(path)
    shape = tuple(d if isinstance(d, int) else batch for d in m.inputs[0].shape)
    xs = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(batches)]
    plain = m.build_session(m.proto)
    runner = StatsRunner(m)
    name = m.inputs[0].name
    chunk = runner.chunk or batch

    def run_plain() -> None:
        for x in xs:
            plain.run(None, {name: x})

    def run_plain_chunks() -> None:
        for x in xs:
            for i in range(0, batch, chunk):
                plain.run(None, {name: x[i:i + chunk]})

    def run_scan() -> None:
        acc = None
        for x in xs:
            part = runner.run(x)
            acc = part if acc is None else acc.merge(part)

    fns = {"plain": run_plain, "scan": run_scan}
    if chunk < batch:
        fns["plain_chunks"] = run_plain_chunks
    load = os.getloadavg()[0]
    t = interleaved(fns, repeats=repeats, rounds=rounds)
    n = batch * batches
    t.setdefault("plain_chunks", t["plain"])
    return {"images": n, "batch": batch, "chunk": chunk, "plain_ips": n / t["plain"], "scan_ips": n / t["scan"],
            "ratio": t["plain"] / t["scan"], "plain_chunk_ips": n / t["plain_chunks"],
            "ratio_same_chunks": t["plain_chunks"] / t["scan"], "load": max(load, os.getloadavg()[0])}


def _images(path: Path, n_distinct: int = 50) -> Path:
    import onnxact

    m = onnxact.load(path)
    shp = m.inputs[0].shape
    h, w = (shp[1], shp[2]) if m.inputs[0].layout == "NHWC" else (shp[2], shp[3])
    return random_images("check", h, w, n_distinct)


def rss_child(model: str, n: int, batch: int) -> None:
    import onnxact

    folder = _images(Path(model))
    lst = folder / f"list_{n}.txt"
    lst.write_text("".join(f"{i % 50}.png\n" for i in range(n)))
    t0 = time.perf_counter()
    report = onnxact.find_dead_filters(model, lst, batch_size=batch, show_progress=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": report.images, "peak_rss_mb": peak, "seconds": dt, "ips": report.images / dt}))


def _kept_sections(path: Path) -> str:
    """The hand-written tail of an existing results file (from its first "## Notes" or "## Ray"
    heading on), which a re-run keeps."""
    try:
        old = path.read_text()
    except OSError:
        return ""
    starts = [i for i in (old.find("\n## Notes"), old.find("\n## Ray")) if i >= 0]
    return old[min(starts):] if starts else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rss", nargs=2, metavar=("MODEL", "N"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="50,1000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results_check.md"))
    a = ap.parse_args()
    if a.rss:
        rss_child(a.rss[0], int(a.rss[1]), a.batch)
        return
    rows, mem = [], []
    load0 = os.getloadavg()
    for label, (path, batch) in subjects().items():
        s = speed(path, batch)
        whole = s["chunk"] >= s["batch"]
        rows.append(f"| {label} | {s['batch']} | {s['plain_ips']:.1f} | {s['scan_ips']:.1f} | **{s['ratio']:.2f}** | "
                    + ("whole batch | = | = |" if whole else
                       f"{s['chunk']} | {s['plain_chunk_ips']:.1f} | {s['ratio_same_chunks']:.2f} |")
                    + f" {s['load']:.1f} |")
        print(rows[-1], flush=True)
        res = {n: run_json(["-m", "bench.check", "--rss", str(path), n, "--batch", str(batch)])
               for n in a.sizes.split(",")}
        ns = a.sizes.split(",")
        line = f"| {label} | " + " | ".join(f"{res[n].get('peak_rss_mb', float('nan')):.0f}" for n in ns)
        first, last = res[ns[0]].get("peak_rss_mb"), res[ns[-1]].get("peak_rss_mb")
        growth = f"{(last / first - 1) * 100:+.1f}%" if first and last else str(res)
        e2e = res[ns[-1]].get("ips", float("nan"))
        mem.append(line + f" | {growth} | {e2e:.1f} |")
        print(mem[-1], flush=True)
    ns = a.sizes.split(",")
    text = "\n".join([
        "# `onnxact check` speed and memory (bench/check.py)", "",
        f"Machine: {machine()}. Versions: {json.dumps(versions())}.", "Command: `python -m bench.check`.",
        f"Load average (1/5/15 min) at the start: {'/'.join(f'{v:.2f}' for v in load0)}; at the end: "
        f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())} (2 CPUs shared with other sessions).", "",
        "## Scan vs plain onnxruntime, same random batches (images/s, median of interleaved runs)", "",
        "| model | batch | plain ORT | scan (in-graph stats + merge) | scan / plain | scan chunk | "
        "plain ORT on the same chunks | scan / plain on chunks | load avg (1 min, this run included) |", "|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        "## Peak RSS of a whole `find_dead_filters` run (list file of PNG paths, each N in its own process)", "",
        "| model | " + " | ".join(f"{n} images (MB)" for n in ns) + f" | growth {ns[0]} -> {ns[-1]} | "
        f"end-to-end images/s at {ns[-1]} (decode included) |",
        "|---|" + "---|" * (len(ns) + 2), *mem, "",
    ])
    Path(a.out).write_text(text + _kept_sections(Path(a.out)))
    print(f"written {a.out}")


if __name__ == "__main__":
    sys.exit(main())
