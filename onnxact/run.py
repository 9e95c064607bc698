"""Feed preparation and onnxruntime execution of a capture.

Why its own stage: the fastest way to get every promoted tensor out is one ``session.run`` on
a session built once per capture set (``ORT_ENABLE_ALL``, memory pattern off so promoted
outputs are not held twice). Batches larger than a fixed batch dimension are split here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelError
from .model import Model

__all__ = ["prepare_feeds", "run_model", "run_session", "ort_value_to_numpy"]



def _is_image_ref(x: Any) -> bool:
    if isinstance(x, (str, os.PathLike)):
        return True
    if isinstance(x, (list, tuple)) and x and all(isinstance(i, (str, os.PathLike)) for i in x):
        return True
    return hasattr(x, "mode") and hasattr(x, "convert")  # PIL image


def prepare_feeds(model: Model, x: Any, **preprocess_kw: Any) -> dict[str, np.ndarray]:
    """Turn an ndarray, ``{input name: array}``, image path(s) or PIL image into onnxruntime feeds.

    Each array is checked against its input (``onnxact.feeds.check_array``: rank, fixed dims,
    dtype) and inputs given with one sample are repeated to the batch of the others (a
    ``sample_rate`` or ``im_info`` given once for 8 images). A model without inputs takes
    ``None`` or ``{}``. Missing inputs are an error here; ``onnxact.feeds.fill_missing`` fills
    the fixed-shape ones with zeros first when that is wanted.
    """
    from .feeds import MissingInputError, broadcast_batch, check_array, input_info

    names = [i.name for i in model.inputs]
    if not names:
        if x is None or (isinstance(x, Mapping) and not x):
            return {}
        raise InputError(f"{model.name} has no inputs (all its values are constants); pass x=None")
    if x is None:
        raise InputError("no input given; pass an image path, an array or {input name: array}")
    if isinstance(x, Mapping):
        for k in x:
            input_info(model, k)  # an unknown name: the error lists the model's inputs
        missing = [i for i in model.inputs if i.name not in x]
        if missing:
            raise MissingInputError(
                f"input '{missing[0].name}' is missing; the model needs: {', '.join(names)}; pass {{name: array}} "
                "for each (onnxact.feeds.fill_missing fills fixed-shape ones with zeros)", missing)
        feeds = {k: (_image_feed(model, v, k, preprocess_kw) if _is_image_ref(v) else check_array(model, k, v))
                 for k, v in x.items()}
        return broadcast_batch(model, feeds)
    if len(names) != 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict {{name: array}}")
    if _is_image_ref(x):
        return {names[0]: _image_feed(model, x, names[0], preprocess_kw)}
    return {names[0]: check_array(model, names[0], x)}


def _image_feed(model: Model, x: Any, name: str, kw: Mapping[str, Any]) -> np.ndarray:
    from .feeds import check_array
    from .preprocess import preprocess_image

    if isinstance(x, (str, os.PathLike)) and Path(x).suffix.lower() in (".npy",):
        try:
            return check_array(model, name, np.load(x, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read array file {x}: {e}") from None
    return check_array(model, name, preprocess_image(x, model, input_name=name, **kw))


def _fixed_batch(model: Model) -> int | None:
    from .feeds import is_batched

    sizes = {i.shape[0] for i in model.inputs if is_batched(i) and isinstance(i.shape[0], int) and i.shape[0] > 0}
    return sizes.pop() if len(sizes) == 1 else None


# ONNX element type -> numpy typestr, for wrapping onnxruntime's output buffers without a copy.
_TYPESTR = {1: "<f4", 10: "<f2", 11: "<f8", 2: "|u1", 3: "|i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8",
            9: "|b1", 12: "<u4", 13: "<u8"}


class _OrtBuffer:
    """Keeps an OrtValue alive for as long as the numpy array viewing its buffer lives."""

    __slots__ = ("ortvalue", "__array_interface__")

    def __init__(self, ortvalue: Any, typestr: str, shape: tuple[int, ...]) -> None:
        self.ortvalue = ortvalue
        self.__array_interface__ = {"data": (ortvalue.data_ptr(), False), "shape": shape,
                                    "typestr": typestr, "version": 3}


def ort_value_to_numpy(ov: Any) -> np.ndarray:
    """A numpy array over a CPU OrtValue's own buffer (no copy); a copy for other devices/types.

    Works on the Python ``OrtValue`` and on the pybind value underneath alike.
    """
    typestr = _TYPESTR.get(ov.element_type()) if ov.is_tensor() else None
    if typestr is None or ov.device_name() not in ("cpu", "Cpu", "CPU"):
        return ov.numpy()
    shape = tuple(ov.shape())
    if 0 in shape:
        return np.empty(shape, np.dtype(typestr))
    return np.asarray(_OrtBuffer(ov, typestr, shape))


def _gives_views(outs: Sequence[Any]) -> bool | None:
    """Are these ``run`` results views of onnxruntime's buffers (None: no array to tell by)?"""
    for o in outs:
        if isinstance(o, np.ndarray) and o.size and o.dtype != object:
            return not o.flags.owndata
    return None


def run_session(sess: Any, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One run whose arrays view onnxruntime's own output buffers, at the least Python cost.

    Why: copying every promoted output into fresh numpy memory (what ``InferenceSession.run``
    did before onnxruntime 1.2x) cost 20-40% of a capture. Newer onnxruntime returns views
    itself, and calling the pybind session's ``run`` directly is then the cheapest path: the
    Python wrapper re-validates the feeds, and going through ``run_with_ort_values`` costs
    ~5 us per output in Python objects (0.3 ms at 64 outputs, a fifth of a small model's run).
    Where ``run`` copies (older onnxruntime; found out on a session's first run and kept on
    the session, since it can differ by provider): ``run_with_ort_values`` and numpy views
    made here (``ort_value_to_numpy``).
    """
    import onnxruntime as ort

    raw = getattr(sess, "_sess", None)
    views = getattr(sess, "_onnxact_views", None)
    if raw is not None and views is not False:
        outs = raw.run(list(names), dict(feeds), None)
        if views is None:
            try:
                sess._onnxact_views = _gives_views(outs)
            except AttributeError:  # a session type that takes no attributes: ask again next time
                pass
        return outs
    try:
        inputs = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
    except Exception:  # noqa: BLE001 - e.g. string inputs: take the ordinary path
        return sess.run(list(names), dict(feeds))
    if raw is not None and hasattr(raw, "run_with_ort_values"):
        outs = raw.run_with_ort_values({k: v._get_c_value() for k, v in inputs.items()}, list(names), None)
    else:
        outs = sess.run_with_ort_values(list(names), inputs)
    outs = list(outs)  # iterating the pybind vector makes new Python objects every time
    if not all(ov.is_tensor() for ov in outs):  # sequences/maps (ZipMap...): the ordinary path converts them
        return sess.run(list(names), dict(feeds))
    return [ort_value_to_numpy(ov) for ov in outs]


def run_model(
    model: Model, feeds: Mapping[str, np.ndarray], tensors: Sequence[str], batch_size: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run once (or per batch) and return ({promoted tensor: array}, {model output: array})."""
    key = tuple(tensors)
    sess = model.session(key)
    out_names = model.session_outputs(key)
    from .feeds import batch_size_of, is_batched

    n = batch_size_of(model, feeds)
    batched = {i.name for i in model.inputs if is_batched(i)}  # only these are cut into batches
    fixed = _fixed_batch(model)
    step = batch_size or (fixed if fixed and fixed < n else n)
    if fixed and step != fixed and n != fixed:
        step = fixed
    results: list[list[np.ndarray]] = []
    for start in range(0, n, max(step, 1)):
        part = {k: v[start:start + step] if k in batched else v for k, v in feeds.items()} if step < n else dict(feeds)
        try:
            results.append(run_session(sess, out_names, part))
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors: wrong input values or a model bug
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"onnxruntime failed to run {model.name}: {msg[:300]}") from None
    if len(results) == 1:
        merged = results[0]
    else:
        merged = [np.concatenate([r[i] for r in results], axis=0) if np.ndim(results[0][i]) else results[0][i]
                  for i in range(len(out_names))]
    values = dict(zip(out_names, merged))
    own = {k: values[k] for k in model.output_names if k in values}
    return {t: values[t] for t in tensors}, own
