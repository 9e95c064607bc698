"""Shared test setup: headless matplotlib, `import subjects` for the real test subjects."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
_TESTS = str(Path(__file__).parent)
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

# Fixtures for the real-world-shaped models (yolo_detector, keras_bn_act, torch_no_metadata).
from .wild_fixtures import keras_bn_act, torch_no_metadata, wild_dir, yolo_detector  # noqa: E402,F401
