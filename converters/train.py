"""Train the seed's CNN on an image folder (one sub-folder per class) and export it to ONNX.

The seed's helper made real: five Conv 3x3 + MaxPool 2x2 blocks with 16/32/64/64/64 filters,
Flatten, Dense 512 relu, Dense softmax; inputs scaled to 0-1. Keras (channels-last) or PyTorch
(channels-first); the exported ONNX carries the class names and the preprocessing in its metadata.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxact.errors import InputError

from .quiet import quietly

__all__ = ["TrainResult", "train_image_classifier", "load_image_folder", "SEED_FILTERS"]

SEED_FILTERS: tuple[int, ...] = (16, 32, 64, 64, 64)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class TrainResult:
    """What :func:`train_image_classifier` returns: the trained framework model and its numbers."""

    model: Any
    class_names: list[str]
    val_accuracy: float | None
    train_accuracy: float
    n_train: int
    n_val: int
    seconds: float
    onnx_path: Path | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


def load_image_folder(folder: str | os.PathLike, image_size: tuple[int, int] = (128, 128)):
    """``(x, y, class_names)``: images as float32 NHWC in 0-1 and int labels, classes sorted by name."""
    from PIL import Image, UnidentifiedImageError

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{root} needs at least two class sub-folders (one per class), found {len(classes)}")
    h, w = image_size
    xs, ys = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"class folder {root / cls} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((w, h), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.float32) / 255.0)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise InputError(f"can't read image {f}: {e}") from None
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), classes


def _split(n: int, labels: np.ndarray, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified shuffle split: each class contributes ``validation_split`` of its images to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * validation_split))
        if validation_split > 0 and len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        val.extend(idx[:k])
        train.extend(idx[k:])
    train_idx, val_idx = np.asarray(train), np.asarray(val, dtype=np.int64)
    rng.shuffle(train_idx)
    return train_idx, val_idx


@quietly
def train_image_classifier(
    folder: str | os.PathLike,
    framework: str = "keras",
    image_size: tuple[int, int] = (128, 128),
    epochs: int = 10,
    validation_split: float = 0.2,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    *,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    filters: tuple[int, ...] = SEED_FILTERS,
    dense: int = 512,
    verbose: bool = False,
) -> TrainResult:
    """Train the seed's CNN on ``folder`` (one sub-folder per class, classes sorted by name).

    Images are resized to ``image_size`` (height, width), converted to RGB and scaled to 0-1.
    A stratified ``validation_split`` of each class is held out and its accuracy is reported in
    the result (``val_accuracy``). With ``output``, the trained model is converted to ONNX there
    with the class names and ``{"normalize": "0-1", "color": "rgb"}`` in its metadata.
    Returns a :class:`TrainResult` whose ``.model`` is the trained Keras model or torch module.
    Training is seeded; with the same seed, data and thread count results repeat. PyTorch trains on
    one thread for images up to 64x64, else on torch's own thread count (``torch.set_num_threads``);
    both frameworks start from Keras' initial weights and train with Keras' Adam.
    """
    if framework not in ("keras", "torch"):
        raise InputError(f"framework must be 'keras' or 'torch', got {framework!r}")
    if not 0 <= validation_split < 1:
        raise InputError(f"validation_split must be in [0, 1), got {validation_split}")
    if len(filters) and (image_size[0] >> len(filters)) < 1:
        raise InputError(f"image_size {image_size} is too small for {len(filters)} pooling blocks")
    x, y, classes = load_image_folder(folder, image_size)
    tr, va = _split(len(y), y, validation_split, seed)
    t0 = time.perf_counter()
    if framework == "keras":
        from ._train_keras import train_keras as fit
    else:
        from ._train_torch import train_torch as fit
    model, history, train_acc, val_acc = fit(
        x[tr], y[tr], x[va] if len(va) else None, y[va] if len(va) else None, len(classes),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        filters=filters, dense=dense, verbose=verbose,
    )
    seconds = time.perf_counter() - t0
    onnx_path = None
    if output is not None:
        onnx_path = Path(output)
        meta = {"class_names": classes, "preprocess": {"normalize": "0-1", "color": "rgb"}}
        if framework == "keras":
            from .keras import from_keras

            from_keras(model, onnx_path, **meta)
        else:
            import torch

            from .torch import from_torch

            example = torch.from_numpy(np.transpose(x[:1], (0, 3, 1, 2)).copy())
            from_torch(model, example, onnx_path, output_names=["predictions"], **meta)
    return TrainResult(model, classes, val_acc, train_acc, len(tr), len(va), seconds, onnx_path, history)
