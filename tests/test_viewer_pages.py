"""Viewer pages on real-world shapes: unknown spatial dims, 1x1 maps, dead filters as ``check``
defines them, predictions only for classifiers, uploads in the list, a paged gallery, no CDN pages.

The model is a torch module exported by the legacy exporter with dynamic height and width (its
conv output is ``N x 3 x ? x ?`` in the graph), whose conv has no activation: channel 0 is
negative everywhere (live, but never positive), channel 1 is all zeros (dead), channel 2 positive;
a global average pool (1x1 maps) and a linear classifier follow.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from viewer_support import CHROMIUM, CHROMIUM_ARGS, live_server, no_upload_folders_left  # noqa: E402,F401 - autouse: no upload folder left behind

ROOT = Path(__file__).resolve().parents[1]


def _photo(size: tuple[int, int] = (72, 56), seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(40, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def signed_net(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.conv(x)), 1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.zero_()
        net.conv.weight[0] = -0.05  # inputs are >= 0 after [0, 1] scaling: negative everywhere
        net.conv.bias[0] = -0.5
        net.conv.weight[2] = 0.08
        net.conv.bias[2] = 0.25
    path = tmp_path_factory.mktemp("pages") / "signed.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 48, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    (d / "a.png").write_bytes(_photo(seed=1))
    (d / "b.png").write_bytes(_photo((40, 64), seed=2))
    return d


def _client(model: Path, images: Path | None, **kw) -> TestClient:
    from onnxact.viewer import create_app

    return TestClient(create_app(model, images, scan_dead=False, **kw))


def _layers(c: TestClient, image: str | None = None) -> dict[str, dict]:
    m = c.get("/api/model", params={"image": image} if image else {}).json()
    return {L["op_type"]: L for L in m["layers"]}


def test_unknown_dims_are_filled_from_the_capture(signed_net, folder):
    c = _client(signed_net, folder)
    try:
        conv = _layers(c)["Conv"]
        assert not all(isinstance(d, int) for d in conv["shape"][2:]), conv["shape"]  # `? x ?` in the graph
        assert conv["captured_shape"] is None
        iid = next(i["id"] for i in c.get("/api/images").json() if i["name"] == "b.png")
        conv = _layers(c, iid)["Conv"]
        stats = c.get(f"/api/images/{iid}/layers/{conv['index']}/stats").json()
        assert conv["captured_shape"] == stats["shape"] and all(d > 0 for d in conv["captured_shape"])
        assert conv["kind"] == "maps" and conv["channels"] == 3
        assert _layers(c, iid)["GlobalAveragePool"]["kind"] == "channels"
    finally:
        c.app.state.viewer.close()


def test_dead_is_checks_definition(signed_net, folder):
    """Channel 0 (negative, never positive) is live; channel 1 (zeros) is dead, on the image and
    over the images seen; the count equals what ``onnxact.stats.find_dead_filters`` reports."""
    from onnxact.stats import find_dead_filters

    c = _client(signed_net, folder)
    try:
        ids = [i["id"] for i in c.get("/api/images").json()]
        conv = _layers(c)["Conv"]
        for iid in ids:
            s = c.get(f"/api/images/{iid}/layers/{conv['index']}/stats").json()
            assert s["dead_channels"] == [1] and s["dead_on_image"] == 1
            assert s["channel_max"][0] < 0 < s["channel_max"][2]  # the old rule (max <= 0) called channel 0 dead
        m = c.get("/api/model").json()
        conv = next(L for L in m["layers"] if L["op_type"] == "Conv")
        assert m["dead_eps"] == 0.0 and conv["dead_over_images"] == 2 and conv["dead_filters"] == 1
        report = find_dead_filters(signed_net, [str(folder)], show_progress=False)
        assert sum(1 for name, _ in report.dead if name == conv["name"]) == conv["dead_filters"]
        # the values behind it, from an independent onnxruntime run that promotes only the conv's tensor
        import onnx
        import tiny

        from onnxact.preprocess import preprocess_image

        iid = next(i["id"] for i in c.get("/api/images").json() if i["name"] == "a.png")
        s = c.get(f"/api/images/{iid}/layers/{conv['index']}/stats").json()
        x = preprocess_image(str(folder / "a.png"), str(signed_net))
        ref = tiny.reference_tensor(onnx.load(str(signed_net)), conv["tensor"], {"image": x})
        np.testing.assert_allclose(s["channel_max"], ref.max(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
        assert ref[:, 0].max() < 0 and not ref[:, 1].any() and ref[:, 2].min() > 0
    finally:
        c.app.state.viewer.close()


def test_one_by_one_layer_picture_is_a_bar_chart(signed_net, folder):
    from PIL import Image

    c = _client(signed_net, folder)
    try:
        iid = c.get("/api/images").json()[0]["id"]
        gap = _layers(c, iid)["GlobalAveragePool"]
        r = c.get(f"/api/images/{iid}/layers/{gap['index']}/picture.png", params={"width": 600})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.float32)
        assert img.shape[1] <= 600 and img.shape[0] >= 100
        assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 8  # bars, axes, numbers
        assert c.get(f"/api/images/{iid}/layers/99/picture.png").status_code == 404
    finally:
        c.app.state.viewer.close()


def test_detector_gets_no_predictions(yolo_detector, folder):
    c = _client(yolo_detector, folder)
    try:
        iid = c.get("/api/images").json()[0]["id"]
        p = c.get(f"/api/images/{iid}/predictions").json()
        assert p["top"] == [] and p["output"] is None and p["note"]
        layers = c.get("/api/model", params={"image": iid}).json()["layers"]
        assert layers and all(L["captured_shape"] for L in layers)
        assert any(not all(isinstance(d, int) for d in L["shape"][2:]) for L in layers if L["shape"])
        cam = c.get(f"/api/images/{iid}/cam.png")  # class-agnostic, captioned with the layer's name
        assert cam.headers["x-cam-method"] == "eigencam" and cam.headers["x-cam-layer"] in {L["name"] for L in layers}
        assert cam.headers["x-cam-layer"] in cam.headers["x-cam-caption"]
    finally:
        c.app.state.viewer.close()


def test_upload_joins_the_list_and_stays(signed_net, folder):
    c = _client(signed_net, folder)
    try:
        before = c.get("/api/images")
        assert before.headers["x-total-count"] == "2"
        up = c.post("/api/images", files={"file": ("mine.png", _photo((30, 30), 3), "image/png")}).json()
        for _ in range(2):
            r = c.get("/api/images")
            assert r.json()[0] == up and r.headers["x-total-count"] == "3"  # newest upload first
            c.get(f"/api/images/{up['id']}/predictions")
        assert {i["id"] for i in r.json()} == {i["id"] for i in before.json()} | {up["id"]}
    finally:
        c.app.state.viewer.close()


def test_docs_are_gone_schema_stays(signed_net):
    c = _client(signed_net, None)
    try:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        r = c.get("/openapi.json")
        assert r.status_code == 200 and "/api/images" in r.json()["paths"]
        assert "offset" in str(r.json()["paths"]["/api/images"]["get"]["parameters"])
    finally:
        c.app.state.viewer.close()


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    src = d / "0000.png"
    src.write_bytes(_photo((8, 8)))
    for i in range(1, 2050):
        shutil.copyfile(src, d / f"{i:04d}.png")
    return d


def test_gallery_over_2000_is_paged(signed_net, big_folder):
    c = _client(signed_net, big_folder)
    try:
        first = c.get("/api/images")
        assert first.headers["x-total-count"] == "2050" and len(first.json()) == 2000
        rest = c.get("/api/images", params={"offset": 2000, "limit": 2000})
        assert rest.headers["x-total-count"] == "2050" and len(rest.json()) == 50
        names = [i["name"] for i in first.json() + rest.json()]
        assert names == [f"{i:04d}.png" for i in range(2050)]
        small = c.get("/api/images", params={"offset": 10, "limit": 5}).json()
        assert [i["name"] for i in small] == names[10:15]
        assert c.get("/api/images", params={"limit": 5000}).status_code == 422
        assert c.get(f"/api/images/{rest.json()[-1]['id']}/image.png").status_code == 200
    finally:
        c.app.state.viewer.close()


# -- in Chromium: the page uses the captured shape, draws 1x1 layers as one picture, pages the gallery
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")


def _stats(png: bytes) -> tuple[tuple[int, int], float]:
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    return (a.shape[1], a.shape[0]), float(a.std())


@needs_chromium
def test_page_unknown_dims_and_one_by_one(signed_net, folder, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from onnxact.viewer import create_app

    gallery = tmp_path / "g"
    gallery.mkdir()
    for i in range(205):  # more than one page of the page's own requests (200): a "more" button
        shutil.copyfile(folder / "b.png", gallery / f"{i:03d}.png")
    app = create_app(signed_net, gallery, scan_dead=False)
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)  # probes use eval
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector(".thumb")
            assert page.locator(".thumb").count() == 200
            page.locator("#more-images").click()
            page.wait_for_function("document.querySelectorAll('.thumb').length === 205")
            assert page.locator("#more-images").count() == 0
            page.locator(".thumb").first.click()
            page.wait_for_function("document.body.dataset.tilesReady")
            conv = page.locator("#layers .layer", has_text="Conv").first
            conv.click()
            page.wait_for_function("document.querySelectorAll('#tiles .tile img').length === 3"
                                   " && [...document.querySelectorAll('#tiles .tile img')].every(i => i.complete)")
            boxes = [t.bounding_box() for t in page.locator("#tiles .tile").all()]
            assert all(b["height"] > 20 and b["width"] > 20 for b in boxes), boxes
            # the tiles' aspect is the captured map's (64 x 40 photo -> 40 wide, 64 high after sizing)
            shot = page.locator("#tiles .tile").nth(2).screenshot()
            (w, h), std = _stats(shot)
            assert h > 20 and w > 20 and std > 1  # a real picture, not an empty box
            page.wait_for_selector("#tiles .tile.dead-tile")
            dead = page.evaluate("[...document.querySelectorAll('#tiles .tile')].map(t => t.classList.contains('dead-tile'))")
            assert dead == [False, True, False]  # channel 0 is negative (live), channel 1 is zeros
            page.locator("#layers .layer", has_text="GlobalAveragePool").first.click()
            page.wait_for_function("document.querySelector('#tiles .layer-picture')"
                                   " && document.querySelector('#tiles .layer-picture').naturalWidth > 0")
            assert page.locator("#tiles .tile").count() == 0
            (w, h), std = _stats(page.locator("#tiles .layer-picture").screenshot())
            assert w > 200 and h > 100 and std > 20
            page.locator(".tab[data-view=cam]").click()  # the CAM caption names the layer, not an index
            page.wait_for_function("document.querySelector('#single .caption')"
                                   " && document.querySelector('#single .caption').textContent.includes(' on ')")
            assert "on conv" in page.locator("#single .caption").inner_text()
            assert not errors, errors
        finally:
            browser.close()
