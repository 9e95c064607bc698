"""What one image may cost: decoded bytes, the bytes of the model input built from it, concurrent decodes.

Why its own stage: an image file or a model is untrusted input. A 194 KB PNG can claim
10000 x 10000 16-bit pixels (200 MB once decoded, and it used to cost 2.6 GB on its way to
the model through float64), and a 300-byte model can ask for a [1, 3, 12000, 12000] float
input (1.7 GB, built from a 16 x 16 photo). So every decode and every fed tensor is checked
here against one byte bound *before* it is allocated, from the image header or the model's
declared shape, and at most :data:`MAX_CONCURRENT_DECODES` images are decoded at once, so
the peak memory of ``check`` and ``serve`` is a small multiple of the bound whatever the
images are.

The bound (default :data:`DEFAULT_MAX_IMAGE_BYTES`, 256 MiB) is raised or lowered with the
``max_bytes=`` keyword of :func:`onnxact.preprocess_image` / :func:`onnxact.preprocess.load_image`,
or for every command and the viewer with the environment variable ``ONNXACT_MAX_IMAGE_BYTES``
(``1GB``, ``512MiB``, or a number of bytes).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES", "ENV_MAX_IMAGE_BYTES", "MAX_CONCURRENT_DECODES", "max_image_bytes",
    "decoded_bytes", "check_decoded_size", "check_input_bytes", "check_model_input", "samples_per_batch",
    "decode_slot", "wide_to_uint8",
]

#: Default bound on the bytes of one decoded image, and of the model input built from one image.
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
ENV_MAX_IMAGE_BYTES = "ONNXACT_MAX_IMAGE_BYTES"
#: Images decoded (and resized) at the same time in one process, by ``check`` and by the viewer.
MAX_CONCURRENT_DECODES = 2

_HOW = f"resize it, or raise the bound with max_bytes= or {ENV_MAX_IMAGE_BYTES} (e.g. 1GB)"
_decodes = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


def max_image_bytes(value: int | str | None = None) -> int:
    """The bound in bytes: ``value`` when given, else ``$ONNXACT_MAX_IMAGE_BYTES``, else 256 MiB."""
    from .membound import parse_bytes

    source = "max_bytes"
    if value is None:
        value = os.environ.get(ENV_MAX_IMAGE_BYTES) or None
        source = ENV_MAX_IMAGE_BYTES
    if value is None:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        return parse_bytes(value)
    except InputError:
        raise InputError(f"{source} must be a size such as '1GB', '512MiB' or a number of bytes, not {value!r}") from None


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes Pillow holds for a decoded ``mode`` image: 1 per pixel for 1/L/P, 2 for I;16, else 4.

    (Pillow stores every other mode, RGB included, in 4-byte pixels.)
    """
    per = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return int(width) * int(height) * per


def check_decoded_size(img: Any, label: str, max_bytes: int | str | None = None) -> None:
    """Refuse an opened, not yet decoded, PIL image whose pixels would take more than the bound.

    Reads only the header (``size`` and ``mode``); call it before ``img.load()``.
    """
    limit = max_image_bytes(max_bytes)
    w, h = img.size
    need = decoded_bytes(img.mode, w, h)
    if need > limit:
        raise InputError(
            f"{label} claims {w}x{h} pixels ({img.mode}), {_mb(need)} once decoded, over the "
            f"{_mb(limit)} limit; {_HOW}"
        )


def check_input_bytes(shape: Sequence[int], itemsize: int, what: str, max_bytes: int | str | None = None) -> None:
    """Refuse a tensor of ``shape`` (one sample) whose bytes would pass the bound, before allocating it.

    Python integers, so a dimension of 2**31 is counted, not overflowed.
    """
    limit = max_image_bytes(max_bytes)
    need = int(itemsize)
    for d in shape:
        need *= int(d)
    if need > limit:
        dims = "x".join(str(int(d)) for d in shape)
        raise InputError(
            f"{what} would be {dims} values, {_mb(need)} for one image, over the {_mb(limit)} limit; "
            f"use a smaller size, or raise the bound with max_bytes= or {ENV_MAX_IMAGE_BYTES} (e.g. 4GB)"
        )


def _image_input(model: Any, input_name: str | None = None) -> Any:
    inputs = list(getattr(model, "inputs", None) or [])
    four = [i for i in inputs if len(i.shape or ()) == 4 and (input_name is None or i.name == input_name)]
    return four[0] if four else None


def _per_sample(model: Any, size: Sequence[int] | None, input_name: str | None = None
                ) -> tuple[list[int], Any] | None:
    """(one sample's dims, input info) of the model's image input when they are all known, else None."""
    info = _image_input(model, input_name)
    if info is None:
        return None
    dims = list(info.shape[1:])
    spatial = [1, 2] if info.layout == "NHWC" else [2, 3]  # positions in the full shape
    if size is not None:
        for pos, v in zip(spatial, size):
            dims[pos - 1] = int(v)
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return dims, info


def check_model_input(model: Any, size: Sequence[int] | None = None, max_bytes: int | str | None = None,
                      input_name: str | None = None) -> None:
    """Refuse a model whose image input (at ``size`` when given) is over the bound for one sample.

    Called before any image is decoded, so ``check`` stops with one line (exit 2) instead of
    building a 1.7 GB tensor from every 16 x 16 photo.
    """
    found = _per_sample(model, size, input_name)
    if found is None:
        return
    dims, info = found
    check_input_bytes(dims, 4, f"the model's input '{info.name}' {list(info.shape)}", max_bytes)


def samples_per_batch(model: Any, batch_size: int, size: Sequence[int] | None = None,
                      max_bytes: int | str | None = None, input_name: str | None = None) -> int:
    """``batch_size`` lowered so that one batch of the model's image input stays within the bound."""
    found = _per_sample(model, size, input_name)
    if found is None:
        return batch_size
    one = 4 * int(np.prod(found[0], dtype=object))
    return max(1, min(batch_size, max_image_bytes(max_bytes) // max(one, 1)))


@contextlib.contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of the process's :data:`MAX_CONCURRENT_DECODES` decode slots (decode + resize inside)."""
    with _decodes:
        yield


def wide_to_uint8(img: Any) -> Any:
    """A 16-bit, 32-bit integer or float PIL image as an 8-bit ``L`` image, without float64 copies.

    16-bit values are scaled from 0..65535 (0..255 when no value passes 255, as 8-bit data
    stored in 16 bits); 32-bit integers the same way, clipped; floats are stretched from their
    minimum to their maximum. The extremes come from Pillow (``getextrema``, no copy) and the
    pixels are converted in strips of rows cropped from the image, in float32, so the extra
    memory is the 8-bit result plus one strip, not four to eight times the image.
    """
    from PIL import Image

    w, h = img.size
    lo, hi = (float(v) for v in img.getextrema())
    out = np.empty((h, w), np.uint8)
    rows = max(1, (4 << 20) // max(w, 1))  # about 4 M pixels per strip
    for r in range(0, h, rows):
        a = np.asarray(img.crop((0, r, w, min(h, r + rows))))
        if img.mode.startswith("I;16") and hi > 255:  # exact round(v * 255 / 65535), in integers
            out[r:r + rows] = (a.astype(np.uint32) * 255 + 32767) // 65535
        elif img.mode != "F":  # 8-bit data stored wide, or 32-bit integers: 0..255, clipped
            out[r:r + rows] = np.clip(a, 0, 255) if hi <= 255 else np.clip(
                (a.astype(np.float32) * np.float32(255 / 65535) + np.float32(0.5)), 0, 255)
        else:  # floats: stretched from their minimum to their maximum
            lo_f = lo if np.isfinite(lo) else 0.0
            span = (hi - lo_f) if np.isfinite(hi) and hi > lo_f else 1.0
            f = (a - np.float32(lo_f)) * np.float32(255.0 / span)
            out[r:r + rows] = np.clip(np.nan_to_num(f, copy=False, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
    return Image.fromarray(out)
