"""Pictures that hold up on real models (issue 14): 1x1 maps as bar charts, 1-D maps as channels x
time images with a time axis, colour bars with numbers, channel numbers, grids at a given width,
Keract's keyword arguments; checked on pixels, then on the audio net, rapidocr cls and the detector."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

import onnxact
from onnxact.activations import LayerInfo
from onnxact.errors import InputError
from onnxact.render import colormap_lut, display_activations, display_heatmaps, render_layer
from onnxact.render.text import line_height, stamp

from .subjects import keract_source, photo, rapidocr_models

_SEPARATOR = (235, 235, 235)


def _info(name, layout, shape, op="Conv"):
    return LayerInfo(name=name, tensor=name + ":0", op_type=op, layout=layout, shape=tuple(shape))


def _crop(pic, box):
    x, y, w, h = box
    return np.asarray(pic.image)[y:y + h, x:x + w]


def _right_of_grid(pic) -> int:
    """x of the first pixel right of the grid / chart body (the colour bar starts 6 px after)."""
    return max(x + w for x, _, w, _ in pic.tile_boxes)


# ---------------------------------------------------------------- 1x1 maps


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NC"])
def test_one_by_one_maps_are_a_bar_chart_whose_bars_follow_the_values(layout):
    v = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.25, 3.0, 0.75], np.float32)
    arr = {"NCHW": v.reshape(1, 8, 1, 1), "NHWC": v.reshape(1, 1, 1, 8), "NC": v.reshape(1, 8)}[layout]
    pic = render_layer("se", arr, _info("se", layout, arr.shape))
    assert pic.kind == "bars" and pic.values == v.tolist() and pic.channels == list(range(8))
    assert (pic.vmin, pic.vmax) == (-1.0, 3.0) and pic.tile_ranges == [(float(x), float(x)) for x in v]
    lut = colormap_lut(None)
    unit = 127 / (3.0 - (-1.0))  # plot height 128 px spans min(v, 0)..max(v, 0)
    heights = []
    for i, x in enumerate(v):
        col = _crop(pic, pic.tile_boxes[i])[:, pic.tile_boxes[i][2] // 2]
        colour = lut[int(round((x + 1.0) / 4.0 * 255))]
        heights.append(int((col == colour).all(axis=1).sum()))
    assert heights[3] <= 1  # the zero channel has no bar
    for h, x in zip(heights, v):
        assert abs(h - abs(x) * unit) <= 2, (heights, v)
    plot = _crop(pic, (pic.tile_boxes[0][0], pic.tile_boxes[0][1], _right_of_grid(pic) - pic.tile_boxes[0][0],
                       pic.tile_boxes[0][3]))
    assert plot.std() > 20 and len(np.unique(plot.reshape(-1, 3), axis=0)) > 8  # never a flat picture


def test_one_by_one_layer_was_identical_tiles_and_is_no_longer():
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((1, 64, 1, 1)).astype(np.float32)
    pics = display_activations({"gap": arr}, show=False)
    d = pics.details["gap"]
    assert d.kind == "bars" and d.count == 64 and "one value per channel" in d.title
    lut = {tuple(c) for c in colormap_lut(None)}

    def bar_colour(box):  # the colormap colour filling most of the bar's column
        col = [tuple(c) for c in _crop(d, box)[:, box[2] // 2] if tuple(c) in lut]
        return max(set(col), key=col.count) if col else None

    colours = [bar_colour(b) for b in d.tile_boxes]
    assert len(set(colours)) > 32  # distinct channel values -> distinct colours, not 64 equal squares
    # many channels: binned into the width, each bin drawn from its min to its max
    wide = render_layer("dense", rng.standard_normal((1, 5000)).astype(np.float32), max_width=800)
    assert wide.image.width <= 800 and wide.kind == "bars" and "in " in wide.title and len(wide.values) == 5000


# ---------------------------------------------------------------- 1-D maps


def _waves(c=8, t=2000):
    steps = np.arange(t, dtype=np.float32)
    return np.stack([np.sin(steps * (k + 1) / 150.0) * (k + 1) for k in range(c)])[None].astype(np.float32)


def test_ncw_8x2000_is_a_tall_channels_by_time_image_with_a_time_axis():
    arr = _waves()
    pic = render_layer("conv1d", arr, _info("conv1d", "NCW", arr.shape, "Conv"))
    assert pic.kind == "sequence" and pic.count == 8 and "channels x time" in pic.title
    x0, y0, w, _ = pic.tile_boxes[0]
    bottom = pic.tile_boxes[-1][1] + pic.tile_boxes[-1][3]
    assert bottom - y0 >= 64 and all(b[3] >= 8 for b in pic.tile_boxes)  # readable rows
    assert w >= 900  # the time axis takes the width (2000 steps binned to it)
    img = np.asarray(pic.image).astype(int)
    assert (img[bottom, x0:x0 + w] == (110, 110, 110)).all()  # the axis line under the image
    labels = img[bottom + 4:bottom + 4 + line_height(10), x0 - 2:x0 + w + 2].min(axis=(0, 2)) < 120
    runs = np.count_nonzero(np.diff(labels.astype(int)) == 1) + int(labels[0])
    assert runs >= 5  # at least five tick labels (0, 500, 1000, 1500, 2000 or finer)
    for i, (lo, hi) in enumerate(pic.tile_ranges):  # each channel's range, for hover text
        assert (lo, hi) == (float(arr[0, i].min()), float(arr[0, i].max()))
    # the same picture from NWC (Keract's channels_last) and from a [N, C, 1, T] 2-D conv
    nwc = np.ascontiguousarray(arr.transpose(0, 2, 1))
    other = display_activations({"conv1d": nwc}, data_format="channels_last", show=False).details["conv1d"]
    flat = render_layer("conv1d", arr[:, :, None, :], _info("conv1d", "NCHW", (1, 8, 1, 2000), "Conv"))
    for p in (other, flat):
        assert p.kind == "sequence" and np.array_equal(p.grid, pic.grid)
        assert np.array_equal(_crop(p, p.tile_boxes[0]), _crop(pic, pic.tile_boxes[0]))


def test_one_d_rows_scale_per_channel_or_per_layer():
    arr = _waves(4, 300)
    tile = render_layer("a", arr, _info("a", "NCW", arr.shape))
    layer = render_layer("a", arr, _info("a", "NCW", arr.shape), normalize="layer")
    assert tile.scale == "per channel" and layer.scale == "layer"
    assert np.nanmax(tile.grid[0]) == pytest.approx(1.0, abs=0.02)  # channel 0 (amplitude 1) fills its range
    assert np.nanmax(layer.grid[0]) < 0.7  # ... but not the layer's (amplitudes 1..4)


# ---------------------------------------------------------------- colour bars, numbers, width


def test_colour_bar_carries_the_layer_range_in_numbers():
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((1, 6, 10, 10)) * 3).astype(np.float32)
    info = _info("c", "NCHW", arr.shape)
    for mode in ("layer", "tile"):
        a = render_layer("c", arr, info, normalize=mode)
        b = render_layer("c", arr * 4, info, normalize=mode)  # x4: the same colours, other numbers
        assert (a.vmin, a.vmax) == (float(arr.min()), float(arr.max()))
        assert a.tile_ranges == [(float(arr[0, k].min()), float(arr[0, k].max())) for k in range(6)]
        assert a.scale == ("layer" if mode == "layer" else "per tile")
        ia, ib = np.asarray(a.image), np.asarray(b.image)
        assert ia.shape == ib.shape
        differs = np.argwhere((ia != ib).any(axis=2))
        bar_x = _right_of_grid(a) + 6
        assert len(differs) > 20, mode  # the numbers changed...
        assert differs[:, 1].min() >= bar_x, mode  # ...and nothing but the labels by the bar (the grid stays)
        labels = ia[a.origin[1]:, bar_x + 18:]
        assert (labels < 100).any()  # dark digits drawn


def test_channel_numbers_are_drawn_above_each_tile():
    rng = np.random.default_rng(2)
    arr = rng.random((1, 12, 8, 8), dtype=np.float32)
    info = _info("c", "NCHW", arr.shape)
    numbered = render_layer("c", arr, info, channel_numbers=True)
    plain = render_layer("c", arr, info)
    band = line_height(10)
    img = np.asarray(numbered.image)
    for i, box in enumerate(numbered.tile_boxes):
        x, y, w, _ = box
        expected = np.empty((band, w, 3), np.uint8)
        expected[:] = _SEPARATOR
        stamp(expected, 1, 0, str(i), 10)
        assert np.array_equal(img[y - band:y, x:x + w], expected), i  # the digits of channel i
        assert np.array_equal(_crop(numbered, box), _crop(plain, plain.tile_boxes[i]))  # tiles untouched
    assert numbered.channels == list(range(12)) and numbered.image.height > plain.image.height
    one = render_layer("c", arr[:, :1], _info("c", "NCHW", (1, 1, 8, 8)), channel_numbers=True)
    assert one.image.height == render_layer("c", arr[:, :1], _info("c", "NCHW", (1, 1, 8, 8))).image.height


@pytest.mark.parametrize("width", [600, 800, 1200])
def test_grids_fill_the_width_asked(width):
    rng = np.random.default_rng(3)
    arr = rng.random((1, 64, 20, 20), dtype=np.float32)
    key = "a_rather_long_layer_name/with/scopes/conv2d_17/Relu:0"
    pic = render_layer(key, arr, _info(key, "NCHW", arr.shape), max_width=width, channel_numbers=True)
    tw = pic.tile_shape[1]
    assert 0 <= width - pic.image.width <= tw + 1, (pic.image.width, tw)  # no room left for another column
    assert pic.cols * pic.rows >= 64 and pic.image.height <= width  # not a tall tower either
    wider = render_layer(key, arr, _info(key, "NCHW", arr.shape), max_width=width * 2)
    assert wider.cols > pic.cols or wider.tile_shape[1] > tw


def test_elongated_single_map_is_stretched_not_a_hair_line():
    arr = np.random.default_rng(4).random((1, 1, 4, 5376), dtype=np.float32)  # a detector's DFL box map
    pic = render_layer("dfl", arr, _info("dfl", "NCHW", arr.shape), max_width=1200)
    assert pic.image.width <= 1200 and pic.tile_boxes[0][3] >= 100 and "binned" in pic.title


def test_tile_ranges_stay_finite_for_hover_text():
    import json

    odd = {"bars": np.array([[np.nan, 1, np.inf, -np.inf, 2]], np.float32),
           "grid": np.array([[[[np.inf, 1], [np.nan, 0]], [[np.nan, np.nan], [np.nan, np.nan]]]], np.float32),
           "seq": np.array([[[np.nan, np.inf, 1], [3, -np.inf, 2]]], np.float32)}
    pics = display_activations(odd, show=False, channel_numbers=True)
    for d in pics.details.values():
        json.dumps([d.tile_ranges, d.tile_boxes, d.channels], allow_nan=False)  # what a page embeds
    assert pics.details["grid"].tile_ranges == [(0.0, 1.0), (0.0, 0.0)]
    assert pics.details["seq"].tile_ranges == [(1.0, 1.0), (2.0, 3.0)]
    assert np.isnan(pics.details["bars"].values[0]) and pics.details["bars"].values[2] == np.inf  # as captured


# ---------------------------------------------------------------- Keract users


def _keract_signatures() -> dict[str, list[tuple[str, object]]]:
    tree = ast.parse(keract_source().read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in ("display_activations", "display_heatmaps"):
            names = [a.arg for a in node.args.args]
            defaults = [ast.literal_eval(d) for d in node.args.defaults]
            out[node.name] = list(zip(names, [inspect.Parameter.empty] * (len(names) - len(defaults)) + defaults))
    return out


def test_keract_452_parameters_are_all_accepted():
    keract = _keract_signatures()
    assert [n for n, _ in keract["display_activations"]] == ["activations", "cmap", "save", "directory", "data_format",
                                                              "fig_size", "reshape_1d_layers"]
    for name, ours in (("display_activations", display_activations), ("display_heatmaps", display_heatmaps)):
        params = inspect.signature(ours).parameters
        for kname, _ in keract[name]:
            assert kname in params, (name, kname)
    # display_activations takes Keract's arguments in Keract's positional order
    ours = [n for n, p in inspect.signature(display_activations).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert ours[:7] == [n for n, _ in keract["display_activations"]]


@pytest.fixture(scope="module")
def demo():
    model, image = onnxact.demo_paths()
    m = onnxact.load(model)
    x = onnxact.preprocess_image(str(image), m)
    return onnxact.get_activations(m, x), x


def test_seed_article_keract_calls_run_unchanged(demo, tmp_path, monkeypatch):
    activations, x = demo
    monkeypatch.chdir(tmp_path)
    # the seed article's two calls, as written for Keract
    grids = display_activations(activations, save=False)
    heat = display_heatmaps(activations, x, save=False)
    assert len(grids) == len(activations) >= 10 and len(heat) >= 5 and not list(tmp_path.iterdir())
    # the rest of Keract's keywords, with their meaning
    out = display_activations(activations, cmap="gray", save=True, directory="acts", data_format="channels_first",
                              fig_size=(8, 6), reshape_1d_layers=True)
    assert len(list((tmp_path / "acts").glob("*.png"))) == len(activations)
    for k, img in out.items():
        a = np.asarray(img)
        assert a.shape[1] <= 800  # fig_size width 8 in at 100 dpi
        tile = _crop(out.details[k], out.details[k].tile_boxes[0])
        assert (tile[..., 0] == tile[..., 1]).all() and (tile[..., 1] == tile[..., 2]).all()  # cmap="gray"
    merged = display_heatmaps(activations, x, directory="heat", save=True, fix=True, merge_filters=True)
    figs = display_heatmaps(activations, x, merge_filters=True, fmt="figure")
    assert all("mean of filters" in f.get_label() for f in figs.values())
    assert len(list((tmp_path / "heat").glob("*.png"))) == len(merged)
    # Keract's positional order (activations, input_image, directory, save, fix, merge_filters)
    positional = display_heatmaps(activations, x, "heat2", True, True, True)
    assert len(list((tmp_path / "heat2").glob("*.png"))) == len(positional) == len(merged)
    for k in merged:
        assert np.array_equal(np.asarray(positional[k]), np.asarray(merged[k]))
    by_name = display_heatmaps(activations, input_image=x, merge_filters=True)
    assert all(np.array_equal(np.asarray(by_name[k]), np.asarray(merged[k])) for k in merged)


def test_keract_data_format_and_fig_size_mean_what_they_mean():
    rng = np.random.default_rng(5)
    nchw = rng.random((1, 8, 8, 8), dtype=np.float32)  # C == H == W: a plain dict's layout is a guess
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    first = display_activations({"x": nchw}, data_format="channels_first", show=False)
    last = display_activations({"x": nhwc}, data_format="channels_last", show=False)
    assert np.array_equal(np.asarray(first["x"]), np.asarray(last["x"]))
    wrong = display_activations({"x": nhwc}, data_format="channels_first", show=False)
    assert not np.array_equal(np.asarray(wrong["x"]), np.asarray(last["x"]))
    small = display_activations({"x": rng.random((1, 64, 20, 20), dtype=np.float32)}, fig_size=(5, 3), show=False)
    assert small["x"].width <= 500 and small.details["x"].tile_boxes[-1][1] <= 300 + 40
    with pytest.raises(InputError, match="data_format"):
        display_activations({"x": nchw}, data_format="channels_middle", show=False)
    with pytest.raises(InputError, match="fig_size"):
        display_activations({"x": nchw}, fig_size=24, show=False)
    with pytest.raises(InputError, match="image"):
        display_heatmaps({"x": nchw}, show=False)


# ---------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory):
    from .test_inputs_cli import export_audio_net

    return export_audio_net(tmp_path_factory.mktemp("audio_pictures"))


def test_audio_net_maps_are_channels_by_time_pictures_with_torch_ranges(audio_model):
    from .test_inputs_cli import torch_maps

    path, net = audio_model
    t = np.linspace(0, 1, 8000, dtype=np.float32)
    wave = ((np.sin(2 * np.pi * 440 * t) * (t > 0.3) + 0.3 * np.sin(2 * np.pi * 60 * t))[None, None]).astype(np.float32)
    acts = onnxact.get_activations(onnxact.load(path), {"waveform": wave, "sample_rate": np.array(16000),
                                                         "gain": np.array([1.0], np.float32)})
    pics = display_activations(acts, show=False, max_width=1200, channel_numbers=True)
    reference = torch_maps(net, wave, 16000, 1.0)
    assert len(pics) == len(reference) == 4
    for (key, d), ref in zip(pics.details.items(), reference):
        assert d.kind == "sequence" and d.image.width <= 1200, key
        assert d.tile_boxes[-1][1] + d.tile_boxes[-1][3] - d.tile_boxes[0][1] >= 64, key
        got = np.array(d.tile_ranges)
        want = np.stack([ref[0].min(axis=-1), ref[0].max(axis=-1)], axis=1)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5), key
        body = _crop(d, (d.tile_boxes[0][0], d.tile_boxes[0][1], d.tile_boxes[0][2],
                         d.tile_boxes[-1][1] + d.tile_boxes[-1][3] - d.tile_boxes[0][1]))
        assert body.std() > 10, key


def test_rapidocr_cls_squeeze_excite_layers_are_bar_charts():
    model = onnxact.load(rapidocr_models()["cls"])
    acts = onnxact.get_activations(model, str(photo("coffee.png")))
    pics = display_activations(acts, show=False, max_width=1200, channel_numbers=True)
    ones = [k for k, v in acts.items() if v.ndim == 4 and v.shape[2] * v.shape[3] == 1]
    assert len(ones) >= 10  # global pools and the two squeeze-excite convs of each block
    for k in ones:
        d = pics.details[k]
        assert d.kind == "bars" and np.array_equal(np.float32(d.values), acts[k].reshape(-1)), k
        if np.ptp(acts[k]) > 0:
            plot = _crop(d, (d.tile_boxes[0][0], d.tile_boxes[0][1], _right_of_grid(d) - d.tile_boxes[0][0],
                             d.tile_boxes[0][3]))
            assert plot.std() > 5, k
    for k, d in pics.details.items():
        assert d.image.width <= 1200 and (d.kind != "grid" or min(d.tile_shape) >= 2), k


def test_detector_pictures_fit_the_page_with_numbers(yolo_detector):
    model = onnxact.load(yolo_detector)
    x = onnxact.preprocess_image(str(photo("astronaut.png")), model)
    acts = onnxact.get_activations(model, x)
    pics = display_activations(acts, show=False, max_width=1200, channel_numbers=True)
    assert len(pics) == len(acts) >= 40
    for k, d in pics.details.items():
        assert d.image.width <= 1200 and d.image.height <= 1400, (k, d.image.size)
        assert len(d.channels) == len(d.tile_ranges) == len(d.tile_boxes) == d.count, k
        if d.kind == "grid":
            assert min(d.tile_shape) >= 16, (k, d.tile_shape)  # no hair-thin tiles (the 4 x N DFL map)
            arr = np.asarray(acts[k])[0]
            lo, hi = d.tile_ranges[-1]
            assert (lo, hi) == (float(arr[-1].min()), float(arr[-1].max())), k
    heat = display_heatmaps(acts, x, show=False, max_width=1200)
    assert all(v.width <= 1200 for v in heat.values())

