"""SIGTERM handled like Ctrl-C, so every cleanup that runs on KeyboardInterrupt runs on it too.

Why: ``kill``, ``timeout``, systemd, Docker and CI runners stop a process with SIGTERM, whose
default action ends it at once: no ``finally`` block, no ``atexit`` hook. A bounded capture
then leaves its ``onnxact-capture-*`` spill folder (gigabytes) in the temporary directory,
``inspect`` its staging folder, ``serve`` its upload folder. Turning SIGTERM into
:class:`Terminated` (a ``KeyboardInterrupt``) in the main thread unwinds the stack through
the same cleanup as Ctrl-C; the CLI then exits 143 (128 + SIGTERM), as a shell expects.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "sigterm_as_interrupt", "sigterm_received", "EXIT_SIGTERM"]

#: Exit status of a process stopped by SIGTERM (128 + 15), also used when it cleaned up first.
EXIT_SIGTERM = 128 + 15


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


_received = False


def _raise(signum: int, frame: Any) -> None:
    global _received
    _received = True
    raise Terminated(f"received signal {signum}")


def sigterm_received() -> bool:
    """True once SIGTERM arrived inside :func:`sigterm_as_interrupt`.

    Why: an interrupt raised while a C extension initialises comes out as ``ImportError:
    initialization failed`` (and may be wrapped again), so the CLI asks this instead of
    trusting the exception's type when it decides between "stopped" and "internal error".
    """
    return _received


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread.

    Outside the main thread (where Python cannot install handlers) or on a platform without
    SIGTERM handlers this does nothing. The previous handler is restored afterwards, so a
    library user's own handler is untouched once the call returns.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except (ValueError, OSError):  # an embedded interpreter that does not allow it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
