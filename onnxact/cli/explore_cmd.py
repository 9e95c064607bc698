"""``onnxact explore MODEL IMAGES... -o DIR``: the dataset images that excite each filter most.

Writes ``DIR/exemplars.json``, one crop PNG per entry and an ``index.html`` per layer (see
:mod:`onnxact.exemplars`). Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_normalize_options,
    add_provider_option,
    add_size_options,
    check_engine_options,
    preprocess_kwargs,
)
from .node_data_options import add_node_data_option, check_node_data_path, write_node_data

DESCRIPTION = """For every channel of every captured layer, find the K images of a dataset with the
highest maximum activation, and the patch of each image (the receptive field of the strongest
position) that fired it. Writes DIR/exemplars.json, a crop PNG per entry and an index.html per layer.

IMAGES are image files, folders (searched recursively), globs ('data/**/*.jpg'), text files
listing one path per line, or .npy/.npz arrays of ready inputs. Unreadable images are skipped
and counted (--strict: exit 2)."""


def _top(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"--top takes a whole number of images of at least 1, not '{text}'")
    return v


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the ONNX model")
    p.add_argument("images", metavar="IMAGES", nargs="+", help="image files, folders, globs, list files, .npy/.npz")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="folder to write the exemplars into")
    p.add_argument("--top", type=_top, default=9, metavar="K", help="images per channel (default 9)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (names or ONNX tensors)")
    p.add_argument("--op-types", nargs="+", metavar="OP", help="only layers of these op types")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) on an unreadable image instead of skipping it")
    p.add_argument("--force", action="store_true", help="write into an existing folder that onnxact did not write")
    p.add_argument("--batch-size", type=int, default=32, help="images per onnxruntime run (default 32)")
    p.add_argument("--no-pages", action="store_true", help="write exemplars.json only (no crops, no HTML)")
    add_node_data_option(p, "each layer's mean activation")
    add_normalize_options(p)
    add_size_options(p)
    add_provider_option(p)
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address (with --engine ray; default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray actors, one onnxruntime session each (with --engine ray)")
    p.set_defaults(func=run)


def _bar() -> object:
    """A ``progress(done, total)`` callback drawing onnxact's terminal bar (silent off a terminal)."""
    from ..progress import _enabled

    if not _enabled(sys.stderr):
        return None
    width = 28

    def draw(done: int, total: int) -> None:
        filled = int(width * min(done, total) / total) if total else 0
        sys.stderr.write(f"\rscanning [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if total and done >= total:
            sys.stderr.write("\r\033[K")
        sys.stderr.flush()

    return draw


def run(args: argparse.Namespace) -> int:
    from ..exemplars import find_exemplars

    check_engine_options(args)
    check_node_data_path(args.node_data, args.model, args.images)
    ex = find_exemplars(args.model, args.images, top=args.top, layers=args.layers, op_types=args.op_types,
                        batch_size=args.batch_size, strict=args.strict, engine=args.engine, address=args.address,
                        workers=args.workers, providers=args.provider, threads=args.threads,
                        progress=_bar(), **preprocess_kwargs(args))  # type: ignore[arg-type]
    out = ex.save(args.output, force=args.force, crops=not args.no_pages, pages=not args.no_pages)
    channels = sum(len(c) for c in ex.layers.values())
    print(f"{ex.images} images scanned, {len(ex.layers)} layers, {channels} channels, top {ex.top} each")
    if ex.input_size:
        h, w = ex.input_size
        print(f"every image fed as --size {h} {w} ({ex.resize})")
    if ex.fewer_than_top:
        print(f"onnxact: note: only {ex.images} readable images, fewer than --top {ex.top}: each list has "
              f"{ex.images} entries", file=sys.stderr)
    for note in ex.notes[:3]:
        print(f"onnxact: note: {note}", file=sys.stderr)
    if ex.skipped:
        print(f"onnxact: warning: {len(ex.skipped)} unreadable images skipped (first: {ex.skipped[0][1]})",
              file=sys.stderr)
    write_node_data(ex, args.model, args.node_data)
    print(f"written {out / 'exemplars.json'}" + ("" if args.no_pages else f" and {out / 'index.html'}"))
    return 0
