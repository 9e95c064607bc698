"""The inspect report opened in real headless Chromium: loads, no broken image, screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onnxact.cli import main

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _check_page(browser, page_path: Path, shot: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    resp = page.goto(page_path.resolve().as_uri())
    page.wait_for_load_state("load")
    info = page.evaluate(
        "() => ({title: document.title, n: document.images.length,"
        " broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.getAttribute('src')), sections: document.querySelectorAll('section').length})"
    )
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert resp is not None and resp.ok
    assert not errors and not failed, (errors, failed)
    assert shot.stat().st_size > 1000
    return info


@pytest.mark.parametrize("embed", [False, True])
def test_demo_report_has_no_broken_image(browser, tmp_path, embed):
    out = tmp_path / "rep"
    argv = ["inspect", "-o", str(out)] + (["--embed"] if embed else [])
    assert main(argv) == 0
    info = _check_page(browser, out / "index.html", tmp_path / "shot.png")
    assert info["title"].startswith("onnxact")
    assert info["n"] >= 12 and info["broken"] == [], info  # input + CAM + 10 grids (+ heatmaps)
    assert info["sections"] >= 13


def test_report_with_odd_layer_names_and_relative_links(browser, tmp_path):
    """Layer names with slashes, colons, spaces and '#' still give working relative links."""
    import numpy as np

    from onnxact.render import display_activations
    from onnxact.report import layer_stats, write_report

    acts = {"model_1/conv 2d#1/Relu:0": np.random.default_rng(0).random((1, 3, 8, 8)), "dense": np.ones((1, 7))}
    out = tmp_path / "odd dir"
    pics = display_activations(acts, save=True, directory=out / "grids", show=False)
    grids = {k: p.relative_to(out) for k, p in zip(acts, pics.paths)}
    write_report(out, [layer_stats(k, v) for k, v in acts.items()], grids=grids, title="onnxact odd")
    info = _check_page(browser, out / "index.html", tmp_path / "odd.png")
    assert info["n"] == 2 and info["broken"] == []


def test_broken_image_check_is_real(browser, tmp_path):
    """The naturalWidth check does flag a missing image (so the tests above mean something)."""
    import numpy as np

    from onnxact.report import layer_stats, write_report

    write_report(tmp_path, [layer_stats("a", np.ones((1, 2, 3, 3)))], grids={"a": "grids/missing.png"})
    page = browser.new_page()
    page.goto((tmp_path / "index.html").as_uri())
    page.wait_for_load_state("load")
    broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).length")
    page.close()
    assert broken == 1
