"""The capture cache: one image's activations plus lazily cut tiles, in a bounded LRU.

Its own stage because it is the viewer's memory bound: every endpoint reads captures through
it, and its limits (entries and bytes) are what keep a long-running server from growing.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..activations import Activations


@dataclass
class Capture:
    """One image's activations plus lazily computed per-layer tiles (the LRU cache's value)."""

    acts: Activations
    display: np.ndarray  # H x W x 3 uint8, the image at display size
    tiles: dict[int, tuple[np.ndarray, float, float]] = field(default_factory=dict)
    nbytes: int = 0
    cams: dict[tuple[int, str | None], tuple[np.ndarray, dict[str, str]]] = field(default_factory=dict)  # CAMs by (class, output)
    stats: Any = None  # onnxact.stats.ChannelStats of this image (per-channel reductions), made once


class LRUCache:
    """Thread-safe LRU bounded by entry count and total bytes (the newest entry is always kept)."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._d: OrderedDict[Any, Capture] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Any) -> Capture | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self.hits += 1
            self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: Capture) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > 1 and (len(self._d) > self.max_entries or self.total_bytes > self.max_bytes):
                self._d.popitem(last=False)

    def drop(self, pred: Any) -> None:
        with self._lock:
            for k in [k for k in self._d if pred(k)]:
                del self._d[k]

    @property
    def total_bytes(self) -> int:
        return sum(v.nbytes for v in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

