"""The exemplar panel in real headless Chromium: a filter tile's top images over a folder of real photos.

The page is served by uvicorn over the bundled demo CNN and a folder of scikit-image photos; the
test clicks a tile, sees the scan's progress indicator, waits for it to finish and checks that
the images and values the panel shows are those of ``onnxact.find_exemplars`` run independently
on the same folder. Then it steps to the next filter and opens a top image from the keyboard.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from subjects import photo  # noqa: E402
from viewer_support import CHROMIUM, CHROMIUM_ARGS, live_server, no_upload_folders_left, photo_folder  # noqa: E402,F401 - autouse: no upload folder left behind

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo_cnn.onnx"
TOP = 4
LAYER = 2  # the demo's second conv: 32 filters

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")

PHOTOS = {"astronaut.png": "astronaut.png", "chelsea.png": "cats/chelsea.png", "coffee.png": "coffee.png",
          "rocket.jpg": "rocket.jpg", "motorcycle_left.png": "street/motorcycle_left.png",
          "camera.png": "camera.png"}  # camera.png is greyscale


def _folder(tmp: Path) -> Path:
    return photo_folder(tmp, PHOTOS)


def _expected(folder: Path) -> dict[int, list[tuple[str, float]]]:
    """Filter -> [(path relative to the folder, value)] of LAYER, from find_exemplars run here."""
    import onnxact
    from onnxact.exemplars import find_exemplars

    m = onnxact.load(DEMO)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    found = find_exemplars(m, files, top=TOP)
    per_channel = found.layers[m.layers[LAYER].name]
    return {c: [(Path(e.image).resolve().relative_to(folder.resolve()).as_posix(), e.value) for e in top]
            for c, top in enumerate(per_channel)}


@pytest.fixture()
def gate(monkeypatch):
    """Holds every scan at its first progress report until released, so the page is seen computing."""
    from onnxact.viewer.exemplars_job import ExemplarJob

    release = threading.Event()
    report = ExemplarJob.progress

    def held(self, done: int, total: int) -> None:
        release.wait(60)
        report(self, done, total)

    monkeypatch.setattr(ExemplarJob, "progress", held)
    yield release
    release.set()


def _shown(page) -> list[tuple[str, float, str]]:
    return page.evaluate("[...document.querySelectorAll('#ex-list .ex-btn')].map(b => "
                         "[b.dataset.image, +b.dataset.value, b.querySelector('.ex-value').textContent])")


def test_tile_click_shows_top_images_over_the_folder(tmp_path, gate):
    from onnxact.viewer.app import create_app

    folder = _folder(tmp_path)
    expected = _expected(folder)
    app = create_app(DEMO, folder, scan_dead=False, exemplar_top=TOP)
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, bypass_csp=True)  # test probes use eval
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + "/")
            page.locator(".thumb").first.click()
            page.wait_for_function("document.body.dataset.tilesReady")
            page.locator(f"#layers .layer[data-index='{LAYER}']").click()
            page.wait_for_selector("#tiles .tile[data-ch='3'] img")
            page.locator("#tiles .tile[data-ch='3']").click()
            # the scan is held at its first report: the panel shows it computing, with a progress bar
            page.wait_for_selector("#ex-progress:not([hidden])")
            assert page.locator("#ex-title").text_content() == "Top images over photos"
            assert f"0 of {len(PHOTOS)} images" in page.locator("#ex-status").inner_text()
            gate.set()
            page.wait_for_selector("#exemplars[data-ready='2/3'] #ex-list .ex-btn")
            assert page.locator("#ex-progress").is_hidden()
            shown = _shown(page)
            assert [s[0] for s in shown] == [name for name, _ in expected[3]]
            assert [s[1] for s in shown] == pytest.approx([v for _, v in expected[3]], rel=1e-6)
            assert [float(s[2]) for s in shown] == pytest.approx([v for _, v in expected[3]], rel=1e-3, abs=1e-4)
            page.wait_for_function("[...document.querySelectorAll('#ex-list img')].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(tmp_path / "exemplars.png"))
            # the next filter from the keyboard: its own list, from the cached scan
            page.keyboard.press("ArrowRight")
            page.wait_for_selector("#exemplars[data-ready='2/4'] #ex-list .ex-btn")
            shown = _shown(page)
            assert [s[0] for s in shown] == [name for name, _ in expected[4]]
            assert [s[1] for s in shown] == pytest.approx([v for _, v in expected[4]], rel=1e-6)
            # a top image opens in the viewer from the keyboard (Tab to it, Enter)
            first = expected[4][0][0]
            page.keyboard.press("Tab")  # from the close button to "Rescan folder", then the first top image
            assert page.evaluate("document.activeElement.id") == "ex-rescan"
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.dataset.image") == first
            page.keyboard.press("Enter")
            page.wait_for_selector("#modal", state="hidden")
            page.wait_for_function(f"document.querySelector('#input-name').textContent === {first!r}")
            # an image added to the folder: "Rescan folder" scans again and the lists cover it
            shutil.copy(photo("horse.png"), folder / "horse.png")
            page.locator(f"#layers .layer[data-index='{LAYER}']").click()
            page.wait_for_selector("#tiles .tile[data-ch='3'] img")
            page.locator("#tiles .tile[data-ch='3']").click()
            page.wait_for_selector("#exemplars[data-ready='2/3'] #ex-list .ex-btn")
            assert f"over {len(PHOTOS)} images" in page.locator("#ex-status").inner_text()  # cached: no walk
            page.locator("#ex-rescan").click()
            page.wait_for_function(f"document.querySelector('#ex-status').textContent.includes('over {len(PHOTOS) + 1} images')")
            assert page.locator("#ex-list .ex-btn").count() == TOP
            assert not errors, errors
        finally:
            browser.close()
    assert (tmp_path / "exemplars.png").stat().st_size > 10_000


def test_served_one_image_the_panel_says_exemplars_need_a_folder(tmp_path):
    from onnxact.viewer.app import create_app

    one = tmp_path / "coffee.png"
    shutil.copy(photo("coffee.png"), one)
    app = create_app(DEMO, one, scan_dead=False)  # onnxact serve MODEL IMAGE
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)  # test probes use eval
            page.goto(url + "/")
            page.wait_for_selector(".thumb")
            assert page.locator(".thumb").count() == 1
            page.locator(".thumb").first.click()
            page.wait_for_function("document.body.dataset.tilesReady")
            page.locator("#tiles .tile").first.focus()  # from the keyboard
            page.keyboard.press("Enter")
            page.wait_for_selector("#exemplars[data-ready='0/0']")
            text = page.locator("#ex-status").inner_text()
            assert text.startswith("exemplars need a folder of images") and "IMAGES_DIR" in text
            assert page.locator("#ex-list .ex-btn").count() == 0 and page.locator("#ex-progress").is_hidden()
            page.keyboard.press("Escape")
            page.wait_for_selector("#modal", state="hidden")
            assert page.evaluate("document.activeElement.dataset.ch") == "0"  # focus back on the tile
        finally:
            browser.close()


def test_a_top_image_past_the_loaded_gallery_page_opens(tmp_path):
    """The page loads the gallery 200 images at a time; a top image beyond them still opens by its id."""
    import numpy as np
    from PIL import Image

    from onnxact.viewer.app import create_app

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):  # flat grey squares first in the listing: they fill the first page
        Image.fromarray(np.full((8, 8, 3), 100 + i % 50, np.uint8)).save(folder / f"a{i:03d}.png")
    for name in ("astronaut.png", "rocket.jpg"):
        shutil.copy(photo(name), folder / f"z_{name}")
    app = create_app(DEMO, folder, scan_dead=False, exemplar_top=2)
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)  # test probes use eval
            page.goto(url + "/")
            page.wait_for_function("document.querySelector('#gallery').dataset.count === '200'")
            assert page.locator(".thumb[title^='z_']").count() == 0  # the photos are not loaded yet
            page.locator(".thumb").first.click()
            page.wait_for_function("document.body.dataset.tilesReady")
            page.locator(f"#layers .layer[data-index='{LAYER}']").click()
            page.wait_for_selector("#tiles .tile[data-ch='0'] img")
            page.locator("#tiles .tile[data-ch='0']").click()
            page.wait_for_selector("#exemplars[data-ready='2/0'] #ex-list .ex-btn", timeout=120_000)
            first = page.locator("#ex-list .ex-btn").first.get_attribute("data-image")
            assert first.startswith("z_"), first  # a photo excites the filter more than a flat square
            page.locator("#ex-list .ex-btn").first.click()
            page.wait_for_selector("#modal", state="hidden")
            page.wait_for_function(f"document.querySelector('#input-name').textContent === {first!r}")
            page.wait_for_selector("#predictions .pred")  # captured and shown, though not in the loaded gallery
        finally:
            browser.close()
