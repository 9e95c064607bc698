"""Streamed sums of a comparison: one pass over each captured map, a cache-sized chunk at a time.

Why chunks: the metrics need, per layer, ``sum A^2`` and ``sum (A-B)^2`` per channel, ``sum B^2``,
and ``max |A-B|``. Done as whole-array numpy calls that is about ten passes over hundreds of MB
per batch (A-B written out and read back, four row-dot passes, max, min; B's requantization four
more), each pass from main memory. Done on 256 KB chunks, A and B are read from memory once and
every later pass hits the L2 cache; the row sums go through BLAS dot products (``matmul`` of
rows, ``dot``), 2-4x faster than ``einsum`` here. Measured on the 10-block net (254 MB per side
per batch of 8): 0.69 s -> 0.23 s single-threaded for the sums alone (bench/compare.py and
BENCHMARKS.md, "compare"). ``sum AB`` (cosine) is derived from the three others, so B is read once.

Precision: each float32 partial sum spans one map row (a channel's H*W, split past ``_CHUNK``) or
one chunk, and partial sums are added in float64, so rounding stays near 1e-7 relative; A-B is
taken elementwise in the inputs' dtype before squaring, so nearly equal layers keep their SQNR
(a 1e-6 relative difference reads ~120 dB, equal layers inf).

Threads: layers are independent and numpy / BLAS release the GIL in their loops, so each
batch's layers are summed in a pool that lives as long as one comparison (``SumPool``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .compare_report import LayerResult, layer_metrics

if TYPE_CHECKING:
    from .compare_match import Pair

__all__ = ["Accumulator", "SumPool", "channel_sums"]

#: elements per chunk (256 KB of float32): A's, B's and A-B's chunks together stay in L2
_CHUNK = 1 << 16

#: most rows summed down a column in one float32 partial sum (channels last): 1024 keeps its
#: rounding near 1e-7 (16384 rows of 4 channels drifted to 2e-6)
_ROWS = 1024

#: a transform applied to each chunk of B before it is compared, writing into ``out``
#: (``Requant.apply`` of a QDQ side read before its QuantizeLinear); elementwise
Post = Callable[..., np.ndarray]


class _Scratch:
    """Chunk buffers of one thread, reused for every chunk and layer (no allocation per chunk)."""

    def __init__(self) -> None:
        self.bufs: dict[tuple[int, np.dtype], np.ndarray] = {}

    def get(self, slot: int, n: int, dtype: np.dtype) -> np.ndarray:
        buf = self.bufs.get((slot, dtype))
        if buf is None or buf.size < n:
            buf = self.bufs[(slot, dtype)] = np.empty(max(n, _CHUNK), dtype)
        return buf[:n]


_LOCAL = threading.local()


def _scratch() -> _Scratch:
    s = getattr(_LOCAL, "scratch", None)
    if s is None:
        s = _LOCAL.scratch = _Scratch()
    return s


def channel_sums(a: np.ndarray, b: np.ndarray, axis: int | None,
                 post: Post | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(sum a^2 per channel, sum (a-b)^2 per channel, sum b^2, max |a-b|) of two same-shape arrays.

    ``axis``: the channel axis (None: one channel). ``post``: applied to each chunk of ``b``
    first (``post(chunk, out=buffer)``). Per-channel sums are float64 arrays.
    """
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if axis is not None and not 0 <= axis < a.ndim:  # a layout's axis on an array of fewer dims
        axis = None
    if a.size == 0:
        c = 1 if axis is None or a.ndim < 2 else a.shape[axis]
        return np.zeros(c), np.zeros(c), 0.0, 0.0
    if axis is not None and a.ndim >= 2 and axis == a.ndim - 1:
        return _column_sums(a.reshape(-1, a.shape[-1]), b.reshape(-1, a.shape[-1]), post)
    if axis is None or a.ndim < 2:
        c, length = 1, a.size
    else:  # channels first: rows of one channel's map, channel = row % c
        c, length = a.shape[axis], int(np.prod(a.shape[axis + 1:]))
    ra, rd, sb2, mx = _row_sums(a.reshape(-1, length), b.reshape(-1, length), post)
    return ra.reshape(-1, c).sum(axis=0), rd.reshape(-1, c).sum(axis=0), sb2, mx


def _row_sums(a: np.ndarray, b: np.ndarray, post: Post | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-row sums of a^2 and (a-b)^2 of two (rows, length) arrays, a block of rows at a time."""
    rows, length = a.shape
    s = _scratch()
    ra, rd = np.zeros(rows), np.zeros(rows)
    sb2, hi, lo = 0.0, -np.inf, np.inf
    if length > _CHUNK:  # long rows (large maps): each row in slices
        for r in range(rows):
            for c0 in range(0, length, _CHUNK):
                xa, xb = a[r, c0:c0 + _CHUNK], b[r, c0:c0 + _CHUNK]
                if post is not None:
                    xb = post(xb, out=s.get(1, xb.size, xb.dtype))
                d = np.subtract(xa, xb, out=s.get(0, xa.size, xa.dtype))
                ra[r] += float(np.dot(xa, xa))
                rd[r] += float(np.dot(d, d))
                sb2 += float(np.dot(xb, xb))
                hi, lo = max(hi, float(d.max())), min(lo, float(d.min()))
        return ra, rd, sb2, max(hi, -lo)
    k = max(1, _CHUNK // length)
    pa, pd = np.empty((rows, 1, 1), a.dtype), np.empty((rows, 1, 1), a.dtype)
    for r0 in range(0, rows, k):
        xa, xb = a[r0:r0 + k], b[r0:r0 + k]
        if post is not None:
            xb = post(xb, out=s.get(1, xb.size, xb.dtype).reshape(xb.shape))
        d = np.subtract(xa, xb, out=s.get(0, xa.size, xa.dtype).reshape(xa.shape))
        np.matmul(xa[:, None, :], xa[:, :, None], out=pa[r0:r0 + len(xa)])  # row dot products (BLAS)
        np.matmul(d[:, None, :], d[:, :, None], out=pd[r0:r0 + len(xa)])
        fb = xb.reshape(-1)
        sb2 += float(np.dot(fb, fb))
        hi, lo = max(hi, float(d.max())), min(lo, float(d.min()))
    return pa.reshape(-1).astype(np.float64), pd.reshape(-1).astype(np.float64), sb2, max(hi, -lo)


def _column_sums(a: np.ndarray, b: np.ndarray, post: Post | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-column sums (channels last) of two (rows, channels) arrays, a block of rows at a time."""
    rows, c = a.shape
    s = _scratch()
    ca, cd = np.zeros(c), np.zeros(c)
    sb2, hi, lo = 0.0, -np.inf, np.inf
    k = max(1, min(_ROWS, _CHUNK // c))
    for r0 in range(0, rows, k):
        xa, xb = a[r0:r0 + k], b[r0:r0 + k]
        if post is not None:
            xb = post(xb, out=s.get(1, xb.size, xb.dtype).reshape(xb.shape))
        d = np.subtract(xa, xb, out=s.get(0, xa.size, xa.dtype).reshape(xa.shape))
        ca += np.einsum("ij,ij->j", xa, xa)
        cd += np.einsum("ij,ij->j", d, d)
        fb = xb.reshape(-1)
        sb2 += float(np.dot(fb, fb))
        hi, lo = max(hi, float(d.max())), min(lo, float(d.min()))
    return ca, cd, sb2, max(hi, -lo)


class Accumulator:
    """Sums for one matched layer over every batch: memory is O(channels), not O(images)."""

    def __init__(self) -> None:
        self.sum_a2 = self.sum_b2 = self.sum_d2 = 0.0
        self.max_abs = 0.0
        self.ch_a2: np.ndarray | None = None
        self.ch_d2: np.ndarray | None = None

    @property
    def sum_ab(self) -> float:
        """``sum AB`` from ``2 AB = A^2 + B^2 - (A-B)^2``: its rounding is that of the three sums
        (~1e-7 relative of A^2 + B^2), what a float32 dot of A and B would have, without a pass."""
        return (self.sum_a2 + self.sum_b2 - self.sum_d2) / 2

    def update(self, a: np.ndarray, b: np.ndarray, axis: int | None, post: Post | None = None) -> None:
        a = np.asarray(a)
        b = np.asarray(b)
        if a.dtype != np.float32 or b.dtype != np.float32:  # fp16 / fp64 sides: one common dtype
            dt = np.float64 if np.float64 in (a.dtype, b.dtype) else np.float32
            if post is not None:
                b, post = post(np.array(b, np.float32)), None
            a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
        ch_a2, ch_d2, sb2, mx = channel_sums(a, b, axis, post)
        self.sum_a2 += float(ch_a2.sum())
        self.sum_d2 += float(ch_d2.sum())
        self.sum_b2 += sb2
        self.max_abs = max(self.max_abs, mx)
        self.ch_a2 = ch_a2 if self.ch_a2 is None else self.ch_a2 + ch_a2
        self.ch_d2 = ch_d2 if self.ch_d2 is None else self.ch_d2 + ch_d2

    def result(self, pair: Pair, rtol: float | None, min_sqnr: float | None) -> LayerResult:
        rel, cos, sqnr = layer_metrics(self.sum_a2, self.sum_b2, self.sum_ab, self.sum_d2)
        worst = -1
        if pair.axis is not None and self.ch_d2 is not None and self.ch_d2.size:
            # relative error per channel; channels with under 1% of the mean energy are judged
            # against that floor so float noise on a near-dead channel does not win
            floor = max(float(self.ch_a2.mean()) * 1e-2, 1e-30)
            worst = int(np.argmax(self.ch_d2 / np.maximum(self.ch_a2, floor)))
        ok = (rtol is None or rel <= rtol) and (min_sqnr is None or sqnr >= min_sqnr)
        return LayerResult(pair.name, pair.a_tensor, pair.b_tensor, rel, cos, sqnr, self.max_abs, worst,
                           pair.matched_by, bool(ok))


Job = tuple[Accumulator, np.ndarray, np.ndarray, "int | None", "Post | None"]


class SumPool:
    """The threads that sum one comparison's layers; closed (threads joined) when it ends.

    Why a pool per comparison, not per module: a module-level pool kept its threads alive for
    the life of the process. One thread per CPU, at most 4; serial on one CPU.
    """

    def __init__(self) -> None:
        self.workers = min(os.cpu_count() or 1, 4)
        self._pool: ThreadPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, in the pool's threads when there are two or more."""
        if self.workers < 2 or len(items) < 2:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnxact-compare")
        return list(self._pool.map(fn, items))

    def update(self, jobs: Sequence[Job]) -> None:
        """Each job's accumulator updated by one thread; batch order per layer, so the sums are the
        same as serially. Largest maps first, so one big layer does not run last alone."""
        order = sorted(jobs, key=lambda j: -j[1].size)
        self.map(lambda j: j[0].update(j[1], j[2], j[3], j[4]), order)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SumPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
