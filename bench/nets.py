"""Benchmark nets for the dead-filter scan: the 10-block Conv-BN-ReLU net at 224x224.

The builder lives in :mod:`bench.models` (shared with the capture benchmarks); this module
gives it the name the check benchmark and its helpers use, and saves it once to disk.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from bench.common import CACHE
from bench.models import tenblock_onnx

__all__ = ["tenblock_net", "tenblock_path"]


def tenblock_net(size: int = 224) -> onnx.ModelProto:
    """10 x (Conv 3x3 -> BatchNormalization -> Relu), 3 max pools, GAP, Gemm; input (N, 3, size, size)."""
    return tenblock_onnx(size=size)


def tenblock_path(size: int = 224) -> Path:
    p = CACHE / f"tenblock_{size}.onnx"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(tenblock_net(size), p)
    return p
