"""onnxact.widget: the viewer's views in a notebook, driven here as the front end drives it.

The widget is built on the demo model and a folder of real photos; its traits are set as the
JavaScript sets them and its custom-message handler is called with the messages it sends. What it
answers must be what the browser viewer answers for the same image (FastAPI TestClient on
``create_app`` over the same folder: same image ids, same bytes) and what ``get_activations``
gives for the same preprocessed image.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import subjects
from PIL import Image

import onnxact

pytest.importorskip("anywidget")


@pytest.fixture(scope="module")
def demo():
    return onnxact.demo_paths()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo):
    d = tmp_path_factory.mktemp("photos")
    shutil.copy(demo[1], d / "star.png")
    shutil.copy(subjects.photo("chelsea.png"), d / "chelsea.png")
    (d / "odd").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 600, 3), np.uint8)).save(d / "odd" / "wide.jpg")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "odd" / "dot.png")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def browser(demo, photos):
    w = onnxact.widget(demo[0], photos)
    yield w
    w.close()


@pytest.fixture(scope="module")
def viewer(demo, photos):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from onnxact.viewer.app import create_app

    app = create_app(demo[0], photos, scan_dead=False)
    with TestClient(app) as c:
        yield c
    app.state.viewer.close()


def _png(data_url: str) -> bytes:
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.split(",", 1)[1])


def _captured(demo, photos, name: str) -> onnxact.Activations:
    """The activations get_activations gives for the image, as the viewer reads it (numbered keys)."""
    return onnxact.get_activations(demo[0], str(photos / name), output_format="numbered")


def test_lists_the_folder_and_opens_on_the_first_image(browser, viewer):
    names = sorted(im["name"] for im in browser.images)
    assert names == ["chelsea.png", "odd/dot.png", "odd/wide.jpg", "star.png"]
    assert {im["id"] for im in browser.images} == {im["id"] for im in viewer.get("/api/images").json()}
    assert browser.image == browser.images[0]["id"] and browser.error == ""
    layers = browser.model_info["layers"]
    assert [L["name"] for L in layers] == [L.name for L in onnxact.load(onnxact.demo_paths()[0]).layers]
    assert browser.model_info["class_names"] == ["circle", "cross", "square", "star", "triangle"]


@pytest.mark.parametrize("name", ["star.png", "chelsea.png", "odd/wide.jpg", "odd/dot.png"])
def test_layer_statistics_are_the_viewers_and_get_activations(browser, viewer, demo, photos, name):
    image = next(im["id"] for im in browser.images if im["name"] == name)
    acts = _captured(demo, photos, name)
    for layer in (0, 3, 9):
        browser.image, browser.layer, browser.view = image, layer, "filters"
        assert browser.error == ""
        got = browser.stats
        want = viewer.get(f"/api/images/{image}/layers/{layer}/stats").json()
        assert {**got, "image": image} == want
        a = np.asarray(acts[str(layer)], np.float32)
        assert got["shape"] == list(a.shape)
        assert got["min"] == pytest.approx(float(a.min()), rel=1e-6, abs=1e-7)
        assert got["max"] == pytest.approx(float(a.max()), rel=1e-6)
        assert got["zero_fraction"] == pytest.approx(float((a == 0).mean()))
        np.testing.assert_allclose(got["channel_max"], a[0].reshape(a.shape[1], -1).max(axis=1), rtol=1e-5, atol=1e-6)


def test_filter_grid_message_answers_the_viewers_tiles(browser, viewer, demo, photos):
    image = next(im["id"] for im in browser.images if im["name"] == "star.png")
    reply, buffers = browser.handle({"type": "tiles", "request": 7, "image": image, "layer": 2})
    assert reply["type"] == "tiles" and reply["request"] == 7 and reply["total"] == 32
    assert reply["channels"] == list(range(32)) and len(buffers) == 32
    assert reply["dead"] == viewer.get(f"/api/images/{image}/layers/2/stats").json()["dead_channels"]
    a = _captured(demo, photos, "star.png")["2"][0]
    for c in (0, 5, 31):
        assert buffers[c] == viewer.get(f"/api/images/{image}/layers/2/tiles/{c}.png").content
        px = np.asarray(Image.open(io.BytesIO(buffers[c])))
        assert px.shape == (a.shape[1], a.shape[2], 3)  # one pixel per activation
        # the brightest pixel of the viridis tile sits where the filter's map is largest
        if a[c].max() > a[c].min():
            assert np.unravel_index(px.sum(-1).argmax(), a[c].shape) == np.unravel_index(a[c].argmax(), a[c].shape)


def test_views_are_the_viewers_pictures(browser, viewer):
    image = next(im["id"] for im in browser.images if im["name"] == "chelsea.png")
    browser.image, browser.layer, browser.channel, browser.view = image, 4, 3, "heatmap"
    assert browser.error == "" and "filter 3" in browser.caption
    assert _png(browser.picture) == viewer.get(f"/api/images/{image}/layers/4/heatmap.png?channel=3").content
    browser.channel = -1
    assert _png(browser.picture) == viewer.get(f"/api/images/{image}/layers/4/heatmap.png").content
    browser.view = "cam"
    r = viewer.get(f"/api/images/{image}/cam.png")
    assert _png(browser.picture) == r.content and browser.caption == r.headers["X-Cam-Caption"]
    browser.class_index = 1
    assert _png(browser.picture) == viewer.get(f"/api/images/{image}/cam.png?class_index=1").content
    browser.view = "picture"
    assert _png(browser.picture) == viewer.get(f"/api/images/{image}/layers/4/picture.png").content
    browser.view, browser.channel = "filters", 2
    assert _png(browser.picture) == viewer.get(f"/api/images/{image}/layers/4/tiles/2.png?scale=6").content
    want = viewer.get(f"/api/images/{image}/predictions").json()
    assert {**browser.predictions, "image": image} == want


def test_predictions_are_the_models_softmax(browser, demo, photos):
    image = next(im["id"] for im in browser.images if im["name"] == "star.png")
    browser.image = image
    probs = onnxact.get_activations(demo[0], str(photos / "star.png")).outputs["predictions"][0]
    top = browser.predictions["top"]
    assert top[0]["label"] == "star" and top[0]["index"] == int(np.argmax(probs))
    assert [t["score"] for t in top] == pytest.approx(sorted(probs, reverse=True)[:5], rel=1e-6)


def test_bad_choices_show_one_line_and_keep_working(browser):
    image = browser.images[0]["id"]
    browser.image, browser.view, browser.channel = image, "filters", -1
    browser.layer = 99
    assert browser.error == "layer 99 does not exist; the model has 10 layers (0-based)"
    browser.layer, browser.channel, browser.view = 9, 500, "heatmap"
    assert "channel 500 does not exist" in browser.error and browser.picture == ""
    browser.channel = 0
    assert browser.error == "" and browser.picture
    browser.image = "g0000000000000000"
    assert "no image with id" in browser.error
    reply, buffers = browser.handle({"type": "tiles", "image": image, "layer": "x"})
    assert reply["type"] == "error" and buffers == []
    reply, _ = browser.handle(["not", "a", "dict"])
    assert reply["type"] == "error" and "tiles" in reply["detail"]
    browser.image = image


def test_single_files_and_bad_paths(demo, photos, tmp_path):
    w = onnxact.widget(demo[0], [photos / "star.png", photos / "chelsea.png"])
    try:
        assert sorted(im["name"] for im in w.images) == ["chelsea.png", "star.png"]
        assert w.error == "" and w.stats["name"] == "conv1"
    finally:
        w.close()
    with pytest.raises(onnxact.InputError, match="image not found"):
        onnxact.widget(demo[0], tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(onnxact.InputError, match="no images"):
        onnxact.widget(demo[0], tmp_path / "empty")
    with pytest.raises(onnxact.InputError, match="notes.txt"):
        onnxact.widget(demo[0], [photos / "notes.txt"])
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    onnxact.widget(demo[0], photos).close()
    assert before == {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}  # nothing written there


def test_rapidocr_detector_in_the_widget(photos):
    """A real model we did not shape: PP-OCR's detector (dynamic H/W, no classifier head)."""
    det = subjects.rapidocr_models()["det"]
    w = onnxact.widget(det, [photos / "chelsea.png"])
    try:
        assert w.error == "" and w.predictions["top"] == [] and w.predictions["note"]
        n = len(w.model_info["layers"])
        w.layer, w.view = n // 2, "heatmap"
        assert w.error == "" and w.picture
        reply, buffers = w.handle({"type": "tiles", "layer": n // 2})
        assert reply["type"] == "tiles" and len(buffers) == len(reply["channels"]) > 0
    finally:
        w.close()


def test_without_anywidget_import_works_and_widget_says_what_to_install(demo):
    code = ("import sys; sys.modules['anywidget'] = None\n"
            "import onnxact\n"
            "try:\n    onnxact.widget(sys.argv[1], sys.argv[2])\n"
            "except onnxact.DependencyError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(demo[0]), str(demo[1])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("onnxact.widget needs the 'anywidget' package, which is not installed; "
                                  "install it with: pip install 'onnxact[notebook]'")


def test_import_onnxact_and_the_viewer_state_stay_light():
    code = ("import sys, onnxact, onnxact.viewer, onnxact.viewer.state, onnxact.viewer.payloads;"
            "print(sorted(m for m in ('anywidget', 'ipywidgets', 'IPython', 'fastapi', 'pydantic', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("fixture", ["yolo_detector", "keras_bn_act"])
def test_wild_models_every_view(request, fixture, photos):
    """The YOLO-shaped detector (dynamic H/W, no classifier) and the Keras model with separate
    BN / Activation layers: every view of three layers on photos of odd sizes answers without an
    error, and the statistics are get_activations' numbers for the same file."""
    path = request.getfixturevalue(fixture)
    w = onnxact.widget(path, photos)
    try:
        n = len(w.model_info["layers"])
        for im in w.images:
            w.image = im["id"]
            for layer in (0, n // 2, n - 1):
                w.layer, w.channel = layer, -1
                for view in ("filters", "heatmap", "cam", "picture"):
                    w.view = view
                    assert w.error == "" and (w.picture or view == "filters"), (im["name"], layer, view, w.error)
                reply, buffers = w.handle({"type": "tiles", "layer": layer})
                assert reply["type"] == "tiles" and len(buffers) == len(reply["channels"])
            acts = onnxact.get_activations(path, str(photos / im["name"]), output_format="numbered")
            w.layer = n // 2
            a = np.asarray(acts[str(n // 2)], np.float32)
            assert w.stats["shape"] == list(a.shape)
            assert w.stats["max"] == pytest.approx(float(a.max()), rel=1e-6)
        if fixture == "yolo_detector":
            assert w.predictions["top"] == [] and w.predictions["note"].startswith("no classifier head")
        else:
            assert len(w.predictions["top"]) == 5
    finally:
        w.close()
