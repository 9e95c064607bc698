"""Silence the noise frameworks print while onnxact converts, traces or trains, and nothing else.

Why: converting a Keras model printed TensorFlow's C++ start-up lines ("All log messages before
absl::InitializeLog() ...", oneDNN and CUDA-driver notes, and on a machine without a GPU the ERROR
"failed call to cuInit ... (303)") plus a numpy FutureWarning from Keras' tf2onnx shim; a torch
export logged "torchvision is not installed. Skipping torchvision::nms" four times. None of it is
about the user's model, and it buries onnxact's one-line messages.

How, and why this way:

- TensorFlow writes its C++ lines straight to file descriptor 2, and ``TF_CPP_MIN_LOG_LEVEL``
  does not reach the lines logged before absl is initialised (TF 2.21 prints them at every
  level); the cuInit line is an ERROR, hidden only by level 3, which would hide real errors too.
  So during onnxact's own calls fd 2 goes through a pipe whose reader forwards every line except
  the known noise below, in order; the descriptor is restored when the call returns or raises.
- Python-side noise is filtered where it is made: a ``warnings`` filter for the one FutureWarning,
  a ``logging`` filter on torch's exporter registry logger (works in Jupyter too, where
  ``sys.stderr`` is not fd 2).
- Any other line, warning or log record passes unchanged: a real TensorFlow WARNING / ERROR, a
  warning raised by the user's own layer, onnxact's own error messages.

``ONNXACT_FRAMEWORK_LOGS=1`` turns the filtering off (to see everything the frameworks print).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["framework_quiet", "quietly", "is_noise", "import_tensorflow"]

F = TypeVar("F", bound=Callable[..., Any])

#: a C++ log line's prefix: absl ("I0000 00:00:1796.22 18786 port.cc:153] ") or TF <= 2.16
#: ("2024-03-01 10:00:00.000000: I tensorflow/core/util/port.cc:113] "); group 1 is the level
_PREFIX = re.compile(r"^(?:([IWEF])\d{4} \S+ +\d+ \S+:\d+\] |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\] )")

#: messages of WARNING / ERROR lines that are noise on every machine (INFO lines all are)
_NOISY_MESSAGES = re.compile(
    r"failed call to cuInit"                                  # no NVIDIA driver: TF's GPU probe, code 303 or 100
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"         # TF 2.15-2.17 on a CPU-only machine
    r"|TF-TRT Warning: Could not find TensorRT"               # TF 2.15-2.16
    r"|torchvision is not installed\. Skipping torchvision::"  # torch.onnx's op registry, once per op
)

#: whole lines without a log prefix
_NOISY_LINES = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"
)

#: (message regex, category) of Python warnings that frameworks raise on our calls, not the user's
_NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"In the future `np\.object` will be defined", FutureWarning),  # keras/src/export/tf2onnx_lib.py
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # torch.export's pytree, torch 2.13
    (r"You are using the legacy TorchScript-based ONNX export", DeprecationWarning),  # exporter="legacy" is asked for
)

#: (logger, message start) of framework log records that are noise
_NOISY_RECORDS: tuple[tuple[str, str], ...] = (
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
)


def is_noise(line: str) -> bool:
    """True for a line of framework output that onnxact hides during its own calls."""
    line = line.rstrip("\r\n")
    if _NOISY_LINES.search(line):
        return True
    m = _PREFIX.match(line)
    if m is None:
        return bool(_NOISY_MESSAGES.search(line))
    level = m.group(1) or m.group(2)
    return level == "I" or bool(_NOISY_MESSAGES.search(line, m.end()))


class _RecordFilter(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


class _FdFilter:
    """fd 2 through a pipe while at least one quiet call runs (re-entrant, shared by threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: int | None = None
        self.write_end: int | None = None
        self.reader: threading.Thread | None = None

    def enter(self) -> None:
        with self.lock:
            self.depth += 1
            if self.depth > 1:
                return
            try:
                self._start()
            except OSError:  # no usable fd 2 (pythonw, a closed stderr): nothing to filter
                self._close_all()

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.saved is not None:
                self._stop()

    def _start(self) -> None:
        _flush_python_stderr()
        self.saved = os.dup(2)
        out = os.dup(2)
        r, w = os.pipe()
        with contextlib.suppress(Exception):  # Linux: room for 1 MiB, so a burst never blocks a writer
            import fcntl

            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        os.dup2(w, 2)
        self.write_end = w
        self.reader = threading.Thread(target=_pump, args=(r, out), name="onnxact-stderr-filter", daemon=True)
        self.reader.start()

    def _stop(self) -> None:
        _flush_python_stderr()
        os.dup2(self.saved, 2)
        reader = self.reader
        self._close_all()
        if reader is not None:
            reader.join(timeout=10)  # a child process still holding the pipe keeps the reader; don't hang

    def _close_all(self) -> None:
        for fd in (self.saved, self.write_end):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.saved = self.write_end = None
        self.reader = None


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):
        if sys.stderr is not None:
            sys.stderr.flush()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _pump(r: int, out: int) -> None:
    """Forward the pipe to the real stderr line by line, dropping noise; ends when every writer closed."""
    pending = b""
    try:
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not is_noise(line.decode("utf-8", "replace")):
                    _write_all(out, line + b"\n")
            if b"\r" in pending:  # a progress bar redraws without a newline: pass it on now
                cut = pending.rindex(b"\r") + 1
                _write_all(out, pending[:cut])
                pending = pending[cut:]
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            _write_all(out, pending)
    except OSError:
        pass
    finally:
        for fd in (r, out):
            with contextlib.suppress(OSError):
                os.close(fd)


_FD_FILTER = _FdFilter()


def _logs_wanted() -> bool:
    return os.environ.get("ONNXACT_FRAMEWORK_LOGS", "") not in ("", "0")


@contextlib.contextmanager
def framework_quiet() -> Iterator[None]:
    """Hide known framework noise (see the module docstring) for the duration of the block."""
    if _logs_wanted():
        yield
        return
    filters = [(logging.getLogger(name), _RecordFilter(start)) for name, start in _NOISY_RECORDS]
    with warnings.catch_warnings():
        for message, category in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for logger, f in filters:
            logger.addFilter(f)
        _FD_FILTER.enter()
        try:
            yield
        finally:
            _FD_FILTER.exit()
            for logger, f in filters:
                logger.removeFilter(f)


def quietly(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`framework_quiet`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with framework_quiet():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def import_tensorflow() -> None:
    """Import tensorflow (and keras) quietly. The first import is the one that prints.

    ``TF_CPP_MIN_LOG_LEVEL`` is read by TensorFlow's C++ side when it loads, so it is set here,
    before that, and only when onnxact is the one importing tensorflow and the user has not set it:
    level 1 hides INFO lines and keeps TensorFlow's WARNING and ERROR lines.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    if "tensorflow" not in sys.modules and not _logs_wanted():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with framework_quiet():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
