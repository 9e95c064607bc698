"""Image file / PIL image / ndarray -> a batch that fits the model's input.

Why here and not in the user's code: the seed's "rescale by 1/255 and resize" is what most CNNs
need, but the model's layout (NHWC from Keras, NCHW from PyTorch), channel count and dtype are
facts of the ONNX graph, so the right tensor can be built from the model alone. Pillow is
imported lazily (``import onnxact`` stays light).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .normalization import choose_normalization

__all__ = ["preprocess_image", "load_image", "upright", "NORMALISATIONS", "MAX_PIXELS"]

NORMALISATIONS = ("0-1", "none", "-1-1", "imagenet", "caffe")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)

#: Images whose header claims more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000


def load_image(image: Any) -> Any:
    """Open an image path / bytes / PIL image as an RGB, RGBA or L PIL image, refusing bombs early."""
    from PIL import Image, UnidentifiedImageError

    if hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "convert"):
        img = image
        label = "the image"
    else:
        if isinstance(image, (bytes, bytearray)):
            import io

            src: Any = io.BytesIO(bytes(image))
            label = "the image bytes"
        elif isinstance(image, (str, os.PathLike)):
            p = Path(image).expanduser()
            if not p.exists():
                raise InputError(f"image not found: {p}")
            if p.is_dir():
                raise InputError(f"{p} is a directory; pass an image file")
            src, label = p, str(p)
        else:
            raise InputError(f"cannot read an image from {type(image).__name__}; pass a path, bytes, PIL image or array")
        old = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, before decoding
            img = Image.open(src)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise InputError(
                    f"{label} claims {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit; resize it first"
                )
            img.load()
            img = upright(img)
        except InputError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            reason = "it is truncated or corrupt" if "truncat" in str(e).lower() else "it is not a readable image"
            raise InputError(f"cannot decode {label}: {reason}") from None
        except Image.DecompressionBombError:
            raise InputError(f"{label} is too large to decode safely; resize it first") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        from PIL import Image as _I

        img = _I.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        from PIL import Image as _I

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        img = _I.fromarray(((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8), "L")
    elif mode not in ("RGB", "L", "RGBA"):
        img = img.convert("RGBA" if ("A" in mode or "transparency" in img.info) else "RGB")
    return img


def upright(img: Any) -> Any:
    """The image turned as its EXIF orientation says (a portrait phone photo stays portrait).

    Checked first, so that the common case (no tag, or orientation 1) costs no copy.
    """
    try:
        turned = img.getexif().get(0x0112, 1) not in (1, None)
    except (OSError, ValueError, SyntaxError):  # a malformed EXIF block: show the pixels as stored
        return img
    if not turned:
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def _to_rgb_or_grey(img: Any, channels: int) -> Any:
    from PIL import Image

    if img.mode == "RGBA":  # composite on white: transparent pixels should not read as black
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        img = bg
    if channels == 1:
        return img.convert("L")
    if channels == 4:
        return img.convert("RGBA")
    return img.convert("RGB")


def _normalise(x: np.ndarray, normalize: str, mean: Any, std: Any) -> np.ndarray:
    """x is H x W x C float32 in 0..255 (RGB order)."""
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else 0.0, np.float32)
        s = np.asarray(std if std is not None else 1.0, np.float32)
        return (x / 255.0 - m[: x.shape[-1]] if m.ndim else x / 255.0 - m) / (s[: x.shape[-1]] if s.ndim else s)
    if normalize == "0-1":
        return x / 255.0
    if normalize == "none":
        return x
    if normalize == "-1-1":
        return x / 127.5 - 1.0
    if normalize == "imagenet":
        c = x.shape[-1]
        if c == 3:
            return (x / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        return (x / 255.0 - _IMAGENET_MEAN.mean()) / _IMAGENET_STD.mean()
    if normalize == "caffe":
        if x.shape[-1] == 3:
            return x[..., ::-1] - _CAFFE_MEAN_BGR
        return x - _CAFFE_MEAN_BGR.mean()
    raise InputError(f"unknown normalisation '{normalize}'; use one of {', '.join(NORMALISATIONS)} or mean=/std=")


def _spatial(shape: Sequence[Any], layout: str) -> tuple[int | None, int | None, int | None]:
    """(channels, height, width) of a 4-D input; None where dynamic."""
    def fixed(v: Any) -> int | None:
        return v if isinstance(v, int) and v > 0 else None

    if layout == "NHWC":
        return fixed(shape[3]), fixed(shape[1]), fixed(shape[2])
    return fixed(shape[1]), fixed(shape[2]), fixed(shape[3])


def preprocess_image(
    image: Any,
    model: Any = None,
    *,
    size: tuple[int, int] | None = None,
    normalize: str | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    layout: str | None = None,
    dtype: str | None = None,
    channels: int | None = None,
    input_name: str | None = None,
) -> np.ndarray:
    """Read ``image`` (path, bytes, PIL image, or a list of them) into a batch fitted to ``model``.

    The model (``Model``, path, bytes or ModelProto) gives the input's layout, channel count,
    size and dtype; any of them can be overridden. ``size`` is (height, width) and is needed only
    when the model's spatial dims are dynamic (otherwise the image keeps its own size).
    ``normalize``: ``"0-1"`` (x/255 as in the seed), ``"none"``, ``"-1-1"``,
    ``"imagenet"``, ``"caffe"`` (BGR minus the Caffe means); or pass ``mean``/``std``, which are
    applied to the 0-1 scaled values per channel. Default: the model's metadata, else raw pixels
    when the graph normalises its own input, else ``"0-1"`` (a guess:
    ``onnxact.normalization.choose_normalization`` says which). Returns an array of shape (N, ...).
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("no images given")
        parts = [preprocess_image(i, model, size=size, normalize=normalize, mean=mean, std=std, layout=layout,
                                  dtype=dtype, channels=channels, input_name=input_name) for i in image]
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise InputError("the images have different sizes and the model's input is dynamic; pass size=(h, w)")
        return np.concatenate(parts, axis=0)

    inp = None
    defaults: dict[str, Any] = {}
    if model is not None:
        from .model import load

        m = load(model)
        defaults = m.preprocess_defaults
        images = [i for i in m.inputs if len(i.shape) == 4] or m.inputs
        if input_name is not None:
            images = [i for i in m.inputs if i.name == input_name]
            if not images:
                raise InputError(f"the model has no input '{input_name}'; inputs: {', '.join(i.name for i in m.inputs)}")
        if not images:
            raise InputError("the model has no inputs")
        inp = images[0]
        if len(inp.shape) != 4:
            raise InputError(
                f"the model's input '{inp.name}' has shape {list(inp.shape)}, which is not an image; "
                "pass a ready numpy array instead"
            )
    lay = layout or (inp.layout if inp is not None and inp.layout in ("NCHW", "NHWC") else "NCHW")
    if lay not in ("NCHW", "NHWC"):
        raise InputError(f"layout must be NCHW or NHWC, not {lay}")
    c_model, h_model, w_model = _spatial(inp.shape, lay) if inp is not None else (None, None, None)
    c = channels or c_model or (1 if defaults.get("color") == "grey" else 3)
    if c not in (1, 3, 4):
        raise InputError(f"the model's input has {c} channels; an image gives 1, 3 or 4 — pass an array instead")
    img = _to_rgb_or_grey(load_image(image), c)
    target = size or ((h_model, w_model) if h_model and w_model else None)
    if target is not None:
        th, tw = int(target[0]), int(target[1])
        if th <= 0 or tw <= 0:
            raise InputError(f"size must be positive, got {target}")
        if img.size != (tw, th):
            from PIL import Image

            img = img.resize((tw, th), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    # user > metadata > the graph's own normalisation > guessed 0-1 (see normalization.py)
    norm = choose_normalization(m if model is not None else None, normalize, mean, std, inp.name if inp else None)
    x = _normalise(x, "0-1" if norm.preset == "mean/std" else norm.preset, mean, std).astype(np.float32)
    if lay == "NCHW":
        x = x.transpose(2, 0, 1)
    out_dtype = dtype or (inp.dtype if inp is not None and inp.dtype in ("float32", "float16", "float64", "uint8") else "float32")
    if out_dtype == "uint8":
        x = np.clip(x, 0, 255)
    return np.ascontiguousarray(x[None]).astype(out_dtype, copy=False)
