"""``onnxact serve MODEL [IMAGES_DIR]``: the browser viewer on 127.0.0.1.

Why loopback by default: the viewer reads files from IMAGES_DIR and runs the model on
uploads; exposing that to a network must be a deliberate choice, so another ``--host`` works
but prints a warning. The web stack (FastAPI, uvicorn) is imported only when the command runs,
so ``onnxact --help`` lists ``serve`` even without the ``viewer`` extra.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import InputError, missing_dependency
from ..signals import Terminated
from .common import add_normalize_options, add_size_options, normalization_of, preprocess_kwargs, warn_if_guessed
from .head_options import add_head_options, check_head_options

_LOCAL = ("127.0.0.1", "localhost", "::1")


def add_parser(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=(
        "Serve a web page that shows the model's layers, the activations of each filter for a chosen "
        "image, heatmaps, class activation maps and top-5 predictions. Binds 127.0.0.1 unless --host says otherwise."
    ))
    p.add_argument("model", metavar="MODEL", help="the ONNX model file")
    p.add_argument("images_dir", metavar="IMAGES_DIR", nargs="?",
                   help="a folder of images for the gallery (or one image); clicking a filter shows its top "
                   "images over the folder")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name (or address) the page is opened under, besides 127.0.0.1 and localhost; "
                   "repeat for several. Requests naming any other host are refused (DNS rebinding)")
    p.add_argument("--labels", metavar="FILE", help="class names: one per line, or a JSON list (default: the model's)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--top", type=int, default=9, metavar="K",
                   help="top images per filter shown when a filter is clicked (default 9)")
    add_normalize_options(p)
    add_size_options(p)
    add_head_options(p)
    p.set_defaults(func=run)


def _free_port(host: str, port: int) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            what = "in use" if e.errno in (98, 48, 10048) else (e.strerror or str(e))
            raise InputError(f"cannot listen on {host}:{port} ({what}); pass another --port") from None
        return int(s.getsockname()[1])


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", "viewer", "'onnxact serve'") from None
    try:
        from ..viewer.app import create_app
    except ImportError as e:
        raise missing_dependency(e.name or "fastapi", "viewer", "'onnxact serve'") from None
    from ..model import load

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, not {args.port}")
    if args.images_dir is not None and not (Path(args.images_dir).is_dir() or Path(args.images_dir).is_file()):
        raise InputError(f"images folder not found: {args.images_dir}; pass a folder of images (or one image)")
    model = load(args.model)
    norm = normalization_of(model, args)
    check_head_options(args, model)
    preprocess = preprocess_kwargs(args)
    if preprocess.get("size"):
        from ..sizing import resolve_size

        resolve_size(model, None, preprocess["size"])  # a size the model's fixed input rejects: exit 2 now
    host = args.host
    local = host in _LOCAL
    port = _free_port(host, args.port)
    # the Host check stays on whatever --host is: a wildcard bind answers only the names given
    allowed = [*_LOCAL, *([] if host in ("0.0.0.0", "::") else [host]), *args.allowed_host]
    app = create_app(model, args.images_dir, args.labels, allowed_hosts=allowed, preprocess=preprocess,
                     cam_layer=args.cam_layer, class_output=args.class_output, exemplar_top=args.top)
    if not local:
        print(f"onnxact: warning: serving on {host}, not 127.0.0.1: anyone who can reach this address can "
              "browse IMAGES_DIR and run the model; use --host 127.0.0.1 unless you mean it. Requests must name "
              f"one of these hosts: {', '.join(dict.fromkeys(allowed))} (add others with --allowed-host NAME)",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    url = f"http://{shown}:{port}/"
    warn_if_guessed(model, norm)
    print(f"onnxact viewer for {model.name} at {url}  (Ctrl+C to stop)", flush=True)
    if args.open:
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    stopped: list[int] = []
    previous = _note_sigterm(stopped)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.viewer.close()  # the upload folder goes on Ctrl-C and on SIGTERM alike
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stopped:  # uvicorn stopped gracefully and ended the re-raised signal quietly: exit 143 like the others
        raise Terminated(f"received signal {stopped[0]}")
    return 0


def _note_sigterm(stopped: list[int]) -> Any:
    """Record SIGTERM, then interrupt (see :mod:`onnxact.signals`); returns the handler it replaced.

    uvicorn catches SIGTERM, stops gracefully, then raises it again under the handler it found:
    a KeyboardInterrupt there, which ``uvicorn.run`` swallows, so the record is what tells
    ``run`` to end as a SIGTERM'd command. In a non-main thread (tests) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        stopped.append(signum)
        raise Terminated(f"received signal {signum}")

    return signal.signal(signal.SIGTERM, handler)
