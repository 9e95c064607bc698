"""The viewer's JSON API, against the app in-process (FastAPI TestClient) and over real HTTP."""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import tiny  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from viewer_support import listening, live_server, needs_proc, no_upload_folders_left, serve_process  # noqa: E402,F401

from onnxact.viewer.app import MAX_UPLOAD_BYTES, create_app  # noqa: E402


def png_bytes(size=(32, 32), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def gallery(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(png_bytes(seed=1))
    (d / "sub" / "b.png").write_bytes(png_bytes(seed=2))
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture()
def client(gallery):
    app = create_app(tiny.conv_net(channels=(4, 8), size=32), gallery, labels=["a", "b", "c", "d", "e"],
                     scan_dead=False)
    with TestClient(app) as c:
        yield c
    app.state.viewer.close()


def _first_image(client) -> str:
    return client.get("/api/images").json()[0]["id"]


def test_model_summary_lists_layers_in_graph_order(client):
    r = client.get("/api/model")
    assert r.status_code == 200
    m = r.json()
    assert [layer["index"] for layer in m["layers"]] == list(range(len(m["layers"])))
    assert [layer["name"] for layer in m["layers"]][:2] == ["block0.conv", "block0.pool"]  # a conv read after its ReLU keeps the conv's name
    first = m["layers"][0]
    assert first["op_type"] == "Conv" and first["activation"] == "Relu" and first["channels"] == 4
    assert first["shape"] == [1, 4, 32, 32] and first["dead_filters"] is None  # no image seen yet
    assert m["class_names"] == ["a", "b", "c", "d", "e"]
    assert m["cam_method"] == "cam"  # GlobalAveragePool -> Flatten -> Gemm: the exact CAM


def test_dead_filters_scanned_over_the_gallery_in_the_background(gallery):
    app = create_app(tiny.conv_net(channels=(4, 8), size=32), gallery)
    state = app.state.viewer
    deadline = time.time() + 30
    while state.dataset_dead is None and time.time() < deadline:
        time.sleep(0.05)
    with TestClient(app) as c:
        layers = c.get("/api/model").json()["layers"]
    assert all(layer["dead_over_images"] == 2 and layer["dead_filters"] is not None for layer in layers)
    state.close()


def test_images_lists_gallery_recursively_and_skips_non_images(client):
    imgs = client.get("/api/images").json()
    assert sorted(i["name"] for i in imgs) == ["a.png", "sub/b.png"]
    assert all(i["source"] == "gallery" for i in imgs)


def test_predictions_tiles_stats_heatmap_cam(client):
    iid = _first_image(client)
    p = client.get(f"/api/images/{iid}/predictions").json()
    assert len(p["top"]) == 5 and p["probabilities"] is True
    scores = [t["score"] for t in p["top"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    assert {t["label"] for t in p["top"]} == {"a", "b", "c", "d", "e"}

    r = client.get(f"/api/images/{iid}/layers/0/tiles/3.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)
    big = client.get(f"/api/images/{iid}/layers/0/tiles/3.png?scale=4&cmap=gray&normalize=layer")
    assert Image.open(io.BytesIO(big.content)).size == (128, 128)

    s = client.get(f"/api/images/{iid}/layers/2/stats").json()
    assert s["channels"] == 8 and len(s["channel_max"]) == 8 and s["shape"] == [1, 8, 16, 16]
    assert s["min"] >= 0 and s["max"] >= s["mean"]
    # after a ReLU (min >= 0) max |a| == max, so check's rule (max |a| <= 0) picks the channels whose max is 0
    assert s["dead_channels"] == [c for c, v in enumerate(s["channel_max"]) if v <= 0]
    assert s["dead_on_image"] == len(s["dead_channels"])

    h = client.get(f"/api/images/{iid}/layers/1/heatmap.png?alpha=0.5")
    assert h.status_code == 200 and Image.open(io.BytesIO(h.content)).size == (32, 32)
    h1 = client.get(f"/api/images/{iid}/layers/1/heatmap.png?channel=2")
    assert h1.status_code == 200 and h1.content != h.content
    c = client.get(f"/api/images/{iid}/cam.png")
    assert c.status_code == 200 and c.headers["X-Cam-Method"] == "cam" and c.headers["X-Cam-Layer"] == "block1.pool"
    c2 = client.get(f"/api/images/{iid}/cam.png?class_index=3")
    assert c2.status_code == 200

    # after one image the summary reports dead filters over it
    m = client.get("/api/model").json()
    assert m["layers"][0]["dead_over_images"] == 1 and m["layers"][0]["dead_filters"] is not None


def test_tile_values_match_the_activation(client):
    import onnxact

    iid = _first_image(client)
    state = client.app.state.viewer
    entry = state.image(iid)
    x = onnxact.preprocess_image(entry.path, state.model)
    acts = onnxact.get_activations(state.model, x)
    arr = acts["block0.conv"][0, 1]
    r = client.get(f"/api/images/{iid}/layers/0/tiles/1.png?cmap=gray")
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), dtype=np.float32) / 255
    want = (arr - arr.min()) / (arr.max() - arr.min())
    assert np.abs(got - want).max() <= 2 / 255 + 1e-6


def test_layer_stats_per_channel_match_an_independent_capture(client):
    """channel_max / channel_mean come from the capture's ChannelStats (made once per image); they are
    the float64 max and mean of each channel of a separate get_activations run, to 6 decimals."""
    import onnxact

    iid = _first_image(client)
    state = client.app.state.viewer
    x = onnxact.preprocess_image(state.image(iid).path, state.model)
    acts = onnxact.get_activations(state.model, x, output_format="numbered")
    layers = client.get("/api/model").json()["layers"]
    assert len(layers) == len(acts) >= 4
    for i in range(len(layers)):
        a = np.asarray(acts[str(i)], np.float64)
        assert a.ndim == 4 and a.shape[0] == 1
        flat = a[0].reshape(a.shape[1], -1)
        s = client.get(f"/api/images/{iid}/layers/{i}/stats").json()
        assert s["channel_max"] == [round(float(v), 6) for v in flat.max(axis=1)], i
        np.testing.assert_allclose(s["channel_mean"], flat.mean(axis=1), rtol=0, atol=5e-7 + 1e-12)


def test_activations_are_captured_once_per_image_and_cache_is_bounded(gallery, monkeypatch):
    app = create_app(tiny.conv_net(), gallery, cache_entries=1)
    state = app.state.viewer
    calls = []
    real = state._compute
    monkeypatch.setattr(state, "_compute", lambda e: calls.append(e.id) or real(e))
    with TestClient(app) as c:
        ids = [i["id"] for i in c.get("/api/images").json()]
        for ch in range(4):
            assert c.get(f"/api/images/{ids[0]}/layers/0/tiles/{ch}.png").status_code == 200
        c.get(f"/api/images/{ids[0]}/layers/1/stats")
        assert calls == [ids[0]]
        c.get(f"/api/images/{ids[1]}/predictions")
        assert len(state.cache) == 1  # bounded: the first capture was evicted
        c.get(f"/api/images/{ids[0]}/predictions")
        assert calls == [ids[0], ids[1], ids[0]]
    state.close()


def test_upload_then_use_it(client):
    r = client.post("/api/images", files={"file": ("my photo.png", png_bytes((40, 30)), "image/png")})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["source"] == "upload" and up["name"] == "my photo.png"
    assert up["id"] in [i["id"] for i in client.get("/api/images").json()]
    assert client.get(f"/api/images/{up['id']}/predictions").status_code == 200
    img = client.get(f"/api/images/{up['id']}/image.png?size=20")
    assert Image.open(io.BytesIO(img.content)).size == (20, 15)
    stored = client.app.state.viewer.uploads[up["id"]].path
    assert stored.parent == client.app.state.viewer.upload_dir


def test_errors_are_json_4xx(client):
    iid = _first_image(client)
    cases = [
        ("/api/images/g0000000000000000/predictions", 404),
        ("/api/images/not-an-id/predictions", 422),
        (f"/api/images/{iid}/layers/99/tiles/0.png", 404),
        (f"/api/images/{iid}/layers/0/tiles/999.png", 404),
        (f"/api/images/{iid}/layers/0/tiles/0.png?cmap=nope", 422),
        (f"/api/images/{iid}/layers/0/heatmap.png?alpha=3", 422),
        ("/api/nothing", 404),
        ("/static/nothing.js", 404),
    ]
    for url, code in cases:
        r = client.get(url)
        assert r.status_code == code, (url, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), url
        assert "detail" in r.json() and "Traceback" not in r.text


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ["/api/model", "/api/images", "/api/images/{image_id}/predictions",
              "/api/images/{image_id}/layers/{layer}/tiles/{channel}.png",
              "/api/images/{image_id}/layers/{layer}/heatmap.png", "/api/images/{image_id}/cam.png",
              "/api/images/{image_id}/layers/{layer}/stats"]:
        assert p in paths, p
    assert "post" in paths["/api/images"]
    json.dumps(spec)


def test_page_and_assets_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "onnxact viewer" in r.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_model_without_class_vector_and_without_images(tmp_path):
    app = create_app(tiny.silu_net(), None)
    with TestClient(app) as c:
        assert c.get("/api/images").json() == []
        up = c.post("/api/images", files={"file": ("x.png", png_bytes((16, 16)), "image/png")}).json()
        p = c.get(f"/api/images/{up['id']}/predictions").json()
        # the only output is the pooled map [1, 4, 4, 4]: no classes to invent from it
        assert p == {"image": up["id"], "output": None, "probabilities": False, "top": [], "others": [],
                     "note": "no classifier head: no output is a class vector [N, C] (y 1x4x4x4)"}
        cam = c.get(f"/api/images/{up['id']}/cam.png")
        assert cam.status_code == 200 and cam.headers["X-Cam-Method"] == "eigencam"  # no GAP -> FC head
        assert Image.open(io.BytesIO(cam.content)).size == (16, 16)
    app.state.viewer.close()


def test_live_server_over_http(gallery):
    import httpx

    app = create_app(tiny.conv_net(), gallery, allowed_hosts=["127.0.0.1", "localhost"])
    with live_server(app) as base:
        iid = httpx.get(f"{base}/api/images").json()[0]["id"]
        assert httpx.get(f"{base}/api/images/{iid}/layers/0/tiles/0.png").status_code == 200
        # DNS-rebinding guard: a foreign Host header is refused
        r = httpx.get(f"{base}/api/model", headers={"Host": "evil.example"})
        assert r.status_code == 400 and r.json()["detail"] == "host not allowed"


def test_upload_limit_constant_is_sane():
    assert 1 << 20 <= MAX_UPLOAD_BYTES <= 64 << 20


# ----------------------------------------------------------------------------- onnxact serve
@pytest.fixture()
def model_file(tmp_path):
    import onnx

    p = tmp_path / "tiny.onnx"
    onnx.save(tiny.conv_net(), p)
    return p


@needs_proc
def test_serve_binds_loopback_by_default_and_prints_the_url(model_file, gallery):
    """The real server's listening socket (read from /proc) is 127.0.0.1, on the port the URL shows."""
    import httpx

    # --normalize: the tiny model states no preprocessing, which would add the guess warning on stderr
    with serve_process(str(model_file), str(gallery), "--normalize", "0-1") as (p, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert url == f"http://127.0.0.1:{port}/" and port > 0
        assert listening(p.pid) == {("127.0.0.1", port)}
        assert httpx.get(url + "api/model", timeout=10).json()["name"]
        p.terminate()
        assert p.wait(20) == 143  # SIGTERM: a graceful stop, then the exit status of a SIGTERM'd command
        assert p.stderr.read() == "onnxact: stopped (SIGTERM)\n"  # no warning: loopback is the default


def test_serve_warns_for_another_host_and_reads_labels(model_file, tmp_path, monkeypatch, capsys):
    import uvicorn

    from onnxact.cli import main

    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nfox\nowl\nbee\n")
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve", str(model_file), "--host", "0.0.0.0", "--port", "0", "--labels", str(labels)]) == 0
    out, err = capsys.readouterr()
    assert "warning" in err and "0.0.0.0" in err and "http://" in out
    with TestClient(apps[0], base_url="http://127.0.0.1:8000") as c:  # the Host check stays on
        assert c.get("/api/model").json()["class_names"] == ["cat", "dog", "fox", "owl", "bee"]


def test_serve_bad_input_exits_2(model_file, tmp_path, capsys):
    from onnxact.cli import main

    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    assert main(["serve", str(model_file), str(tmp_path / "no-such-dir")]) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert main(["serve", str(model_file), "--port", str(busy)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pass another --port" in err


def test_serve_subprocess_smoke(model_file, gallery):
    import subprocess
    import sys

    import httpx

    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "serve", str(model_file), str(gallery), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        deadline = time.time() + 20
        while True:
            try:
                r = httpx.get(url + "api/model", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["layers"]
        assert httpx.get(url, timeout=5).status_code == 200
    finally:
        p.terminate()
        assert p.wait(10) == 143  # SIGTERM: a graceful stop (the upload folder check is the fixture's)
