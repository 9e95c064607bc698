"""The ``onnxact`` command: a thin argparse adapter over the library.

Why one place for exit codes: every subcommand raises library exceptions; ``main`` alone maps
``OnnxactError`` to exit 2 with one line on stderr, and anything else to exit 3 with a short
"please report" line (``--traceback`` shows the traceback for either). Subcommand modules are
imported lazily so ``onnxact --help`` stays fast and a missing optional dependency only
affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ..errors import OnnxactError
from ..signals import EXIT_SIGTERM, Terminated, sigterm_as_interrupt, sigterm_received

__all__ = ["main", "build_parser"]

#: subcommand name -> (module under onnxact.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect_cmd", "capture activations and write grids, heatmaps, CAM and an HTML report"),
    "check": ("check_cmd", "scan images for dead / dormant / constant filters (exit 1 when found)"),
    "convert": ("convert_cmd", "convert a Keras file or a PyTorch module:factory to ONNX"),
    "serve": ("serve_cmd", "browse activations in a web page on 127.0.0.1"),
    "explore": ("explore_cmd", "the dataset images (and patches) that excite each filter most, per layer"),
    "compare": ("compare_cmd", "compare two models layer by layer: where do they part ways? (exit 1 past the tolerance)"),
}


class _Parser(argparse.ArgumentParser):
    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # Subcommands read positionals on both sides of options (`inspect MODEL --input x=1 IMAGE`):
        # plain argparse stops filling `IMAGE...` at the first option and rejects what follows.
        if " " not in self.prog or getattr(self, "_intermixing", False):
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into parse_known_args
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(2, f"onnxact: error: {message} (see 'onnxact {self.prog.split()[-1]} --help')\n"
                     if " " in self.prog else f"onnxact: error: {message} (see 'onnxact --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="onnxact", description="See inside any CNN: activation maps through ONNX.")
    parser.add_argument("--version", action="version", version=f"onnxact {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_line) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError as e:  # keep the command visible with the reason
            p = sub.add_parser(name, help=f"{help_line} [unavailable: {e}]")
            p.set_defaults(func=_unavailable(name, str(e)))
            continue
        mod.add_parser(sub, name, help_line)
    return parser


def _unavailable(name: str, reason: str):
    def run(args: argparse.Namespace) -> int:
        raise OnnxactError(f"'onnxact {name}' is unavailable: {reason}")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 check found a problem, 2 bad input, 3 internal)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv
    # accepted anywhere (`onnxact inspect ... --traceback` too), not only before the subcommand
    argv = [a for a in argv if a != "--traceback"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        with sigterm_as_interrupt():  # `kill`, `timeout`, CI: clean up as on Ctrl-C
            return int(args.func(args) or 0)
    except OnnxactError as e:
        if sigterm_received():  # SIGTERM turned into another error on its way up (a C import)
            return _stopped()
        if show_tb:
            traceback.print_exc()
        print(f"onnxact: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        return _stopped()
    except KeyboardInterrupt:
        print("onnxact: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    except Exception as e:  # noqa: BLE001 - the one place internal errors are mapped
        if sigterm_received():
            return _stopped()
        if show_tb:
            traceback.print_exc()
        print(
            f"onnxact: internal error: {type(e).__name__}: {e}\n"
            "onnxact: this is a bug, please report it with the command you ran (rerun with --traceback for details)",
            file=sys.stderr,
        )
        return 3


def _stopped() -> int:
    print("onnxact: stopped (SIGTERM)", file=sys.stderr)
    return EXIT_SIGTERM


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())
