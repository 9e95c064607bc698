"""Where two models part ways, layer by layer: matching, streamed metrics, and the ``compare`` verb.

Why two layers, as Polygraphy splits ``Comparator.run`` from ``compare_accuracy``: running is
``get_activations`` (or a framework side from ``onnxact.converters.sides``), comparing is pure
numpy over two ``{layer: ndarray}`` mappings (``compare_activations``, which also takes folders
written by ``save_activations``). A dataset is streamed: each batch only adds to per-layer sums
(``sum A^2``, ``sum B^2``, ``sum (A-B)^2``, per-channel error, max |A-B|; ``sum AB`` follows), so
memory stays flat in the number of images. The sums take one pass over each map, in cache-sized
chunks, in threads that end with the comparison (``compare_sums.py``).

Layers are matched once (``plan``, in ``compare_match.py``): by the layer name where each side reads the layer (a conv
read after its BN/ReLU is read at its last fused layer; a framework side holds every module's own
output), then by name, by ONNX tensor name, then by position when both sides' remaining conv/pool
sequences have the same shapes; ``map={a: b}`` overrides. Layouts are reconciled (NHWC <-> NCHW)
by transposing B into A's layout. A pair whose shapes still differ is listed as unmatched with the
reason, never an exception halfway. Two ONNX sides whose capture sets differ (a QDQ graph from
``quantize_static`` stops at each conv's DequantizeLinear) are aligned first, by tensor: B is read
at A's tensors, or at their ``_DequantizeLinear_Output`` copies (``_OnnxSide.align``); such a copy
is read at its QuantizeLinear's float input and requantized in numpy, which keeps onnxruntime's
int8 fusions (``compare_qdq``).

A framework side's ``Activations`` carries ``raw_outputs = True`` (each key is that layer's own
output, nothing fused) and ``lookup_only`` (keys that can be matched but are not listed when
left unmatched: a torch ReLU module, a Keras Dropout).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .activations import Activations
from .compare_match import _DQ, Pair, _dequantized, _squeezed, plan
from .compare_report import Comparison, LayerResult, Unmatched
from .compare_sums import Accumulator, Job, Post, SumPool
from .errors import InputError

__all__ = ["compare", "compare_activations", "Comparison", "LayerResult", "Pair", "plan", "Accumulator"]

def _tolerance(rtol: float | None, min_sqnr: float | None) -> tuple[float | None, float | None]:
    if rtol is None and min_sqnr is None:
        rtol = 1e-3
    for name, v in (("rtol", rtol), ("min_sqnr", min_sqnr)):
        if v is not None and (not isinstance(v, (int, float)) or math.isnan(v)):
            raise InputError(f"{name} must be a number, not {v!r}")
    if rtol is not None and rtol < 0:
        raise InputError(f"rtol must be >= 0, not {rtol}")
    return rtol, min_sqnr


class _Session:
    """One comparison in progress: a plan made on the first batch, sums added per batch.

    A context manager: the threads that sum the layers (``SumPool``) end with it.
    """

    def __init__(self, rtol: float | None, min_sqnr: float | None, map: Mapping[str, str] | None,
                 keep_samples: bool, map_how: str = "map") -> None:
        self.rtol, self.min_sqnr = _tolerance(rtol, min_sqnr)
        self.map = dict(map or {})
        self.map_how = map_how
        self.keep = keep_samples
        self.pairs: list[Pair] | None = None
        self.un_a: list[Unmatched] = []
        self.un_b: list[Unmatched] = []
        self.acc: dict[str, Accumulator] = {}
        self.samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.sample_info: dict[str, Any] = {}
        self.images = 0
        self.pool = SumPool()

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()

    def add(self, a: Mapping[str, Any], b: Mapping[str, Any], post_b: Mapping[str, Post] | None = None) -> None:
        """Add one batch. ``post_b``: ``{B key: transform}`` for B's values still to be transformed
        elementwise (a QDQ side read before its QuantizeLinear), applied chunk by chunk as summed."""
        if self.pairs is None:
            self.pairs, self.un_a, self.un_b = plan(a, b, self.map, self.map_how)
            self.acc = {p.name: Accumulator() for p in self.pairs}
        infos = getattr(a, "layers", None) or {}
        n = 0
        jobs: list[Job] = []
        post_b = post_b or {}
        for p in list(self.pairs):
            va, vb = np.asarray(a[p.a_key]), np.asarray(b[p.b_key])
            if p.perm is not None and vb.ndim == len(p.perm):
                vb = vb.transpose(p.perm)
            if va.shape != vb.shape and _squeezed(va.shape) == _squeezed(vb.shape):
                vb = vb.reshape(va.shape)
            # images of another size (dynamic H/W) change the maps, not the per-channel sums; a
            # pair whose A and B shapes part on a later batch is listed, never an exception halfway
            channels = self.acc[p.name].ch_a2
            if va.shape != vb.shape or (channels is not None and p.axis is not None and va.ndim > p.axis
                                        and va.shape[p.axis] != channels.size):
                why = f"A's shape {va.shape} and B's {vb.shape} part on image {self.images + 1} and after"
                self.pairs.remove(p)
                del self.acc[p.name]
                self.un_a.append(Unmatched("a", p.a_key, why))
                self.un_b.append(Unmatched("b", p.b_key, why))
                continue
            post = post_b.get(p.b_key)
            jobs.append((self.acc[p.name], va, vb, p.axis, post))
            n = max(n, va.shape[0] if va.ndim else 1)
            if self.keep and p.name not in self.samples:
                sb = np.array(vb[:1])
                self.samples[p.name] = (np.array(va[:1]), sb if post is None else post(sb))
                self.sample_info[p.name] = infos.get(p.a_key)
        self.pool.update(jobs)
        self.images += n

    def report(self, a_name: str, b_name: str) -> Comparison:
        layers = [self.acc[p.name].result(p, self.rtol, self.min_sqnr) for p in self.pairs or []]
        return Comparison(a_name, b_name, self.images, layers, self.un_a, self.un_b, self.rtol, self.min_sqnr,
                          samples=self.samples, sample_info=self.sample_info)


def _as_mapping(x: Any) -> Mapping[str, Any]:
    if isinstance(x, (str, os.PathLike)):
        from .activations import load_activations

        return load_activations(x)
    if not isinstance(x, Mapping):
        raise InputError(f"compare_activations takes {{layer: array}} mappings or saved folders, not {type(x).__name__}")
    return x


def compare_activations(a: Any, b: Any, *, rtol: float | None = None, min_sqnr: float | None = None,
                        map: Mapping[str, str] | None = None, names: tuple[str, str] = ("A", "B"),
                        keep_samples: bool = False) -> Comparison:
    """Compare two ``{layer: ndarray}`` mappings (or folders written by ``save_activations``).

    Pure: no model is run. Layers are matched as described in the module docstring; a layer
    diverges when ``rel_l2 > rtol`` (default 1e-3) or, when given, ``sqnr_db < min_sqnr``.
    """
    with _Session(rtol, min_sqnr, map, keep_samples) as s:
        s.add(_as_mapping(a), _as_mapping(b))
    return s.report(*names)


# -- running the two sides -------------------------------------------------------------------------

#: read a QDQ side's DequantizeLinear outputs at their QuantizeLinear inputs and requantize in numpy
#: (onnxact.compare_qdq); False reads the DQ outputs themselves (the reference the tests check against)
_REQUANT = True

def _is_framework(obj: Any, kind: str) -> bool:
    mods = [c.__module__ or "" for c in type(obj).__mro__]
    if kind == "torch":
        return any(m.startswith("torch.nn") for m in mods)
    return any(m.split(".")[0] in ("keras", "tf_keras") for m in mods) and hasattr(obj, "layers")


class _OnnxSide:
    def __init__(self, model: Any, layer_names: Any, providers: Any, threads: int | None) -> None:
        from .model import load

        self.model = load(model, providers=providers, threads=threads)
        self.layer_names = layer_names
        self.name = self.model.name
        self.requant: dict[str, Any] = {}  # {DQ tensor: Requant}, set by align (onnxact.compare_qdq)

    def align(self, other: _OnnxSide) -> dict[str, str] | None:
        """Read ``other`` where this side reads its layers, when its own capture set does not.

        Why: in a QDQ graph made by ``quantize_static`` every tensor T is followed by Q/DQ, so the
        capture set stops at a conv's dequantized output instead of after its BN / activation,
        and the sets differ. Both graphs still hold T (or ``T_DequantizeLinear_Output``): read
        B there. Returns ``{A key: B tensor}`` and narrows B's capture to those tensors, or None
        when B's own set already lines up.
        """
        mine = self.model.select(self.layer_names)
        theirs = other.model.select(other.layer_names)
        # by tensor, not by layer name: a QDQ graph keeps the scope names, so its "block0" (the
        # conv's DQ output) would pair with A's "block0" read after BN + ReLU, another tensor
        # (A the QDQ side, B the float one: A's DQ copy pairs with B's own tensor)
        keys = {_dequantized(la.tensor) for la in theirs}
        if all(_dequantized(la.tensor) in keys for la in mine):
            return None
        tensors = {la.tensor for la in other.model.all_layers}
        picks = {}
        for la in mine:
            t = next((t for t in (la.tensor + _DQ, la.tensor, _dequantized(la.tensor)) if t in tensors), None)
            if t is not None:
                picks[la.name] = t
        if len(picks) <= sum(_dequantized(la.tensor) in keys for la in mine):
            return None  # no better than the capture sets as they are
        other.layer_names = list(picks.values())
        if _REQUANT and (other.model.source_layout or "").upper() not in ("NHWC", "NWC", "NDHWC"):
            from .compare_qdq import requant_sources

            other.requant = requant_sources(other.model.proto, [t for t in picks.values() if t.endswith(_DQ)])
        return picks

    def capture(self, feeds: Any) -> tuple[Any, dict[str, Post]]:
        """This side's layers on ``feeds``, and ``{layer: transform}`` still to apply to some of them.

        A QDQ side (``requant`` set by ``align``) reads each DQ output's float source (fusions
        kept) and returns it untouched under the DQ layer's name, with its ``Requant.apply``: the
        sums requantize it chunk by chunk in cache (``compare_sums``), never a whole-map pass.
        """
        from .capture import get_activations

        if not self.requant:
            return get_activations(self.model, feeds, self.layer_names, layout="source"), {}
        layers = self.model.select(self.layer_names)
        reads = list(dict.fromkeys(self.requant[la.tensor].source if la.tensor in self.requant else la.tensor
                                   for la in layers))
        src = get_activations(self.model, feeds, reads, output_format="full")
        data, infos, post = {}, {}, {}
        for la in layers:
            r = self.requant.get(la.tensor)
            arr = src[r.source] if r is not None else src[la.tensor]
            data[la.name], infos[la.name] = arr, self.model.shaped(la, arr.shape)
            if r is not None:
                post[la.name] = r.apply
        return Activations(data, infos), post


def _side(x: Any, layer_names: Any, providers: Any, threads: int | None) -> Any:
    if _is_framework(x, "torch"):
        from .converters.sides import TorchSide

        return TorchSide(x)
    if _is_framework(x, "keras"):
        from .converters.sides import KerasSide

        return KerasSide(x)
    return _OnnxSide(x, layer_names, providers, threads)


def _input_feeds(feeder: _OnnxSide, other: Any) -> Any:
    """A function turning the feeder's feeds into the other side's (renamed, cast), or an InputError."""
    if not isinstance(other, _OnnxSide):
        return lambda feeds: next(iter(feeds.values())) if len(feeds) == 1 else feeds
    ia, ib = feeder.model.inputs, other.model.inputs

    def desc(inputs: Any) -> str:
        return ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in inputs) or "no inputs"

    def clash(s: tuple[Any, ...], t: tuple[Any, ...]) -> bool:
        return len(s) != len(t) or any(isinstance(p, int) and isinstance(q, int) and p > 0 and q > 0 and p != q
                                       for p, q in zip(s, t))

    if len(ia) != len(ib) or (len(ia) > 1 and {i.name for i in ia} != {i.name for i in ib}):
        raise InputError(f"A and B take different inputs: A has {desc(ia)}; B has {desc(ib)}; "
                         "compare models with the same inputs")
    rename = {i.name: j.name for i, j in zip(ia, ib)} if len(ia) == 1 else {i.name: i.name for i in ia}
    jb = {j.name: j for j in ib}
    for i in ia:
        j = jb[rename[i.name]]
        if clash(tuple(i.shape), tuple(j.shape)):
            raise InputError(f"A's input {i.name} has shape {list(i.shape)} but B's input {j.name} has "
                             f"{list(j.shape)}; compare models that take the same input shape and layout")

    def convert(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in feeds.items():
            j = jb[rename[k]]
            if j.dtype != str(v.dtype) and np.issubdtype(v.dtype, np.floating) and j.dtype.startswith("float"):
                v = v.astype(j.dtype)
            out[j.name] = v
        return out

    return convert


def _batches(feeder: _OnnxSide | None, x: Any, batch_size: int, strict: bool, failed: list[tuple[str, str]],
             preprocess_kw: dict[str, Any]) -> Iterator[Any]:
    """Yield feeds ({input: array}, or an array when no ONNX side) batch by batch."""
    from .run import _is_image_ref

    if isinstance(x, Mapping):
        if feeder is None:
            raise InputError("two framework sides take x as one array (their example input), not {name: array}")
        from .run import prepare_feeds

        yield prepare_feeds(feeder.model, x, **preprocess_kw)
        return
    if isinstance(x, np.ndarray) or (not _is_image_ref(x) and hasattr(x, "__array__")):
        arr = np.asarray(x)
        if feeder is not None:
            from .run import prepare_feeds

            name = feeder.model.inputs[0].name if feeder.model.inputs else None
            rank = len(feeder.model.inputs[0].shape) if name else 0
            if rank and arr.ndim == rank - 1:
                arr = arr[None]
            for s in range(0, max(arr.shape[0], 1), batch_size):
                yield prepare_feeds(feeder.model, arr[s:s + batch_size])
            return
        for s in range(0, max(arr.shape[0], 1), batch_size):
            yield {"x": arr[s:s + batch_size]}
        return
    if feeder is None:
        raise InputError("neither side is an ONNX model, so images cannot be preprocessed here; pass x as an "
                         "array (the framework model's example input)")
    if hasattr(x, "mode") and hasattr(x, "convert"):  # a PIL image
        from .run import prepare_feeds

        yield prepare_feeds(feeder.model, x, **preprocess_kw)
        return
    from .feeds import scan_input
    from .images import expand_sources, iter_batches

    items = expand_sources(x)
    name = scan_input(feeder.model, []).name
    for batch in iter_batches(feeder.model, items, batch_size=batch_size, strict=strict, input_name=name,
                              **preprocess_kw):
        failed.extend(batch.failed)
        if batch.x is not None:
            yield {name: batch.x}


def compare(a: Any, b: Any, x: Any, *, rtol: float | None = None, min_sqnr: float | None = None,
            map: Mapping[str, str] | None = None, layer_names: Sequence[str] | None = None, batch_size: int = 8,
            providers: Any = None, providers_b: Any = None, threads: int | None = None, strict: bool = False,
            keep_samples: bool = False, show_progress: bool = False, **preprocess_kw: Any) -> Comparison:
    """Run A and B on ``x`` and compare them layer by layer; returns a ``Comparison``.

    Each side is an ONNX model (path, bytes, ModelProto or ``Model``, run with ``providers``; B
    with ``providers_b`` when given, so "CPU vs CUDA" of one file is a pair), a ``torch.nn.Module``
    or a ``keras.Model`` (torch / Keras load only then). ``x``: an array (a batch, streamed in
    ``batch_size`` slices), ``{input: array}``, or images (a file, folder, glob, list file, or a
    list of them), preprocessed for the first ONNX side; every batch only adds to per-layer sums.
    ``keep_samples`` keeps the first sample of every matched layer for ``to_html``.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, not {batch_size}")
    if x is None:
        raise InputError("no input given: pass images, an array or {input name: array} "
                         "(a torch or Keras side needs an example input)")
    sa = _side(a, layer_names, providers, threads)
    sb = _side(b, layer_names, providers if providers_b is None else providers_b, threads)
    feeder = sa if isinstance(sa, _OnnxSide) else sb if isinstance(sb, _OnnxSide) else None
    to_a = (lambda f: f) if feeder is sa else _input_feeds(feeder, sa) if feeder else (lambda f: f["x"])
    to_b = (lambda f: f) if feeder is sb else _input_feeds(feeder, sb) if feeder else (lambda f: f["x"])
    how = "map"
    if not map and isinstance(sa, _OnnxSide) and isinstance(sb, _OnnxSide):
        picks = sa.align(sb)
        if picks:
            map, how = {k: sb.model.layer(t).name for k, t in picks.items()}, "tensor"
    s = _Session(rtol, min_sqnr, map, keep_samples, how)
    failed: list[tuple[str, str]] = []
    batches: Any = _batches(feeder, x, batch_size, strict, failed, preprocess_kw)
    if show_progress:
        from .progress import progress

        batches = progress(batches, desc="compare")
    with s:
        for feeds in batches:
            # only B is ever read before its QuantizeLinear (``sa.align(sb)``), so A has no transforms
            acts_a = sa.capture(to_a(feeds))[0] if isinstance(sa, _OnnxSide) else sa.capture(to_a(feeds))
            acts_b, post_b = sb.capture(to_b(feeds)) if isinstance(sb, _OnnxSide) else (sb.capture(to_b(feeds)), {})
            s.add(acts_a, acts_b, post_b)
            # before the next batch runs: onnxruntime's arena then reuses these maps' memory
            del acts_a, acts_b
    if s.pairs is None:
        why = f" (first: {failed[0][0]}: {failed[0][1]})" if failed else ""
        raise InputError(f"no image could be read, nothing was compared{why}")
    report = s.report(sa.name, sb.name)
    report.failed = failed
    return report
