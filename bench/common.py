"""Shared benchmark helpers: medians of repeated timings, subjects cached on disk, versions."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ONNXACT_BENCH_CACHE", Path.home() / ".cache" / "onnxact-bench"))


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blocks(fns: dict[str, Callable[[], Any]], per_round: int, warmup: int = 1, rounds: int = 2) -> dict[str, list[list[float]]]:
    """Call times of several functions, in blocks taken in turn: ``{name: [[round 0 times], ...]}``.

    Why blocks and not call-by-call alternation: each onnxruntime session has its own thread
    pool whose threads spin for a while after a run; alternating calls lets one session's
    spinning threads steal the cores of the next (on 2 CPUs that made plain inference look 30%
    slower than a capture). A warm-up call at the start of each block absorbs it; rounds spread
    load drift over all functions alike.
    """
    times: dict[str, list[list[float]]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(warmup):
                fn()
            block = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
            times[k].append(block)
    return times


def block_medians(t: dict[str, list[list[float]]]) -> dict[str, float]:
    """Median over all calls of each function in a ``blocks`` result."""
    return {k: statistics.median([x for b in v for x in b]) for k, v in t.items()}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, rounds: int = 2) -> dict[str, float]:
    """Median times of several functions over ``repeats`` calls each, measured by ``blocks``."""
    return block_medians(blocks(fns, max(1, -(-repeats // rounds)), warmup, rounds))


def round_ratio(t: dict[str, list[list[float]]], num: str, den: str | tuple[str, ...]) -> float:
    """Median over rounds of median(num) / median(den) (den summed when several): each round's
    ratio compares blocks measured seconds apart, so slow drift of the shared machine cancels."""
    dens = (den,) if isinstance(den, str) else den
    return statistics.median(
        statistics.median(t[num][r]) / sum(statistics.median(t[d][r]) for d in dens) for r in range(len(t[num])))


def run_json(args: list[str], env: dict[str, str] | None = None, timeout: int = 1800) -> dict[str, Any]:
    """Run ``python -m <args>`` in a subprocess and parse the JSON on its last stdout line."""
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=e, cwd=ROOT, timeout=timeout)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)[-400:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ("onnxact", "numpy", "onnx", "onnxruntime", "torch", "tensorflow-cpu", "tensorflow", "keras",
              "tf-keras", "keract", "torchlens", "matplotlib", "pillow"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs{mem}"


def batch_of(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def random_images(name: str, h: int, w: int, n_distinct: int = 50) -> Path:
    """A cached folder of ``n_distinct`` random RGB PNGs of h x w (seeded), named ``0.png``...: the
    dataset the scan and compare benchmarks read."""
    from PIL import Image

    folder = CACHE / f"{name}_images_{h}x{w}"
    if not (folder / f"{n_distinct - 1}.png").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n_distinct):
            Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder
