"""Issue 16 benchmark: ``onnxact.compare`` vs running both models plainly, and its memory vs image count.

    python -m bench.compare                       # prints a Markdown table
    python -m bench.compare --det --no-rss        # also rapidocr det fp32 vs QDQ, speed only
    python -m bench.compare --rss N               # (child) compare over N images, print peak RSS as JSON
    python -m bench.compare --sums                # CPU seconds of the sums alone per batch (one thread)

Subjects: the 10-block Conv-BN-ReLU net (bench/models.py) in fp32 vs its int8 QDQ version made by
``onnxruntime.quantization.quantize_static`` (calibrated on 4 random inputs), and vs an fp32 copy
with one conv channel scaled by 1.5; rapidocr det (fetched by tests/subjects.py) vs its QDQ
version (calibrated on two photos at 480x480; ``--det`` adds it). Speed: the same
random batches through (a) a plain onnxruntime session of A then one of B (the floor, 1.0x) and
(b) ``onnxact.compare(A, B, x)`` (capture of every conv/pool layer of both + streamed metrics),
medians of blocks taken in turn (bench.common.blocks). Memory: peak RSS of a whole compare over a
list file of N image paths (50 distinct PNGs repeated), each N in its own process.
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

from bench.common import CACHE, block_medians, blocks, machine, random_images, round_ratio, run_json

SIZE = 224


def subjects(size: int = SIZE) -> tuple[Path, Path]:
    """(fp32, qdq) paths of the 10-block net, built and quantized once into the bench cache."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from bench.models import tenblock_onnx

    fp32, qdq = CACHE / f"cmp_tenblock_{size}.onnx", CACHE / f"cmp_tenblock_{size}_qdq.onnx"
    if not qdq.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        onnx.save(tenblock_onnx(size), fp32)
        feeds = iter([{"x": np.random.default_rng(i).random((1, 3, size, size), dtype=np.float32)} for i in range(4)])

        class Reader(CalibrationDataReader):
            def get_next(self):  # type: ignore[override]
                return next(feeds, None)

        quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return fp32, qdq


def scaled_copy(size: int = SIZE) -> Path:
    """The fp32 net with block 3's conv scaled by 1.5 in channel 5: an fp32 vs fp32 pair (nothing to unfuse)."""
    import onnx
    from onnx import numpy_helper

    fp32, _ = subjects(size)
    path = CACHE / f"cmp_tenblock_{size}_scaled.onnx"
    if not path.exists():
        m = onnx.load(str(fp32))
        for t in m.graph.initializer:
            if t.name in ("w3", "b3"):
                arr = numpy_helper.to_array(t).copy()
                arr[5] *= 1.5
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        onnx.save(m, path)
    return path


DET_SIZE = 480


def det_subjects() -> tuple[Path, Path]:
    """(fp32, qdq) paths of rapidocr det; the QDQ copy is made once into the bench cache."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import onnxact
    from tests.subjects import photo, rapidocr_models

    det = Path(rapidocr_models()["det"])
    qdq = CACHE / f"cmp_det_qdq_{DET_SIZE}.onnx"
    if not qdq.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        m = onnxact.load(det)
        feeds = iter([{"x": onnxact.preprocess_image(str(photo(p)), m, size=(DET_SIZE, DET_SIZE))}
                      for p in ("astronaut.png", "coffee.png")])

        class Reader(CalibrationDataReader):
            def get_next(self):  # type: ignore[override]
                return next(feeds, None)

        quantize_static(str(det), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return det, qdq


def speed(pair: str = "qdq", batch: int = 8, batches: int = 2, per_round: int = 2, rounds: int = 3) -> dict[str, float]:
    """Median and best times of the floor (plain A then plain B per batch, the sessions' default
    options, as the compare's own) and of ``onnxact.compare``; ``ratio`` is the median over rounds
    of each round's compare / floor, ``best_ratio`` best compare / best floor (the least disturbed
    calls: on a loaded machine the steadier of the two)."""
    import onnxact

    if pair == "det":
        fa, fb = det_subjects()
        size = DET_SIZE
    else:
        fa, fq = subjects()
        fb, size = (fq if pair == "qdq" else scaled_copy()), SIZE
    a, b = onnxact.load(fa), onnxact.load(fb)
    x = np.random.default_rng(0).random((batch * batches, 3, size, size), dtype=np.float32)
    pa, pb = a.build_session(a.proto), b.build_session(b.proto)
    name = a.inputs[0].name

    def plain() -> None:
        for i in range(0, len(x), batch):
            pa.run(None, {name: x[i:i + batch]})
            pb.run(None, {name: x[i:i + batch]})

    def compare() -> None:
        onnxact.compare(a, b, x, batch_size=batch)

    load = os.getloadavg()[0]
    t = blocks({"plain": plain, "compare": compare}, per_round=per_round, rounds=rounds)
    med = block_medians(t)
    best = {k: min(x for b in v for x in b) for k, v in t.items()}
    return {"images": len(x), "batch": batch, "size": size, "plain_s": med["plain"], "compare_s": med["compare"],
            "ratio": round_ratio(t, "compare", "plain"), "best_ratio": best["compare"] / best["plain"],
            "load": max(load, os.getloadavg()[0])}


def sums_cpu(pair: str = "qdq", batch: int = 8, repeats: int = 5) -> dict[str, float]:
    """CPU seconds of the sums alone for one batch, one thread (``compare_sums.Accumulator.update``
    on every matched layer, B's requantization included): the part of a compare past the two
    captures, measured in CPU time, which a loaded machine disturbs far less than wall time."""
    import importlib

    import onnxact
    from onnxact.compare_sums import Accumulator

    cmp = importlib.import_module("onnxact.compare")
    fa, fq = subjects()
    a, b = onnxact.load(fa), onnxact.load(fq if pair == "qdq" else scaled_copy())
    x = {"x": np.random.default_rng(0).random((batch, 3, SIZE, SIZE), dtype=np.float32)}
    sa, sb = cmp._OnnxSide(a, None, None, None), cmp._OnnxSide(b, None, None, None)
    picks = sa.align(sb)
    acts_a, _ = sa.capture(x)
    acts_b, post = sb.capture(x)
    with cmp._Session(None, None, {k: sb.model.layer(t).name for k, t in (picks or {}).items()}, False,
                      "tensor" if picks else "map") as s:
        s.add(acts_a, acts_b, post)
    jobs = [(acts_a[p.a_key], acts_b[p.b_key], p.axis, post.get(p.b_key)) for p in s.pairs or []]
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        for va, vb, axis, po in jobs:
            Accumulator().update(va, vb, axis, po)
        times.append(time.process_time() - c0)
    return {"cpu_s": sorted(times)[len(times) // 2], "mb_per_side": sum(v.nbytes for v in acts_a.values()) / 1e6}


def _images(n_distinct: int = 50) -> Path:
    return random_images("cmp", SIZE, SIZE, n_distinct)


def _peak_mb() -> float:
    """This process's peak RSS. Why VmHWM first: ``ru_maxrss`` of a child started by the bench keeps
    the parent's high-water mark across fork + exec (2508 MB reported for a 907 MB compare)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, batch: int) -> None:
    import onnxact

    fp32, qdq = subjects()
    folder = _images()
    lst = folder / f"list_{n}.txt"
    lst.write_text("".join(f"{i % 50}.png\n" for i in range(n)))
    t0 = time.perf_counter()
    r = onnxact.compare(str(fp32), str(qdq), str(lst), batch_size=batch, normalize="0-1")
    dt = time.perf_counter() - t0
    peak = _peak_mb()
    print(json.dumps({"images": r.images, "layers": len(r.layers), "peak_rss_mb": peak, "seconds": dt,
                      "first_divergence": r.first_divergence}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rss", type=int, metavar="N")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", default="50,1000")
    ap.add_argument("--no-rss", action="store_true", help="speed only")
    ap.add_argument("--det", action="store_true", help="also rapidocr det fp32 vs QDQ (fetches the model)")
    ap.add_argument("--rounds", type=int, default=3, help="blocks of floor and compare taken in turn")
    ap.add_argument("--sums", action="store_true", help="CPU seconds of the sums alone per batch, then exit")
    a = ap.parse_args()
    if a.rss:
        rss_child(a.rss, a.batch)
        return
    if a.sums:
        for pair in ("qdq", "scaled"):
            r = sums_cpu(pair, a.batch)
            print(f"10-block {pair}: sums {r['cpu_s']:.3f} CPU s per batch of {a.batch} ({r['mb_per_side']:.0f} MB per side)")
        return
    print(f"Machine: {machine()}")
    print("| subject | images | batch | plain A + plain B (s) | compare (s) | compare / plain | best / best | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    pairs = [("qdq", "10-block", "fp32 vs QDQ int8"), ("scaled", "10-block", "fp32 vs fp32 (one channel x1.5)")]
    if a.det:
        pairs.append(("det", "rapidocr det", "fp32 vs QDQ int8"))
    for pair, net, label in pairs:
        s = speed(pair, a.batch, rounds=a.rounds)
        print(f"| {net} {s['size']}x{s['size']} {label} | {s['images']} | {s['batch']} | {s['plain_s']:.3f} | "
              f"{s['compare_s']:.3f} | **{s['ratio']:.2f}x** | {s['best_ratio']:.2f}x | {s['load']:.1f} |", flush=True)
    if a.no_rss:
        return
    ns = a.sizes.split(",")
    res = {n: run_json(["-m", "bench.compare", "--rss", n, "--batch", str(a.batch)]) for n in ns}
    print()
    print("| images | peak RSS (MB) | seconds | layers | first divergence |")
    print("|---|---|---|---|---|")
    for n in ns:
        r = res[n]
        print(f"| {n} | {r.get('peak_rss_mb', float('nan')):.0f} | {r.get('seconds', float('nan')):.1f} | "
              f"{r.get('layers', '?')} | {r.get('first_divergence', r.get('error'))} |")


if __name__ == "__main__":
    sys.exit(main())
