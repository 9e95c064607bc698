"""Memory-bounded capture: keep the captured arrays of a big batch (or a big model) under a byte bound.

Why its own stage: onnxruntime never reuses the memory of graph outputs, so one run over a
batch holds every promoted tensor of every sample at once. When those bytes exceed the bound,
the capture is split:

* **by samples** (one inference pass in all): run chunks of k samples, each chunk's outputs
  written straight from onnxruntime's buffers to ``.npy`` files, then returned as read-only
  ``np.memmap`` arrays. The process holds at most one chunk's outputs at a time.
* **by layer groups** (several passes): when even the smallest runnable chunk (one sample, or
  the model's fixed batch) captures more than the bound, the layers are split into groups that
  each fit, and each group is captured in its own pass, still streamed to disk.

Splitting by samples costs one pass and a sequential write of the captured bytes (page cache,
not process memory); a layer group costs a whole extra inference pass. So the planner takes
the fewest passes: samples first, groups only when a chunk cannot fit. The files live in a
temporary folder that is unlinked as soon as the arrays are mapped (POSIX keeps the data while
a mapping is open), so disk space returns when the arrays are released; the folder is also
removed at exit, or at once if the capture fails.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .activations import LayerInfo
from .errors import InputError, ModelError
from .model import _ONNX_TO_NP, Model, dtype_of
from .run import _fixed_batch, quiet_run_options, run_failure, run_model

__all__ = ["capture_bounded", "parse_bytes", "plan_capture", "CapturePlan"]

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_HEADER = 1024  # bytes reserved for the .npy header, written once the final shape is known
_TEMP_DIRS: list[Path] = []


def parse_bytes(value: int | float | str) -> int:
    """``"2GB"`` / ``"512MB"`` / ``"1.5 GiB"`` / ``2_000_000`` -> bytes (decimal units, KiB/MiB/GiB binary)."""
    if isinstance(value, bool):
        raise InputError(f"max_memory must be a number of bytes or a size like '2GB', not {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"cannot read max_memory '{value}'; write a size such as '2GB', '512MB' or '1.5GiB'")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise InputError(f"max_memory must be a number of bytes or a size like '2GB', not {type(value).__name__}")
    if not math.isfinite(n) or n <= 0:
        raise InputError(f"max_memory must be positive, got {value!r}")
    return int(n)


class CapturePlan:
    """How a bounded capture runs: ``groups`` of tensors, each captured in chunks of ``chunk`` samples."""

    def __init__(self, mode: str, chunk: int, groups: list[list[str]], per_sample: dict[str, int], total: int):
        self.mode = mode  # "memory" (one plain run), "samples" (one pass, chunked) or "groups" (several passes)
        self.chunk = chunk
        self.groups = groups
        self.per_sample = per_sample
        self.total = total

    @property
    def passes(self) -> int:
        return len(self.groups)

    def __repr__(self) -> str:
        return (f"CapturePlan(mode={self.mode!r}, chunk={self.chunk}, passes={self.passes}, "
                f"captured={self.total / 1e6:.1f} MB)")


# -- estimation ----------------------------------------------------------------------------------
def _static_per_sample(model: Model, layer: LayerInfo) -> int | None:
    shape = layer.shape
    if not shape or any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
        return None
    itemsize = dtype_of(_ONNX_TO_NP.get(model.elem_types.get(layer.tensor, 1), "float32")).itemsize
    return int(np.prod(shape[1:], dtype=np.int64)) * itemsize


def _probe_per_sample(model: Model, feeds: Mapping[str, np.ndarray], tensors: Sequence[str], step: int) -> dict[str, int]:
    """Run ``step`` samples and read each output's size from onnxruntime's buffers (nothing copied)."""
    sess = model.session(tuple(tensors))
    part = {k: v[:step] for k, v in feeds.items()}
    outs = _run_ort(model, sess, list(tensors), part)
    sizes = {}
    for t, ov in zip(tensors, outs):
        shape = ov.shape()
        per = int(ov.tensor_size_in_bytes())
        sizes[t] = per // max(shape[0], 1) if shape and shape[0] == step else per
    return sizes


def plan_capture(
    model: Model, feeds: Mapping[str, np.ndarray], tensors: Sequence[str], bound: int, batch_size: int | None = None
) -> CapturePlan:
    """Choose the cheapest way (fewest inference passes) to capture ``tensors`` within ``bound`` bytes."""
    n = next(iter(feeds.values())).shape[0] if feeds else 1
    fixed = _fixed_batch(model)
    min_step = fixed or 1
    by_tensor = {layer.tensor: layer for layer in model.all_layers + model.layers}
    per: dict[str, int] = {}
    unknown = []
    for t in tensors:
        layer = by_tensor.get(t)
        size = _static_per_sample(model, layer) if layer is not None else None
        if size is None:
            unknown.append(t)
        else:
            per[t] = size
    if unknown:
        probed = _probe_per_sample(model, feeds, unknown, min(min_step, n))
        per.update(probed)
    per_sample = sum(per.values())
    total = per_sample * n
    if total <= bound:
        return CapturePlan("memory", batch_size or n, [list(tensors)], per, total)
    if per_sample * min_step <= bound:
        chunk = max(min_step, bound // max(per_sample, 1))
        if fixed:
            chunk = fixed
        if batch_size:
            chunk = min(chunk, batch_size) if not fixed else fixed
        return CapturePlan("samples", min(chunk, n), [list(tensors)], per, total)
    # Even one runnable chunk is over the bound: split the layers into groups that each fit.
    groups: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for t in tensors:
        b = per[t] * min_step
        if cur and used + b > bound:
            groups.append(cur)
            cur, used = [], 0
        cur.append(t)
        used += b
    if cur:
        groups.append(cur)
    return CapturePlan("groups", min_step, groups, per, total)


# -- execution -----------------------------------------------------------------------------------
def _run_ort(model: Model, sess: Any, names: list[str], part: Mapping[str, np.ndarray]) -> list[Any]:
    import onnxruntime as ort

    try:
        inputs = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in part.items()}
        return list(sess.run_with_ort_values(names, inputs, quiet_run_options()))
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors: wrong input values or a model bug
        raise ModelError(run_failure(model, part, e)) from None


def _group_session(model: Model, group: Sequence[str]) -> Any:
    from .graph import expose_outputs

    return model.build_session(expose_outputs(model.proto, tuple(group), model.value_info), many_outputs=True)


def _view(ov: Any) -> np.ndarray:
    """A numpy view of an OrtValue's CPU buffer (no copy), written out before ``ov`` is dropped."""
    from .run import ort_value_to_numpy

    return ort_value_to_numpy(ov)


class _NpyWriter:
    """Appends chunks along axis 0 to a .npy file; the header is written last, with the final shape."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.f.write(b"\0" * _HEADER)
        self.rows = 0
        self.tail: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def append(self, arr: np.ndarray) -> None:
        if self.tail is None:
            self.tail, self.dtype = tuple(arr.shape[1:]), arr.dtype
        elif tuple(arr.shape[1:]) != self.tail:
            raise ModelError(f"a captured tensor changed shape between chunks ({self.tail} -> {arr.shape[1:]}); "
                             "capture it without max_memory")
        self.f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
        self.rows += arr.shape[0] if arr.ndim else 1

    def finish(self) -> tuple[int, ...]:
        shape = (self.rows, *self.tail) if self.tail is not None else ()
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype or np.dtype("float32")),
                       "fortran_order": False, "shape": shape}).encode("latin1")
        body = header.ljust(_HEADER - 10 - 1) + b"\n"
        if len(body) != _HEADER - 10:
            raise ModelError("a captured tensor has too many dimensions to stream to disk")
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)
        self.f.close()
        return shape


def _temp_dir() -> Path:
    base = os.environ.get("ONNXACT_TMPDIR") or None
    d = Path(tempfile.mkdtemp(prefix="onnxact-capture-", dir=base))
    if not _TEMP_DIRS:
        atexit.register(_cleanup_all)
    _TEMP_DIRS.append(d)
    return d


def _cleanup_all() -> None:
    while _TEMP_DIRS:
        shutil.rmtree(_TEMP_DIRS.pop(), ignore_errors=True)


def _open_and_release(path: Path) -> np.ndarray:
    arr = np.load(path, mmap_mode="r")
    if arr.size == 0:
        arr = np.array(arr)
    try:
        os.unlink(path)  # POSIX: the data lives on while the mapping does, and is freed with it
    except OSError:
        pass  # Windows: the folder is removed at exit instead
    return arr


def capture_bounded(
    model: Model,
    feeds: Mapping[str, np.ndarray],
    layers: Sequence[LayerInfo],
    max_memory: int | float | str,
    batch_size: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Capture ``layers`` keeping the captured arrays held in memory under ``max_memory`` bytes.

    Within the bound this is a plain capture (numpy arrays). Over it, arrays come back as
    read-only ``np.memmap`` views of temporary ``.npy`` files (see the module docstring).
    Returns ({tensor: array}, {model output: array}) like ``run_model``.
    """
    bound = parse_bytes(max_memory)
    tensors = list(dict.fromkeys(layer.tensor for layer in layers))
    plan = plan_capture(model, feeds, tensors, bound, batch_size)
    if plan.mode == "memory":
        return run_model(model, feeds, tensors, batch_size=batch_size)
    n = next(iter(feeds.values())).shape[0] if feeds else 1
    folder = _temp_dir()
    values: dict[str, np.ndarray] = {}
    own_parts: dict[str, list[np.ndarray]] = {}
    try:
        for gi, group in enumerate(plan.groups):
            # Group sessions are built for this call and dropped after their pass: a cached one
            # would keep its arena (sized for its outputs) alive, and those would add up.
            sess = model.session(tuple(group)) if plan.passes == 1 else _group_session(model, group)
            names = list(group) + [o for o in model.output_names if o not in group] if gi == 0 else list(group)
            writers = {t: _NpyWriter(folder / f"{k:04d}.npy") for k, t in enumerate(group, start=len(values))}
            for start in range(0, n, plan.chunk):
                part = {k: v[start:start + plan.chunk] for k, v in feeds.items()}
                outs = _run_ort(model, sess, names, part)
                for i, name in enumerate(names):
                    ov, outs[i] = outs[i], None  # drop each buffer as soon as it is written
                    if name in writers:
                        writers[name].append(_view(ov))
                        if gi == 0 and name in model.output_names:
                            own_parts.setdefault(name, []).append(ov.numpy())
                    else:
                        own_parts.setdefault(name, []).append(ov.numpy())
                    del ov
                del outs
            del sess
            for t, w in writers.items():
                w.finish()
                values[t] = _open_and_release(w.path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if os.name != "nt":
        shutil.rmtree(folder, ignore_errors=True)
        if folder in _TEMP_DIRS:
            _TEMP_DIRS.remove(folder)
    own = {k: (np.concatenate(v, axis=0) if len(v) > 1 and np.ndim(v[0]) else v[0]) for k, v in own_parts.items()}
    return values, own
