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

__all__ = ["LayerTop", "TopK", "ExemplarRunner", "positions", "sample_labels", "sample_keys", "key_batches", "scan_exemplars",
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

    def __init__(self, model: Any, layers: Sequence[LayerInfo], k: int, threads: int | None = None,
                 blocked: bool = True) -> None:
        """``blocked=False``: every position reduced in the graph (``exemplar_graph``'s exact path, the
        one used before the blocked path; ``bench.exemplars`` times both)."""
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
        proto, self.outputs = add_channel_argmax(model.proto, self.layers, model.elem_types, blocked=blocked)
        # PRIORITY_BASED order with the reductions placed deepest map first: each runs right after
        # the node that makes its map, while the map is still in cache (as the dead-filter scan does)
        self.session = model.build_session(proto, threads=threads, priority_order=True, what="the exemplar model")
        self._fetch = [o.name for o in proto.graph.output]
        self._threads = threads
        # the exact in-graph positions of the blocked layers, for tied maxima only (built on first need)
        self._exact: tuple[Any, list[str], dict[str, Any]] | None = None
        b = data.shape[0] if data.shape else None
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        # Batches run in chunks whose largest map stays in cache, as the dead-filter scan's do.
        from .stats_runner import cache_chunk

        self.chunk = 0 if self.fixed_batch else cache_chunk(self.layers)

    def _values(self, x: np.ndarray, session: Any = None, fetch: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        from .run import quiet_run_options, run_failure

        session, fetch = session or self.session, fetch or self._fetch
        try:
            return dict(zip(fetch, session.run(list(fetch), {self.input_name: x}, quiet_run_options())))
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors: input values that don't fit
            raise InputError(run_failure(self.model, {self.input_name: x}, e)) from None

    def _run_all(self, x: np.ndarray, *session: Any) -> dict[str, np.ndarray]:
        fb = self.fixed_batch
        n = int(x.shape[0])
        if not fb and self.chunk and n > self.chunk:
            parts = [self._values(x[i:i + self.chunk], *session) for i in range(0, n, self.chunk)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if not fb or fb == n:
            return self._values(x, *session)
        parts = []
        for i in range(0, n, fb):
            part = x[i:i + fb]
            if part.shape[0] < fb:  # a fixed batch of fb: fill with copies of the last image, dropped after
                part = np.concatenate([part, np.repeat(part[-1:], fb - part.shape[0], axis=0)])
            parts.append(self._values(part, *session))
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

    def run(self, x: np.ndarray, keys: Sequence[int]) -> TopK:
        """The top lists of one batch ``x`` whose samples have the dataset keys ``keys``."""
        n = int(x.shape[0])
        keys_arr = np.asarray(keys, np.int64)
        if keys_arr.shape != (n,):
            raise ValueError(f"{n} samples but {keys_arr.shape} keys")
        v = self._run_all(x)
        out: dict[str, LayerTop] = {}
        # blocked layer -> ([C, K] each entry's index in the batch, [C, K] True where its position needs
        # the exact graph)
        tied: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for o in self.outputs:
            raw = v[o.value].reshape(n, -1)  # [N, C]
            values = raw.T.astype(np.float64)  # [C, N]
            c = values.shape[0]
            mean = v[o.mean].reshape(n, c)
            mean_sum = float(mean.astype(np.float64).mean(axis=1).sum())
            keys_c = np.broadcast_to(keys_arr, (c, n))
            if not o.blocked:
                rows = v[o.row].reshape(n, c).T.astype(np.int32)
                cols = v[o.col].reshape(n, c).T.astype(np.int32)
                out[o.layer.name] = _select(values, keys_c, rows, cols, self.k, mean_sum)
                continue
            # select first (the rows slot carries each entry's index in the batch), then find the
            # positions of the K entries per channel only
            if v[o.rowmax].shape[3] != 1 or v[o.colmax].shape[2] != 1:  # the map is not the size the graph says
                raise ModelError(f"layer '{o.layer.name}' has maps of another size than {self.model.name} declares "
                                 f"({tuple(o.layer.shape or ())}); pass layers= to leave it out")
            batch_index = np.broadcast_to(np.arange(n, dtype=np.int32), (c, n))
            top = _select(values, keys_c, batch_index, batch_index, self.k, mean_sum)
            index = top.rows
            top.rows, top.cols, ties = positions(index, top.keys != EMPTY, raw, mean, v[o.rowmax].reshape(n, c, -1),
                                                 v[o.colmax].reshape(n, c, -1))
            if ties.any():
                tied[o.layer.name] = (index, ties)
            out[o.layer.name] = top
        if tied:
            self._exact_positions(x, out, tied)
        return TopK(self.k, out, {li.name: li for li in self.layers}, n, [])

    def _exact_positions(self, x: np.ndarray, out: dict[str, LayerTop],
                         tied: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Positions of the tied entries (several rows AND several columns hold the maximum) from
        the exact in-graph reductions, run on just the images that hold such an entry."""
        if self._exact is None:
            from .exemplar_graph import add_channel_argmax

            blocked = [o.layer for o in self.outputs if o.blocked]
            proto, outs = add_channel_argmax(self.model.proto, blocked, self.model.elem_types, blocked=False)
            session = self.model.build_session(proto, threads=self._threads, priority_order=True,
                                               what="the exemplar model")
            self._exact = (session, [o.name for o in proto.graph.output], {o.layer.name: o for o in outs})
        session, fetch, outs = self._exact
        need = np.unique(np.concatenate([index[t] for index, t in tied.values()]))
        v = self._run_all(np.ascontiguousarray(x[need]), session, fetch)
        where = np.full(int(x.shape[0]), -1, np.int64)
        where[need] = np.arange(need.size)
        m = need.size
        for name, (index, t) in tied.items():
            o = outs[name]
            rows, cols = v[o.row].reshape(m, -1), v[o.col].reshape(m, -1)
            ch, slot = np.nonzero(t)
            img = where[index[ch, slot]]
            out[name].rows[ch, slot] = rows[img, ch]
            out[name].cols[ch, slot] = cols[img, ch]


def positions(index: np.ndarray, valid: np.ndarray, value: np.ndarray, mean: np.ndarray, rowmax: np.ndarray,
              colmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, tied) of chosen entries, ``[C, K]`` each, from a blocked layer's reductions.

    ``index[c, j]``: the entry's image in the batch (``valid`` False for empty slots); ``value`` and
    ``mean`` ``[N, C]``, ``rowmax`` ``[N, C, H]``, ``colmax`` ``[N, C, W]``. The first maximum in
    reading order lies in the first row whose max is the channel's max. When that is the only such
    row, the first column whose max is the channel's max is the first in that row; when only one
    column holds it, every maximum is in that column and the first row is its row. Either way the
    position is exact. Only when several rows AND several columns hold the maximum (ReLU6
    saturation, quantized maps) is the position unknown: ``tied`` marks those entries, whose
    positions the exact graph gives. An all-zero map (max 0 and mean +0: a negative value would
    make the mean negative or -0) needs nothing: its first maximum is (0, 0). NaN maxima (never
    shown) get (0, 0)."""
    ch = np.arange(index.shape[0])[:, None]
    val = value[index, ch][..., None]  # [C, K, 1], in the map's own float type
    in_rows = rowmax[index, ch] == val  # [C, K, H]
    in_cols = colmax[index, ch] == val  # [C, K, W]
    mu = mean[index, ch]
    zero = (val[..., 0] == 0) & (mu == 0) & ~np.signbit(mu)
    tied = valid & (np.count_nonzero(in_rows, -1) > 1) & (np.count_nonzero(in_cols, -1) > 1) & ~zero
    rows = np.where(valid, in_rows.argmax(-1), 0).astype(np.int32)
    cols = np.where(valid, in_cols.argmax(-1), 0).astype(np.int32)
    return rows, cols, tied


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
