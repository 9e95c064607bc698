"""The viewer's exemplar panel: each filter's top images over IMAGES_DIR, computed once in the background.

Why a job and not a request: :func:`onnxact.exemplars.find_exemplars` runs the model on every
image of the folder (seconds for a few photos, hours for a dataset), so the page starts it with
one POST, polls its progress and asks for one filter's list when it is done; every other
request keeps being answered meanwhile (onnxruntime releases the GIL in its worker thread).

Why started on demand and not at ``serve`` start: a scan of the whole folder competes for the
CPUs with the captures the user is waiting for, and most sessions never open the panel; the
dead-filter scan at start is bounded to 64 images for the same reason.

Cache and invalidation: results are kept in memory, per server, keyed by the model, the top K,
the preprocessing settings and the folder's fingerprint: the sorted gallery ids, each a digest
of (relative path, mtime, size) (see :meth:`ViewerState.scan`). Each POST walks the folder
again: an added, removed or rewritten image gives a new key, hence a new scan; an unchanged
folder gets the cached result at once. The two most recent results are kept; starting a scan
for a new key stops the one still running (one scan at a time).

Safety: the page never names a file. A top list gives each image by its path relative to the
folder (never the server's absolute path) and its gallery id; a crop is addressed by (layer,
channel, rank) in a finished result, so no request path is ever joined onto the folder, and the
file is checked again (still a regular file inside the folder, unchanged since the scan) and
decoded within the byte bound of :func:`onnxact.preprocess.load_image` before it is cut.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OnnxactError
from .checks import _http
from .state import ImageEntry, ViewerState

__all__ = ["ExemplarJob", "ExemplarJobs", "NO_FOLDER"]

_log = logging.getLogger("onnxact.viewer")

#: What the panel says when the viewer has no folder to scan.
NO_FOLDER = ("exemplars need a folder of images: start the viewer as 'onnxact serve MODEL IMAGES_DIR' "
             "(one image or uploads are not scanned)")
#: Skipped images listed in the status (the count is always whole).
_SKIPPED_SHOWN = 20


class _Stopped(Exception):
    """Raised from the progress callback to end a scan whose result nobody wants any more."""


@dataclass
class ExemplarJob:
    """One background scan of the folder, its progress and, when done, its result."""

    key: tuple[Any, ...]
    entries: dict[str, ImageEntry]  # the path given to find_exemplars -> the gallery entry it came from
    stamps: dict[str, tuple[int, int]]  # gallery id -> (mtime_ns, size) at scan time
    total: int
    done: int = 0
    state: str = "running"  # running | done | failed
    error: str | None = None
    result: Any = None  # onnxact.exemplars.Exemplars
    stop: threading.Event = field(default_factory=threading.Event)
    why_stopped: str = ""

    @property
    def token(self) -> str:
        return hashlib.sha256(repr(self.key).encode()).hexdigest()[:12]

    def progress(self, done: int, total: int) -> None:
        if self.stop.is_set():
            raise _Stopped
        self.done, self.total = int(done), int(total)


class ExemplarJobs:
    """The exemplar scans of one viewer: start (or reuse) one, report its progress, read its lists."""

    def __init__(self, state: ViewerState, top: int = 9, keep: int = 2) -> None:
        check_top(top)
        self.state = state
        self.top = top
        self.keep = keep
        self._jobs: OrderedDict[tuple[Any, ...], ExemplarJob] = OrderedDict()
        self._current: ExemplarJob | None = None
        self._lock = threading.Lock()
        state.on_close.append(self.stop)

    @property
    def folder(self) -> str | None:
        """The folder's own name (what the panel shows), never its absolute path."""
        return self.state.root.name if self._has_folder else None

    @property
    def _has_folder(self) -> bool:
        return self.state.root is not None and self.state.single is None

    # -- jobs -------------------------------------------------------------------------------
    def start(self) -> ExemplarJob:
        """The job for the folder as it is now: a cached or running one, else a new scan in a thread."""
        if not self._has_folder:
            raise _http(409, NO_FOLDER)
        entries = sorted(self.state.scan(), key=lambda e: e.name)
        digest = hashlib.sha256("\0".join(e.id for e in entries).encode()).hexdigest()
        key = (self.state.model.sha256, self.top, repr(sorted(self.state.preprocess.items())), digest)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state != "failed":
                self._jobs.move_to_end(key)
                self._current = job
                return job
            for other in self._jobs.values():
                if other.state == "running":  # one scan at a time: the folder changed under the old one
                    other.why_stopped = "the folder changed and a new scan replaced this one"
                    other.stop.set()
            job = ExemplarJob(key, {str(e.path): e for e in entries}, _stamps(entries), total=len(entries))
            self._jobs[key] = job
            self._jobs.move_to_end(key)
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
            self._current = job
        threading.Thread(target=self._run, args=(job,), name="onnxact-exemplars", daemon=True).start()
        return job

    def _run(self, job: ExemplarJob) -> None:
        try:
            if not job.entries:
                raise InputError(f"no images in the folder {self.folder}; add PNG, JPEG, GIF, BMP, WebP or TIFF "
                                "files to it and open the panel again")
            from ..exemplars import find_exemplars

            _background_priority()
            result = find_exemplars(self.state.model, list(job.entries), top=self.top, progress=job.progress,
                                    **self.state.preprocess)
        except _Stopped:
            job.state, job.error = "failed", f"stopped: {job.why_stopped or 'the viewer closed'}"
            return
        except OnnxactError as e:
            job.state, job.error = "failed", _one_line(self.state.public(str(e)))
            return
        except Exception as e:  # noqa: BLE001 - a thread's error must reach the page, not vanish
            _log.warning("exemplar scan failed", exc_info=True)
            job.state, job.error = "failed", f"internal error ({type(e).__name__}); see the server log"
            return
        job.result, job.done, job.state = result, job.total, "done"

    def stop(self) -> None:
        """Stop any running scan (the viewer is closing)."""
        with self._lock:
            for job in self._jobs.values():
                job.why_stopped = job.why_stopped or "the viewer closed"
                job.stop.set()

    # -- what the endpoints send ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The current scan's state: idle | running | done | failed | unavailable, with progress."""
        base: dict[str, Any] = {"folder": self.folder, "top": self.top, "done": 0, "total": 0, "images": None,
                                "skipped": 0, "skipped_images": [], "error": None, "scan": None}
        if not self._has_folder:
            return {**base, "state": "unavailable", "error": NO_FOLDER}
        job = self._current
        if job is None:
            return {**base, "state": "idle"}
        out = {**base, "state": job.state, "done": job.done, "total": job.total, "error": job.error,
               "scan": job.token}
        if job.result is not None:
            skipped = list(getattr(job.result, "skipped", []) or [])
            out["images"] = int(job.result.images)
            out["skipped"] = len(skipped)
            out["skipped_images"] = [{"image": self._name(job, p)[0], "reason": _one_line(self.state.public(str(why)))}
                                     for p, why in skipped[:_SKIPPED_SHOWN]]
        return out

    def _finished(self) -> ExemplarJob:
        job = self._current
        if job is None:
            if not self._has_folder:
                raise _http(409, NO_FOLDER)
            raise _http(409, "exemplars are not computed yet; start them with POST /api/exemplars")
        if job.state == "running":
            raise _http(409, f"exemplars are still being computed ({job.done} of {job.total} images); "
                             "poll GET /api/exemplars")
        if job.state == "failed":
            raise _http(409, f"the exemplar scan failed: {job.error}")
        return job

    def _top(self, layer: int, channel: int) -> tuple[ExemplarJob, list[Any]]:
        job = self._finished()
        info = self.state.model.layers[layer]
        per_channel = job.result.layers.get(info.name)
        if per_channel is None:
            raise _http(404, f"layer {layer} ({info.name}) has no exemplars: only layers with per-channel maps "
                             "get them")
        if channel >= len(per_channel):
            raise _http(404, f"layer {layer} has {len(per_channel)} filters; channel {channel} does not exist")
        return job, list(per_channel[channel])

    def top_list(self, layer: int, channel: int) -> list[dict[str, Any]]:
        """One filter's top images, highest first: name relative to the folder, gallery id, value, box."""
        job, top = self._top(layer, channel)
        out = []
        for rank, ex in enumerate(top):
            name, image_id = self._name(job, ex.image)
            value = float(ex.value)
            out.append({"rank": rank, "image": name, "id": image_id, "value": value if math.isfinite(value) else None,
                        "box": [int(v) for v in ex.box], "position": [int(v) for v in ex.position]})
        return out

    def _name(self, job: ExemplarJob, image: str) -> tuple[str, str | None]:
        """(path relative to the folder, gallery id) of an image as find_exemplars names it."""
        entry = _entry(job, image)
        if entry is not None:
            return entry.name, entry.id
        return self.state.public(str(image)).rsplit("/", 1)[-1], None  # never a server path

    def crop(self, layer: int, channel: int, rank: int, size: int) -> np.ndarray:
        """The ``rank``-th top image of a filter around its box (the box drawn), H x W x 3 uint8."""
        from ..limits import decode_slot

        job, top = self._top(layer, channel)
        if rank >= len(top):
            raise _http(404, f"filter {channel} of layer {layer} has {len(top)} top images; rank {rank} does not exist")
        ex = top[rank]
        entry = _entry(job, ex.image)
        if entry is None:
            raise _http(404, "that image is not in the images folder")
        real = self.state._inside(entry.path)  # a file swapped for a link out of the folder is refused here
        if real is None or _stamps([entry]).get(entry.id) != job.stamps.get(entry.id):
            raise _http(404, f"image '{entry.name}' changed or left the folder since the scan; "
                             "open the panel again to recompute")
        with decode_slot():
            img = self.state._decoded(entry).convert("RGB")
        return draw_crop(img, tuple(int(v) for v in ex.box), size)


def _entry(job: ExemplarJob, image: Any) -> ImageEntry | None:
    """The gallery entry of an image as find_exemplars names it: the path it was given, or the same file."""
    entry = job.entries.get(str(image))
    if entry is None:
        try:
            entry = job.entries.get(str(Path(image).resolve()))
        except (OSError, RuntimeError, TypeError):
            return None
    return entry


def _background_priority() -> None:
    """Lower this thread's CPU priority (nice 10), so the captures a user waits for go first.

    On Linux nice is per thread, and threads this one starts (onnxruntime's pool of the scan's
    own session) inherit it; elsewhere, or when refused, the scan runs at normal priority.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def check_top(top: Any) -> int:
    """``top`` as find_exemplars checks it (a whole number of at least 1; else one InputError line)."""
    from ..exemplars import _check_top

    return _check_top(top)


def _stamps(entries: list[ImageEntry]) -> dict[str, tuple[int, int]]:
    out = {}
    for e in entries:
        try:
            st = e.path.stat()
        except OSError:
            continue
        out[e.id] = (st.st_mtime_ns, st.st_size)
    return out


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def draw_crop(img: Any, box: tuple[int, ...], size: int) -> np.ndarray:
    """The part of ``img`` (PIL, RGB) around ``box`` (x0, y0, x1, y1 in its pixels), at most ``size``
    pixels a side, with the box outlined.

    Why a margin: a filter's receptive field in an early layer is a few pixels; with half the
    box's size around it (at least 8 pixels) the crop shows what the pattern sits in.
    """
    from PIL import Image, ImageDraw

    w, h = img.size
    x0, y0, x1, y1 = (max(0, min(w, box[0])), max(0, min(h, box[1])), max(0, min(w, box[2])), max(0, min(h, box[3])))
    if x1 <= x0 or y1 <= y0:  # a box off the image: show the whole image
        x0, y0, x1, y1 = 0, 0, w, h
    mx, my = max(8, (x1 - x0) // 2), max(8, (y1 - y0) // 2)
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    part = img.crop((cx0, cy0, cx1, cy1))
    scale = size / max(part.size)
    out = part.resize((max(1, round(part.size[0] * scale)), max(1, round(part.size[1] * scale))),
                      Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(out)
    line = max(1, round(size / 80))
    rect = [(x0 - cx0) * scale, (y0 - cy0) * scale, (x1 - cx0) * scale - 1, (y1 - cy0) * scale - 1]
    draw.rectangle(rect, outline=(255, 214, 10), width=line)
    return np.asarray(out, dtype=np.uint8)
