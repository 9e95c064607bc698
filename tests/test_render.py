"""Pixel-level tests of the activation grids and heatmap overlays (no model needed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from onnxact.activations import Activations, LayerInfo
from onnxact.errors import InputError, LayerError, OnnxactError, OutputError
from onnxact.render import (
    colormap_lut,
    display_activations,
    display_heatmaps,
    load_display_image,
    overlay,
    render_layer,
    resize_bilinear,
    safe_filename,
    tile_grid,
)


def _info(name, layout, shape, op="Conv"):
    return LayerInfo(name=name, tensor=name + ":0", op_type=op, layout=layout, shape=tuple(shape))


def _constant_channels(c=5, h=4, w=3):
    """NCHW batch of 1 where channel k is the constant k (so each tile has one known value)."""
    return np.broadcast_to(np.arange(c, dtype=np.float32)[None, :, None, None], (1, c, h, w)).copy()


def test_tile_grid_places_tiles_row_major_with_separators():
    tiles = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32)
    g = tile_grid(tiles, sep=1)
    cols, rows = 3, 2
    assert g.shape == (rows * 3 - 1, cols * 4 - 1)
    for i in range(5):
        r, c = divmod(i, cols)
        assert np.all(g[r * 3 : r * 3 + 2, c * 4 : c * 4 + 3] == i)
    assert np.isnan(g[2, :]).all() and np.isnan(g[:, 3]).all()  # separators
    assert np.isnan(g[3:, 8:]).all()  # the empty 6th cell


def test_layer_scale_tile_count_placement_and_colours():
    arr = _constant_channels()
    pic = render_layer("conv", arr, _info("conv", "NCHW", arr.shape), normalize="layer", cmap="gray")
    assert (pic.cols, pic.rows, pic.count) == (3, 2, 5)
    th, tw = pic.tile_shape
    img = np.asarray(pic.image)
    ox, oy = pic.origin
    lut = colormap_lut("gray")
    for k in range(5):
        r, c = divmod(k, pic.cols)
        y0, x0 = oy + r * (th + 1), ox + c * (tw + 1)
        tile = img[y0 : y0 + th, x0 : x0 + tw]
        expected = lut[int(round(k / 4 * 255))]
        assert np.all(tile == expected), k
    assert pic.vmin == 0.0 and pic.vmax == 4.0


def test_zeroed_channel_is_a_flat_tile_in_both_modes():
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    arr[0, 2] = 0.0
    for mode in ("tile", "layer"):
        pic = render_layer("c", arr, _info("c", "NCHW", arr.shape), normalize=mode)
        th, tw = pic.tile_shape
        ox, oy = pic.origin
        r, c = divmod(2, pic.cols)
        tile = np.asarray(pic.image)[oy + r * (th + 1) : oy + r * (th + 1) + th, ox + c * (tw + 1) : ox + c * (tw + 1) + tw]
        assert (tile == tile[0, 0]).all(), mode
        live = np.asarray(pic.image)[oy : oy + th, ox : ox + tw]
        assert not (live == live[0, 0]).all()
        assert not np.isnan(pic.grid[:th, :tw]).any()


def test_nhwc_and_nchw_give_the_same_picture():
    rng = np.random.default_rng(1)
    nchw = rng.random((1, 7, 9, 9), dtype=np.float32)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    a = Activations({"x": nchw}, {"x": _info("x", "NCHW", nchw.shape)})
    b = Activations({"x": nhwc}, {"x": _info("x", "NHWC", nhwc.shape)})
    def grid_pixels(acts):
        pics = display_activations(acts, show=False)
        d = pics.details["x"]
        (ox, oy), (gh, gw) = d.origin, d.grid.shape
        return np.asarray(pics["x"])[oy : oy + gh, ox : ox + gw], d.grid

    pa, ga = grid_pixels(a)
    for other in (b, {"x": nhwc}, {"x": nchw}):  # plain dicts: layout guessed (H == W != C)
        po, go = grid_pixels(other)
        assert np.array_equal(pa, po) and np.array_equal(ga, go, equal_nan=True)


def test_caller_arrays_are_not_modified():
    rng = np.random.default_rng(2)
    acts = {"a": rng.standard_normal((2, 3, 5, 5)).astype(np.float32), "v": rng.standard_normal((2, 10))}
    before = {k: v.copy() for k, v in acts.items()}
    display_activations(acts, index="all", normalize="layer", show=False)
    display_heatmaps(acts, rng.random((2, 20, 30, 3)), show=False)
    for k in acts:
        assert np.array_equal(acts[k], before[k])


def test_one_d_layers_batches_and_figures():
    acts = {"dense": np.arange(20, dtype=np.float32).reshape(2, 10), "probs": np.array([[0.1, 0.9]])}
    pics = display_activations(acts, index="all", show=False)
    assert list(pics) == ["dense[0]", "dense[1]", "probs"]
    d = pics.details["dense[0]"]
    assert d.count == 1 and d.cols == 1  # one near-square tile: 4x3 cells, padding drawn as background
    assert "vector" in d.title
    one = display_activations(acts, index=1, layers=["dense"], show=False)
    assert list(one) == ["dense"] and "sample 1" in one.details["dense"].title
    figs = display_activations(acts, layers="probs", fmt="figure", show=False)
    from matplotlib.figure import Figure

    assert isinstance(figs["probs"], Figure)


def test_save_writes_position_and_sanitized_names(tmp_path):
    acts = {"model/conv 1/Relu:0": np.ones((1, 2, 3, 3)), "pool": np.zeros((1, 2, 2, 2))}
    pics = display_activations(acts, save=True, directory=tmp_path / "out", show=False)
    names = sorted(p.name for p in pics.paths)
    assert names == ["000_model_conv_1_Relu_0.png", "001_pool.png"]
    assert all(p.stat().st_size > 0 for p in pics.paths)
    assert safe_filename("../../etc/passwd") == "etc_passwd"
    assert not list(tmp_path.glob("*.png"))
    display_activations(acts, show=False)  # save=False writes nothing
    assert not list(tmp_path.glob("*.png"))


def test_bad_input_raises_one_line_errors(tmp_path):
    with pytest.raises(InputError):
        display_activations({}, show=False)
    with pytest.raises(LayerError, match="did you mean"):
        display_activations({"conv2d": np.ones((1, 2, 3, 3))}, layers=["conv2e"], show=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        display_activations({"a": np.ones((1, 2, 3, 3))}, save=True, directory=blocker / "sub", show=False)
    with pytest.raises(InputError):
        display_activations({"a": np.ones((1, 2, 3, 3))}, cmap="viridiss", show=False)
    with pytest.raises(InputError):
        display_activations({"a": np.ones((1, 2, 3, 3))}, index=3, show=False)
    with pytest.raises(InputError):
        display_heatmaps({"a": np.ones((1, 2, 3, 3))}, tmp_path / "missing.png", show=False)
    with pytest.raises(InputError, match="empty"):
        display_activations({"a": np.zeros((1, 0, 4, 4))}, show=False)
    for exc in (InputError("x"), LayerError("y")):
        assert isinstance(exc, OnnxactError) and "\n" not in str(exc)


def test_odd_values_and_dtypes_render_without_nan_or_warnings():
    import warnings

    cases = {"nan": np.full((1, 2, 3, 3), np.nan), "inf": np.array([[[[np.inf, 1], [0, -np.inf]]]]),
             "int": np.arange(18).reshape(1, 2, 3, 3), "bool": np.ones((1, 2, 3, 3), bool),
             "f16": np.ones((1, 2, 3, 3), np.float16), "scalar": np.float32(3), "5d": np.ones((1, 2, 3, 4, 5)),
             "nwc": np.ones((1, 7, 3))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pics = display_activations(cases, show=False)
    assert list(pics) == [k for k in cases if k != "scalar"]  # a 0-d array is listed as skipped, not drawn
    assert list(pics.skipped) == ["scalar"] and "not a map" in pics.skipped["scalar"]
    inf = pics.details["inf"].grid
    assert np.nanmax(inf) == 1.0 and np.nanmin(inf) == 0.0


def test_resize_bilinear_matches_pillow_upsampling():
    from PIL import Image

    rng = np.random.default_rng(3)
    m = rng.random((5, 7), dtype=np.float32)
    ours = resize_bilinear(m, 20, 28)
    pil = np.asarray(Image.fromarray(m, mode="F").resize((28, 20), Image.BILINEAR))
    assert ours.shape == (20, 28)
    assert np.allclose(ours, pil, atol=1e-4)


@pytest.mark.parametrize("image", ["grey", "colour", "chw", "batch", "odd"])
def test_heatmaps_shapes_ranges_any_image(image):
    rng = np.random.default_rng(4)
    img = {
        "grey": (rng.random((33, 47)) * 255).astype(np.uint8),
        "colour": rng.random((40, 40, 3)),
        "chw": rng.standard_normal((3, 24, 20)).astype(np.float32),
        "batch": rng.random((1, 16, 16, 3)),
        "odd": rng.random((7, 300, 1)),
    }[image]
    acts = {"c": rng.random((1, 3, 4, 4), dtype=np.float32)}
    acts["c"][0, 1] = 5.0  # a constant channel
    base = load_display_image(img)
    assert base.shape[2] == 3 and base.min() >= 0 and base.max() <= 1
    merged = display_heatmaps(acts, img, merge_filters=True, show=False)
    assert merged.details == {} and merged["c"].mode == "RGB"
    ov = overlay(img, acts["c"][0, 1])  # constant map -> flat, never NaN
    arr = np.asarray(ov)
    assert arr.shape[:2] == base.shape[:2]
    expected = np.rint(0.7 * base * 255 + 0.3 * colormap_lut("jet")[0]).astype(np.uint8)
    assert np.abs(arr.astype(int) - expected.astype(int)).max() <= 1
    grid = display_heatmaps(acts, img, show=False)["c"]
    assert grid.width > base.shape[1] // 2


def test_heatmap_alpha_zero_is_the_image_and_peak_is_hot():
    img = np.full((30, 30, 3), 0.5, np.float32)
    m = np.zeros((3, 3), np.float32)
    m[0, 0] = 1.0
    plain = np.asarray(overlay(img, m, alpha=0.0))
    assert (plain == 128).all()
    hot = np.asarray(overlay(img, m, alpha=1.0))
    assert hot[0, 0, 0] > 100 and hot[0, 0, 2] < 50  # jet red at the peak
    assert hot[-1, -1, 2] > 100  # jet blue far from it


def test_render_speed_seed_cnn_shapes(tmp_path):
    rng = np.random.default_rng(0)
    shapes = [(1, 16, 148, 148), (1, 16, 74, 74), (1, 32, 72, 72), (1, 32, 36, 36), (1, 64, 34, 34),
              (1, 64, 17, 17), (1, 64, 15, 15), (1, 64, 7, 7), (1, 64, 5, 5), (1, 64, 2, 2), (1, 256), (1, 512)]
    acts = {f"l{i}": np.maximum(rng.standard_normal(s, dtype=np.float32), 0) for i, s in enumerate(shapes)}
    display_activations({"warm": acts["l9"]}, show=False)
    t = time.perf_counter()
    pics = display_activations(acts, save=True, directory=tmp_path, show=False)
    elapsed = time.perf_counter() - t
    assert len(pics.paths) == len(shapes)
    assert elapsed < 1.5, elapsed  # typically ~0.3 s; Keract needs ~19 s


def test_progress_draws_only_on_a_terminal():
    import io

    from onnxact.progress import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    plain, tty = io.StringIO(), Tty()
    assert list(progress(range(3), stream=plain)) == [0, 1, 2] and plain.getvalue() == ""
    assert list(progress(iter(range(4)), total=4, desc="x", stream=tty, min_interval=0)) == [0, 1, 2, 3]
    assert "x [" in tty.getvalue() and "4/4" in tty.getvalue()


def test_pictures_show_inline_as_html():
    pics = display_activations({"a": np.ones((1, 2, 3, 3))}, show=False)
    html = pics._repr_html_()
    assert html.count("<img") == 1 and "data:image/png;base64," in html


def test_import_onnxact_stays_light():
    import subprocess
    import sys

    code = ("import sys, onnxact, onnxact.render, onnxact.cam, onnxact.report, onnxact.progress;"
            "print(sorted(m for m in ('matplotlib', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_demo_model_onnx_and_source_layout_give_the_same_grids():
    import onnxact

    model_path, image = onnxact.demo_paths()
    m = onnxact.load(model_path)
    nchw = onnxact.get_activations(m, str(image))
    nhwc = onnxact.get_activations(m, str(image), layout="source")
    a = display_activations(nchw, show=False)
    b = display_activations(nhwc, show=False)
    assert list(a) == list(b) and len(a) >= 10
    for k in a:
        assert np.array_equal(a.details[k].grid, b.details[k].grid, equal_nan=True), k
    ha = display_heatmaps(nchw, nchw.inputs[m.inputs[0].name], merge_filters=True, show=False)
    hb = display_heatmaps(nhwc, str(image), merge_filters=True, show=False)
    assert list(ha) == list(hb)
