"""The widget's front end (viewer/static/widget.js) in Chromium, wired to the real widget in Python.

No Jupyter front end is installed here, so the page gives the ES module the part of anywidget's
model API it uses (get / set / save_changes / on / send) and this test carries what crosses the
comm, as the kernel does: the traits the page saved are set on the Python widget with
``set_state`` (as ipywidgets does on a comm update), the traits that changed come back as
``change:`` events, and each custom message is answered by ``ActivationBrowser.handle`` with its
PNG buffers. Clicks are real clicks on the rendered page.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from viewer_support import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

import onnxact

pytest.importorskip("anywidget")
sync_api = pytest.importorskip("playwright.sync_api")

STATIC = Path(onnxact.__file__).parent / "viewer" / "static"

PAGE = """<!doctype html><html><head><style>%(css)s</style></head><body><div id="root"></div>
<script type="module">
const state = %(state)s, handlers = {};
window.__saved = []; window.__sent = []; let pending = {};
const model = {
  get: (k) => state[k],
  set: (k, v) => { state[k] = v; pending[k] = v; },
  save_changes: () => { window.__saved.push(pending); pending = {}; },
  on: (ev, fn) => { (handlers[ev] ||= []).push(fn); },
  off: () => {},
  send: (msg) => { window.__sent.push(msg); },
};
window.__update = (changes) => {
  Object.assign(state, changes);
  for (const k of Object.keys(changes)) (handlers["change:" + k] || []).forEach((f) => f());
};
window.__custom = (msg, b64s) => {
  const bufs = b64s.map((b) => new DataView(Uint8Array.from(atob(b), (c) => c.charCodeAt(0)).buffer));
  (handlers["msg:custom"] || []).forEach((f) => f(msg, bufs));
};
const src = %(js)s;
const mod = await import(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
mod.default.render({ model, el: document.getElementById("root") });
window.__ready = true;
</script></body></html>"""


def _synced(w) -> dict:
    return {k: v for k, v in w.get_state().items() if not k.startswith("_") and k not in ("layout", "tabbable",
                                                                                          "tooltip")}


class Bridge:
    """Carries traits and custom messages between the page and the Python widget until both are quiet."""

    def __init__(self, page, w) -> None:
        self.page, self.w = page, w
        self.known = _synced(w)

    def pump(self) -> None:
        for _ in range(20):
            saved, sent = self.page.evaluate(
                "() => { const r = [window.__saved, window.__sent]; window.__saved = []; window.__sent = []; return r; }")
            for changes in saved:
                self.w.set_state(changes)  # as a comm update from the front end
            now = _synced(self.w)
            changed = {k: v for k, v in now.items() if self.known.get(k) != v}
            self.known = now
            if changed:
                self.page.evaluate("(c) => window.__update(c)", changed)
            for msg in sent:
                reply, buffers = self.w.handle(msg)
                self.page.evaluate("([m, b]) => window.__custom(m, b)",
                                   [reply, [base64.b64encode(b).decode() for b in buffers]])
            if not (saved or sent or changed):
                return
        raise AssertionError("the page and the widget kept talking")


@pytest.fixture()
def session():
    model, image = onnxact.demo_paths()
    w = onnxact.widget(model, image.parent)
    html = PAGE % {"css": (STATIC / "widget.css").read_text(), "state": json.dumps(_synced(w)),
                   "js": json.dumps((STATIC / "widget.js").read_text())}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_content(html)
            page.wait_for_function("window.__ready === true")
            bridge = Bridge(page, w)
            bridge.pump()
            yield page, w, bridge
            assert errors == []
        finally:
            browser.close()
            w.close()


def _loaded(page, selector: str) -> int:
    return page.evaluate(f"() => [...document.querySelectorAll('{selector}')].filter((i) => i.naturalWidth > 0).length")


def test_filters_grid_click_and_views(session):
    page, w, bridge = session
    assert page.locator("select[aria-label=image] option").count() == 1
    assert page.locator("select[aria-label=layer] option").count() == 10
    page.wait_for_function("document.querySelectorAll('.grid figure img').length === 16")
    page.wait_for_function("[...document.querySelectorAll('.grid img')].every((i) => i.complete && i.naturalWidth)")
    assert _loaded(page, ".grid img") == 16
    assert page.evaluate("document.querySelector('.grid img').naturalWidth") == 128  # one pixel per activation
    dead = len(w.stats["dead_channels"])
    assert page.locator(".grid figure.dead").count() == dead

    page.locator(".grid figure").nth(5).click()
    bridge.pump()
    assert w.channel == 5 and w.view == "filters"
    assert page.evaluate("document.querySelector('img.picture').src") == w.picture
    assert page.locator(".caption").inner_text() == "filter 5 of conv1"

    page.get_by_role("button", name="heatmap", exact=True).click()
    bridge.pump()
    assert w.view == "heatmap" and page.evaluate("document.querySelector('img.picture').src") == w.picture
    assert "filter 5" in page.locator(".caption").inner_text()

    page.select_option("select[aria-label=layer]", "2")
    bridge.pump()
    assert (w.layer, w.channel) == (2, -1) and w.error == ""
    rows = dict(zip(page.locator(".stats th").all_inner_texts(), page.locator(".stats td").all_inner_texts()))
    assert rows["name"] == "conv2" and rows["shape"] == "×".join(str(d) for d in w.stats["shape"])
    assert float(rows["max"]) == pytest.approx(w.stats["max"], rel=1e-3)

    page.get_by_role("button", name="filters", exact=True).click()
    bridge.pump()
    page.wait_for_function("document.querySelectorAll('.grid figure').length === 32")
    assert page.locator(".grid figure.dead").count() == len(w.stats["dead_channels"])
    assert page.locator(".preds li").first.inner_text().startswith("star ")

    page.get_by_role("button", name="cam", exact=True).click()
    bridge.pump()
    assert w.view == "cam" and w.picture and page.locator(".caption").inner_text() == w.caption
    assert page.locator(".grid").is_hidden()


def test_an_error_shows_and_clears(session):
    page, w, bridge = session
    page.get_by_role("button", name="heatmap", exact=True).click()
    bridge.pump()
    w.channel = 999  # as a stale front end could ask
    bridge.pump()
    assert "channel 999 does not exist" in page.locator(".error").inner_text()
    assert page.locator("img.picture").is_hidden()
    page.get_by_role("button", name="all filters", exact=True).click()
    bridge.pump()
    assert page.locator(".error").inner_text() == "" and page.locator("img.picture").is_visible()
