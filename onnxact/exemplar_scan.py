"""The exemplar scan: per channel, the top K images by the channel's maximum, in bounded memory.

Why a mergeable state of fixed size: a scan of 100,000 images must hold no more than K entries
per channel, and the Ray engine must give exactly the local result. :class:`TopK` keeps, per
layer, four ``[C, K]`` arrays (value, sample key, row, column) plus the running sum of the
per-image layer means; merging two states concatenates and keeps the first K of a TOTAL order
(value descending, then the sample key ascending), so any split of the dataset, merged in any
order, gives the same lists. A sample's key is its rank among all samples sorted by
(image path, position in the dataset): ties in value are broken by image path.

The per-image maxima and positions come from the in-graph reductions of
:mod:`onnxact.exemplar_graph`; one :class:`ExemplarRunner` holds one onnxruntime session of
that derived model (one per Ray actor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import LayerInfo
from .errors import InputError, ModelError

__all__ = ["LayerTop", "TopK", "ExemplarRunner", "sample_labels", "sample_keys", "key_batches", "scan_exemplars",
           "EMPTY"]

#: The key of an empty slot: sorts after every sample.
EMPTY = np.iinfo(np.int64).max


@dataclass
class LayerTop:
    """One layer's top-K lists, one row per channel (``values`` -inf and ``keys`` EMPTY where empty)."""

    values: np.ndarray  # [C, K] float64
    keys: np.ndarray  # [C, K] int64
    rows: np.ndarray  # [C, K] int32
    cols: np.ndarray  # [C, K] int32
    mean_sum: float = 0.0  # sum over images of each image's mean over the map (all channels)

    @classmethod
    def empty(cls, channels: int, k: int) -> LayerTop:
        return cls(np.full((channels, k), -np.inf), np.full((channels, k), EMPTY, np.int64),
                   np.zeros((channels, k), np.int32), np.zeros((channels, k), np.int32))

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def merge(self, other: LayerTop, k: int | None = None) -> LayerTop:
        """The first ``k`` of both lists, value descending then key ascending (a total order: the
        result does not depend on how the dataset was split)."""
        k = k or max(self.k, other.k)
        if other.values.shape[0] != self.values.shape[0]:
            raise ValueError(f"cannot merge top lists of {self.values.shape[0]} and {other.values.shape[0]} channels")
        return _select(np.concatenate([self.values, other.values], 1), np.concatenate([self.keys, other.keys], 1),
                       np.concatenate([self.rows, other.rows], 1), np.concatenate([self.cols, other.cols], 1), k,
                       self.mean_sum + other.mean_sum)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.keys.nbytes + self.rows.nbytes + self.cols.nbytes)


def _select(values: np.ndarray, keys: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int,
            mean_sum: float) -> LayerTop:
    # NaN maxima sort after every number (numpy sorts NaN last), so they are never kept over one
    order = np.lexsort((keys, -values), axis=-1)[:, :k]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    out = LayerTop(take(values), take(keys), take(rows), take(cols), mean_sum)
    if out.k < k:  # fewer candidates than K so far: pad with empty slots
        pad = k - out.k
        c = values.shape[0]
        out = LayerTop(np.concatenate([out.values, np.full((c, pad), -np.inf)], 1),
                       np.concatenate([out.keys, np.full((c, pad), EMPTY, np.int64)], 1),
                       np.concatenate([out.rows, np.zeros((c, pad), np.int32)], 1),
                       np.concatenate([out.cols, np.zeros((c, pad), np.int32)], 1), mean_sum)
    return out


@dataclass
class TopK:
    """A scan's state: ``{layer name: LayerTop}``, the images seen and those that failed. Mergeable."""

    k: int
    layers: dict[str, LayerTop]
    infos: dict[str, LayerInfo]
    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def merge(self, other: TopK) -> TopK:
        if list(self.layers) != list(other.layers) or self.k != other.k:
            raise ValueError("cannot merge exemplar scans of different layers or K")
        return TopK(self.k, {n: t.merge(other.layers[n], self.k) for n, t in self.layers.items()}, dict(self.infos),
                    self.images + other.images, self.failed + other.failed)

    @property
    def nbytes(self) -> int:
        """Bytes of the top lists: K entries per channel, whatever the number of images."""
        return sum(t.nbytes for t in self.layers.values())


class ExemplarRunner:
    """One onnxruntime session of the exemplar model; ``run(x, keys)`` gives one batch's ``TopK``."""

    def __init__(self, model: Any, layers: Sequence[LayerInfo], k: int, threads: int | None = None) -> None:
        from .exemplar_graph import add_channel_argmax
        from .feeds import scan_input

        if k < 1:
            raise InputError(f"top must be at least 1, not {k}")
        self.model, self.k, self.layers = model, int(k), list(layers)
        if not self.layers:
            raise ModelError(f"{model.name} has no layers to find exemplars for")
        data = scan_input(model, [])
        others = [i.name for i in model.inputs if i.name != data.name]
        if others:
            raise InputError(f"{model.name} has other inputs than the images ({', '.join(others)}); "
                             "exemplars need a model with one image input")
        self.input_name = data.name
        proto, self.outputs = add_channel_argmax(model.proto, self.layers, model.elem_types)
        # PRIORITY_BASED order with the reductions placed deepest map first: each runs right after
        # the node that makes its map, while the map is still in cache (as the dead-filter scan does)
        self.session = model.build_session(proto, threads=threads, priority_order=True, what="the exemplar model")
        self._fetch = [o.name for o in proto.graph.output]
        b = data.shape[0] if data.shape else None
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        # Batches run in chunks whose largest map stays in cache while its reductions read it, as
        # the dead-filter scan's StatsRunner does (the same bound).
        from .stats_runner import StatsRunner, _map_bytes

        biggest = max((_map_bytes(layer) for layer in self.layers), default=0)
        chunk = StatsRunner.CHUNK_BYTES // biggest if biggest else 0
        self.chunk = 0 if self.fixed_batch or chunk < 2 else int(chunk)

    def _values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from .run import quiet_run_options, run_failure

        try:
            return dict(zip(self._fetch, self.session.run(self._fetch, {self.input_name: x}, quiet_run_options())))
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors: input values that don't fit
            raise InputError(run_failure(self.model, {self.input_name: x}, e)) from None

    def _run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        fb = self.fixed_batch
        n = int(x.shape[0])
        if not fb and self.chunk and n > self.chunk:
            parts = [self._values(x[i:i + self.chunk]) for i in range(0, n, self.chunk)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if not fb or fb == n:
            return self._values(x)
        parts = []
        for i in range(0, n, fb):
            part = x[i:i + fb]
            if part.shape[0] < fb:  # a fixed batch of fb: fill with copies of the last image, dropped after
                part = np.concatenate([part, np.repeat(part[-1:], fb - part.shape[0], axis=0)])
            parts.append(self._values(part))
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

    def run(self, x: np.ndarray, keys: Sequence[int]) -> TopK:
        """The top lists of one batch ``x`` whose samples have the dataset keys ``keys``."""
        n = int(x.shape[0])
        keys_arr = np.asarray(keys, np.int64)
        if keys_arr.shape != (n,):
            raise ValueError(f"{n} samples but {keys_arr.shape} keys")
        v = self._run_all(x)
        out: dict[str, LayerTop] = {}
        for o in self.outputs:
            values = v[o.value].reshape(n, -1).T.astype(np.float64)  # [C, N]
            c = values.shape[0]
            rows = v[o.row].reshape(n, c).T.astype(np.int32)
            cols = v[o.col].reshape(n, c).T.astype(np.int32)
            mean_sum = float(v[o.mean].reshape(n, c).astype(np.float64).mean(axis=1).sum())
            out[o.layer.name] = _select(values, np.broadcast_to(keys_arr, (c, n)), rows, cols, self.k, mean_sum)
        return TopK(self.k, out, {li.name: li for li in self.layers}, n, [])


# -- samples and their keys -------------------------------------------------------------------------
def sample_labels(items: Sequence[Any]) -> list[str]:
    """One label per sample in dataset order: the image path as given, ``array[i]`` for the i-th
    sample of an in-memory array, ``FILE.npy[i]`` / ``FILE.npz:KEY[i]`` for array files."""
    from .images import ArrayRef

    out: list[str] = []
    arrays = 0
    for it in items:
        if isinstance(it, ArrayRef):
            n = len(it)
            if it.array is not None:
                out.extend(f"array[{arrays + i}]" for i in range(n))
                arrays += n
            else:
                base = it.label + (f":{it.key}" if it.key else "")
                out.extend(f"{base}[{i}]" for i in range(n))
        else:
            out.append(str(it))
    return out


def sample_keys(labels: Sequence[str]) -> np.ndarray:
    """Each sample's key: its rank when sorted by (label, position), so ties go to the path first."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    keys = np.empty(len(labels), np.int64)
    keys[np.asarray(order, np.int64)] = np.arange(len(labels), dtype=np.int64)
    return keys


@dataclass
class KeyedBatch:
    x: np.ndarray | None
    keys: list[int]
    failed: list[tuple[str, str]]
    seen: int  # samples this batch accounts for (read or failed)


def key_batches(model: Any, items: Sequence[Any], keys: Sequence[int], batch_size: int, strict: bool,
                **preprocess_kw: Any) -> Iterator[KeyedBatch]:
    """``images.iter_batches`` over ``items`` whose samples have ``keys`` (in order), each batch with
    its samples' keys: the same chunks and pixels as the dead-filter scan."""
    from .images import ArrayRef, iter_batches

    pos = 0
    i = 0
    while i < len(items):
        if isinstance(items[i], ArrayRef):
            ref = items[i]
            n = len(ref)
            mine = list(keys[pos:pos + n])
            done = 0
            for b in iter_batches(model, [ref], batch_size=batch_size, strict=strict, **preprocess_kw):
                yield KeyedBatch(b.x, mine[done:done + b.n], [], b.n)
                done += b.n
            pos += n
            i += 1
            continue
        j = i
        while j < len(items) and not isinstance(items[j], ArrayRef):
            j += 1
        run = [str(p) for p in items[i:j]]
        key_of: dict[str, list[int]] = {}
        for p, kk in zip(run, keys[pos:pos + len(run)]):
            key_of.setdefault(p, []).append(int(kk))
        for b in iter_batches(model, run, batch_size=batch_size, strict=strict, **preprocess_kw):
            yield KeyedBatch(b.x, [key_of[p].pop(0) if len(key_of[p]) > 1 else key_of[p][0] for p in b.paths],
                             b.failed, b.n + len(b.failed))
        pos += len(run)
        i = j


def scan_exemplars(model: Any, items: Sequence[Any], keys: Sequence[int], layers: Sequence[LayerInfo], k: int, *,
                   batch_size: int = 32, strict: bool = False, progress: Callable[[int, int], Any] | None = None,
                   total: int | None = None, threads: int | None = None, **preprocess_kw: Any) -> TopK:
    """The local engine: every batch through one ``ExemplarRunner``, states merged in batch order."""
    runner = ExemplarRunner(model, layers, k, threads=threads)
    result: TopK | None = None
    failed: list[tuple[str, str]] = []
    done = 0
    total = total if total is not None else len(keys)
    for b in key_batches(model, items, keys, batch_size, strict, input_name=runner.input_name, **preprocess_kw):
        failed += b.failed
        if b.x is not None and b.keys:
            part = runner.run(b.x, b.keys)
            result = part if result is None else result.merge(part)
        done += b.seen
        if progress is not None:
            progress(done, total)
    if result is None:
        raise InputError(f"none of the {len(failed)} images could be read; first: {failed[0][1] if failed else '-'}")
    result.failed = failed
    return result
