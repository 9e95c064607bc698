"""preprocess_image: formats, modes, resizing, layout, dtype, normalisation presets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import onnxact
from onnxact.errors import InputError
from tests import tiny


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return (rng.random((20, 24, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp", "gif", "webp", "tiff"])
def test_formats(tmp_path, rgb, ext):
    p = tmp_path / f"img.{ext}"
    Image.fromarray(rgb).save(p)
    x = onnxact.preprocess_image(p, tiny.conv_net())
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_exact_values_png_nchw_and_nhwc(tmp_path, rgb):
    p = tmp_path / "a.png"
    Image.fromarray(rgb).resize((16, 16), Image.BILINEAR).save(p)
    x = onnxact.preprocess_image(p, tiny.conv_net())
    expected = np.asarray(Image.open(p), np.float32) / 255.0
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected, rtol=1e-6)
    y = onnxact.preprocess_image(p, tiny.conv_net(nhwc=True))
    assert y.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)


def test_modes_grey_and_rgba(tmp_path, rgb):
    grey = tmp_path / "g.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    x = onnxact.preprocess_image(grey, tiny.conv_net())
    np.testing.assert_allclose(x[0, 0], x[0, 1])  # grey replicated into RGB
    rgba = tmp_path / "a.png"
    arr = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    Image.fromarray(arr, "RGBA").save(rgba)
    x = onnxact.preprocess_image(rgba, tiny.conv_net())
    np.testing.assert_allclose(x, 1.0)  # fully transparent -> white background
    one = onnxact.preprocess_image(tmp_path / "a.png", None, channels=1, size=(8, 8))
    assert one.shape == (1, 1, 8, 8)


def test_normalisations(tmp_path):
    p = tmp_path / "c.png"
    Image.new("RGB", (16, 16), (255, 0, 51)).save(p)
    m = tiny.conv_net()
    px = {n: onnxact.preprocess_image(p, m, normalize=n)[0, :, 0, 0] for n in ("0-1", "none", "-1-1", "imagenet", "caffe")}
    np.testing.assert_allclose(px["0-1"], [1.0, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(px["none"], [255, 0, 51])
    np.testing.assert_allclose(px["-1-1"], [1.0, -1.0, -0.6], rtol=1e-6)
    np.testing.assert_allclose(px["imagenet"], (np.array([1.0, 0.0, 0.2]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-5)
    np.testing.assert_allclose(px["caffe"], [51 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-5)
    custom = onnxact.preprocess_image(p, m, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])[0, :, 0, 0]
    np.testing.assert_allclose(custom, px["-1-1"], rtol=1e-5)
    with pytest.raises(InputError, match="unknown normalisation"):
        onnxact.preprocess_image(p, m, normalize="zscore")


def test_dynamic_dims_keep_size_or_resize(tmp_path, rgb):
    p = tmp_path / "d.png"
    Image.fromarray(rgb).save(p)
    m = tiny.conv_net(batch="N")
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    assert onnxact.preprocess_image(p, m).shape == (1, 3, 20, 24)
    assert onnxact.preprocess_image(p, m, size=(32, 40)).shape == (1, 3, 32, 40)
    acts = onnxact.get_activations(m, str(p), output_format="full")
    assert acts["relu0"].shape == (1, 4, 20, 24)


def test_float16_and_batches(tmp_path, rgb):
    p = tmp_path / "e.png"
    Image.fromarray(rgb).save(p)
    x = onnxact.preprocess_image([p, p], tiny.conv_net(), dtype="float16")
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float16


def test_bad_images(tmp_path):
    text = tmp_path / "t.jpg"
    text.write_text("this is not an image")
    with pytest.raises(InputError, match="not a readable image"):
        onnxact.preprocess_image(text, tiny.conv_net())
    with pytest.raises(InputError, match="not found"):
        onnxact.preprocess_image(tmp_path / "missing.png", tiny.conv_net())
    with pytest.raises(InputError, match="directory"):
        onnxact.preprocess_image(tmp_path, tiny.conv_net())


def test_image_for_non_image_model_is_refused(tmp_path, rgb):
    p = tmp_path / "f.png"
    Image.fromarray(rgb).save(p)
    with pytest.raises(InputError, match="not an image"):
        onnxact.preprocess_image(p, tiny.no_conv_net())


def test_an_array_given_as_an_image_says_what_to_do_instead():
    from onnxact.preprocess import load_image

    with pytest.raises(InputError) as e:
        load_image(np.zeros((4, 4, 3), np.uint8))
    assert "already a model input" in str(e.value) and "get_activations" in str(e.value)
    with pytest.raises(InputError, match=r"from float; pass a path, bytes or a PIL image$"):
        load_image(3.0)
