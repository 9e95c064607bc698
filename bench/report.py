"""``python -m bench.report [--label L]``: time and size of the ``onnxact inspect`` report, and how fast
its first screen shows in Chromium, on the demo, rapidocr det (640x640 photo) and a YOLOv8n-sized
detector (67 captured layers at 320x320, like the real export of issue 14).

Prints one markdown table: report MB (``index.html`` + pictures, no ``activations.npz``: the
report runs with ``--no-arrays``), files, seconds of ``onnxact inspect``, the first screen in
Chromium (ms from navigation start to the ``load`` event and to the first contentful paint) and
the longest frame while scrolling the whole page with every section open.

Why a detector of its own here: ``tests/models/wild.py``'s detector has YOLOv8n's layers at a third
of its widths (63 layers, 8..80 channels); the report's size comes from the channels, so this one
reuses the same blocks at YOLOv8n's widths (16..256) and C2f depths (1, 2, 2, 1): 67 layers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .common import CACHE, ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
YOLOV8N_WIDTHS = (16, 32, 32, 64, 64, 128, 128, 256)


def build_yolov8n_sized(path: Path, seed: int = 0) -> Path:
    """The wild.py detector's blocks at YOLOv8n's widths and depths, exported like wild.py does."""
    path = Path(path)
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT))
    import onnx
    import torch
    from torch import nn

    from tests.models import wild

    small = wild._yolo_classes()(nc=len(wild.YOLO_NAMES))
    blocks = small.model
    conv, c2f, sppf, concat, detect = (type(blocks[i]) for i in (0, 2, 9, 11, 22))
    w = YOLOV8N_WIDTHS
    torch.manual_seed(seed)
    layers = [
        (-1, conv(3, w[0], 3, 2)), (-1, conv(w[0], w[1], 3, 2)), (-1, c2f(w[1], w[2], 1, True)),
        (-1, conv(w[2], w[3], 3, 2)), (-1, c2f(w[3], w[4], 2, True)), (-1, conv(w[4], w[5], 3, 2)),
        (-1, c2f(w[5], w[6], 2, True)), (-1, conv(w[6], w[7], 3, 2)), (-1, c2f(w[7], w[7], 1, True)),
        (-1, sppf(w[7], w[7], 5)), (-1, nn.Upsample(None, 2, "nearest")), ([-1, 6], concat(1)),
        (-1, c2f(w[7] + w[6], w[6], 1)), (-1, nn.Upsample(None, 2, "nearest")), ([-1, 4], concat(1)),
        (-1, c2f(w[6] + w[4], w[4], 1)), (-1, conv(w[4], w[4], 3, 2)), ([-1, 12], concat(1)),
        (-1, c2f(w[4] + w[6], w[6], 1)), (-1, conv(w[6], w[6], 3, 2)), ([-1, 9], concat(1)),
        (-1, c2f(w[6] + w[7], w[7], 1)), ([15, 18, 21], detect(len(wild.YOLO_NAMES), (w[4], w[6], w[7]), (8, 16, 32))),
    ]
    for i, (f, m) in enumerate(layers):
        m.f, m.i = f, i
    small.model = nn.Sequential(*(m for _, m in layers))
    model = wild._randomize_bn(small, seed).eval()
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        wild._torch_export(model, torch.zeros(1, 3, 320, 320), tmp, axes, "images", "output0")
    proto = onnx.load(str(tmp))
    for k, v in {**wild.YOLO_METADATA, "description": "YOLOv8n-sized bench detector (random weights)"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def _photo(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def _square_photo(name: str, side: int, out: Path) -> Path:
    """A real photo cropped to a square and resized to ``side`` (rapidocr det takes any multiple of 32)."""
    from PIL import Image

    if not out.exists():
        with Image.open(_photo(name)) as im:
            s = min(im.size)
            im.convert("RGB").crop((0, 0, s, s)).resize((side, side), Image.BILINEAR).save(out)
    return out


def subjects() -> dict[str, list[str]]:
    """{subject: onnxact inspect arguments before ``-o``}."""
    sys.path.insert(0, str(ROOT))
    from tests.subjects import rapidocr_models

    CACHE.mkdir(parents=True, exist_ok=True)
    det = rapidocr_models()["det"]
    photo640 = _square_photo("coffee.png", 640, CACHE / "coffee_640.png")
    yolo = build_yolov8n_sized(CACHE / "yolov8n_sized.onnx")
    return {
        "demo": [],
        "rapidocr det 640x640": [str(det), str(photo640)],
        "detector 67 layers 320x320": [str(yolo), str(_photo("coffee.png")), "--size", "320", "320"],
    }


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != "activations.npz"]
    return len(files), sum(p.stat().st_size for p in files)


def first_screen_ms(page_path: Path, browser) -> tuple[float, float]:
    """(ms to the ``load`` event, ms to the first contentful paint) of a fresh page."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    # the paint entry is queued after the frame that drew it is presented: observe it (buffered)
    t = page.evaluate("""() => new Promise(done => {
        const n = performance.getEntriesByType('navigation')[0];
        const finish = p => done([n.loadEventStart, p]);
        new PerformanceObserver(list => {
            const f = list.getEntriesByName('first-contentful-paint')[0];
            if (f) finish(f.startTime);
        }).observe({type: 'paint', buffered: true});
        setTimeout(() => finish(-1), 5000); })""")
    page.close()
    return float(t[0]), float(t[1])


def scroll_gap_ms(page_path: Path, browser) -> float:
    """The longest frame while scrolling the page with every section open, one screen a frame
    (lazy pictures load and decode on the way): how much a user would see the page stall."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    gap = page.evaluate("""async () => {
        if (window.setSections) setSections(true);
        const frame = () => new Promise(r => requestAnimationFrame(r));
        await frame();
        let last = performance.now(), worst = 0;
        for (let y = 0; y < document.documentElement.scrollHeight; y += 900) {
            window.scrollTo(0, y); await frame();
            const t = performance.now(); worst = Math.max(worst, t - last); last = t;
        }
        return worst; }""")
    page.close()
    return float(gap)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="", help="a word for the table's first column (before / after)")
    ap.add_argument("--out", default=str(CACHE / "report-runs"), help="folder for the reports")
    ap.add_argument("--only", default=None, help="run only the subjects whose name contains this")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    exe = [str(Path(sys.executable).parent / "onnxact")]
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, args in subjects().items():
            if a.only and a.only not in name:
                continue
            out = Path(a.out) / name.split()[0]
            t0 = time.perf_counter()
            subprocess.run(exe + ["inspect", *args, "-o", str(out), "--no-arrays", "--force"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            secs = time.perf_counter() - t0
            files, size = _size(out)
            first_screen_ms(out / "index.html", browser)  # warm the browser's caches of fonts and code
            load, fcp = first_screen_ms(out / "index.html", browser)
            rows.append((name, size / 1e6, files, secs, load, fcp, scroll_gap_ms(out / "index.html", browser)))
        browser.close()
    label = f"{a.label} " if a.label else ""
    print("| report | MB | files | inspect s | load event ms | first paint ms | longest frame scrolling, all open, ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, mb, files, secs, load, fcp, gap in rows:
        print(f"| {label}{name} | {mb:.1f} | {files} | {secs:.1f} | {load:.0f} | {fcp:.0f} | {gap:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
