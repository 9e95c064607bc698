"""One exception root for everything onnxact raises on purpose.

Why: the CLI maps exactly one family of exceptions to exit code 2 ("your input is wrong")
and everything else to exit code 3 ("our bug"). Library users catch ``OnnxactError`` and
know that the message is a single line that says what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "OnnxactError",
    "ModelError",
    "InputError",
    "LayerError",
    "OutputError",
    "DependencyError",
    "ConversionError",
    "ProviderError",
    "ClusterError",
    "MissingInputError",
    "RequestError",
]


class OnnxactError(Exception):
    """Root of every error onnxact raises for bad input or usage.

    The message is one line: what is wrong, then how to fix it.
    """


class ModelError(OnnxactError):
    """The model file or proto can't be read, is not ONNX, or can't be run."""


class InputError(OnnxactError):
    """An image or array input can't be decoded or doesn't fit the model."""


class LayerError(OnnxactError, KeyError):
    """A layer name or op type asked for does not exist (message lists the closest names)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line
        return str(self.args[0]) if self.args else ""


class OutputError(OnnxactError):
    """An output file or folder can't be written."""


class DependencyError(OnnxactError):
    """An optional dependency needed for this feature is not installed."""


class ConversionError(OnnxactError):
    """A framework model can't be converted to ONNX."""


class ProviderError(OnnxactError):
    """An onnxruntime execution provider asked for is not available."""


class ClusterError(OnnxactError):
    """The Ray cluster can't be reached or started."""


class MissingInputError(InputError):
    """Inputs were neither given nor fillable with zeros; ``missing`` holds their ``InputInfo``s.

    A subclass so that the CLI can say ``--input NAME=...`` where the library says ``{name: array}``.
    """

    def __init__(self, message: str, missing: Sequence[Any]) -> None:
        super().__init__(message)
        self.missing = list(missing)


class RequestError(OnnxactError):
    """A viewer or notebook-widget request names what does not exist (an image id, a layer, a
    channel) or asks what the model cannot give; ``status`` is the HTTP status the viewer answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def missing_dependency(package: str, extra: str, feature: str) -> DependencyError:
    """Build the standard one-line error for an optional import that failed."""
    return DependencyError(
        f"{feature} needs the '{package}' package, which is not installed; "
        f"install it with: pip install 'onnxact[{extra}]'"
    )
