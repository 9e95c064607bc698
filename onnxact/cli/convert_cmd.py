"""``onnxact convert SRC -o OUT.onnx``: a Keras file or a PyTorch ``module:factory`` to ONNX.

The framework is imported only when this command runs, so ``onnxact --help`` stays fast and a
missing framework gives one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from ..errors import ConversionError, InputError

DESCRIPTION = """Convert a framework model to ONNX, with its layer names (and optionally class names) in the metadata.

SRC is one of:
  a Keras file            model.keras, model.h5 / .hdf5, or a SavedModel folder
  a PyTorch factory       package.module:factory or path/to/file.py:factory, where factory() returns
                          (module, example_input), or just the module when --input-shape is given

Examples:
  onnxact convert model.keras -o model.onnx
  onnxact convert mypkg.nets:build_resnet -o resnet.onnx --exporter legacy --keep-batchnorm
  onnxact convert nets.py:make_model --input-shape 1,3,224,224 -o model.onnx --class-names labels.txt"""

KERAS_SUFFIXES = {".keras", ".h5", ".hdf5"}


def add_parser(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="Keras file / SavedModel folder, or a PyTorch module:factory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the ONNX model")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--keep-batchnorm", action="store_true",
                   help="keep BatchNorm layers as their own nodes (default: folded into the conv before them)")
    p.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo", help="PyTorch exporter (default dynamo)")
    p.add_argument("--input-shape", metavar="N,C,H,W", default=None,
                   help="PyTorch: example input shape when the factory returns only the module")
    p.add_argument("--class-names", metavar="NAMES", default=None,
                   help="class names in index order: comma-separated, or a text file with one per line")
    p.add_argument("--normalize", choices=["0-1", "none", "-1-1", "imagenet", "caffe"], default=None,
                   help="record the input normalisation the model expects (used by preprocess_image)")
    p.set_defaults(func=run)


def _class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    p = Path(spec)
    if p.is_file():
        names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError(f"--class-names {spec!r} gives no names")
    return names


def _load_factory(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise InputError(f"{spec!r} is neither an existing Keras file nor a 'package.module:factory'")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise InputError(f"Python file not found: {path}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.path.insert(0, str(path.parent.resolve()))
            mod_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(target)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import
        raise InputError(f"can't import {target!r}: {type(e).__name__}: {_first_line(e)}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise InputError(f"{target!r} has no callable {attr!r}")
    return fn


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _convert_torch(args, meta) -> dict:
    from onnxact.converters.torch import _import_torch, from_torch

    torch = _import_torch()
    fn = _load_factory(args.src)
    try:
        made = fn()
    except Exception as e:  # noqa: BLE001 - the user's factory raised
        raise ConversionError(f"the factory {args.src} raised {type(e).__name__}: {_first_line(e)}") from None
    if isinstance(made, torch.nn.Module):
        if not args.input_shape:
            raise InputError(f"{args.src} returned only a module; give --input-shape (e.g. 1,3,224,224) "
                             "or return (module, example_input)")
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise InputError(f"--input-shape must be integers like 1,3,224,224, got {args.input_shape!r}") from None
        module, example = made, torch.rand(*shape)
    elif isinstance(made, (tuple, list)) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        module, example = made
    else:
        raise InputError(f"the factory {args.src} must return (torch.nn.Module, example_input), "
                         f"got {type(made).__name__}")
    proto = from_torch(module, example, args.output, exporter=args.exporter, keep_batchnorm=args.keep_batchnorm,
                       opset=args.opset, **meta)
    return {"framework": f"torch ({args.exporter})", "proto": proto}


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o {out} is a folder; give a file name like {out / 'model.onnx'}")
    if not out.parent.exists():
        raise InputError(f"the folder for -o does not exist: {out.parent}")
    from ..safeio import check_outputs

    factory_file = args.src.rpartition(":")[0] if ":" in args.src else ""
    check_outputs({"-o": out}, {"source model": [p for p in (args.src, factory_file) if p and Path(p).exists()],
                                "class names file": [args.class_names] if args.class_names and Path(args.class_names).is_file()
                                else []})
    meta = {"class_names": _class_names(args.class_names)}
    if args.normalize:
        meta["preprocess"] = {"normalize": args.normalize}
    src = Path(args.src)
    if src.exists():
        if not (src.is_dir() or src.suffix.lower() in KERAS_SUFFIXES):
            raise InputError(f"{src} is not a Keras file (.keras, .h5, .hdf5, SavedModel folder); "
                             "for PyTorch give 'package.module:factory'")
        from onnxact.converters.keras import from_keras

        proto = from_keras(src, out, opset=args.opset, keep_batchnorm=args.keep_batchnorm, **meta)
        result = {"framework": "keras", "proto": proto}
    elif src.suffix.lower() in KERAS_SUFFIXES:
        raise InputError(f"Keras file not found: {src}")
    else:
        result = _convert_torch(args, meta)
    md = {p.key: p.value for p in result["proto"].metadata_props}
    names = json.loads(md.get("onnxact.layer_names", "{}"))
    n_layers = sum(1 for v in names.values() if "/" not in v)
    print(f"wrote {out} ({result['framework']}, {out.stat().st_size / 1e6:.2f} MB, {n_layers} layer names recorded)")
    return 0
