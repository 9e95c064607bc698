"""Feed preparation and onnxruntime execution of a capture.

Why its own stage: the fastest way to get every promoted tensor out is one ``session.run`` on
a session built once per capture set (``ORT_ENABLE_ALL``, memory pattern off so promoted
outputs are not held twice). Batches larger than a fixed batch dimension are split here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelError
from .model import Model

__all__ = ["Feeds", "prepare_feeds", "run_model", "run_session", "ort_value_to_numpy", "run_failure", "quiet_run_options"]


class Feeds(dict):
    """``{input name: array}`` for onnxruntime, plus how each image was fitted when the feeds were
    made from images: ``geometry[input name]`` is one :class:`~onnxact.sizing.Geometry` per sample."""

    geometry: dict[str, list[Any]]

    def __init__(self, data: Mapping[str, np.ndarray] | None = None,
                 geometry: Mapping[str, list[Any]] | None = None) -> None:
        super().__init__(data or {})
        self.geometry = dict(geometry or {})



def _is_image_ref(x: Any) -> bool:
    if isinstance(x, (str, os.PathLike)):
        return True
    if isinstance(x, (list, tuple)) and x and all(isinstance(i, (str, os.PathLike)) for i in x):
        return True
    return hasattr(x, "mode") and hasattr(x, "convert")  # PIL image


def prepare_feeds(model: Model, x: Any, **preprocess_kw: Any) -> Feeds:
    """Turn an ndarray, ``{input name: array}``, image path(s) or PIL image into onnxruntime feeds.

    Each array is checked against its input (``onnxact.feeds.check_array``: rank, fixed dims,
    dtype) and inputs given with one sample are repeated to the batch of the others (a
    ``sample_rate`` or ``im_info`` given once for 8 images). A model without inputs takes
    ``None`` or ``{}``. Missing inputs are an error here; ``onnxact.feeds.fill_missing`` fills
    the fixed-shape ones with zeros first when that is wanted. Returns a dict (``Feeds``) whose
    ``.geometry`` records how images were fitted (size, letterbox padding, crop).
    ``preprocess_kw`` (``size=``, ``normalize=`` ...) apply to images; given with arrays only,
    which are fed as they are, they are refused rather than ignored.
    """
    from .feeds import MissingInputError, broadcast_batch, check_array, input_info

    if preprocess_kw:
        _check_preprocess_kw(preprocess_kw, x)
    names = [i.name for i in model.inputs]
    geometry: dict[str, list[Any]] = {}
    if not names:
        if x is None or (isinstance(x, Mapping) and not x):
            return Feeds()
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
        feeds = {k: (_image_feed(model, v, k, preprocess_kw, geometry) if _is_image_ref(v)
                     else check_array(model, k, v)) for k, v in x.items()}
        return Feeds(broadcast_batch(model, feeds), geometry)
    if len(names) != 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict {{name: array}}")
    if _is_image_ref(x):
        return Feeds({names[0]: _image_feed(model, x, names[0], preprocess_kw, geometry)}, geometry)
    return Feeds({names[0]: check_array(model, names[0], x)})


def _is_array_file(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike)) and Path(x).suffix.lower() == ".npy"


def _check_preprocess_kw(kw: Mapping[str, Any], x: Any) -> None:
    """A keyword preprocessing doesn't take is a TypeError (as it is with an image); preprocessing
    keywords given when ``x`` holds no image (arrays and .npy files are fed as they are) are an
    InputError, so that ``size=`` or ``normalize=`` is never silently ignored."""
    import inspect

    from .preprocess import preprocess_with_geometry

    known = [k for k in inspect.signature(preprocess_with_geometry).parameters if k not in ("image", "model")]
    unknown = [k for k in kw if k not in known]
    if unknown:
        raise TypeError(f"unexpected keyword argument '{unknown[0]}' (preprocessing takes {', '.join(known)})")
    given = [k for k, v in kw.items() if v is not None]
    values = list(x.values()) if isinstance(x, Mapping) else [x]
    if given and not any(_is_image_ref(v) and not _is_array_file(v) for v in values):
        what = "an array file" if any(_is_array_file(v) for v in values) else "an array"
        raise InputError(f"preprocessing ({', '.join(given)}) applies to images (paths, PIL images) only; the "
                         f"input is {what}, fed as it is: leave {'it' if len(given) == 1 else 'them'} out, or pass "
                         "the image")


def _image_feed(model: Model, x: Any, name: str, kw: Mapping[str, Any], geometry: dict[str, list[Any]]) -> np.ndarray:
    from .feeds import check_array
    from .preprocess import preprocess_with_geometry

    if _is_array_file(x):
        try:
            return check_array(model, name, np.load(x, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read array file {x}: {e}") from None
    arr, geometry[name] = preprocess_with_geometry(x, model, input_name=name, **kw)
    return check_array(model, name, arr)


_RUN_OPTIONS: Any = None


def quiet_run_options() -> Any:
    """RunOptions that keep onnxruntime's own red ``[E:onnxruntime ...]`` log lines off the user's
    terminal: a failed run is reported once, as our one-line error (session options at severity 3
    still print errors, so the run's severity is 4, fatal only)."""
    global _RUN_OPTIONS
    if _RUN_OPTIONS is None:
        import onnxruntime as ort

        ro = ort.RunOptions()
        ro.log_severity_level = 4
        _RUN_OPTIONS = ro
    return _RUN_OPTIONS


_ORT_NOISE = (
    (re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*"), ""),
    (re.compile(r"Non-zero status code returned while running "), ""),
    (re.compile(r"(\w+) node\. Name:\s*'([^']*)'\s*(?:Status Message:\s*)?"), r"\1 node '\2': "),
    (re.compile(r"(?:\S*/)?[\w.-]+\.(?:h|cc|cpp):\d+\s+(?:[A-Z][a-z]+[A-Z]\w*\s+)?"), ""),  # source file, function
    (re.compile(r"(?:\b[\w<>*&]+ )?onnxruntime::[\w:<>]+\([^)]*\)(?: const)?\s*"), ""),  # C++ signature
    (re.compile(r"Status Message:\s*"), ""),
)


def _shorten(text: str, limit: int = 240) -> str:
    """``text`` cut at a word boundary (never mid-word), with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return (cut if cut else text[:limit]) + " ..."


def run_failure(model: Model, feeds: Mapping[str, np.ndarray], error: BaseException) -> str:
    """The one-line message of a failed run: onnxruntime's reason without its C++ noise, the size
    fed, and (for an image input whose size is not fixed) which ``--size`` to try."""
    from .sizing import image_input, network_stride

    msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for pat, repl in _ORT_NOISE:
        msg = pat.sub(repl, msg)
    fed = ", ".join(f"{k} {'x'.join(str(d) for d in np.shape(v))}" for k, v in feeds.items())
    out = f"onnxruntime failed to run {model.name} on {fed}: {_shorten(msg)}"
    inp = image_input(model)
    if inp is not None and inp.name in feeds:
        hw = [inp.shape[1], inp.shape[2]] if inp.layout == "NHWC" else [inp.shape[2], inp.shape[3]]
        if not all(isinstance(d, int) and d > 0 for d in hw):
            a = np.shape(feeds[inp.name])
            h, w = (a[1], a[2]) if inp.layout == "NHWC" else (a[2], a[3])
            st = network_stride(model)
            hint = f" (multiples of {st[0]} x {st[1]})" if st and st[0] != st[1] else \
                f" (multiples of {st[0]})" if st else ""
            out += f"; the input was {h}x{w} (height x width): try another size with --size H W{hint}"
    return out


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
        outs = raw.run(list(names), dict(feeds), quiet_run_options())
        if views is None:
            try:
                sess._onnxact_views = _gives_views(outs)
            except AttributeError:  # a session type that takes no attributes: ask again next time
                pass
        return outs
    try:
        inputs = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
    except Exception:  # noqa: BLE001 - e.g. string inputs: take the ordinary path
        return sess.run(list(names), dict(feeds), quiet_run_options())
    if raw is not None and hasattr(raw, "run_with_ort_values"):
        outs = raw.run_with_ort_values({k: v._get_c_value() for k, v in inputs.items()}, list(names),
                                       quiet_run_options())
    else:
        outs = sess.run_with_ort_values(list(names), inputs, quiet_run_options())
    outs = list(outs)  # iterating the pybind vector makes new Python objects every time
    if not all(ov.is_tensor() for ov in outs):  # sequences/maps (ZipMap...): the ordinary path converts them
        return sess.run(list(names), dict(feeds), quiet_run_options())
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
            raise ModelError(run_failure(model, part, e)) from None
    if len(results) == 1:
        merged = results[0]
    else:
        merged = [np.concatenate([r[i] for r in results], axis=0) if np.ndim(results[0][i]) else results[0][i]
                  for i in range(len(out_names))]
    values = dict(zip(out_names, merged))
    own = {k: values[k] for k in model.output_names if k in values}
    return {t: values[t] for t in tensors}, own
