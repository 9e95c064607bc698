"""A tiny progress bar on stderr, shown only when stderr is a terminal.

Why our own: it is twenty lines, it must stay silent in pipes, CI logs and tests (long work
shows a progress bar on a terminal and stays quiet when output is not a terminal), and it must
not add a dependency. Library code may wrap loops with it; it never prints to stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def _enabled(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", *, stream=None,
             width: int = 28, min_interval: float = 0.1) -> Iterator[T]:
    """Yield the items of ``iterable`` while drawing ``desc [#####.....] i/total`` on stderr.

    Draws nothing when the stream is not a TTY. ``total`` defaults to ``len(iterable)`` when
    it has one; without a total only the count is shown. The line is cleared at the end.
    """
    stream = sys.stderr if stream is None else stream
    if not _enabled(stream):
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    prefix = f"{desc} " if desc else ""
    last = 0.0
    i = 0

    def draw(n: int) -> None:
        if total:
            filled = int(width * min(n, total) / total)
            line = f"\r{prefix}[{'#' * filled}{'.' * (width - filled)}] {n}/{total}"
        else:
            line = f"\r{prefix}{n}"
        stream.write(line)
        stream.flush()

    try:
        draw(0)
        for i, item in enumerate(iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= min_interval or (total and i == total):
                draw(i)
                last = now
    finally:
        stream.write("\r\033[K")
        stream.flush()
