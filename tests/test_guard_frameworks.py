"""Guard: the frameworks CI is asked to test must import, so their tests can never silently skip."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest


@pytest.mark.parametrize("module", ["torch", "onnxscript", "tensorflow", "keras", "tf2onnx", "tf_keras", "fastapi", "uvicorn",
                                    "playwright", "schemathesis", "hypothesis", "skimage", "ray",
                                    "model_explorer", "model_explorer_onnx"])
def test_framework_importable(module):
    importlib.import_module(module)


def test_chromium_present():
    assert shutil.which("chromium") or os.path.exists("/usr/bin/chromium"), "install Debian's chromium (see .ci/run)"
