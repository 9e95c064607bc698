"""Odd and broken image files: each is read correctly or refused with one clear InputError line.

Each test backs a row of docs/robustness.md. Image files are hash-checked (never modified).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxact
from onnxact import limits
from tests.models.make_models import build
from tests.test_robustness_models import refused as _refused

MODEL = onnxact.load(build("conv_opset13"))  # input (1, 3, 16, 16), NCHW, float32


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def refused(fn, *match: str) -> str:
    """``fn`` raises a one-line InputError mentioning every ``match``."""
    return _refused(onnxact.InputError, fn, *match)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (valid CRC, no matching pixel data)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


@pytest.fixture
def unchanged(tmp_path: Path):
    """Yields the folder; afterwards every file in it must be byte-identical."""
    yield tmp_path
    for p, h in _hashes.items():
        assert sha(p) == h, f"{p} was modified"
    _hashes.clear()


_hashes: dict[Path, str] = {}


def keep(p: Path) -> Path:
    _hashes[p] = sha(p)
    return p


def test_missing_image(tmp_path: Path) -> None:
    refused(lambda: onnxact.preprocess_image(tmp_path / "nope.png", MODEL), "not found")


def test_directory_as_image(tmp_path: Path) -> None:
    refused(lambda: onnxact.preprocess_image(tmp_path, MODEL), "directory")


def test_empty_image(unchanged: Path) -> None:
    p = unchanged / "empty.png"
    p.write_bytes(b"")
    keep(p)
    refused(lambda: onnxact.get_activations(MODEL, p), "cannot decode")


def test_truncated_images(unchanged: Path) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        p = unchanged / f"truncated.{fmt.lower()}"
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
        keep(p)
        refused(lambda p=p: onnxact.get_activations(MODEL, p), "cannot decode", "truncated")


def test_text_as_image(unchanged: Path) -> None:
    p = unchanged / "notes.jpg"
    p.write_text("this is a text file, not a photo\n" * 20)
    keep(p)
    refused(lambda: onnxact.get_activations(MODEL, p), "cannot decode", "not a readable image")


def test_one_pixel_image(unchanged: Path) -> None:
    p = unchanged / "one.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(p)
    keep(p)
    x = onnxact.preprocess_image(p, MODEL)
    assert x.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 0.0, 0.0])
    acts = onnxact.get_activations(MODEL, p)
    assert acts["conv1"].shape == (1, 4, 16, 16)  # the conv read after its ReLU keeps the conv's name


def test_16bit_png(unchanged: Path) -> None:
    p = unchanged / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(p)
    keep(p)
    assert Image.open(p).mode.startswith("I")
    x = onnxact.preprocess_image(p, MODEL)
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    assert x.min() == pytest.approx(0.0, abs=1e-6) and x.max() == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(x[0, 0, 0]) >= 0)  # the ramp survives: the 16 bits are scaled, not clipped


def test_cmyk_jpeg(unchanged: Path) -> None:
    p = unchanged / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 0, 0)).save(p, "JPEG")  # magenta ink
    keep(p)
    x = onnxact.preprocess_image(p, MODEL)
    assert x.shape == (1, 3, 16, 16)
    r, g, b = (float(x[0, c].mean()) for c in range(3))
    assert r > 0.9 and b > 0.9 and g < 0.1, (r, g, b)


def test_header_claims_30000x30000_refused_before_decoding(unchanged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = unchanged / "bomb.png"
    p.write_bytes(png_claiming(30000, 30000))
    keep(p)
    assert 30000 * 30000 * 4 > limits.DEFAULT_MAX_IMAGE_BYTES

    def no_decoding(self, *a, **k):  # the pixel data must never be touched
        raise AssertionError("decoded a 30000x30000 image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    refused(lambda: onnxact.get_activations(MODEL, p), "30000x30000", "limit")


def test_other_modes_read(tmp_path: Path) -> None:
    """Palette, grey+alpha, 32-bit integer and float images all become RGB batches."""
    cases = {
        "p.gif": Image.new("P", (20, 20)),
        "la.png": Image.new("LA", (20, 20), (10, 0)),
        "i32.tif": Image.fromarray(np.arange(400, dtype=np.int32).reshape(20, 20)),
        "f.tif": Image.fromarray(np.linspace(-1, 1, 400, dtype=np.float32).reshape(20, 20)),
        "rgba.png": Image.new("RGBA", (20, 20), (0, 0, 0, 0)),
    }
    for name, img in cases.items():
        p = tmp_path / name
        img.save(p)
        x = onnxact.preprocess_image(p, MODEL)
        assert x.shape == (1, 3, 16, 16) and np.isfinite(x).all() and 0 <= x.min() <= x.max() <= 1, name
    # transparent pixels read as white, not black
    assert onnxact.preprocess_image(tmp_path / "rgba.png", MODEL).min() == 1.0


def test_grey_and_nhwc_models(tmp_path: Path) -> None:
    p = tmp_path / "c.png"
    Image.new("RGB", (40, 30), (0, 128, 255)).save(p)
    nhwc = onnxact.load(build("conv_nhwc"))
    assert nhwc.inputs[0].layout == "NHWC"
    x = onnxact.preprocess_image(p, nhwc)
    assert x.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(x[0, 0, 0], [0, 128 / 255, 1], atol=1e-6)
    assert onnxact.preprocess_image(p, MODEL, channels=1).shape == (1, 1, 16, 16)


def test_mismatched_array_shape() -> None:
    refused(lambda: onnxact.get_activations(MODEL, np.zeros((1, 3, 20, 20), np.float32)), "axis 2 must be 16")
    refused(lambda: onnxact.get_activations(MODEL, np.zeros((3, 16), np.float32)), "rank")
    refused(lambda: onnxact.get_activations(MODEL, np.array([object()])), "not a numeric array")


def test_output_folder_not_writable(tmp_path: Path) -> None:
    acts = onnxact.get_activations(MODEL, np.zeros((1, 3, 16, 16), np.float32))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(onnxact.OutputError) as ei:
        onnxact.save_activations(acts, blocker / "out")
    assert "\n" not in str(ei.value) and "writable" in str(ei.value)
    assert blocker.read_text() == "x"
