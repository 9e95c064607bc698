"""``onnxact check MODEL IMAGES...``: the dead-filter CI gate.

Exit 0 when clean, 1 when a failing finding (``--fail-on``, minus the ``--allow`` baseline) is
found, 2 on bad input. When ``GITHUB_ACTIONS`` is set, each failing finding is also printed as
a ``::error`` workflow command so it shows in the pull request.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import InputError
from ..normalization import Normalization
from .common import (
    add_input_option,
    add_normalize_options,
    add_provider_option,
    add_size_options,
    check_engine_options,
    complete_inputs,
    preprocess_kwargs,
)
from .node_data_options import add_node_data_option, check_node_data_path, write_node_data

DESCRIPTION = """Scan a dataset for dead, dormant and constant filters and fail the build when any are found.

IMAGES are image files, folders (searched recursively), globs ('data/**/*.jpg'), text files
listing one path per line, or .npy/.npz arrays of ready inputs. A model's other inputs (a sample
rate, im_info) take one value for the whole dataset: --input NAME=FILE.npy or NAME=NUMBER.

  dead      max |a| <= eps over every image and position (default eps 0)
  dormant   channel mean / layer mean <= tau, for non-negative (ReLU-like) layers (default tau 0)
  constant  max - min ~ 0 over the dataset (zero variance)

Exit codes: 0 clean, 1 found (kinds in --fail-on, not in --allow), 2 bad input."""


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the ONNX model")
    p.add_argument("images", metavar="IMAGES", nargs="+", help="image files, folders, globs, list files, .npy/.npz")
    p.add_argument("--json", metavar="F", help="write the JSON report to F (also usable as an --allow baseline)")
    p.add_argument("--junit", metavar="F", help="write a JUnit XML report (one testcase per layer) to F")
    add_node_data_option(p, "the fraction of dead filters")
    p.add_argument("--fail-on", default="dead", metavar="KINDS",
                   help="comma-separated kinds that fail the check: dead,dormant,constant (default: dead)")
    p.add_argument("--eps", type=float, default=0.0, help="dead when max |a| <= eps (default 0)")
    p.add_argument("--tau", type=float, default=0.0, help="dormant when mean / layer mean <= tau (default 0)")
    p.add_argument("--allow", metavar="FILE", help="baseline of known findings that do not fail (a --json report)")
    p.add_argument("--write-baseline", metavar="FILE", help="write every finding to FILE as a baseline and exit 0")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) on an unreadable image instead of skipping it")
    p.add_argument("--batch-size", type=int, default=32, help="images per onnxruntime run (default 32)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="check only these layers (names or ONNX tensors)")
    p.add_argument("--op-types", nargs="+", metavar="OP", help="check only layers of these op types")
    add_normalize_options(p)
    add_size_options(p)
    add_input_option(p)
    add_provider_option(p)
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address, e.g. ray://HOST:10001 or auto (with --engine ray; "
                   "default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray actors, one onnxruntime session each (with --engine ray)")
    p.set_defaults(func=run)


def _annotate(report, failing, model: str) -> None:
    for f in failing:
        what = {"dead": f"max |a| = {f.value:g}", "dormant": f"mean ratio = {f.value:.3g}",
                "constant": f"always {f.value:g}"}[f.kind]
        print(f"::error file={model},title=onnxact check::{f.kind} filter: layer {f.layer} channel {f.channel} "
              f"({what} over {report.images} images)")
    if report.failed:
        print(f"::warning file={model},title=onnxact check::{len(report.failed)} unreadable images skipped")


def _refuse_outputs_over_inputs(args: argparse.Namespace) -> None:
    """Before the scan: no report file may be the model, an image scanned, or another report."""
    from ..feeds import spec_paths
    from ..images import expand_sources
    from ..safeio import check_outputs

    outputs = {"--json": args.json, "--junit": args.junit, "--write-baseline": args.write_baseline,
               "--node-data": args.node_data}
    check_node_data_path(args.node_data)
    # The images are listed only when an output file already exists: a new file can't be one.
    exists = any(p is not None and os.path.lexists(p) for p in outputs.values())
    images = [getattr(i, "label", i) for i in expand_sources(args.images)] if exists else []
    check_outputs(outputs, {"model": [args.model], "image": images, "--input file": spec_paths(args.input)})


def run(args: argparse.Namespace) -> int:
    from ..dead_filters import find_dead_filters
    from ..feeds import input_specs, scan_input
    from ..model import load
    from ..preprocess import preprocess_image
    from ..stats_report import KINDS, load_allow_list

    fail_on = [k.strip() for k in args.fail_on.split(",") if k.strip()]
    bad = [k for k in fail_on if k not in KINDS]
    if bad or not fail_on:
        raise InputError(f"--fail-on takes {', '.join(KINDS)} (comma-separated), not '{args.fail_on}'")
    check_engine_options(args)
    _refuse_outputs_over_inputs(args)
    allow = load_allow_list(args.allow) if args.allow else set()
    kw = preprocess_kwargs(args)
    model = load(args.model, providers=args.provider, threads=args.threads)
    given = input_specs(model, args.input)
    data = scan_input(model, list(given))  # the input the IMAGES feed; the others are fixed for the dataset
    extra = complete_inputs(model, given, exclude=[data.name]) if len(model.inputs) > 1 else {}
    extra = {k: preprocess_image(v, model, input_name=k, **kw) if isinstance(v, str) else v for k, v in extra.items()}
    report = find_dead_filters(
        model, args.images, inputs=extra, eps=args.eps, tau=args.tau, layer_names=args.layers, op_types=args.op_types,
        batch_size=args.batch_size, strict=args.strict, engine=args.engine, address=args.address,
        workers=args.workers, providers=args.provider, threads=args.threads, **kw,
    )
    if args.json:
        report.to_json(args.json)
    if args.junit:
        report.to_junit(args.junit, fail_on=fail_on, allow=allow)
    write_node_data(report, model, args.node_data)
    print(report.table())
    if report.input_size and report.input_size["dynamic"]:
        h, w = report.input_size["size"]
        print(f"every image fed as --size {h} {w} ({report.input_size['resize']})")
    for note in report.notes[:3]:
        print(f"onnxact: note: {note}", file=sys.stderr)
    if len(report.notes) > 3:  # --op-types Mul on an int8 model skips dozens of scale products
        print(f"onnxact: note: {len(report.notes) - 3} more layers skipped (all listed under \"notes\" in --json)",
              file=sys.stderr)
    if report.preprocessing and report.preprocessing.get("guessed"):
        norm = Normalization.from_json(report.preprocessing)
        print(norm.warning(report.model_name), file=sys.stderr)
        print(f"note: these counts depend on the guessed preprocessing ({norm.describe()}); "
              "confirm it with --normalize or --mean/--std")
    if report.failed:
        first = report.failed[0]
        print(f"onnxact: warning: {len(report.failed)} unreadable images skipped (first: {first[1]})", file=sys.stderr)
    if args.write_baseline:
        report.to_json(args.write_baseline)
        n = sum(len(v) for v in report.findings.values())
        print(f"baseline with {n} findings written to {args.write_baseline}")
        return 0
    failing = report.failing(fail_on, allow)
    if os.environ.get("GITHUB_ACTIONS"):
        _annotate(report, failing, args.model)
    if failing:
        shown = ", ".join(f"{f.layer}[{f.channel}]" for f in failing[:10])
        more = f" and {len(failing) - 10} more" if len(failing) > 10 else ""
        print(f"FAILED: {len(failing)} {'/'.join(fail_on)} filters: {shown}{more}")
        return 1
    allowed = sum(1 for k in fail_on for _ in report.findings[k]) if allow else 0
    print("OK: no " + "/".join(fail_on) + " filters" + (f" beyond the {allowed} in the baseline" if allowed else ""))
    return 0
