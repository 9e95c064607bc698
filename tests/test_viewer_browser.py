"""End-to-end: the viewer page in real headless Chromium (Debian chromium + Python playwright).

Opens the page served by uvicorn on 127.0.0.1, picks an image, picks a layer, waits for the
tiles to load, measures the time from the layer click to the visible tiles shown (reported in
BENCHMARKS.md) and takes a screenshot.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from viewer_support import CHROMIUM, CHROMIUM_ARGS, live_server, no_upload_folders_left  # noqa: E402,F401 - autouse: no upload folder left behind

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo_cnn.onnx"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")


def _gallery(tmp: Path) -> Path:
    from PIL import Image, ImageDraw

    d = tmp / "images"
    (d / "shapes").mkdir(parents=True)
    sample = ROOT / "models" / "sample.png"
    if sample.exists():
        shutil.copy(sample, d / "sample.png")
    rng = np.random.default_rng(0)
    for i, (kind, colour) in enumerate([("circle", (230, 80, 60)), ("square", (60, 160, 230)),
                                        ("triangle", (90, 200, 90))]):
        base = rng.integers(0, 60, (128, 128, 3), dtype=np.uint8)
        img = Image.fromarray(base)
        dr = ImageDraw.Draw(img)
        if kind == "circle":
            dr.ellipse((28, 28, 100, 100), fill=colour)
        elif kind == "square":
            dr.rectangle((30, 30, 98, 98), fill=colour)
        else:
            dr.polygon([(64, 20), (108, 104), (20, 104)], fill=colour)
        img.save(d / "shapes" / f"{i}_{kind}.png")
    return d


def _model(tmp: Path) -> Path:
    if DEMO.exists():
        return DEMO
    import onnx
    import tiny

    p = tmp / "tiny.onnx"
    onnx.save(tiny.conv_net(channels=(16, 32), size=64), p)
    return p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from onnxact.viewer.app import create_app

    tmp = tmp_path_factory.mktemp("viewer")
    app = create_app(_model(tmp), _gallery(tmp))
    with live_server(app) as base:
        yield base, tmp


def test_page_pick_image_and_layer_shows_tiles(server):
    url, tmp = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, bypass_csp=True)  # test probes use eval
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + "/")
            page.wait_for_selector("#layers .layer")
            page.wait_for_selector(".thumb")
            names = page.locator("#layers .layer .lname").all_inner_texts()
            assert len(names) >= 2
            # pick an image: the first capture happens here and selects the first layer
            page.locator(".thumb").first.click()
            page.wait_for_selector("#predictions .pred")
            assert page.locator("#predictions .pred").count() == 5
            page.wait_for_function("document.body.dataset.tilesReady")
            # pick another layer and time it from the click to the visible tiles loaded
            target = page.locator("#layers .layer").nth(2)
            t0 = time.perf_counter()
            target.click()
            page.wait_for_function("window.__onnxact.tilesShownAt !== null")
            wall_ms = (time.perf_counter() - t0) * 1000
            in_page_ms = page.evaluate("window.__onnxact.tilesShownMs")
            n_tiles = page.locator("#tiles .tile").count()
            loaded = page.evaluate(
                "[...document.querySelectorAll('#tiles .tile img')].filter(i => i.complete && i.naturalWidth > 0).length")
            print(f"\nviewer tile latency: layer click -> visible tiles shown: {in_page_ms:.0f} ms in page, "
                  f"{wall_ms:.0f} ms wall ({n_tiles} tiles, {loaded} loaded)")
            assert n_tiles > 0 and loaded > 0
            assert in_page_ms < 1000, f"tiles took {in_page_ms:.0f} ms"
            # overlay toggle + opacity slider, then the heatmap and CAM views
            page.locator("#overlay").check()
            page.locator("#opacity").fill("40")
            assert page.evaluate("getComputedStyle(document.querySelector('#tiles')).getPropertyValue('--tile-opacity')"
                                 ).strip() == "0.4"
            shot = tmp / "viewer.png"
            page.screenshot(path=str(shot))
            print(f"viewer screenshot: {shot}")
            page.locator(".tab[data-view=heatmap]").click()
            page.wait_for_function("document.querySelector('#single img') && document.querySelector('#single img').naturalWidth > 0")
            page.locator(".tab[data-view=cam]").click()
            page.wait_for_function("document.querySelector('#single img') && document.querySelector('#single img').naturalWidth > 0"
                                   " && !document.querySelector('#single .caption').textContent.includes('rendering')")
            page.locator(".tab[data-view=filters]").click()
            page.wait_for_selector("#tiles .tile img")
            page.locator("#tiles .tile").first.click()
            page.wait_for_selector("#modal:not([hidden])")
            page.keyboard.press("Escape")
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
