"""``onnxact compare A B IMAGES...``: where two models part ways, layer by layer (a CI gate).

Exit 0 when every matched layer is within the tolerance, 1 when one is not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import add_normalize_options, normalize_kwargs
from .node_data_options import add_node_data_option, check_node_data_path, write_node_data

DESCRIPTION = """Run models A and B on the same images and compare their activations layer by layer.

Layers are matched by framework layer name, then ONNX tensor name, then by position when both
models have the same sequence of conv/pool shapes; --map FILE.json ({"A name": "B name"})
overrides. Per layer: relative L2 error, cosine similarity, SQNR (dB), max |A-B| and the worst
channel, summed over every image. The first divergence is the first layer (graph order) with
rel_l2 > --rtol (default 1e-3), or SQNR < --min-sqnr when that is given.

IMAGES are image files, folders (searched recursively), globs, list files or .npy/.npz arrays.

Exit codes: 0 every layer within tolerance, 1 a layer diverged, 2 bad input."""


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="the reference ONNX model")
    p.add_argument("b", metavar="B", help="the ONNX model compared with it")
    p.add_argument("images", metavar="IMAGES", nargs="+", help="image files, folders, globs, list files, .npy/.npz")
    p.add_argument("--json", metavar="F", help="write the JSON report to F")
    p.add_argument("--junit", metavar="F", help="write JUnit XML to F (one testcase per layer)")
    add_node_data_option(p, "each layer's SQNR in dB, on A's graph,")
    p.add_argument("--html", metavar="DIR", help="write a page with SQNR against depth and A/B/|A-B| grids to DIR")
    p.add_argument("--force", action="store_true", help="with --html: write into a non-empty folder")
    p.add_argument("--rtol", type=float, default=None, help="relative L2 error past which a layer diverges (default 1e-3)")
    p.add_argument("--min-sqnr", type=float, default=None, metavar="DB",
                   help="SQNR in dB below which a layer diverges (instead of --rtol unless both are given)")
    p.add_argument("--map", metavar="FILE", help='JSON {"A layer": "B layer"} to pair layers by hand')
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="compare only these layers (names or ONNX tensors)")
    p.add_argument("--batch-size", type=int, default=8, help="images per onnxruntime run (default 8)")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) on an unreadable image instead of skipping it")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize images to H W (models with dynamic spatial size)")
    add_normalize_options(p)
    p.add_argument("--provider", default=None, metavar="EP", help="onnxruntime execution provider(s) for A (and B)")
    p.add_argument("--provider-b", default=None, metavar="EP", help="execution provider(s) for B when they differ")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime intra-op threads")
    p.set_defaults(func=run)


def read_map(path: str) -> dict[str, str]:
    """The --map file: a JSON object of strings, else one line saying what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read --map file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise InputError(f"--map file {path} is not valid JSON ({e}); write {{\"A layer\": \"B layer\", ...}}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputError(f"--map file {path} must hold one JSON object of layer names, {{\"A layer\": \"B layer\"}}")
    return data


def run(args: argparse.Namespace) -> int:
    from ..compare import compare
    from ..images import expand_sources
    from ..safeio import check_outputs

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {args.batch_size}")
    outputs = {"--json": args.json, "--junit": args.junit, "--node-data": args.node_data}
    check_node_data_path(args.node_data)
    inputs = {"model": [args.a, args.b], "--map file": [args.map] if args.map else []}
    exists = any(p is not None and os.path.lexists(p) for p in outputs.values())
    images = [getattr(i, "label", i) for i in expand_sources(args.images)] if exists or args.html else []
    check_outputs(outputs, {**inputs, "image": images})
    mapping = read_map(args.map) if args.map else None
    kw: dict[str, Any] = normalize_kwargs(args)
    if args.size:
        kw["size"] = tuple(args.size)
    report = compare(args.a, args.b, args.images, rtol=args.rtol, min_sqnr=args.min_sqnr, map=mapping,
                     layer_names=args.layers, batch_size=args.batch_size, providers=args.provider,
                     providers_b=args.provider_b, threads=args.threads, strict=args.strict,
                     keep_samples=bool(args.html), show_progress=True, **kw)
    if args.json:
        report.to_json(args.json)
    if args.junit:
        report.to_junit(args.junit)
    write_node_data(report, args.a, args.node_data)
    if args.html:
        from ..compare_html import write_html
        from ..safeio import output_folder

        with output_folder(args.html, force=args.force, inputs={**inputs, "image": images}) as folder:
            write_html(report, folder.staging)
    print(report.table())
    if report.failed:
        first = report.failed[0]
        print(f"onnxact: warning: {len(report.failed)} unreadable images skipped (first: {first[0]}: {first[1]})",
              file=sys.stderr)
    if args.html:
        print(f"report written to {Path(args.html) / 'index.html'}")
    if report:
        r = report.layer(report.first_divergence)
        if os.environ.get("GITHUB_ACTIONS"):  # shows in the pull request, as `onnxact check` does
            print(f"::error file={args.b},title=onnxact compare::first divergence at layer {r.name}: rel_l2 "
                  f"{r.rel_l2:.3g}, SQNR {r.sqnr_db:.1f} dB ({report.tolerance_text()})")
        print(f"FAILED: first divergence at {r.name} (rel_l2 {r.rel_l2:.3g}, SQNR {r.sqnr_db:.1f} dB; "
              f"{report.tolerance_text()})")
        return 1
    print(f"OK: {len(report.layers)} layers within tolerance ({report.tolerance_text()})")
    return 0
