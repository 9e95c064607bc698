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
from .sizing import Geometry

__all__ = ["preprocess_image", "preprocess_with_geometry", "load_image", "upright", "NORMALISATIONS"]

NORMALISATIONS = ("0-1", "none", "-1-1", "imagenet", "caffe")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def load_image(image: Any, *, max_bytes: int | str | None = None) -> Any:
    """Open an image path / bytes / PIL image as an RGB, RGBA or L PIL image, refusing bombs early.

    A file whose header claims more than ``max_bytes`` of decoded pixels (default 256 MiB, see
    :mod:`onnxact.limits`) is refused before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from .limits import check_decoded_size, wide_to_uint8

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
        elif type(image).__name__ == "ndarray":
            raise InputError(
                "an array is already a model input, not an image to decode: feed it to get_activations as it is, "
                "or pass the image's path, bytes or a PIL image"
            )
        else:
            raise InputError(f"cannot read an image from {type(image).__name__}; pass a path, bytes or a PIL image")
        old = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, before decoding
            img = Image.open(src)
            check_decoded_size(img, label, max_bytes)  # from the header, before decoding
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
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = wide_to_uint8(img)  # no float64 copies (a 10000x10000 16-bit PNG cost 2.6 GB that way)
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
    if img.mode == {1: "L", 3: "RGB", 4: "RGBA"}.get(channels):
        return img  # convert() would copy it
    if channels == 3 and img.mode == "L":
        return img  # widened to 3 channels after resizing: the same numbers, a quarter of the memory
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
    resize: str | None = None,
    normalize: str | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    layout: str | None = None,
    dtype: str | None = None,
    channels: int | None = None,
    input_name: str | None = None,
    max_bytes: int | str | None = None,
) -> np.ndarray:
    """Read ``image`` (path, bytes, PIL image, or a list of them) into a batch fitted to ``model``.

    The model (``Model``, path, bytes or ModelProto) gives the input's layout, channel count,
    size and dtype; any of them can be overridden. ``size`` is (height, width); without it the
    size is the model's fixed size, else its metadata's, else the image's aspect with the long
    side at most 640 and each side a multiple of the network's stride (see :mod:`onnxact.sizing`).
    A list of images is fed at one size: the first image's aspect, long side 640 (as ``check`` does).
    ``resize``: ``"stretch"`` (default for fixed-size models), ``"letterbox"`` (aspect kept,
    grey padding; default for dynamic models) or ``"crop"`` (aspect kept, centre crop).
    ``normalize``: ``"0-1"`` (x/255 as in the seed), ``"none"``, ``"-1-1"``,
    ``"imagenet"``, ``"caffe"`` (BGR minus the Caffe means); or pass ``mean``/``std``, which are
    applied to the 0-1 scaled values per channel. Default: the model's metadata, else raw pixels
    when the graph normalises its own input, else ``"0-1"`` (a guess:
    ``onnxact.normalization.choose_normalization`` says which). ``max_bytes`` bounds the decoded
    image and the float32 input built from it (default 256 MiB, see :mod:`onnxact.limits`):
    larger ones are refused before they are allocated. Returns an array of shape (N, ...).
    :func:`preprocess_with_geometry` also returns how each image was fitted.
    """
    return preprocess_with_geometry(image, model, size=size, resize=resize, normalize=normalize, mean=mean,
                                    std=std, layout=layout, dtype=dtype, channels=channels,
                                    input_name=input_name, max_bytes=max_bytes)[0]


def preprocess_with_geometry(
    image: Any,
    model: Any = None,
    *,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    normalize: str | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    layout: str | None = None,
    dtype: str | None = None,
    channels: int | None = None,
    input_name: str | None = None,
    max_bytes: int | str | None = None,
) -> tuple[np.ndarray, list[Geometry]]:
    """:func:`preprocess_image`, plus one :class:`~onnxact.sizing.Geometry` per image: the record
    of scale, padding and crop that :func:`onnxact.sizing.map_to_image` needs to put maps back
    on the original image."""
    from .sizing import RESIZE_MODES, check_size, default_resize, fit_image, resolve_size

    many = isinstance(image, (list, tuple))
    if many and not image:
        raise InputError("no images given")
    if resize is not None and resize not in RESIZE_MODES:
        raise InputError(f"resize must be one of {', '.join(RESIZE_MODES)}, not '{resize}'")
    if size is not None:
        size = check_size(size)
    m = None
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
    c_model = _spatial(inp.shape, lay)[0] if inp is not None else None
    c = channels or c_model or (1 if defaults.get("color") == "grey" else 3)
    if c not in (1, 3, 4):
        raise InputError(f"the model's input has {c} channels; an image gives 1, 3 or 4 — pass an array instead")
    mode = resize or (default_resize(m, inp) if m is not None and inp is not None else "stretch")
    pictures = [_to_rgb_or_grey(load_image(i, max_bytes=max_bytes), c) for i in (image if many else [image])]
    first = pictures[0]
    if m is not None and inp is not None:
        # one size for all (a batch has one shape): a list, like a scan, takes the first image's
        # aspect at the default long side, so a thumbnail that comes first does not shrink the rest
        target = resolve_size(m, (first.size[1], first.size[0]), size, input_info=inp, upscale=len(pictures) > 1)
    else:
        target = size
    if target is None and len({p.size for p in pictures}) > 1:
        raise InputError("the images have different sizes and the model's input takes any size; pass size=(h, w)")
    from .limits import check_input_bytes

    th, tw = (int(target[0]), int(target[1])) if target is not None else (first.size[1], first.size[0])
    what = f"the input '{inp.name}'" if inp is not None else "the input"
    check_input_bytes((c, th, tw), 4, f"{what} at {th}x{tw}", max_bytes)  # before resizing to it
    out_dtype = dtype or (inp.dtype if inp is not None and inp.dtype in ("float32", "float16", "float64", "uint8") else "float32")
    # user > metadata > the graph's own normalisation > guessed 0-1 (see normalization.py)
    norm = choose_normalization(m, normalize, mean, std, inp.name if inp else None)
    preset = "0-1" if norm.preset == "mean/std" else norm.preset
    arrays: list[np.ndarray] = []
    geometry: list[Geometry] = []
    for img in pictures:
        fitted, g = fit_image(img, target or (img.size[1], img.size[0]), mode if target else "stretch")
        x = np.asarray(fitted, dtype=np.float32)
        if x.ndim == 2:  # grey, widened to the model's channels only now (a quarter of the memory before)
            x = x[:, :, None] if c == 1 else np.repeat(x[:, :, None], c, axis=2)
        x = _normalise(x, preset, mean, std).astype(np.float32)
        if lay == "NCHW":
            x = x.transpose(2, 0, 1)
        if out_dtype == "uint8":
            x = np.clip(x, 0, 255)
        arrays.append(x)
        geometry.append(g)
    return np.ascontiguousarray(np.stack(arrays)).astype(out_dtype, copy=False), geometry
