"""Options shared by several subcommands, declared once so they read the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

from ..preprocess import NORMALISATIONS

__all__ = ["add_capture_options", "add_preprocess_options", "capture_kwargs", "preprocess_kwargs", "add_provider_option",
           "add_normalize_options", "normalize_kwargs", "normalization_of", "warn_if_guessed",
           "add_input_option", "complete_inputs", "add_size_options"]


def add_capture_options(p: argparse.ArgumentParser) -> None:
    """--layers, --op-types, --all-tensors, --output-format, --batch-size, --max-memory, --provider."""
    g = p.add_argument_group("capture")
    g.add_argument("--layers", nargs="+", metavar="NAME", help="capture only these layers (names, ONNX tensors or indices)")
    g.add_argument("--op-types", nargs="+", metavar="OP", help="capture only layers of these op types (Conv, MaxPool, ...)")
    g.add_argument("--all-tensors", action="store_true", help="capture every float tensor, not just conv/pool outputs")
    g.add_argument("--output-format", choices=("simple", "full", "numbered"), default="simple",
                   help="layer keys: framework names (simple), ONNX tensor names (full) or indices")
    g.add_argument("--batch-size", type=int, default=None, help="images per onnxruntime run")
    g.add_argument("--max-memory", default=None, metavar="SIZE", help="bound the captured arrays' memory, e.g. 2GB")
    add_provider_option(g)


def add_provider_option(p: Any) -> None:
    p.add_argument("--provider", default=None, metavar="EP",
                   help="onnxruntime execution provider(s): cpu, cuda, ... (comma separated)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime intra-op threads (default: one per core; 1 can be faster on tiny models)")


def add_normalize_options(g: Any) -> None:
    """--normalize, --mean, --std (the pixel normalisation; see onnxact/normalization.py)."""
    g.add_argument("--normalize", choices=NORMALISATIONS, default=None,
                   help="pixel scaling (default: the model's metadata, else raw pixels when the graph "
                        "normalises its input, else 0-1 with a warning)")
    g.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean on 0-1 scaled pixels")
    g.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std on 0-1 scaled pixels")


def normalize_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The --normalize/--mean/--std given, as keyword arguments of preprocess_image."""
    return {k: getattr(args, k) for k in ("normalize", "mean", "std") if getattr(args, k, None) is not None}


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    """--normalize, --mean, --std, --size, --layout."""
    g = p.add_argument_group("preprocessing")
    add_normalize_options(g)
    add_size_options(g)


def _side(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number of pixels (--size H W, e.g. --size 640 640)")
    return v


def add_size_options(p: Any) -> None:
    """--size H W and --resize stretch|letterbox|crop (see onnxact.sizing)."""
    from ..sizing import DEFAULT_LONG_SIDE, RESIZE_MODES

    p.add_argument("--size", type=_side, nargs=2, metavar=("H", "W"), default=None,
                   help="feed images at H x W pixels (default: the model's fixed size, else its metadata, else the "
                        f"image's aspect with the long side at most {DEFAULT_LONG_SIDE}, rounded to the network's stride)")
    p.add_argument("--resize", choices=RESIZE_MODES, default=None,
                   help="how an image is fitted: stretch (default for fixed-size models), letterbox (aspect kept, "
                        "grey padding; default for dynamic models and Ultralytics detectors) or crop (aspect kept, "
                        "centre crop; default for Ultralytics classifiers)")


def preprocess_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = normalize_kwargs(args)
    if getattr(args, "resize", None):
        out["resize"] = args.resize
    if getattr(args, "size", None):
        out["size"] = tuple(args.size)
    return out


def capture_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "layer_names": getattr(args, "layers", None),
        "op_types": getattr(args, "op_types", None),
        "all_tensors": getattr(args, "all_tensors", False),
        "output_format": getattr(args, "output_format", "simple"),
    }
    if getattr(args, "batch_size", None):
        out["batch_size"] = args.batch_size
    if getattr(args, "max_memory", None):
        out["max_memory"] = args.max_memory
    return out


def normalization_of(model: Any, args: argparse.Namespace) -> Any:
    """The ``Normalization`` this command's images get (see onnxact/normalization.py)."""
    from ..normalization import choose_normalization

    return choose_normalization(model, **normalize_kwargs(args))


def warn_if_guessed(model: Any, norm: Any) -> None:
    """Print the one warning line when the preprocessing was guessed (call it once the command worked:
    a failed run prints its one error line only)."""
    import sys

    line = norm.warning(getattr(model, "name", "the model")) if norm is not None else None
    if line and any(len(i.shape) == 4 for i in getattr(model, "inputs", [])):
        print(line, file=sys.stderr, flush=True)


def add_input_option(p: Any) -> None:
    """--input NAME=FILE.npy | NAME=FILE.npz[:KEY] | NAME=VALUE (repeatable): a model's other inputs."""
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                   help="a model input by name: NAME=FILE.npy, NAME=FILE.npz[:KEY], NAME=IMAGE or NAME=NUMBER "
                        "(cast to the input's dtype); repeat for each input. Inputs left out that have a fixed "
                        "shape are fed zeros")


def complete_inputs(model: Any, x: dict[str, Any], exclude: Any = ()) -> dict[str, Any]:
    """``x`` plus zeros for the fixed-shape inputs left out (one note on stderr), or an error naming --input.

    ``exclude``: inputs fed otherwise (the dataset's images in ``check``).
    """
    import sys

    from ..errors import InputError
    from ..feeds import MissingInputError, describe_input, fill_missing

    try:
        x, filled = fill_missing(model, x, exclude=exclude)
    except MissingInputError as e:
        first = e.missing[0]
        what = ", ".join(describe_input(i) for i in e.missing)
        raise InputError(f"{model.name} needs a value for {what} (its shape is not fixed, so no zeros); "
                         f"give it with --input {first.name}=FILE.npy") from None
    if filled:
        print(f"onnxact: note: no --input for {', '.join(filled)}: fed zeros", file=sys.stderr)
    return x


def check_engine_options(args: argparse.Namespace) -> None:
    """The batch and engine options ``check`` and ``explore`` share, refused in one line each."""
    from ..errors import InputError

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}")
    if args.engine == "local" and (args.address or args.workers):
        raise InputError("--address and --workers need --engine ray")
