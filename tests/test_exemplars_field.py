"""Exemplar boxes from receptive fields (issue 15) on models whose fields are known by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxact
from onnxact.receptive import receptive_fields
from tests.wild_fixtures import wild_dir, yolo_detector  # noqa: F401 - fixtures


def _model(path, convs, size=(32, 32), channels=4, weights="ones", seed=0):
    """A chain of (op, kernel, stride, pad) Conv / MaxPool nodes, each conv + Relu; input [N, 1, H, W]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, cin = [], [], "x", 1
    for i, (op, k, s, p) in enumerate(convs):
        if op == "Conv":
            w = np.ones((channels, cin, k, k), np.float32) if weights == "ones" else \
                rng.standard_normal((channels, cin, k, k)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], kernel_shape=[k, k], strides=[s, s],
                                       pads=[p] * 4, name=f"conv{i}"),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
            prev, cin = f"r{i}", channels
        else:
            nodes.append(helper.make_node("MaxPool", [prev], [f"p{i}"], kernel_shape=[k, k], strides=[s, s],
                                          name=f"pool{i}"))
            prev = f"p{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, *size])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.metadata_props.add(key="onnxact.preprocess", value='{"normalize": "0-1", "color": "grey"}')
    onnx.save(m, path)
    return str(path)


def _spot(path, size, at, value=255, noise=0):
    """A grey image (w, h) = size, black (or faint noise) with one bright pixel at ``at`` (x, y)."""
    a = (np.random.default_rng(1).random((size[1], size[0])) * noise).astype(np.uint8)
    a[at[1], at[0]] = value
    Image.fromarray(a, "L").save(path)
    return path


def test_stack_of_3x3_convs_box_is_7px_around_the_spot(tmp_path):
    """Three 3x3 convs (pad 1, all-ones weights): field 7x7; the strongest cell is the spot itself."""
    model = _model(tmp_path / "c3.onnx", [("Conv", 3, 1, 1)] * 3)
    d = tmp_path / "imgs"
    d.mkdir()
    _spot(d / "a.png", (32, 32), (20, 11))  # fed as is (32x32): input pixels = image pixels
    _spot(d / "b.png", (64, 48), (41, 19))  # stretched 2x in x, 1.5x in y
    ex = onnxact.find_exemplars(model, d, top=2)
    layer = list(ex.layers)[-1]
    by_image = {e.image.rsplit("/", 1)[-1]: e for e in ex.layers[layer][0]}
    a = by_image["a.png"]
    assert a.position == (11, 20)
    assert a.box == (20 - 3, 11 - 3, 20 + 4, 11 + 4)  # by hand: centre pixel +- 3
    b = by_image["b.png"]
    r, c = b.position  # the spot at x 41 / 2 = 20.5, y 19 / 1.5 = 12.7 in input pixels
    assert (r, c) in {(12, 20), (13, 20), (12, 21), (13, 21)}
    # by hand: input box [c - 3, c + 4) x [r - 3, r + 4), scaled by 2 (x) and 1.5 (y), outward to whole pixels
    assert b.box == (2 * (c - 3), int(np.floor(1.5 * (r - 3))), 2 * (c + 4), int(np.ceil(1.5 * (r + 4))))
    x0, y0, x1, y1 = b.box
    assert x0 <= 41 < x1 and y0 <= 19 < y1


def test_stride_2_and_pool_field_by_hand(tmp_path):
    """Conv 3x3 stride 2 pad 1 -> MaxPool 2x2 -> Conv 3x3 pad 1: jump 4, size 13, cell 0 centred at 1.5."""
    model = _model(tmp_path / "s2.onnx", [("Conv", 3, 2, 1), ("MaxPool", 2, 2, 0), ("Conv", 3, 1, 1)],
                   size=(64, 64), weights="random")
    m = onnxact.load(model)
    fields = receptive_fields(m, [m.layers[-1].tensor], (64, 64))
    f = fields[m.layers[-1].tensor]
    assert (f.y.jump, f.y.size, f.y.start, f.y.length) == (4.0, 13.0, 1.5, 16)
    assert (f.x.jump, f.x.size, f.x.start) == (4.0, 13.0, 1.5)
    first = receptive_fields(m, [m.layers[0].tensor], (64, 64))[m.layers[0].tensor]
    assert (first.x.jump, first.x.size, first.x.start, first.x.length) == (2.0, 3.0, 0.5, 32)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((64, 64)) * 255).astype(np.uint8), "L").save(d / f"{i}.png")
    ex = onnxact.find_exemplars(m, d, top=4, layers=[m.layers[-1].name])
    acts = {}
    for p in sorted(d.iterdir()):
        acts[str(p)] = onnxact.get_activations(m, str(p), layer_names=[m.layers[-1].name])[m.layers[-1].name][0]
    for ch, entries in enumerate(ex.layers[m.layers[-1].name]):
        for e in entries:
            a = acts[e.image][ch]
            r, c = np.unravel_index(int(a.argmax()), a.shape)
            assert e.position == (r, c)
            # by hand: centre 1.5 + 4 * cell, +- 6.5, clipped to the 64x64 image
            want = (max(0, 4 * c - 5), max(0, 4 * r - 5), min(64, 4 * c + 8), min(64, 4 * r + 8))
            assert e.box == want


def test_letterboxed_detector_boxes_land_on_the_original_photo(yolo_detector, tmp_path):  # noqa: F811
    """The wild YOLO-style detector (dynamic H/W, letterbox): a bright square on a dark 600x400
    photo; the top exemplar box of the first layer's strongest channels covers part of it."""
    d = tmp_path / "imgs"
    d.mkdir()
    a = np.zeros((400, 600, 3), np.uint8)
    a[150:190, 420:470] = 255
    Image.fromarray(a).save(d / "square.png")
    Image.fromarray(np.zeros((400, 600, 3), np.uint8)).save(d / "black.png")
    m = onnxact.load(yolo_detector)
    ex = onnxact.find_exemplars(m, d, top=1, layers=[m.layers[0].name])
    assert ex.resize == "letterbox"
    entries = [c[0] for c in ex.layers[m.layers[0].name] if c and c[0].image.endswith("square.png")]
    assert entries
    for e in entries:
        x0, y0, x1, y1 = e.box
        assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 400
    # the channels that fire most on the square's edges: their box touches the square
    best = sorted(entries, key=lambda e: -e.value)[:3]
    for e in best:
        x0, y0, x1, y1 = e.box
        assert x0 < 470 and x1 > 420 and y0 < 190 and y1 > 150, e


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "VALID"])
def test_auto_pad(tmp_path, auto_pad):
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    n = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=auto_pad)
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    m = onnxact.load(p)
    f = receptive_fields(m, ["y"], (9, 9))["y"]
    # SAME_UPPER at 9 px, stride 2: out 5, total pad 2, 1 before -> cell 0 centred on pixel 0 (0.5)
    want_start, want_len = (0.5, 5) if auto_pad == "SAME_UPPER" else (1.5, 4)
    assert (f.x.start, f.x.length, f.x.size, f.x.jump) == (want_start, want_len, 3.0, 2.0)


def test_equal_maxima_give_the_first_position_in_reading_order(tmp_path):
    """Two equally bright spots: the position is the first in reading order, as a row-major argmax."""
    model = _model(tmp_path / "c3.onnx", [("Conv", 3, 1, 1)] * 2)
    d = tmp_path / "imgs"
    d.mkdir()
    a = np.zeros((32, 32), np.uint8)
    a[12, 3] = a[5, 20] = 255  # (row, col): (5, 20) comes first
    Image.fromarray(a, "L").save(d / "two.png")
    ex = onnxact.find_exemplars(model, d, top=1)
    for entries in ex.layers[list(ex.layers)[-1]]:
        assert entries[0].position == (5, 20)
        assert entries[0].box == (20 - 2, 5 - 2, 20 + 3, 5 + 3)  # two 3x3 convs: 5x5 field
