"""Framework -> ONNX converters and the train-a-CNN-from-a-folder helper (``onnxact.converters``).

Nothing heavy is imported here: torch and tensorflow are imported inside the functions, and a
missing framework raises :class:`onnxact.errors.DependencyError` naming the extra to install.
"""

from __future__ import annotations

from .keras import from_keras
from .shapes import SHAPE_CLASSES, make_shapes_dataset

__all__ = ["from_keras", "from_torch", "train_image_classifier", "make_shapes_dataset", "SHAPE_CLASSES"]


def from_torch(*args, **kwargs):  # replaced below when converters.torch exists
    from .torch import from_torch as _f

    return _f(*args, **kwargs)


def train_image_classifier(*args, **kwargs):
    from .train import train_image_classifier as _f

    return _f(*args, **kwargs)
