"""Model inputs that are not (only) an image: check, cast, zero-fill, broadcast, and ``NAME=...`` specs.

Why its own stage: audio models, detectors with ``im_info`` / ``orig_target_sizes``, models with a
scalar ``sample_rate`` or ``gain``... take several inputs, and each one must be checked against
the model (dtype, rank, fixed dims) with a one-line error naming the input, expected and got. The
same rules serve ``prepare_feeds`` (Python dicts), the CLI's ``--input NAME=FILE.npy|VALUE`` and
the dataset scan, which feeds the images to one input and the same values to the others.

Batch axis: an input is *batched* when its first axis is dynamic, or when it has rank >= 2
(``[1, 3, 224, 224]``); a fixed rank-0/1 input (``sample_rate`` ``[]``, ``gain`` ``[1]``) is not.
Batched inputs given with one sample are repeated to the batch of the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .activations import InputInfo
from .errors import InputError, MissingInputError
from .images import ARRAY_SUFFIXES, IMAGE_SUFFIXES

__all__ = [
    "MissingInputError", "input_info", "is_batched", "check_array", "zero_feed", "fill_missing", "describe_input",
    "broadcast_batch", "batch_size_of", "image_input", "scan_input",
    "parse_input_spec", "read_input_value", "input_specs", "spec_paths",
]

_INT_KINDS = "iu"


def input_info(model: Any, name: str) -> InputInfo:
    """The model's input ``name``, or an ``InputError`` that lists the input names."""
    for i in model.inputs:
        if i.name == name:
            return i
    raise _no_such_input(model, name)


def _no_such_input(model: Any, name: str) -> InputError:
    names = ", ".join(i.name for i in model.inputs)
    if not names:
        return InputError(f"the model has no input '{name}'; it has no inputs at all")
    return InputError(f"the model has no input '{name}'; its inputs are: {names}")


def _rank_known(model: Any, name: str) -> bool:
    """False when the graph declares no shape at all for input ``name`` (``shape == ()`` is then unknown)."""
    proto = getattr(model, "proto", None)
    if proto is None:
        return True
    for v in proto.graph.input:
        if v.name == name:
            return v.type.tensor_type.HasField("shape")
    return True


def _fixed(d: Any) -> bool:
    return isinstance(d, int) and d > 0


def is_batched(info: InputInfo) -> bool:
    """Does axis 0 of this input count samples (see the module docstring)?"""
    shape = info.shape
    return bool(shape) and (not _fixed(shape[0]) or len(shape) >= 2)


def _target_dtype(info: InputInfo) -> np.dtype:
    return np.dtype(info.dtype if info.dtype not in ("unknown", "bfloat16", "str") else "float32")


def _cast(name: str, a: np.ndarray, target: np.dtype) -> np.ndarray:
    """Cast ``a`` to ``target`` when no value changes kind or range; else a one-line ``InputError``."""
    if a.dtype == target:
        return a
    src = a.dtype
    if src.kind not in "biuf":
        raise InputError(f"input '{name}' expects {target} values, got {src} (not a real number type)")
    if target.kind == "b":
        if src.kind != "b" and a.size and not np.isin(a, (0, 1)).all():
            raise InputError(f"input '{name}' expects bool values, got {src} values other than 0 and 1")
    elif target.kind in _INT_KINDS:
        if src.kind == "f":
            raise InputError(f"input '{name}' expects {target} values, got {src}; give whole numbers of type {target}")
        if a.size and src.kind in _INT_KINDS and not np.can_cast(src, target):
            lo, hi = np.iinfo(target).min, np.iinfo(target).max
            if int(a.min()) < lo or int(a.max()) > hi:
                raise InputError(f"input '{name}' expects {target} values ({lo}..{hi}), got {src} values "
                                 f"from {int(a.min())} to {int(a.max())}")
    return a.astype(target)


def check_array(model: Any, name: str, arr: Any) -> np.ndarray:
    """``arr`` checked against input ``name`` (rank, fixed dims, dtype) and cast to its dtype.

    A sample without its batch axis gets one (``[1, T]`` for a ``[N, 1, T]`` input). Axis 0 of a
    batched input may hold any number of samples (batches are split for fixed-batch models).
    Float values for an integer input, or values out of the integer type's range, are refused,
    never truncated.
    """
    info = input_info(model, name)
    try:
        a = np.asarray(arr)
    except Exception:  # noqa: BLE001
        raise InputError(f"input '{name}' is not array-like") from None
    if a.dtype == object:
        raise InputError(f"input '{name}' is not a numeric array")
    want = len(info.shape)
    known = want > 0 or _rank_known(model, name)
    if want and a.ndim == want - 1 and is_batched(info):
        a = a[None]  # a single sample without its batch axis
    elif want == 1 and a.ndim == 0:
        a = a.reshape(1)  # a scalar for a one-element input such as gain [1]
    if known and a.ndim != want:
        raise InputError(
            f"input '{name}' expects rank {want} (shape {_fmt(info.shape)}), got rank {a.ndim} (shape {list(a.shape)})"
        )
    first = 1 if is_batched(info) else 0
    for axis in range(first, min(want, a.ndim)):
        exp = info.shape[axis]
        if _fixed(exp) and a.shape[axis] != exp:
            raise InputError(
                f"input '{name}' expects shape {_fmt(info.shape)}, got {list(a.shape)} (axis {axis} must be {exp})"
            )
    a = _cast(name, a, _target_dtype(info))
    return a if a.flags.c_contiguous else a.copy()  # (np.ascontiguousarray would make a scalar 1-D)


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def zero_feed(model: Any, info: InputInfo, batch: int = 1) -> np.ndarray | None:
    """Zeros for an input whose shape is known (a dynamic batch axis takes ``batch``); None otherwise."""
    if info.dtype in ("str", "unknown") or not _rank_known(model, info.name):
        return None
    dims = list(info.shape)
    if dims and not _fixed(dims[0]) and len(dims) >= 2:
        dims[0] = batch
    if not all(_fixed(d) for d in dims):
        return None
    return np.zeros(dims, _target_dtype(info))


def fill_missing(model: Any, feeds: Mapping[str, Any], batch: int = 1,
                 exclude: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """``feeds`` plus zeros for every input not in it (nor in ``exclude``) whose shape is known.

    Returns (feeds, names zero-filled). Raises ``MissingInputError`` naming the inputs that are
    missing and cannot be filled (a dynamic dim other than the batch, or an unknown shape).
    """
    out = dict(feeds)
    filled: list[str] = []
    missing: list[InputInfo] = []
    for info in model.inputs:
        if info.name in out or info.name in exclude:
            continue
        z = zero_feed(model, info, batch)
        if z is None:
            missing.append(info)
        else:
            out[info.name] = z
            filled.append(info.name)
    if missing:
        what = ", ".join(describe_input(i) for i in missing)
        raise MissingInputError(
            f"input{'s' if len(missing) > 1 else ''} {what} missing (no fixed shape to fill with zeros); "
            f"pass {{name: array}} for every input of the model", missing)
    return out, filled


def describe_input(info: InputInfo) -> str:
    """``waveform [?, 1, T] float32``: how messages name an input."""
    return f"{info.name} {_fmt(info.shape)} {info.dtype}"


def batch_size_of(model: Any, feeds: Mapping[str, np.ndarray]) -> int:
    """The number of samples in ``feeds``: the largest axis 0 over the batched inputs (1 when none)."""
    infos = {i.name: i for i in model.inputs}
    sizes = [int(v.shape[0]) for k, v in feeds.items() if k in infos and is_batched(infos[k]) and np.ndim(v)]
    return max(sizes, default=1)


def broadcast_batch(model: Any, feeds: Mapping[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
    """Repeat batched inputs that hold one sample to ``batch`` (default: the largest batch given).

    Why: an image batch of 8 and a ``[1, 2]`` ``im_info`` given once must reach onnxruntime as 8 and 8.
    Other batch sizes that differ are an ``InputError`` naming both inputs.
    """
    infos = {i.name: i for i in model.inputs}
    n = batch or batch_size_of(model, feeds)
    out: dict[str, np.ndarray] = {}
    ref: str | None = None
    for k, v in feeds.items():
        info = infos.get(k)
        if info is None or not is_batched(info) or not np.ndim(v) or v.shape[0] == n:
            ref = ref or (k if info is not None and is_batched(info) and np.ndim(v) else None)
            out[k] = v
        elif v.shape[0] == 1:
            out[k] = np.ascontiguousarray(np.broadcast_to(v, (n, *v.shape[1:])))
        else:
            other = f"'{ref}' has {n}" if ref else f"the batch is {n}"
            raise InputError(f"input '{k}' has {v.shape[0]} samples but {other}; give 1 (used for every sample) or {n}")
    return out


def _picture(info: InputInfo) -> bool:
    """``is_image``, less per-channel tensors such as a ``[N, 3, 1, 1]`` mean or shift (1x1 "images")."""
    if not info.is_image:
        return False
    hw = info.shape[1:3] if info.layout == "NHWC" else info.shape[2:4]
    return not all(_fixed(d) and d == 1 for d in hw)


def image_input(model: Any, exclude: Sequence[str] = ()) -> InputInfo | None:
    """The one image input (4-D, 1-4 channels) not in ``exclude``; None when there is none.

    Raises ``InputError`` when several remain, since a positional image would then be ambiguous.
    """
    found = [i for i in model.inputs if _picture(i) and i.name not in exclude]
    if len(found) > 1:
        names = ", ".join(i.name for i in found)
        raise InputError(f"the model has {len(found)} image inputs ({names}); say which image feeds which "
                         "with --input NAME=IMAGE (or {name: path} in Python)")
    return found[0] if found else None


def scan_input(model: Any, given: Sequence[str] = ()) -> InputInfo:
    """The input that a dataset's images (or arrays) feed when the inputs ``given`` have fixed values.

    The one input not given; among several, the one image input (the others then need values).
    """
    if not model.inputs:
        raise InputError(f"{model.name} has no inputs (all its values are constants): there is no dataset to scan")
    rest = [i for i in model.inputs if i.name not in given]
    if len(rest) == 1:
        return rest[0]
    if not rest:
        raise InputError(f"every input of {model.name} is given a fixed value; leave out the one the dataset feeds")
    img = image_input(model, exclude=given)
    if img is not None:
        return img
    # No image: the one input that zeros cannot stand in for (a waveform of any length), else
    # the one batched input of rank >= 2.
    for pick in ([i for i in rest if zero_feed(model, i) is None],
                 [i for i in rest if is_batched(i) and len(i.shape) >= 2]):
        if len(pick) == 1:
            return pick[0]
    raise InputError(f"{model.name} has {len(rest)} inputs without a value ({', '.join(i.name for i in rest)}) "
                     "and none is an image; give values for all but the one the dataset feeds "
                     "(--input NAME=... on the command line, inputs= in Python)")


# -- NAME=FILE.npy | NAME=FILE.npz[:key] | NAME=VALUE | NAME=IMAGE -----------------------------------------


def parse_input_spec(model: Any, spec: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` at the ``=`` after a known input name (names may hold ``=`` or ``:``).

    Raises ``InputError`` for a spec without ``=`` or an unknown name (listing the model's inputs).
    """
    names = sorted((i.name for i in model.inputs), key=len, reverse=True)
    for n in names:
        if spec.startswith(n + "="):
            return n, spec[len(n) + 1:]
    if "=" not in spec:
        raise InputError(f"--input takes NAME=FILE.npy, NAME=FILE.npz or NAME=VALUE, not '{spec}'; "
                         f"the model's inputs are: {', '.join(i.name for i in model.inputs) or 'none'}")
    raise _no_such_input(model, spec.split("=", 1)[0])


def _npz_member(path: Path, key: str | None, name: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if key is None:
                if len(keys) == 1:
                    key = keys[0]
                elif name in keys:
                    key = name
                else:
                    raise InputError(f"{path} holds {len(keys)} arrays ({', '.join(keys[:10]) or 'none'}); "
                                     f"pick one with {name}={path}:KEY")
            if key not in keys:
                raise InputError(f"{path} has no array '{key}'; it holds: {', '.join(keys[:10]) or 'none'}")
            return z[key]
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read array file {path}: {str(e).splitlines()[0] if str(e) else e}") from None


def _scalar(text: str, info: InputInfo) -> np.ndarray | None:
    """A number / true / false as a 0-d array of the input's kind; None when ``text`` is no number."""
    t = text.strip()
    low = t.lower()
    target = _target_dtype(info)
    if low in ("true", "false"):
        return np.array(low == "true")
    try:
        return np.array(int(t))
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return None
    if target.kind in _INT_KINDS + "b":
        if not (math.isfinite(v) and v.is_integer()):
            raise InputError(f"input '{info.name}' expects {target} values; {t} is not a whole number")
        return np.array(int(v))
    return np.array(v)


def _fill_scalar(model: Any, info: InputInfo, value: np.ndarray, text: str) -> np.ndarray:
    """A single value spread over the input's known shape (batch axis 1), e.g. ``gain=0.5`` for ``[1]``."""
    dims = list(info.shape)
    if not dims:
        return value
    if is_batched(info) and not _fixed(dims[0]):
        dims[0] = 1
    if not all(_fixed(d) for d in dims):
        raise InputError(f"input '{info.name}' has shape {_fmt(info.shape)}: one value ({text}) cannot fill it; "
                         f"give an array with {info.name}=FILE.npy")
    return np.full(dims, value)


def read_input_value(model: Any, name: str, value: str) -> Any:
    """The feed for ``NAME=value``: a checked array, or an image path for the image preprocessor.

    ``value``: ``FILE.npy``; ``FILE.npz`` (its one array, or the one named ``name``) or
    ``FILE.npz:KEY``; an image file (for an image input); or a number / ``true`` / ``false``
    cast to the input's dtype and spread over its shape when that shape is fixed.
    """
    info = input_info(model, name)
    path, key = Path(value).expanduser(), None
    if not path.is_file() and ".npz:" in value.lower():
        cut = value.lower().rindex(".npz:") + 4
        path, key = Path(value[:cut]).expanduser(), value[cut + 1:]
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        if not path.is_file():
            raise InputError(f"array file not found: {path}")
        if suffix == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise InputError(f"cannot read array file {path}: {str(e).splitlines()[0] if str(e) else e}") from None
        else:
            arr = _npz_member(path, key, name)
        return check_array(model, name, arr)
    if suffix in IMAGE_SUFFIXES and path.is_file():
        if not info.is_image:
            raise InputError(f"input '{name}' has shape {_fmt(info.shape)}, not an image; give FILE.npy or a number")
        return str(path)
    scalar = _scalar(value, info)
    if scalar is None:
        if path.exists():
            raise InputError(f"{path} is not a .npy, .npz or image file; give {name}=FILE.npy, FILE.npz or a number")
        raise InputError(f"'{value}' is neither a number nor an existing .npy/.npz file (for input '{name}')")
    return check_array(model, name, _fill_scalar(model, info, _cast(name, scalar, _target_dtype(info)), value))


def spec_paths(specs: Sequence[str]) -> list[Path]:
    """The existing files that ``--input`` specs name (for the never-write-over-an-input checks)."""
    out = []
    for spec in specs:
        value = spec.split("=", 1)[-1]
        for cand in (value, value[:value.lower().rindex(".npz:") + 4] if ".npz:" in value.lower() else None):
            if cand and Path(cand).expanduser().is_file():
                out.append(Path(cand).expanduser())
                break
    return out


def input_specs(model: Any, specs: Sequence[str]) -> dict[str, Any]:
    """``--input`` specs -> ``{input name: array or image path}``; errors start with the spec."""
    out: dict[str, Any] = {}
    for spec in specs:
        try:
            name, value = parse_input_spec(model, spec)
        except InputError as e:
            raise InputError(f"--input {spec}: {e}" if "=" in spec else str(e)) from None
        if name in out:
            raise InputError(f"--input {name} is given twice; give each input once")
        try:
            out[name] = read_input_value(model, name, value)
        except InputError as e:
            raise InputError(f"--input {spec}: {e}") from None
    return out
