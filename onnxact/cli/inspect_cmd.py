"""``onnxact inspect [MODEL] [IMAGE...] [-o DIR]``: capture, then write every picture and a report.

Writes into DIR: ``grids/{pos}_{layer}.png`` (one grid per layer), ``heatmaps/{pos}_{layer}_heatmap.png``,
``cam.png``, ``input.png``, ``activations.npz`` + ``manifest.json`` (not with ``--no-arrays``) and
``index.html``. With several images each gets its own sub-folder ``{n}_{image stem}/`` of pictures
and DIR/index.html links them; the arrays of all images are one ``activations.npz`` in DIR.
With no MODEL and no IMAGE it runs on the bundled demo model and its sample image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..images import IMAGE_SUFFIXES
from .common import (
    add_capture_options,
    add_input_option,
    add_preprocess_options,
    capture_kwargs,
    complete_inputs,
    normalization_of,
    preprocess_kwargs,
    warn_if_guessed,
)
from .head_options import add_head_options, check_head_options


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=(
        "Capture the activations of MODEL for each IMAGE and write a grid per layer, heatmap overlays, "
        "a class activation map, activations.npz + manifest.json and an index.html report into DIR. "
        "Without MODEL and IMAGE the bundled demo model and image are used."))
    p.add_argument("model", nargs="?", metavar="MODEL", help="ONNX model file (default: the bundled demo CNN)")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders, globs or list files (default: the demo image)")
    p.add_argument("-o", "--output", default="onnxact-report", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=10, metavar="N",
                   help="report on at most the first N images found (each gets a full report; default: %(default)s)")
    add_input_option(p)
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
    g.add_argument("--embed", action="store_true", help="embed the images in index.html (one self-contained file; "
                   "with several images, the top index.html holds every image's report)")
    g.add_argument("--no-arrays", action="store_true",
                   help="write no activations.npz / manifest.json (pictures and report only: much smaller)")
    add_capture_options(p)
    add_preprocess_options(p)
    p.set_defaults(func=run)


def _resolve_inputs(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """(model, image files): folders, globs and list files expanded as ``check`` does, capped by --max-images."""
    import onnxact

    from ..images import ArrayRef, expand_sources

    model = Path(args.model) if args.model else None
    sources = list(args.images)
    if model is not None and model.suffix.lower() in IMAGE_SUFFIXES:  # `inspect photo.jpg`: demo model
        sources.insert(0, str(model))
        model = None
    if model is None:
        demo_model, demo_image = onnxact.demo_paths()
        model = demo_model
        if not sources and not args.input:
            sources = [str(demo_image)]
    if not model.is_file():
        raise InputError(f"model {model} does not exist or is not a file")
    if args.max_images < 1:
        raise InputError(f"--max-images must be at least 1, not {args.max_images}")
    if not sources:
        return model, []
    items = expand_sources(sources)
    arrays = [i for i in items if isinstance(i, ArrayRef)]
    if arrays:
        names = [i.name for i in onnxact.load(model).inputs]
        name = names[0] if len(names) == 1 else "NAME"
        raise InputError(f"{arrays[0].label} is an array file, not an image; give arrays with --input {name}={arrays[0].label}")
    if len(items) > args.max_images:
        print(f"onnxact: note: {len(items)} images found; reporting on the first {args.max_images} "
              "(--max-images N for more)", file=sys.stderr)
        items = items[:args.max_images]
    return model, [Path(str(i)) for i in items]


def _model_input(model: Any, images: list[Path], args: argparse.Namespace) -> tuple[Any, list[str]]:
    """(x for get_activations, one label per sample): the images feed the image input, --input the rest."""
    from ..feeds import batch_size_of, describe_input, image_input, input_specs

    given = input_specs(model, args.input or [])
    if not model.inputs:
        if images or given:
            raise InputError(f"{model.name} has no inputs (all its values are constants), so it takes no IMAGE or --input")
        print(f"onnxact: note: {model.name} has no inputs; its activations are constants, the same on every run",
              file=sys.stderr)
        return None, ["constants"]
    x: dict[str, Any] = dict(given)
    if images:
        target = image_input(model, exclude=list(given))
        if target is None:
            rest = [i for i in model.inputs if i.name not in given]
            if not rest:
                raise InputError(f"every input of {model.name} is given with --input, so {images[0].name} "
                                 "has no input left to feed; drop the IMAGE or that --input")
            what = ", ".join(describe_input(i) for i in rest)
            raise InputError(f"{model.name} has no image input for {images[0].name} ({what}: not an image); "
                             "give its inputs with --input NAME=FILE.npy or NAME=VALUE")
        x[target.name] = [str(i) for i in images]
    elif not given:
        if image_input(model) is not None:
            raise InputError(f"no IMAGE given for {model.name}; usage: onnxact inspect MODEL IMAGE... "
                             "(or no arguments for the demo)")
        raise InputError(f"{model.name} takes no image; give its inputs with --input NAME=FILE.npy or NAME=VALUE "
                         f"(inputs: {', '.join(i.name for i in model.inputs)})")
    x = complete_inputs(model, x)
    if images:
        return x, [i.name for i in images]
    arrays = {k: v for k, v in x.items() if not isinstance(v, str)}
    n = batch_size_of(model, arrays)
    return x, [f"sample {s}" for s in range(n)] if n > 1 else ["input"]


def _batches(model: Any, x: Any, args: argparse.Namespace) -> list[tuple[Any, int]]:
    """(model input, sample index) per capture: one batch, or one image at a time when the image
    input's height/width are dynamic and no --size is given (photos of different sizes then keep
    their own size, as they would one by one, instead of failing to stack)."""
    from ..feeds import image_input

    target = image_input(model) if isinstance(x, dict) else None
    paths = x.get(target.name) if target is not None else None
    hw = [] if target is None else (target.shape[1:3] if target.layout == "NHWC" else target.shape[2:4])
    dynamic = any(not (isinstance(d, int) and d > 0) for d in hw)
    if not isinstance(paths, list) or len(paths) < 2 or not dynamic or getattr(args, "size", None):
        return [(x, 0)]
    return [({**x, target.name: [p]}, 0) for p in paths]


def _display_input(acts: Any, sample: int, fallback: Path | None) -> Any:
    """What the model saw (the preprocessed input) when it is an image, else the file, else None (audio)."""
    import numpy as np

    feeds = getattr(acts, "inputs", None) or {}
    for v in feeds.values():
        a = np.asarray(v)
        if a.ndim == 4 and (a.shape[1] in (1, 3) or a.shape[3] in (1, 3)):
            return a[sample]
    return None if fallback is None else str(fallback)


def _report_pictures(pics: Any, acts: Any, out: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """({layer: preview PNG} for grids too big to show whole, {layer: tile hover map}) for the report."""
    from ..report_page import tile_map, write_preview

    previews: dict[str, Path] = {}
    tiles: dict[str, Any] = {}
    for key, path in zip(pics, pics.paths):
        small = write_preview(pics[key], out / "previews" / path.name)
        if small is not None:
            previews[key] = small.relative_to(out)
        hover = tile_map(pics.details.get(key), acts[key], acts.layers.get(key)) if key in acts else None
        if hover is not None:
            tiles[key] = hover
    return previews, tiles


def _fed(geometry: Any) -> str:
    """`` (600x400 px) fed as --size 416 608 (letterbox)``: what the model saw, in --size's order."""
    if geometry is None:
        return ""
    (h, w), (ih, iw) = geometry.input_size, geometry.image_size
    how = "as is" if (h, w) == (ih, iw) else geometry.mode
    return f" ({iw}x{ih} px) fed as --size {h} {w} ({how})"


def _original(image: Path) -> Any:
    """The image as preprocessing read it (same decoder, same orientation), at most 1024 px a side."""
    from ..preprocess import load_image

    img = load_image(image).convert("RGB")
    img.thumbnail((1024, 1024))
    return img


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i < 3 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def _write_one(args: argparse.Namespace, model: Any, acts: Any, sample: int, name: str, image: Path | None,
               out: Path, class_names: list[str] | None, n_samples: int,
               norm: Any = None, position: int = 0, bodies: list[str] | None = None) -> tuple[Path, list[Any], list[Any]]:
    """All pictures and the report of one sample (``name``, from ``image`` when it is one) into ``out``.

    Returns (index.html, stats, predictions). Without an image input (audio, tables) there is no
    input picture, heatmap or CAM: grids and statistics only.
    """
    import numpy as np

    from ..activations import Activations, Outputs
    from ..render import _prepare_dir, display_activations, display_heatmaps, load_display_image, save_png
    from ..report import layer_stats, predict, write_report

    _prepare_dir(out)
    # One sample's activations (the report, the npz and the stats all describe this image).
    def pick(v: Any) -> Any:  # 0-d / 1-d tensors (quantization scales) have no batch axis: kept whole
        a = np.asarray(v)
        return a[sample:sample + 1] if a.ndim >= 2 else a

    one = Activations({k: pick(v) for k, v in acts.items()}, acts.layers,
                      outputs=Outputs({k: pick(v) for k, v in acts.outputs.items()},
                                      getattr(acts.outputs, "tensors", None)),  # keeps ONNX names reachable
                      model_sha256=acts.model_sha256, class_names=class_names,
                      inputs={k: pick(v) for k, v in acts.inputs.items()},
                      geometry=acts.geometry[sample:sample + 1] if acts.geometry else None)
    from PIL import Image

    geometry = one.geometry[0] if one.geometry else None
    # the original picture when the geometry of its fit is known (maps are put back onto it),
    # else what the model saw
    shown = _original(image) if geometry is not None and image is not None else _display_input(acts, sample, image)
    base = None if shown is None else load_display_image(shown)
    if base is not None and max(base.shape[:2]) < 256:  # small model inputs (64x64): draw overlays big enough to read
        f = 256 / max(base.shape[:2])
        size = (max(1, round(base.shape[1] * f)), max(1, round(base.shape[0] * f)))
        big = Image.fromarray(np.rint(base * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
        base = np.asarray(big, dtype=np.float32) / 255.0
    if base is not None:
        save_png(np.rint(base * 255).astype(np.uint8), out / "input.png")
    keys = list(one.keys())
    label = f"{name}: " if n_samples > 1 else ""

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
    previews, tiles = _report_pictures(pics, one, out)
    notes: list[str] = list(pics.skipped.values())
    if norm is not None and norm.guessed:
        notes.insert(0, f"preprocessing {norm.describe()}: the model states none and its graph does not normalise "
                        "its input; activations depend on it: pass --normalize or --mean/--std to choose")
    heats: dict[str, Path] = {}
    hkeys = [k for k in keys if spatial(k)] if args.heatmaps != "none" and base is not None else []
    if hkeys:
        from ..report_page import heatmap_base

        h = display_heatmaps(one, heatmap_base(base), save=True, directory=out / "heatmaps", layers=hkeys,
                             merge_filters=args.heatmaps == "merged", cmap=args.heatmap_cmap, alpha=args.alpha,
                             show=False, progress=label + "heatmaps")
        heats = {k: p.relative_to(out) for k, p in zip(h, h.paths)}
    stats = [layer_stats(k, v, one.layers.get(k)) for k, v in one.items()]
    predictions = predict(one.outputs, class_names, k=args.top, model=model, output=args.class_output,
                          batch=next((len(v) for v in one.inputs.values() if np.ndim(v)), None))
    cam_entry = None
    if args.cam != "none" and base is None:
        notes.append("no class activation map: the model has no image input to draw it over")
    elif args.cam != "none":
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
            from ..render import overlay

            save_png(np.asarray(overlay(base, res.map, alpha=0.4, geometry=geometry)), out / "cam.png")
            cam_entry = (Path("cam.png"), res.caption)
    # Several images with --embed: each image's page links its pictures (it sits beside them) and
    # the top index.html embeds every report (one self-contained file, not two copies of each).
    report = dict(grids=grids, heatmaps=heats, inputs=[Path("input.png")] if base is not None else [], cam=cam_entry,
                  predictions=predictions, notes=notes, previews=previews, tiles=tiles,
                  anchor_prefix=f"s{position}-" if n_samples > 1 else "")
    page = write_report(out, stats, title=f"onnxact: {Path(str(getattr(model, 'path', '') or 'model')).name}",
                        subtitle=f"input {name}{_fed(geometry)} | {len(stats)} layers"
                        + (f" | preprocessing: {norm.describe()}" if norm is not None else ""),
                        embed=args.embed and bodies is None, **report)
    if bodies is not None:
        from ..report import report_body

        bodies.append("".join(report_body(out, stats, embed=True, **report)))
    return page, stats, predictions


def run(args: argparse.Namespace) -> int:
    import onnxact

    from ..feeds import spec_paths
    from ..render import safe_filename
    from ..report import STAT_HEADERS, read_labels
    from ..safeio import output_folder

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {args.alpha}")
    if args.top < 1:
        raise InputError("--top must be at least 1")
    model_path, images = _resolve_inputs(args)
    inputs = {"model": [model_path], "image": images, "labels file": [Path(args.labels)] if args.labels else [],
              "--input file": spec_paths(args.input)}
    # Everything is written into a staging folder that replaces DIR only when the run succeeds:
    # a failure, Ctrl-C or SIGTERM leaves DIR as it was (onnxact.safeio.output_folder).
    with output_folder(args.output, force=args.force, inputs=inputs) as folder:
        stage = folder.staging
        t0 = time.perf_counter()
        model = onnxact.load(model_path, providers=getattr(args, "provider", None),
                             threads=getattr(args, "threads", None))
        labels = read_labels(args.labels) if args.labels else None
        x, names = _model_input(model, images, args)
        norm = normalization_of(model, args) if images or any(isinstance(v, str) for v in (x or {}).values()) else None
        captures = [(onnxact.get_activations(model, part, **capture_kwargs(args), **preprocess_kwargs(args)), i)
                    for part, i in _batches(model, x, args)]
        acts = captures[0][0]
        if len(acts) == 0:
            raise InputError("no layer was captured: the layer/op-type filter matched nothing")
        check_head_options(args, model, acts)
        t_capture = time.perf_counter() - t0
        class_names = labels or acts.class_names
        n = len(names)
        pages = []
        bodies: list[str] | None = [] if args.embed and n > 1 else None
        for s, name in enumerate(names):
            sub = stage if n == 1 else stage / f"{s}_{safe_filename(Path(name).stem)}"
            image = images[s] if images else None
            part, index = captures[s] if len(captures) > 1 else (acts, s)
            pages.append((name, *_write_one(args, model, part, index, name, image, sub, class_names, n, norm,
                                            position=s, bodies=bodies)))
        if n > 1:
            from ..report_index import write_index

            write_index(stage, pages, bodies=bodies)
        if not args.no_arrays and len(captures) == 1:
            _save_arrays(acts, stage, class_names, norm)
        elif not args.no_arrays:  # one capture per image, each at its own size: one file per image
            for (part, _), (_, page, _, _) in zip(captures, pages):
                _save_arrays(part, page.parent, class_names, norm)
    out = folder.path
    t_total = time.perf_counter() - t0
    stats = pages[0][2]
    print(_table([s.row() for s in stats], STAT_HEADERS))
    for name, _, _, preds in pages:
        for output, top in preds.groups:
            label = f" [{output}]" if len(preds.groups) > 1 else ""
            print(f"{name}{label}: " + ", ".join(f"{cls or i} {100 * p:.1f}%" for i, cls, p in top))
        if not preds:
            print(f"{name}: {preds.reason}")
    geometry = acts.geometry[0] if acts.geometry else None
    print(f"{len(stats)} layers captured in {t_capture:.2f}s, everything written in {t_total:.2f}s")
    if geometry is not None:
        note = "" if n == 1 else " (each image at its own resolved size)" if len(captures) > 1 else \
            " (all images at this size)"
        print(f"{'input' if n == 1 else Path(names[0]).name}{_fed(geometry)}{note}")
    files, size = _written(out)
    print(f"wrote {files} files, {_human(size)} to {out}")
    print(f"report: {out / 'index.html'}")
    sys.stdout.flush()
    warn_if_guessed(model, norm)
    return 0


def _save_arrays(acts: Any, out: Path, class_names: list[str] | None, norm: Any) -> None:
    """All images' arrays in one ``activations.npz`` (+ one ``manifest.json``) in ``out``: DIR.

    Why one file: per-image copies repeated the model's layer metadata and split a batch that
    ``load_activations(DIR)`` now returns whole (sample ``i`` is image ``i`` on the command line).
    Images captured one by one at their own sizes (a dynamic model without --size) can't share
    arrays: each gets its own file in its own report folder.
    """
    from ..activations import Activations, save_activations

    whole = Activations(acts, acts.layers, outputs=acts.outputs, model_sha256=acts.model_sha256,
                        class_names=class_names, inputs=acts.inputs, geometry=acts.geometry)
    whole.preprocessing = norm.to_json() if norm is not None else None
    save_activations(whole, out)


def _written(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``."""
    files = size = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            files += 1
            size += p.stat().st_size
    return files, size


def _human(n: int) -> str:
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} bytes"
