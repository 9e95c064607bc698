"""The fast PNG encoder (onnxact/render/png.py): every file it writes decodes, with Pillow, to
exactly the pixels it was given, for each colour type and for awkward sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from onnxact.render.png import encode_png, png_bytes


@pytest.mark.parametrize("channels,mode", [(None, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 257), (300, 1), (37, 53), (256, 256)])
def test_round_trip_through_pillow(channels, mode, h, w):
    rng = np.random.default_rng(h * 1000 + w)
    shape = (h, w) if channels is None else (h, w, channels)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    a[: h // 2] = 200  # flat rows too, where "Up" gives zeros
    im = Image.open(io.BytesIO(encode_png(a)))
    assert im.mode == mode and im.size == (w, h)
    np.testing.assert_array_equal(np.asarray(im), a)


def test_non_contiguous_input_and_wrapping_differences():
    a = np.zeros((4, 6, 3), np.uint8)
    a[1::2] = 255  # row differences of +255 / -255 wrap modulo 256
    view = np.arange(4 * 12 * 3, dtype=np.uint8).reshape(4, 12, 3)[:, ::2]  # strided
    for x in (a, view):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(x)))), x)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros(4, np.uint8)])
def test_what_it_cannot_encode_is_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        encode_png(bad)


def test_png_bytes_takes_pil_images_and_falls_back_to_pillow_for_other_modes():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), np.asarray(rgb))
    pal = rgb.convert("P")
    back = Image.open(io.BytesIO(png_bytes(pal)))
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(pal.convert("RGB")))
    wide = np.random.default_rng(1).integers(0, 65535, (5, 5), dtype=np.uint16)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(wide)))), wide)
