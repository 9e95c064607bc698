"""Session fixtures for the real-world-shaped models of ``tests/models/wild.py`` (built once per run).

Imported by ``tests/conftest.py``; each fixture returns the ``.onnx`` path. The builders import
torch / keras only when a test asks for the fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .models import wild


@pytest.fixture(scope="session")
def wild_dir(tmp_path_factory) -> Path:
    """One folder for every wild model of the session."""
    return tmp_path_factory.mktemp("wild")


@pytest.fixture(scope="session")
def yolo_detector(wild_dir) -> Path:
    """Ultralytics-YOLOv8-shaped detector, dynamic batch/height/width, Ultralytics metadata (stride 32)."""
    pytest.importorskip("torch")
    return wild.build_yolo_detector(wild_dir / "yolo_detector.onnx")


@pytest.fixture(scope="session")
def keras_bn_act(wild_dir) -> Path:
    """Keras 3 classifier with separate BN/Activation layers, 64x64x3 NHWC; ``.keras`` file beside it."""
    pytest.importorskip("keras")
    return wild.build_keras_bn_act(wild_dir / "keras_bn_act.onnx")


@pytest.fixture(scope="session")
def torch_no_metadata(wild_dir) -> Path:
    """ResNet-like torch classifier, legacy exporter, dynamic height/width, no onnxact metadata."""
    pytest.importorskip("torch")
    return wild.build_torch_no_metadata(wild_dir / "torch_no_metadata.onnx")
