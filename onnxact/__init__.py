"""onnxact: see inside any CNN. Activation maps, heatmaps and dead filters through ONNX.

``import onnxact`` loads numpy, onnx and onnxruntime only; pictures (matplotlib, Pillow), the
viewer, the converters and Ray load when first used.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from .activations import Activations, InputInfo, LayerInfo, load_activations, save_activations
from .capture import get_activations
from .compare import Comparison, compare, compare_activations  # after the submodule import: the name is the function
from .errors import (
    ClusterError,
    ConversionError,
    DependencyError,
    InputError,
    LayerError,
    MissingInputError,
    ModelError,
    OnnxactError,
    OutputError,
    ProviderError,
    RequestError,
)
from .model import Model, load
from .node_data import NodeData, to_node_data
from .preprocess import preprocess_image, preprocess_with_geometry

__version__ = "0.1.0"

__all__ = [
    "__version__", "load", "Model", "get_activations", "preprocess_image", "preprocess_with_geometry", "Activations", "LayerInfo",
    "InputInfo", "save_activations", "load_activations", "display_activations", "display_heatmaps",
    "class_activation_map", "find_dead_filters", "DeadFilterReport", "demo_paths",
    "OnnxactError", "ModelError", "InputError", "LayerError", "OutputError", "DependencyError",
    "ConversionError", "ProviderError", "ClusterError", "MissingInputError", "compare", "compare_activations",
    "Comparison", "find_exemplars", "Exemplars", "Exemplar", "RequestError", "widget",
    "to_node_data", "NodeData",
]

#: Public names that live in modules with heavier imports, loaded on first use.
_LAZY = {
    "display_activations": "render",
    "display_heatmaps": "render",
    "class_activation_map": "cam",
    "find_dead_filters": "dead_filters",
    "DeadFilterReport": "stats_report",
    "find_exemplars": "exemplars",
    "Exemplars": "exemplars",
    "Exemplar": "exemplars",
    "widget": "viewer",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'onnxact' has no attribute '{name}'")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def demo_paths() -> tuple[Path, Path]:
    """(model, image) paths of the bundled demo CNN and its sample image (see models/README.md)."""
    from importlib.resources import files

    base = Path(str(files("onnxact.demo")))
    model, image = base / "demo_cnn.onnx", base / "sample.png"
    if not model.exists():
        raise ModelError(f"the bundled demo model is missing from {base}; reinstall onnxact")
    return model, image
