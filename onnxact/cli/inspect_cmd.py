"""``onnxact inspect [MODEL] [IMAGE...] [-o DIR]``: capture, then write every picture and a report.

Writes into DIR: ``grids/{pos}_{layer}.png`` (one grid per layer), ``heatmaps/{pos}_{layer}_heatmap.png``,
``cam.png``, ``input.png``, ``activations.npz`` + ``manifest.json`` and ``index.html``. With several
images each gets its own sub-folder ``{n}_{image stem}/`` and DIR/index.html links them.
With no MODEL and no IMAGE it runs on the bundled demo model and its sample image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import (
    add_capture_options,
    add_preprocess_options,
    capture_kwargs,
    normalization_of,
    preprocess_kwargs,
    warn_if_guessed,
)
from .head_options import add_head_options, check_head_options

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=(
        "Capture the activations of MODEL for each IMAGE and write a grid per layer, heatmap overlays, "
        "a class activation map, activations.npz + manifest.json and an index.html report into DIR. "
        "Without MODEL and IMAGE the bundled demo model and image are used."))
    p.add_argument("model", nargs="?", metavar="MODEL", help="ONNX model file (default: the bundled demo CNN)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="input image file(s) (default: the demo image)")
    p.add_argument("-o", "--output", default="onnxact-report", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="write into an existing non-empty DIR that onnxact did not make (an earlier onnxact "
                        "report is replaced without it)")
    g = p.add_argument_group("pictures")
    g.add_argument("--cmap", default=None, help="colormap of the grids (default: viridis)")
    g.add_argument("--scale", choices=("tile", "layer"), default="tile",
                   help="grid normalisation: each tile to its own min..max (tile) or one scale per layer (layer)")
    g.add_argument("--heatmap-cmap", default="jet", help="colormap of the heatmaps (default: %(default)s)")
    g.add_argument("--alpha", type=float, default=0.3, help="heatmap opacity 0..1 (default: %(default)s)")
    g.add_argument("--heatmaps", choices=("merged", "filters", "none"), default="merged",
                   help="one overlay per layer (merged mean of the filters), one per filter, or none")
    g.add_argument("--cam", choices=("auto", "cam", "eigencam", "none"), default="auto",
                   help="class activation map: exact CAM for GAP heads, EigenCAM otherwise (auto)")
    g.add_argument("--class", dest="class_index", type=int, default=None, help="class for the CAM (default: predicted)")
    add_head_options(g)
    g.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line (or a JSON list)")
    g.add_argument("--top", type=int, default=5, help="predictions listed (default: %(default)s)")
    g.add_argument("--embed", action="store_true", help="embed the images in index.html (one self-contained file)")
    add_capture_options(p)
    add_preprocess_options(p)
    p.set_defaults(func=run)


def _resolve_inputs(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    import onnxact

    model = Path(args.model) if args.model else None
    images = [Path(i) for i in args.images]
    if model is not None and model.suffix.lower() in _IMAGE_SUFFIXES:  # `inspect photo.jpg`: demo model
        images.insert(0, model)
        model = None
    if model is None:
        demo_model, demo_image = onnxact.demo_paths()
        model = demo_model
        if not images:
            images = [demo_image]
    if not images:
        raise InputError(f"no IMAGE given for {model}; usage: onnxact inspect MODEL IMAGE... (or no arguments for the demo)")
    for i in images:
        if not i.is_file():
            raise InputError(f"image {i} does not exist or is not a file")
    if not model.is_file():
        raise InputError(f"model {model} does not exist or is not a file")
    return model, images


def _display_input(acts: Any, sample: int, fallback: Path) -> Any:
    """What the model saw (the preprocessed input) when it is an image, else the file itself."""
    import numpy as np

    feeds = getattr(acts, "inputs", None) or {}
    for v in feeds.values():
        a = np.asarray(v)
        if a.ndim == 4 and (a.shape[1] in (1, 3) or a.shape[3] in (1, 3)):
            return a[sample]
    return str(fallback)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i < 3 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def _write_one(args: argparse.Namespace, model: Any, acts: Any, sample: int, image: Path, out: Path,
               class_names: list[str] | None, n_samples: int,
               norm: Any = None) -> tuple[Path, list[Any], list[Any]]:
    """All pictures and the report of one sample into ``out``; returns (index.html, stats, predictions)."""
    import numpy as np

    from ..activations import Activations, save_activations
    from ..render import _prepare_dir, display_activations, display_heatmaps, load_display_image, save_png
    from ..report import layer_stats, predict, write_report

    _prepare_dir(out)
    # One sample's activations (the report, the npz and the stats all describe this image).
    def pick(v: Any) -> Any:  # 0-d / 1-d tensors (quantization scales) have no batch axis: kept whole
        a = np.asarray(v)
        return a[sample:sample + 1] if a.ndim >= 2 else a

    one = Activations({k: pick(v) for k, v in acts.items()}, acts.layers,
                      outputs={k: pick(v) for k, v in acts.outputs.items()},
                      model_sha256=acts.model_sha256, class_names=class_names,
                      inputs={k: pick(v) for k, v in acts.inputs.items()})
    one.preprocessing = norm.to_json() if norm is not None else None
    save_activations(one, out)
    from PIL import Image

    shown = _display_input(acts, sample, image)

    base = load_display_image(shown)
    if max(base.shape[:2]) < 256:  # small model inputs (64x64): draw overlays big enough to read
        f = 256 / max(base.shape[:2])
        size = (max(1, round(base.shape[1] * f)), max(1, round(base.shape[0] * f)))
        big = Image.fromarray(np.rint(base * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
        base = np.asarray(big, dtype=np.float32) / 255.0
    save_png(np.rint(base * 255).astype(np.uint8), out / "input.png")
    keys = list(one.keys())
    label = f"{image.name}: " if n_samples > 1 else ""

    def spatial(key: str) -> bool:
        lay, arr = getattr(one.layers.get(key), "layout", None), one[key]
        return lay in ("NCHW", "NHWC") and arr.ndim == 4 and \
            (arr.shape[2] * arr.shape[3] if lay == "NCHW" else arr.shape[1] * arr.shape[2]) > 1

    # One call for all grids and one for all heatmaps: each draws its layers while a small pool
    # encodes the PNGs of the layers before (one call per layer lost that overlap: +0.1 s here;
    # running the two calls at once gained nothing on 2 cores, the pools already fill them).
    pics = display_activations(one, cmap=args.cmap, save=True, directory=out / "grids", layers=keys,
                               normalize=args.scale, show=False, progress=label + "grids")
    grids: dict[str, Path] = {k: p.relative_to(out) for k, p in zip(pics, pics.paths)}
    notes: list[str] = list(pics.skipped.values())
    if norm is not None and norm.guessed:
        notes.insert(0, f"preprocessing {norm.describe()}: the model states none and its graph does not normalise "
                        "its input; activations depend on it: pass --normalize or --mean/--std to choose")
    heats: dict[str, Path] = {}
    hkeys = [k for k in keys if spatial(k)] if args.heatmaps != "none" else []
    if hkeys:
        h = display_heatmaps(one, base, save=True, directory=out / "heatmaps", layers=hkeys,
                             merge_filters=args.heatmaps == "merged", cmap=args.heatmap_cmap, alpha=args.alpha,
                             show=False, progress=label + "heatmaps")
        heats = {k: p.relative_to(out) for k, p in zip(h, h.paths)}
    stats = [layer_stats(k, v, one.layers.get(k)) for k, v in one.items()]
    predictions = predict(one.outputs, class_names, k=args.top, model=model, output=args.class_output)
    cam_entry = None
    if args.cam != "none":
        from ..cam import class_activation_map

        try:
            res = class_activation_map(model, acts=one, method=args.cam, class_index=args.class_index,
                                       cam_layer=args.cam_layer, output=args.class_output)
        except InputError as e:
            if args.cam != "auto" or args.cam_layer:
                raise
            notes.append(f"no class activation map: {e}")
        else:
            if res.class_name is None and class_names and res.class_index is not None \
                    and res.class_index < len(class_names):
                res.class_name = class_names[res.class_index]
            save_png(res.overlay(base, alpha=0.4), out / "cam.png")
            cam_entry = (Path("cam.png"), res.caption)
    page = write_report(out, stats, title=f"onnxact: {Path(str(getattr(model, 'path', '') or 'model')).name}",
                        subtitle=f"input {image.name} | {len(stats)} layers"
                        + (f" | preprocessing: {norm.describe()}" if norm is not None else ""), grids=grids, heatmaps=heats,
                        inputs=[Path("input.png")], cam=cam_entry, predictions=predictions, notes=notes,
                        embed=args.embed)
    return page, stats, predictions


def run(args: argparse.Namespace) -> int:
    import onnxact

    from ..render import safe_filename
    from ..report import STAT_HEADERS, read_labels
    from ..safeio import output_folder

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {args.alpha}")
    if args.top < 1:
        raise InputError("--top must be at least 1")
    model_path, images = _resolve_inputs(args)
    inputs = {"model": [model_path], "image": images, "labels file": [Path(args.labels)] if args.labels else []}
    # Everything is written into a staging folder that replaces DIR only when the run succeeds:
    # a failure, Ctrl-C or SIGTERM leaves DIR as it was (onnxact.safeio.output_folder).
    with output_folder(args.output, force=args.force, inputs=inputs) as folder:
        stage = folder.staging
        t0 = time.perf_counter()
        model = onnxact.load(model_path, providers=getattr(args, "provider", None),
                             threads=getattr(args, "threads", None))
        labels = read_labels(args.labels) if args.labels else None
        norm = normalization_of(model, args) if any(i.suffix.lower() != ".npy" for i in images) else None
        acts = onnxact.get_activations(model, [str(i) for i in images], **capture_kwargs(args),
                                       **preprocess_kwargs(args))
        if len(acts) == 0:
            raise InputError("no layer was captured: the layer/op-type filter matched nothing")
        check_head_options(args, model, acts)
        t_capture = time.perf_counter() - t0
        class_names = labels or acts.class_names
        n = len(images)
        pages = []
        for s, image in enumerate(images):
            sub = stage if n == 1 else stage / f"{s}_{safe_filename(image.stem)}"
            pages.append((image, *_write_one(args, model, acts, s, image, sub, class_names, n, norm)))
        if n > 1:
            _index_of_reports(stage, pages)
    out = folder.path
    t_total = time.perf_counter() - t0
    stats = pages[0][2]
    print(_table([s.row() for s in stats], STAT_HEADERS))
    for image, _, _, preds in pages:
        for output, top in preds.groups:
            label = f" [{output}]" if len(preds.groups) > 1 else ""
            print(f"{image.name}{label}: " + ", ".join(f"{name or i} {100 * p:.1f}%" for i, name, p in top))
        if not preds:
            print(f"{image.name}: {preds.reason}")
    print(f"{len(stats)} layers captured in {t_capture:.2f}s, everything written in {t_total:.2f}s")
    print(f"report: {out / 'index.html'}")
    sys.stdout.flush()
    warn_if_guessed(model, norm)
    return 0


def _index_of_reports(out: Path, pages: list[tuple[Any, ...]]) -> Path:
    import html

    from ..safeio import write_text

    items = []
    for image, page, _, predictions in pages:
        rel = page.relative_to(out).as_posix()
        preds = predictions.top
        best = f" — {html.escape(str(preds[0][1] or preds[0][0]))} {100 * preds[0][2]:.1f}%" if preds else ""
        items.append(f"<li><a href='{html.escape(rel)}'>{html.escape(image.name)}</a>{best}</li>")
    page = out / "index.html"
    write_text(page, "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>onnxact reports</title>"
               "</head><body><h1>onnxact reports</h1><ul>" + "".join(items) + "</ul></body></html>")
    return page
