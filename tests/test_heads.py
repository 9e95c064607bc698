"""The head decides what is shown: which output gets predictions, which map the CAM is drawn on,
and whether class weights (exact CAM) apply. Real torch exports, real onnxruntime runs, torch as
the reference for the numbers; the YOLO-shaped detector and rapidocr models as found in the wild."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import onnxact
from onnxact.cam import class_activation_map, eigencam, find_cam_head
from onnxact.cli import main
from onnxact.errors import InputError, LayerError, ModelError
from onnxact.heads import cam_targets, classifier_outputs, is_class_vector, static_shapes
from onnxact.model import parse_names_metadata
from onnxact.report import predict
from tests.subjects import photo, rapidocr_models

torch = pytest.importorskip("torch")

from tests.models import heads as head_models  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    return {k: head_models.build(k, d / f"{k}.onnx") for k in head_models.KINDS}


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def capture(path, image="astronaut.png", **kw):
    m = onnxact.load(path)
    return m, onnxact.get_activations(m, str(photo(image)), **kw)


def torch_run(module, acts):
    x = torch.from_numpy(next(iter(acts.inputs.values())))
    with torch.no_grad():
        out = module(x)
    return [o.numpy() for o in out] if isinstance(out, tuple) else out.numpy()


# ----------------------------------------------------------------------------- classifier outputs
def test_mtcnn_stage_predicts_from_its_softmax_output_not_the_box_regression(built, tmp_path, capsys):
    path, module = built["mtcnn_like"]
    m, acts = capture(path)
    assert list(acts.outputs) == ["conv6-2", "conv6-3", "prob1"]  # the box regression comes first
    choice = classifier_outputs(acts.outputs, m)
    assert choice.outputs == ("prob1",) and "Softmax" in choice.reason
    assert classifier_outputs(acts.outputs).outputs == ("prob1",)  # rows summing to 1, without the graph
    box, landmarks, prob = torch_run(module, acts)
    np.testing.assert_allclose(acts.outputs["prob1"], prob, rtol=1e-4, atol=1e-5)
    found = predict(acts.outputs, model=m)
    assert [g[0] for g in found.groups] == ["prob1"]
    top = found.top
    assert [i for i, _, _ in top] == list(np.argsort(-prob[0]))
    np.testing.assert_allclose([p for _, _, p in top], np.sort(prob[0])[::-1], rtol=1e-4)
    # the user may name another output; an unknown one is one line listing the outputs
    assert classifier_outputs(acts.outputs, m, output="conv6-2").outputs == ("conv6-2",)
    with pytest.raises(LayerError, match="conv6-2"):
        classifier_outputs(acts.outputs, m, output="conv6_2")
    # the CLI: predictions of prob1 (2 classes), and --class-output errors before anything is written
    out = tmp_path / "r"
    rc, stdout, stderr = run_cli(capsys, "inspect", path, photo("astronaut.png"), "-o", out, "--heatmaps", "none")
    assert rc == 0, stderr
    line = next(s for s in stdout.splitlines() if s.startswith("astronaut.png:"))
    assert line.count("%") == 2
    page = (out / "index.html").read_text()
    assert "Top 2 predictions" in page
    bad = tmp_path / "bad"
    rc, stdout, stderr = run_cli(capsys, "inspect", path, photo("astronaut.png"), "-o", bad, "--class-output", "prob")
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and "'prob1'" in stderr
    assert not bad.exists()


def test_two_classifier_outputs_are_both_shown_by_name(built, tmp_path, capsys):
    path, module = built["two_classifiers"]
    m, acts = capture(path)
    age, gender = torch_run(module, acts)
    found = predict(acts.outputs, model=m)
    assert [name for name, _ in found.groups] == ["age", "gender"]
    np.testing.assert_allclose([p for _, _, p in found.groups[1][1]], np.sort(gender[0])[::-1], rtol=1e-4)
    out = tmp_path / "r"
    rc, stdout, stderr = run_cli(capsys, "inspect", path, photo("astronaut.png"), "-o", out, "--heatmaps", "none")
    assert rc == 0, stderr
    assert "astronaut.png [age]:" in stdout and "astronaut.png [gender]:" in stdout
    page = (out / "index.html").read_text()
    assert "Top 3 predictions of output age" in page and "Top 2 predictions of output gender" in page
    # each output has its own single linear layer on the pooled map: exact CAM with its own weights
    with torch.no_grad():
        feats = module.features(torch.from_numpy(next(iter(acts.inputs.values())))).numpy()[0]
    for name, layer, k in (("age", module.age, 2), ("gender", module.gender, 1)):
        res = class_activation_map(m, acts=acts, output=name, class_index=k)
        assert res.method == "cam" and res.output == name
        np.testing.assert_allclose(res.map, np.tensordot(layer.weight.detach().numpy()[k], feats, axes=1),
                                   rtol=1e-4, atol=1e-4)


def test_class_vector_shapes():
    assert is_class_vector(np.zeros((1, 5))) and is_class_vector(np.zeros((2, 5, 1, 1)), batch=2)
    assert not is_class_vector(np.zeros((1, 1)))  # one column is no choice between classes
    assert not is_class_vector(np.zeros((1, 7, 2100)))  # a detector's decoded boxes
    assert not is_class_vector(np.zeros((1, 1, 40, 40)))  # a segmentation map
    assert not is_class_vector(np.zeros((3, 5)), batch=1)  # one row per detection, not per image
    assert "single score" in classifier_outputs({"p": np.full((1, 1), 0.8)}).reason  # a binary sigmoid


# ----------------------------------------------------------------------------- CAM class weights
@pytest.mark.parametrize("kind", ["gap_linear_head", "avgpool_linear_head"])
def test_gap_linear_head_gets_exact_cam_with_the_torch_fc_weights(built, kind):
    path, module = built[kind]
    m, acts = capture(path)
    head = find_cam_head(m.proto, shapes=static_shapes(m))
    assert head is not None and head.output == "logits"
    pools = {n.op_type for n in m.proto.graph.node if "Pool" in n.op_type}
    assert pools == ({"MaxPool", "GlobalAveragePool"} if kind == "gap_linear_head" else {"MaxPool", "AveragePool"})
    if kind == "avgpool_linear_head":
        assert find_cam_head(m.proto) is None  # global only because the map is 16x16: needs the shapes
    np.testing.assert_allclose(head.weights, module.fc.weight.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(head.bias, module.fc.bias.detach().numpy(), rtol=0, atol=1e-6)
    res = class_activation_map(m, acts=acts)
    logits = torch_run(module, acts)[0]
    assert res.method == "cam" and res.class_index == int(np.argmax(logits))
    with torch.no_grad():
        feats = module.features(torch.from_numpy(next(iter(acts.inputs.values())))).numpy()[0]
    for k in range(5):
        r = class_activation_map(m, acts=acts, class_index=k)
        expected = np.tensordot(module.fc.weight.detach().numpy()[k], feats, axes=1)
        np.testing.assert_allclose(r.map, expected, rtol=1e-4, atol=1e-4)
        # exact CAM: the map's mean plus the bias is the class logit torch computes
        assert np.isclose(r.map.mean() + module.fc.bias[k].item(), logits[k], atol=1e-4)
    assert "the map the global pool averages" in res.reason and res.why == ""


def test_hidden_layer_head_gets_eigencam_and_says_why(built, tmp_path, capsys):
    path, module = built["gap_hidden_head"]
    m, acts = capture(path)
    assert find_cam_head(m.proto) is None  # the Gemm after the pool is a 128-unit hidden layer
    res = class_activation_map(m, acts=acts)
    probs = torch_run(module, acts)[0]
    assert res.method == "eigencam"
    assert res.class_index == int(np.argmax(probs)) < 4  # a class, never a hidden unit's index
    assert "hidden layer" in res.why and "GlobalAveragePool" in res.why
    assert res.reason == "the last spatial map feeding the classifier head"
    with torch.no_grad():
        feats = module.features(torch.from_numpy(next(iter(acts.inputs.values())))).numpy()[0]
    np.testing.assert_allclose(res.map, eigencam(feats), rtol=1e-3, atol=1e-4)  # on the map the pool reads
    with pytest.raises(InputError, match="hidden layer"):
        class_activation_map(m, acts=acts, method="cam")
    out = tmp_path / "r"
    rc, _, stderr = run_cli(capsys, "inspect", path, photo("astronaut.png"), "-o", out, "--heatmaps", "none")
    assert rc == 0, stderr
    page = (out / "index.html").read_text()
    assert "hidden layer between the global pool and the class output" in page
    assert "class 121" not in page


# ----------------------------------------------------------------------------- detector
def test_yolo_detector_has_no_predictions_and_a_many_channel_cam_map(yolo_detector, tmp_path, capsys):
    m, acts = capture(yolo_detector, size=(320, 320))
    assert m.class_names == ["person", "car", "dog"]  # Ultralytics' names metadata
    choice = classifier_outputs(acts.outputs, m)
    assert not choice and choice.reason.startswith("no classifier head")
    assert not predict(acts.outputs, ["person", "car", "dog"], model=m)
    res = class_activation_map(m, acts=acts)
    key = next(k for k, info in acts.layers.items() if info.name == res.layer)
    feat = acts[key]
    tensor = acts.layers[key].tensor
    assert feat.shape == (1, 80, 10, 10)  # the P5 neck output feeding the Detect head (stride 32)
    assert tensor.startswith("/model.21/")
    dfl = [k for k, v in acts.items() if v.shape[1:3] == (1, 4)]
    assert dfl and key not in dfl  # never the reshaped 1x1x4xN box-distribution conv
    assert res.map.shape == (10, 10) and res.method == "eigencam"
    assert "no classifier head" in res.why
    # the CLI: no invented classes, the CAM caption names the layer and why
    out = tmp_path / "r"
    rc, stdout, stderr = run_cli(capsys, "inspect", yolo_detector, photo("astronaut.png"), "-o", out,
                                 "--size", "320", "320", "--heatmaps", "none")
    assert rc == 0, stderr
    assert "astronaut.png: no classifier head" in stdout
    assert not [s for s in stdout.splitlines() if s.startswith("astronaut.png") and "%" in s]
    page = (out / "index.html").read_text()
    assert "Top 5 predictions" not in page and "no classifier head" in page
    assert f"EigenCAM (class-agnostic) | {res.layer}" in page and "prediction branches" in page
    # --cam-layer takes a layer name or an ONNX tensor, exactly
    tensor = "/model.22/cv3.2/cv3.2.1/act/Mul_output_0"
    name = next(info.name for info in acts.layers.values() if info.tensor == tensor)  # the report's key
    out2 = tmp_path / "r2"
    rc, _, stderr = run_cli(capsys, "inspect", yolo_detector, photo("astronaut.png"), "-o", out2,
                            "--size", "320", "320", "--heatmaps", "none", "--cam-layer", tensor)
    assert rc == 0, stderr
    assert f"| {name}. Layer: chosen by --cam-layer" in (out2 / "index.html").read_text()
    assert class_activation_map(m, acts=acts, cam_layer=name).map.shape == (10, 10)
    assert name == "model.22.cv3.2.1"  # the Ultralytics Conv module's path (issue 20, names)


def test_malformed_names_metadata_is_one_line_exit_2(yolo_detector, tmp_path, capsys):
    proto = onnx.load(str(yolo_detector))
    entry = next(p for p in proto.metadata_props if p.key == "names")
    entry.value = "{0: 'person', 1: 'car'"  # cut short
    bad = tmp_path / "bad_names.onnx"
    onnx.save(proto, str(bad))
    m = onnxact.load(bad)  # the library still loads it: no names, and says why
    assert m.class_names is None and "names" in m.class_names_error
    out = tmp_path / "r"
    rc, stdout, stderr = run_cli(capsys, "inspect", bad, photo("astronaut.png"), "-o", out, "--size", "320", "320")
    assert rc == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "metadata 'names'" in stderr and "--labels" in stderr and "Traceback" not in stderr
    assert not out.exists()
    labels = tmp_path / "labels.txt"
    labels.write_text("person\ncar\ndog\n")
    rc, _, stderr = run_cli(capsys, "inspect", bad, photo("astronaut.png"), "-o", out, "--size", "320", "320",
                            "--labels", labels, "--heatmaps", "none")
    assert rc == 0, stderr


def test_names_metadata_parsing_never_evaluates_code(tmp_path):
    assert parse_names_metadata("{0: 'person', 1: 'bicycle'}") == ["person", "bicycle"]
    assert parse_names_metadata("{1: 'b', 0: 'a'}") == ["a", "b"]
    assert parse_names_metadata("['a', 'b']") == ["a", "b"]
    assert parse_names_metadata('{"0": "a", "1": "b"}') == ["a", "b"]
    marker = tmp_path / "ran"
    for text in (f"__import__('pathlib').Path({str(marker)!r}).touch()", "{0: 'a', 2: 'c'}", "{'a': 'b'}", "42",
                 "{0: 'a'", "[" * 100_000, "{0: '" + "x" * (1 << 20) + "'}"):
        with pytest.raises(ModelError, match="'names'"):
            parse_names_metadata(text)
    assert not marker.exists()


# ----------------------------------------------------------------------------- rapidocr and the demo
def test_rapidocr_det_is_a_segmenter_and_cls_a_classifier_with_exact_cam():
    models = rapidocr_models()
    m, acts = capture(models["det"], size=(320, 320))
    assert not classifier_outputs(acts.outputs, m) and not predict(acts.outputs, model=m)
    res = class_activation_map(m, acts=acts)
    tensor = cam_targets(m, acts)[0].tensor
    assert tensor not in m.output_names  # not the 1-channel probability map
    assert res.method == "eigencam" and min(res.map.shape) >= 40  # a stride-4 pyramid map
    m, acts = capture(models["cls"], size=(48, 192))
    (out,) = acts.outputs
    assert classifier_outputs(acts.outputs, m).outputs == (out,)
    probs = acts.outputs[out][0]
    assert [i for i, _, _ in predict(acts.outputs, model=m).top] == list(np.argsort(-probs))
    res = class_activation_map(m, acts=acts)
    head = find_cam_head(m.proto)
    assert res.method == "cam" and head.weights.shape[0] == 2
    # exact CAM: map means plus biases are the logits, whose differences are the log-probability ratios
    other = class_activation_map(m, acts=acts, class_index=1 - res.class_index)
    lhs = (res.map.mean() + head.bias[res.class_index]) - (other.map.mean() + head.bias[1 - res.class_index])
    assert np.isclose(lhs, np.log(probs[res.class_index]) - np.log(probs[1 - res.class_index]), atol=1e-3)


def test_demo_cam_is_unchanged_eigencam_on_pool5(tmp_path, capsys):
    model_path, image = onnxact.demo_paths()
    m = onnxact.load(model_path)
    acts = onnxact.get_activations(m, str(image))
    res = class_activation_map(m, acts=acts)
    assert (res.method, res.layer) == ("eigencam", "pool5")  # Flatten -> Dense 512 -> Dense: no class weights
    np.testing.assert_array_equal(res.map, eigencam(acts["pool5"][0]))
    assert "flattens the map instead of pooling it" in res.why
    found = predict(acts.outputs, m.class_names, model=m)
    assert found.top[0][1] == m.class_names[int(np.argmax(acts.outputs[m.output_names[0]][0]))]
    rc, _, stderr = run_cli(capsys, "inspect", "-o", tmp_path / "r", "--cam-layer", "conv4")
    assert rc == 0, stderr
    assert "conv4. Layer: chosen by --cam-layer" in (tmp_path / "r" / "index.html").read_text()
    bad = tmp_path / "bad"
    rc, stdout, stderr = run_cli(capsys, "inspect", "-o", bad, "--cam-layer", "conv9")
    assert rc == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "'conv9'" in stderr and "conv" in stderr.split("closest")[-1] and not bad.exists()


# ----------------------------------------------------------------------------- viewer
def test_viewer_predictions_and_cam_caption_use_the_same_head(built, yolo_detector, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from onnxact.viewer.app import create_app

    gallery = tmp_path / "g"
    gallery.mkdir()
    (gallery / "a.png").write_bytes(photo("astronaut.png").read_bytes())
    for path, expect in ((built["mtcnn_like"][0], "prob1"), (yolo_detector, None), (built["two_classifiers"][0], "age")):
        app = create_app(path, gallery, scan_dead=False)
        with TestClient(app) as c:
            image = c.get("/api/images").json()[0]["id"]
            p = c.get(f"/api/images/{image}/predictions").json()
            assert p["output"] == expect
            if expect is None:
                assert p["top"] == [] and p["note"].startswith("no classifier head")
            elif expect == "age":
                assert [len(p["top"])] + [len(o["top"]) for o in p["others"]] == [3, 2]
                assert [o["output"] for o in p["others"]] == ["gender"]
                r = c.get(f"/api/images/{image}/cam.png", params={"class_index": 1, "output": "gender"})
                assert r.headers["X-Cam-Method"] == "cam" and r.headers["X-Cam-Class"] == "1"
            else:
                assert len(p["top"]) == 2 and p["others"] == []
            r = c.get(f"/api/images/{image}/cam.png")
            assert r.status_code == 200
            layer = r.headers["X-Cam-Layer"]
            assert not layer.isdigit() and layer in json.dumps(c.get("/api/model").json()["layers"])
            assert f"| {layer}" in r.headers["X-Cam-Caption"] and ". Layer: " in r.headers["X-Cam-Caption"]
            r2 = c.get(f"/api/images/{image}/cam.png")  # cached: still says what it is
            assert r2.headers["X-Cam-Layer"] == layer
        app.state.viewer.close()


def test_serve_refuses_unknown_head_options_before_serving(built, yolo_detector, tmp_path, capsys):
    pytest.importorskip("uvicorn")
    path = built["gap_hidden_head"][0]
    rc, stdout, stderr = run_cli(capsys, "serve", path, "--port", "0", "--cam-layer", "features.9")
    assert rc == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1 and "closest" in stderr
    rc, stdout, stderr = run_cli(capsys, "serve", path, "--port", "0", "--class-output", "logits")
    assert rc == 2 and stdout == "" and "'probs'" in stderr
    proto = onnx.load(str(yolo_detector))
    next(p for p in proto.metadata_props if p.key == "names").value = "{0: 'person', 5: 'car'}"
    onnx.save(proto, str(tmp_path / "gap_names.onnx"))
    rc, stdout, stderr = run_cli(capsys, "serve", tmp_path / "gap_names.onnx", "--port", "0")
    assert rc == 2 and stdout == "" and "no gap" in stderr and len(stderr.strip().splitlines()) == 1


def test_viewer_page_shows_each_classifier_output_and_no_classes_for_a_detector(built, yolo_detector, tmp_path):
    """The page itself (Chromium): outputs labelled by name, a detector's note, the CAM caption."""
    from pathlib import Path

    from viewer_support import live_server

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no chromium at /usr/bin/chromium")
    from onnxact.viewer.app import create_app

    gallery = tmp_path / "g"
    gallery.mkdir()
    (gallery / "a.png").write_bytes(photo("astronaut.png").read_bytes())
    seen: dict = {}
    errors: list[str] = []
    for key, path in (("two", built["two_classifiers"][0]), ("yolo", yolo_detector)):
        app = create_app(path, gallery, scan_dead=False)
        with live_server(app, log_level="warning") as base, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/")
            page.locator(".thumb").first.click()
            if key == "two":
                page.wait_for_selector("#predictions .pred")
                seen["preds"] = page.locator("#predictions").inner_text()
                seen["n"] = page.locator("#predictions .pred").count()
                page.locator("#predictions .pred").last.click()  # a gender class: its own exact CAM
                page.wait_for_selector("#single .caption:has-text('Class activation map for')")
            else:
                page.wait_for_selector("#predictions li:has-text('no classifier head')")
                page.locator(".tab[data-view=cam]").click()
                page.wait_for_selector("#single .caption:has-text('Layer:')")
            seen[key] = page.locator("#single .caption").inner_text()
            browser.close()
        assert errors == []
    assert seen["n"] == 5 and seen["preds"].index("age") < seen["preds"].index("gender")
    assert "Class activation map for class" in seen["two"] and "features" in seen["two"]
    assert seen["yolo"].startswith("EigenCAM (class-agnostic) | ") and "prediction branches" in seen["yolo"]


def test_keras_gap_dense_head_gets_exact_cam_equal_to_keras(keras_bn_act):
    """Keras pools the NHWC transpose of the last activation (ReduceMean over axes 1, 2): the CAM
    is read from the captured conv layer itself and equals the Keras computation."""
    keras = pytest.importorskip("keras")
    from tests.models.wild import keras_path_of

    m, acts = capture(keras_bn_act)
    res = class_activation_map(m, acts=acts)
    assert res.method == "cam" and res.layer in acts  # no extra run: the captured map is the pooled one
    named = class_activation_map(m, acts=acts, cam_layer=res.layer)  # naming the pooled map keeps exact CAM
    assert named.method == "cam" and named.reason.startswith("chosen by") and np.array_equal(named.map, res.map)
    other = class_activation_map(m, acts=acts, cam_layer="conv2d_1")
    assert other.method == "eigencam" and other.layer == "conv2d_1"
    km = keras.models.load_model(str(keras_path_of(keras_bn_act)))
    x = next(iter(acts.inputs.values()))
    feats = np.asarray(keras.Model(km.inputs, km.get_layer("activation_3").output)(x))[0]  # H, W, C
    kernel, bias = (np.asarray(w) for w in km.get_layer("predictions").get_weights())
    probs = np.asarray(km(x))[0]
    assert res.class_index == int(np.argmax(probs))
    for k in range(kernel.shape[1]):
        r = class_activation_map(m, acts=acts, class_index=k)
        np.testing.assert_allclose(r.map, feats @ kernel[:, k], rtol=1e-3, atol=1e-3)
        # map mean + bias is the logit: differences to the top class are Keras' log-probability ratios
        top = class_activation_map(m, acts=acts, class_index=res.class_index).map.mean() + bias[res.class_index]
        assert np.isclose(top - (r.map.mean() + bias[k]), np.log(probs[res.class_index] / probs[k]), atol=1e-3)
