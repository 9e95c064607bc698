"""Framework -> ONNX converters and the train-a-CNN-from-a-folder helper (``onnxact.converters``).

Nothing heavy is imported here: torch and tensorflow are imported inside the functions, and a
missing framework raises :class:`onnxact.errors.DependencyError` naming the extra to install
(``pip install 'onnxact[torch]'`` / ``'onnxact[keras]'``).

>>> from onnxact.converters import from_keras, from_torch   # doctest: +SKIP
>>> proto = from_torch(module, torch.rand(1, 3, 224, 224), "model.onnx")   # doctest: +SKIP
"""

from __future__ import annotations

from .keras import from_keras
from .shapes import SHAPE_CLASSES, make_shapes_dataset
from .torch import from_torch
from .train import TrainResult, train_image_classifier

__all__ = ["from_keras", "from_torch", "train_image_classifier", "TrainResult", "make_shapes_dataset",
           "SHAPE_CLASSES"]
