"""Dataset exemplars (issue 15): the top-K lists against an independent computation on real photos.

The reference captures every image's maps with ``get_activations`` (whole maps, no in-graph
reduction), takes each image's channel max and its first argmax, and sorts by (value desc,
path): the scan's lists must hold the same images, values and positions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxact
from onnxact.errors import InputError, LayerError
from onnxact.exemplar_scan import EMPTY, LayerTop, TopK
from tests.subjects import photo
from tests.wild_fixtures import keras_bn_act, wild_dir, yolo_detector  # noqa: F401 - fixtures

DEMO = str(onnxact.demo_paths()[0])
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
          "page.png", "horse.png", "brick.png", "hubble_deep_field.jpg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Ten real photos of odd sizes (512x512, 451x300, 400x600, 427x640, ...), one grey."""
    d = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(photo(name), d / name)
    return d


def reference(model, folder: Path, layer: str, **kw) -> list[tuple[str, float, tuple[int, int]]]:
    """(path, channel max, (row, col) of its first argmax) of every image, per channel, sorted as the
    scan must: value descending, then path. Computed from whole captured maps, one image at a time."""
    m = onnxact.load(model)
    from onnxact.stats import scan_preprocess

    kw = scan_preprocess(m, str(folder), kw)
    per: dict[int, list] = {}
    for p in sorted(str(q) for q in folder.iterdir()):
        x = onnxact.preprocess_image(p, m, **kw)
        acts = onnxact.get_activations(m, x, layer_names=[layer])
        a = np.asarray(acts[layer], np.float64)[0]
        if acts.layers[layer].layout == "NHWC":
            a = np.moveaxis(a, -1, 0)
        flat = a.reshape(a.shape[0], -1)
        w = a.shape[-1] if a.ndim == 3 else 1
        for c in range(a.shape[0]):
            i = int(flat[c].argmax())
            per.setdefault(c, []).append((p, float(flat[c].max()), (i // w, i % w) if a.ndim == 3 else (0, i)))
    return {c: sorted(v, key=lambda e: (-e[1], e[0])) for c, v in per.items()}


@pytest.mark.parametrize("layer", ["conv2", "pool3", "conv5"])
def test_top_k_equals_independent_computation_on_real_photos(photos, layer):
    ex = onnxact.find_exemplars(DEMO, photos, top=4, layers=[layer])
    ref = reference(DEMO, photos, layer)
    assert ex.images == len(PHOTOS) and list(ex.layers) == [layer]
    chans = ex.layers[layer]
    assert len(chans) == len(ref)
    for c, entries in enumerate(chans):
        want = ref[c][:4]
        assert [e.image for e in entries] == [w[0] for w in want], c
        np.testing.assert_allclose([e.value for e in entries], [w[1] for w in want], rtol=1e-5, atol=1e-6)
        # positions: exact where the maximum is unique in its map (ties keep the first in reading order)
        assert [e.position for e in entries] == [w[2] for w in want], c


def test_keras_bn_model_matches_capture(keras_bn_act, photos):  # noqa: F811
    m = onnxact.load(keras_bn_act)
    layer = m.layers[1].name
    ex = onnxact.find_exemplars(m, photos, top=3, layers=[layer])
    ref = reference(keras_bn_act, photos, layer)
    for c, entries in enumerate(ex.layers[layer]):
        assert [e.image for e in entries] == [w[0] for w in ref[c][:3]]
        np.testing.assert_allclose([e.value for e in entries], [w[1] for w in ref[c][:3]], rtol=1e-5, atol=1e-6)
        assert [e.position for e in entries] == [w[2] for w in ref[c][:3]]


def test_boxes_are_inside_the_original_image_and_hold_the_maximum(photos):
    ex = onnxact.find_exemplars(DEMO, photos, top=3, layers=["conv3"])
    sizes = {str(p): Image.open(p).size for p in photos.iterdir()}
    for entries in ex.layers["conv3"]:
        for e in entries:
            w, h = sizes[e.image]
            x0, y0, x1, y1 = e.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (e, w, h)


def test_ties_are_broken_by_path_and_fewer_images_than_k(tmp_path):
    # one black image under three names: every channel ties on every image
    img = Image.new("RGB", (90, 70))
    for name in ("b.png", "a.png", "c.png"):
        img.save(tmp_path / name)
    ex = onnxact.find_exemplars(DEMO, tmp_path, top=5, batch_size=2)
    assert ex.images == 3 and ex.fewer_than_top
    for chans in ex.layers.values():
        for entries in chans:
            assert [Path(e.image).name for e in entries] == ["a.png", "b.png", "c.png"]


def test_memory_is_k_entries_per_channel_whatever_the_image_count(photos, tmp_path):
    """The state after 50 images is the size of the state after 5: K entries per channel."""
    from onnxact.exemplar_scan import sample_keys, sample_labels, scan_exemplars
    from onnxact.images import expand_sources

    m = onnxact.load(DEMO)
    lst = tmp_path / "many.txt"
    files = sorted(str(p) for p in photos.iterdir())
    sizes = {}
    for n in (5, 50):
        lst.write_text("".join(f"{files[i % len(files)]}\n" for i in range(n)))
        items = expand_sources(lst)
        labels = sample_labels(items)
        state = scan_exemplars(m, items, sample_keys(labels), m.layers, 4, batch_size=8, size=(128, 128))
        assert state.images == n
        sizes[n] = state.nbytes
        assert all(t.values.shape == (li.shape[li.channel_axis], 4) for li, t in zip(m.layers, state.layers.values()))
    assert sizes[5] == sizes[50]


def test_merge_is_order_independent():
    rng = np.random.default_rng(0)
    parts = []
    for p in range(5):
        v = rng.integers(0, 4, (3, 4)).astype(np.float64)  # many ties
        keys = rng.permutation(100)[:4] + 100 * p
        parts.append(TopK(3, {"l": LayerTop(v, np.broadcast_to(keys, (3, 4)).copy(), np.zeros((3, 4), np.int32),
                                            np.zeros((3, 4), np.int32))}, {}, 4))
    a = parts[0]
    for p in parts[1:]:
        a = a.merge(p)
    b = parts[-1]
    for p in reversed(parts[:-1]):
        b = p.merge(b)
    assert np.array_equal(a.layers["l"].keys, b.layers["l"].keys)
    assert np.array_equal(a.layers["l"].values, b.layers["l"].values)
    assert a.layers["l"].k == 3 and (a.layers["l"].keys != EMPTY).all()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_top(photos, bad):
    with pytest.raises(InputError, match="top must be"):
        onnxact.find_exemplars(DEMO, photos, top=bad)


def test_unknown_layer(photos):
    with pytest.raises(LayerError):
        onnxact.find_exemplars(DEMO, photos, layers=["no_such_layer"])


def test_unreadable_images_are_skipped_or_strict(photos, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(photos / "coffee.png", d / "coffee.png")
    (d / "broken.png").write_bytes(b"not a png")
    ex = onnxact.find_exemplars(DEMO, d, top=2)
    assert ex.images == 1 and [p for p, _ in ex.skipped] == [str(d / "broken.png")]
    with pytest.raises(InputError, match="broken.png"):
        onnxact.find_exemplars(DEMO, d, top=2, strict=True)


def test_json_schema(photos):
    ex = onnxact.find_exemplars(DEMO, photos, top=2, layers=["conv1", "pool5"])
    d = json.loads(json.dumps(ex.to_json()))
    assert d["model"] == "demo_cnn.onnx" and d["images"] == len(PHOTOS) and set(d["layers"]) == {"conv1", "pool5"}
    for chans in d["layers"].values():
        assert [c["channel"] for c in chans] == list(range(len(chans)))
        for c in chans:
            vals = [e["value"] for e in c["top"]]
            assert vals == sorted(vals, reverse=True)
            for e in c["top"]:
                assert set(e) >= {"image", "value", "box"} and len(e["box"]) == 4
    back = onnxact.Exemplars.from_json(d)
    assert back.layers["pool5"][3] == ex.layers["pool5"][3]


def test_rapidocr_det_letterboxed_matches_capture(photos, tmp_path):
    """PP-OCRv4 det (dynamic H/W, letterboxed at one size for the scan, weights in Constants): the
    top list of a stride-8 layer equals the whole-map capture's."""
    from tests.subjects import rapidocr_models

    det = rapidocr_models()["det"]
    d = tmp_path / "four"
    d.mkdir()
    for name in ("page.png", "coffee.png", "rocket.jpg", "camera.png"):
        shutil.copy(photos / name, d / name)
    m = onnxact.load(det)
    layer = "conv2d_401"  # a Conv + HardSwish at stride 8 of the backbone
    assert layer in [li.name for li in m.layers]
    ex = onnxact.find_exemplars(m, d, top=3, layers=[layer], size=(320, 320))
    assert ex.resize == "letterbox" and ex.input_size == (320, 320)
    ref = reference(det, d, layer, size=(320, 320))
    for c, entries in enumerate(ex.layers[layer]):
        assert [e.image for e in entries] == [w[0] for w in ref[c][:3]], c
        np.testing.assert_allclose([e.value for e in entries], [w[1] for w in ref[c][:3]], rtol=1e-4, atol=1e-5)
        assert [e.position for e in entries] == [w[2] for w in ref[c][:3]], c
