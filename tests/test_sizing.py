"""Input sizes of real-world models (issue 20 section 1, issue 18 section 4): the size resolved from
--size / metadata / the graph's stride, letterbox / crop / stretch, maps put back on the original
image, one size per scan, and the run-failure message. Real models only: rapidocr's PP-OCR det
and rec, the YOLO-shaped detector of tests/models/wild.py, a [1, 1, 64, W] recogniser exported
here by torch's legacy exporter; values compared with independent onnxruntime / torch runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import onnxact
from onnxact import sizing
from onnxact.cli import main
from onnxact.errors import InputError
from tests import subjects

PHOTO_SIZES = {"landscape": (600, 400), "one": (1, 1), "small": (40, 50), "portrait": (427, 640)}  # (w, h)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos at odd sizes: coffee (600x400), a 1x1 and a 40x50 from it, rocket turned portrait."""
    d = tmp_path_factory.mktemp("photos")
    coffee = Image.open(subjects.photo("coffee.png")).convert("RGB")
    rocket = Image.open(subjects.photo("rocket.jpg")).convert("RGB").transpose(Image.ROTATE_90)
    out = {}
    for name, (w, h) in PHOTO_SIZES.items():
        src = rocket if name == "portrait" else coffee
        out[name] = d / f"{name}.png"
        (src if src.size == (w, h) else src.resize((w, h), Image.BILINEAR)).save(out[name])
    return out


@pytest.fixture(scope="module")
def ocr():
    return subjects.rapidocr_models()


@pytest.fixture(scope="module")
def yolo_without_metadata(yolo_detector, tmp_path_factory) -> Path:
    p = onnx.load(str(yolo_detector))
    del p.metadata_props[:]
    out = tmp_path_factory.mktemp("nometa") / "yolo_nometa.onnx"
    onnx.save(p, str(out))
    return out


def _recogniser_module():
    import torch
    from torch import nn

    class Recogniser(nn.Module):
        """CRNN-shaped: height 64 pooled to one row, width / 4 time steps, 11 classes per step."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
                nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
                nn.Conv2d(24, 32, (4, 1)), nn.ReLU())
            self.head = nn.Conv2d(32, 11, 1)

        def forward(self, x):
            return self.head(self.features(x)).squeeze(2).permute(0, 2, 1).log_softmax(-1)

    torch.manual_seed(0)
    return Recogniser().eval()


@pytest.fixture(scope="module")
def recogniser(tmp_path_factory) -> Path:
    """A [1, 1, 64, width] text-line recogniser exported by the legacy exporter (dynamic width only)."""
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("rec") / "rec64.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_recogniser_module(), (torch.zeros(1, 1, 64, 128),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {3: "width"}, "logits": {1: "steps"}})
    return path


def _ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, dict(feeds))


def _assert_same_as_plain_onnxruntime(path: Path, acts) -> None:
    """The model's own outputs and three captured layers in ``acts`` equal a plain onnxruntime run
    on the array that was fed (layers exposed here as name-only graph outputs, not by onnxact)."""
    want = _ort_outputs(path, acts.inputs)
    got = list(acts.outputs.values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    keys = list(acts)
    picked = [keys[0], keys[len(keys) // 2], keys[-1]]
    proto = onnx.load(str(path))
    own = len(proto.graph.output)
    for k in picked:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(acts.layers[k].tensor))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(None, dict(acts.inputs))[own:]
    for k, v in zip(picked, values):
        np.testing.assert_allclose(acts[k], v, rtol=1e-4, atol=1e-4, err_msg=k)


# -- the stride, from the graph ------------------------------------------------------------------
def test_stride_found_from_the_graph(ocr, yolo_without_metadata, recogniser):
    assert sizing.network_stride(onnxact.load(ocr["det"])) == (32, 32)  # Paddle: Resize x2 + Add neck
    assert sizing.network_stride(onnxact.load(yolo_without_metadata)) == (32, 32)  # upsample + Concat neck
    assert sizing.network_stride(onnxact.load(recogniser)) == (16, 4)  # (2,1) pools: height only
    assert sizing.network_stride(onnxact.load(ocr["rec"]))[1] == 8


@pytest.mark.parametrize("value, want", [
    ("[320, 320]", (320, 320)), ("640", (640, 640)), ("(480, 640)", (480, 640)), ("[256]", (256, 256)),
    ("abc", None), ("[0, 5]", None), ("__import__('os')", None), ("", None), ("[1, 2, 3]", None),
])
def test_metadata_size_keys(value, want):
    assert sizing.metadata_size({"imgsz": value})[0] == want
    assert sizing.metadata_size({"onnxact.preprocess": json.dumps({"size": value})})[0] == want


def test_metadata_stride_and_onnxact_preprocess_size():
    assert sizing.metadata_size({"stride": "32", "imgsz": "640"}) == ((640, 640), 32)
    assert sizing.metadata_size({"onnxact.preprocess": '{"normalize": "0-1", "size": [224, 320]}'}) == ((224, 320), None)
    assert sizing.metadata_size({"onnxact.preprocess": "not json"}) == (None, None)


# -- resolution order --------------------------------------------------------------------------------
def test_resolution_order(yolo_detector, yolo_without_metadata):
    m, bare = onnxact.load(yolo_detector), onnxact.load(yolo_without_metadata)
    assert sizing.resolve_size(m, (400, 600), (256, 384)) == (256, 384)  # size= first
    assert sizing.resolve_size(m, (400, 600)) == (320, 320)  # then Ultralytics imgsz
    assert sizing.resolve_size(bare, (400, 600)) == (416, 608)  # then aspect, rounded up to stride 32
    assert sizing.resolve_size(bare, (3000, 4000)) == (480, 640)  # long side at most 640
    assert sizing.resolve_size(bare, (1, 1)) == (32, 32)
    assert sizing.resolve_size(bare, (50, 40)) == (64, 64)
    assert sizing.default_resize(m) == "letterbox"
    fixed = onnxact.load(onnxact.demo_paths()[0])
    assert sizing.resolve_size(fixed, (400, 600)) == (128, 128) and sizing.default_resize(fixed) == "stretch"
    with pytest.raises(InputError, match="fixed at 128 x 128.*--size 128 128"):
        sizing.resolve_size(fixed, (400, 600), (100, 100))
    for bad in [(0, 7), (-1, 5), ("abc", 3), (1.5, 2), 7]:
        with pytest.raises(InputError, match="two positive whole numbers"):
            sizing.resolve_size(bare, (400, 600), bad)


@pytest.mark.parametrize("task, want", [("detect", "letterbox"), ("segment", "letterbox"), ("classify", "crop"),
                                        (None, "stretch")])
def test_fixed_size_ultralytics_exports_are_fitted_as_their_task_expects(task, want):
    """A static 128x128 export with Ultralytics metadata: letterbox for detectors, crop for classifiers."""
    proto = onnx.load(str(onnxact.demo_paths()[0]))
    meta = {"imgsz": "[128, 128]", "stride": "32", **({"task": task} if task else {})}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    m = onnxact.load(proto)
    assert sizing.default_resize(m) == want
    assert sizing.resolve_size(m, (400, 600)) == (128, 128)


# -- real models at odd photo sizes -------------------------------------------------------------------
@pytest.mark.parametrize("photo", list(PHOTO_SIZES))
def test_rapidocr_det_at_odd_photo_sizes(ocr, photos, photo):
    acts = onnxact.get_activations(ocr["det"], photos[photo])
    n, c, h, w = acts.inputs["x"].shape
    assert (n, c) == (1, 3) and h % 32 == 0 and w % 32 == 0 and max(h, w) <= 640
    g = acts.geometry[0]
    pw, ph = PHOTO_SIZES[photo]
    assert g.mode == "letterbox" and g.image_size == (ph, pw) and g.input_size == (h, w)
    assert abs(g.content[2] / g.content[3] - ph / pw) < 0.05 or min(ph, pw) < 2  # aspect kept
    _assert_same_as_plain_onnxruntime(ocr["det"], acts)


@pytest.mark.parametrize("photo", list(PHOTO_SIZES))
def test_rapidocr_rec_at_odd_photo_sizes(ocr, photos, photo):
    """Height pooled to one row (stride 48 on height, 8 on width): height one stride, width by aspect."""
    acts = onnxact.get_activations(ocr["rec"], photos[photo])
    _, _, h, w = acts.inputs["x"].shape
    pw, ph = PHOTO_SIZES[photo]
    assert h == 48 and w % 8 == 0 and abs(w - 48 * pw / ph) <= 8 or (ph, pw) == (1, 1)
    _assert_same_as_plain_onnxruntime(ocr["rec"], acts)


def test_yolo_detector_at_600x400_with_and_without_metadata(yolo_detector, yolo_without_metadata, photos):
    import torch

    from tests.models import wild

    module = wild.yolo_module()
    for path, hw in [(yolo_detector, (320, 320)), (yolo_without_metadata, (416, 608))]:
        acts = onnxact.get_activations(path, photos["landscape"])
        x = acts.inputs["images"]
        assert x.shape == (1, 3, *hw)
        _assert_same_as_plain_onnxruntime(path, acts)
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(acts.outputs["output0"], ref, rtol=1e-3, atol=1e-3)
        # letterboxed: grey 114 above and below the photo, the photo itself in between
        g = acts.geometry[0]
        top = int(g.content[0])
        assert top > 0
        np.testing.assert_allclose(x[0, :, :top], 114 / 255, atol=1e-6)
        np.testing.assert_allclose(x[0, :, top + int(g.content[2]):], 114 / 255, atol=1e-6)


def test_partly_fixed_recogniser_follows_the_photo_aspect(recogniser, photos):
    """[1, 1, 64, W] on a 600x400 photo: height kept at 64, width 96 (= 600 * 64 / 400, stride 4)."""
    import torch

    from tests.models.torch_nets import hook_outputs

    acts = onnxact.get_activations(recogniser, photos["landscape"])
    x = acts.inputs["x"]
    assert x.shape == (1, 1, 64, 96)
    _assert_same_as_plain_onnxruntime(recogniser, acts)
    ref = {k: v for k, v in hook_outputs(_recogniser_module(), torch.from_numpy(x)).items() if v.ndim == 4}
    assert len(acts) >= 5
    for key, arr in acts.items():  # every captured map equals the torch module's own on that array
        err = min((float(np.abs(arr - v).max()) for v in ref.values() if v.shape == arr.shape), default=np.inf)
        assert err < 1e-4, key
    for photo in ("portrait", "one", "small"):
        a = onnxact.get_activations(recogniser, photos[photo])
        assert a.inputs["x"].shape[2] == 64 and a.inputs["x"].shape[3] % 4 == 0


def test_check_and_viewer_use_the_same_rule_on_the_recogniser(recogniser, photos, tmp_path):
    report = onnxact.find_dead_filters(recogniser, [str(p) for p in photos.values()], show_progress=False)
    assert report.images == len(photos) and not report.failed
    from onnxact.viewer.state import ViewerState

    state = ViewerState(onnxact.load(recogniser), photos["landscape"].parent, None)
    try:
        entry = next(e for e in state.scan() if e.path.name == "landscape.png")
        cap = state.capture(entry.id)
        assert cap.acts.inputs["x"].shape == (1, 1, 64, 96)
    finally:
        state.close()


def test_viewer_shows_the_letterboxed_input_so_tiles_line_up(yolo_without_metadata, photos):
    from onnxact.viewer.state import ViewerState

    state = ViewerState(onnxact.load(yolo_without_metadata), photos["landscape"].parent, None)
    try:
        entry = next(e for e in state.scan() if e.path.name == "landscape.png")
        cap = state.capture(entry.id)
        assert cap.acts.inputs["images"].shape == (1, 3, 416, 608)
        h, w = cap.display.shape[:2]
        assert abs(h / w - 416 / 608) < 0.01  # the fed picture (padding and all), not the 600x400 photo
        np.testing.assert_allclose(cap.display[0].astype(float), 114, atol=1)  # the grey band on top
    finally:
        state.close()


# -- preprocessing: modes, geometry, lists ----------------------------------------------------------
def test_letterbox_crop_stretch_pixels(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255  # left half white
    p = tmp_path / "half.png"
    Image.fromarray(img).save(p)
    lb, (g,) = onnxact.preprocess_with_geometry(p, None, size=(80, 80), resize="letterbox")
    assert g.content == (20.0, 0.0, 40.0, 80.0) and g.source == (0.0, 0.0, 40.0, 80.0)
    np.testing.assert_allclose(lb[0, :, :20], 114 / 255)
    np.testing.assert_allclose(lb[0, :, 60:], 114 / 255)
    np.testing.assert_allclose(lb[0, :, 20:60, :38], 1.0)
    np.testing.assert_allclose(lb[0, :, 20:60, 42:], 0.0)
    cr, (g,) = onnxact.preprocess_with_geometry(p, None, size=(40, 40), resize="crop")
    assert g.source == (0.0, 20.0, 40.0, 40.0)  # the centre 40x40: half white, half black
    np.testing.assert_allclose(cr[0, :, :, :18], 1.0)
    np.testing.assert_allclose(cr[0, :, :, 22:], 0.0)
    st, (g,) = onnxact.preprocess_with_geometry(p, None, size=(40, 40))
    assert g.mode == "stretch" and g.content == (0.0, 0.0, 40.0, 40.0)
    with pytest.raises(InputError, match="resize must be one of"):
        onnxact.preprocess_image(p, None, size=(40, 40), resize="pad")


def test_a_list_of_mixed_photos_is_fed_at_one_size(ocr, photos):
    x = onnxact.preprocess_image([photos["landscape"], photos["portrait"], photos["one"]], ocr["det"])
    assert x.shape == (3, 3, 448, 640)  # the first photo's aspect, long side 640, multiples of 32
    x = onnxact.preprocess_image([photos["one"], photos["landscape"]], ocr["det"])
    assert x.shape == (2, 3, 640, 640)  # a 1x1 thumbnail first does not shrink the batch to 32x32


# -- maps back onto the original image ----------------------------------------------------------------
def _hot_corner_map(g: sizing.Geometry, n: int = 64) -> np.ndarray:
    """A map over the model input that is hot only in the content's top-left corner."""
    th, tw = g.input_size
    top, left = g.content[0], g.content[1]
    ys = (np.arange(n) + 0.5) * th / n
    xs = (np.arange(n) + 0.5) * tw / n
    hot = (ys[:, None] >= top) & (ys[:, None] < top + th / 8) & (xs[None] >= left) & (xs[None] < left + tw / 8)
    return hot.astype(np.float32)


@pytest.mark.parametrize("mode", ["letterbox", "crop", "stretch"])
def test_a_hot_content_corner_lands_on_the_original_corner(mode):
    g = sizing.plan((400, 600), (640, 640), mode)
    back = sizing.map_to_image(_hot_corner_map(g), g)
    assert back.shape == (400, 600)
    seen = np.nan_to_num(back, nan=0.0)
    y, x = np.unravel_index(np.argmax(seen), seen.shape)
    # the hottest pixel is the top-left corner of what the model saw: the image's own top-left
    # (letterbox, stretch) or the crop box's (crop), never the padding above the photo
    assert y < 20 and x - g.source[1] < 20 and x >= g.source[1] - 1
    assert seen[-50:, -50:].max() < 0.05  # the far corner is cold
    if mode == "crop":
        assert np.isnan(back[:, :50]).all() and np.isnan(back[:, -50:]).all()  # never seen by the model
        assert not np.isnan(back[:, 150:450]).any()
    else:
        assert not np.isnan(back).any()


def test_heatmaps_and_overlays_line_up_with_the_original_photo(tmp_path):
    """End to end on a model whose map is its input (1x1 conv of weight 1): the letterboxed map put
    back by display_heatmaps / overlay matches the original photo, padding gone."""
    from onnx import TensorProto, helper

    from onnxact.render import overlay

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                              "identity", [inp], [out], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    img = np.zeros((60, 120), np.uint8)
    img[:15, :30] = 255  # a bright top-left corner
    p = tmp_path / "corner.png"
    Image.fromarray(img).save(p)
    acts = onnxact.get_activations(model, p, size=(120, 120))
    g = acts.geometry[0]
    assert g.mode == "letterbox" and g.content == (30.0, 0.0, 60.0, 120.0)
    layer = next(iter(acts))
    back = sizing.map_to_image(acts[layer][0, 0], g)
    np.testing.assert_allclose(back, img / 255.0, atol=0.02)  # the photo again, no grey band
    pics = onnxact.display_heatmaps(acts, str(p), merge_filters=True, alpha=1.0, cmap="gray", fmt="array")
    drawn = next(iter(pics.values()))
    assert drawn.ndim == 3
    over = np.asarray(overlay(str(p), acts[layer][0, 0], cmap="gray", alpha=1.0, geometry=g))
    assert over.shape[:2] == (60, 120)
    assert over[:15, :30].min() > 240 and over[20:, 40:].max() < 15  # hot corner on the corner, cold elsewhere
    plain = np.asarray(overlay(acts.inputs["x"], acts[layer][0, 0], cmap="gray", alpha=1.0))
    assert plain.shape[:2] == (120, 120)  # on the model input itself: padding and all, no geometry


# -- CLI ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--size", "0", "7"], ["--size", "abc", "5"], ["--size", "abc"],
                                  ["--size", "100", "100"], ["--resize", "pad"]])
def test_bad_size_one_line_exit_2_nothing_written(args, photos, tmp_path, capsys):
    model = str(onnxact.demo_paths()[0])
    out = tmp_path / "report"
    assert main(["inspect", model, str(photos["landscape"]), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err and "Traceback" not in err
    assert not out.exists()
    js = tmp_path / "r.json"
    assert main(["check", model, str(photos["landscape"]), "--json", str(js), *args]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not js.exists()
    assert main(["serve", model, "--port", "0", *args]) == 2  # refused before serving
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err


def test_run_failure_names_the_size_and_suggests_size_without_ort_log_lines(yolo_without_metadata, photos,
                                                                              tmp_path, capfd):
    out = tmp_path / "report"
    rc = main(["inspect", str(yolo_without_metadata), str(photos["landscape"]), "-o", str(out), "--size", "400", "600"])
    assert rc == 2
    cap = capfd.readouterr()
    err = cap.err + cap.out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "[E:onnxruntime" not in err and "\x1b[" not in err
    assert "400x600" in lines[0] and "--size H W (multiples of 32)" in lines[0]
    assert "Concat" in lines[0] and ".h:" not in lines[0]  # onnxruntime's reason, without its C++ noise
    assert not out.exists()


def test_shorten_never_cuts_mid_word():
    from onnxact.run import _shorten

    text = " ".join(["dimension"] * 60)
    short = _shorten(text, 100)
    assert short.endswith(" ...") and len(short) <= 104
    assert all(word == "dimension" for word in short[:-4].split())


def test_check_scans_a_folder_of_mixed_photos_on_dynamic_models(ocr, yolo_without_metadata, photos, tmp_path, capsys):
    folder = photos["landscape"].parent
    for model in (ocr["det"], yolo_without_metadata):
        js = tmp_path / "r.json"
        rc = main(["check", str(model), str(folder), "--json", str(js), "--batch-size", "4"])
        assert rc in (0, 1), capsys.readouterr().err
        report = json.loads(js.read_text())
        assert report["images"] == len(photos)
        h, w = report["input_size"]["size"]
        assert h % 32 == 0 and w % 32 == 0 and max(h, w) == 640 and report["input_size"]["resize"] == "letterbox"
        assert f"every image fed as --size {h} {w} (letterbox)" in capsys.readouterr().out
    # one size for the scan, from the first image's aspect at the default long side
    from onnxact.stats import scan_preprocess

    kw = scan_preprocess(onnxact.load(yolo_without_metadata), str(folder), {})
    first = sorted(folder.glob("*.png"))[0]
    w, h = Image.open(first).size
    assert kw["size"] == sizing.resolve_size(onnxact.load(yolo_without_metadata), (h, w), upscale=True)
    assert max(kw["size"]) == 640


def test_geometry_is_saved_with_the_activations(yolo_detector, photos, tmp_path):
    acts = onnxact.get_activations(yolo_detector, photos["portrait"], resize="crop")
    onnxact.save_activations(acts, tmp_path)
    back = onnxact.load_activations(tmp_path)
    assert back.geometry == acts.geometry and back.geometry[0].mode == "crop"
    assert back.geometry[0].image_size == (640, 427)


def test_size_and_resize_in_python(ocr, photos):
    acts = onnxact.get_activations(ocr["det"], photos["landscape"], size=(320, 480), resize="crop")
    assert acts.inputs["x"].shape == (1, 3, 320, 480) and acts.geometry[0].mode == "crop"
    report = onnxact.find_dead_filters(ocr["det"], [str(photos["landscape"]), str(photos["portrait"])],
                                       size=(320, 320), show_progress=False, op_types=["Conv"])
    assert report.input_size == {"size": [320, 320], "resize": "letterbox", "dynamic": True}
    with pytest.raises(InputError, match="two positive whole numbers"):
        onnxact.find_dead_filters(ocr["det"], str(photos["landscape"]), size=(0, 7), show_progress=False)
