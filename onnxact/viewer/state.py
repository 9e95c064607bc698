"""The viewer's state: the model, the gallery index, uploads, captures and running filter counts.

Its own stage because it is everything the app holds between requests; the routes in
:mod:`.app` are thin and call into it. Image ids are opaque and handed out here (gallery files
by walking IMAGES_DIR, uploads by random tokens), so no request path is joined onto a folder.
"""

import hashlib
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import Activations
from ..errors import InputError, OnnxactError
from ..model import Model
from .cache import Capture, LRUCache
from .checks import _ALLOWED_FORMATS, MAX_UPLOAD_BYTES, _http, check_upload

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UPLOADS = 64
#: Images listed per page of GET /api/images (the page asks for more on scroll); the gallery
#: itself is indexed whole, however large.
PAGE_SIZE = 2000
#: Captures of different images run in parallel, of one image once: one lock per stripe of ids,
#: a fixed table whatever ids are asked for.
_LOCK_STRIPES = 64


@dataclass
class ImageEntry:
    id: str
    name: str
    path: Path
    source: str  # "gallery" | "upload"



def _read_labels(labels: Any) -> list[str] | None:
    """Labels given as a list, or a file read by the report's reader (JSON list or one per line)."""
    if labels is None:
        return None
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    from ..report import read_labels

    return read_labels(labels)


class ViewerState:
    """Everything the app holds: the model, the image index, uploads and the capture cache."""

    def __init__(self, model: Model, images_dir: Path | None, labels: list[str] | None,
                 cache_entries: int = 16, cache_bytes: int = 1 << 30, max_upload: int = MAX_UPLOAD_BYTES,
                 preprocess: dict[str, Any] | None = None) -> None:
        self.model = model
        # one image instead of a folder: the gallery is that file alone, in its folder
        self.single: str | None = images_dir.name if images_dir is not None and images_dir.is_file() else None
        if images_dir is not None and self.single is not None:
            images_dir = images_dir.parent
        self.root = images_dir.resolve() if images_dir is not None else None
        self.labels = labels
        self.max_upload = max_upload
        self.cache = LRUCache(cache_entries, cache_bytes)
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxact-uploads-")
        self.upload_dir = Path(self._tmp.name)
        self.uploads: OrderedDict[str, ImageEntry] = OrderedDict()
        self.gallery: dict[str, ImageEntry] = {}
        self._lock = threading.Lock()
        self._capture_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._scanned = False
        # per-channel reductions over the images seen (onnxact.stats), merged capture by capture
        self.running: dict[str, Any] = {}  # {layer key: stats.LayerStats}
        self.running_infos: dict[str, Any] = {}
        self.shapes: dict[int, list[int]] = {}  # each layer's shape in the latest capture
        self.seen: set[str] = set()
        # size / resize / normalize / mean / std chosen by the user, for every capture; without a
        # size each image gets the size onnxact.sizing resolves for it (a scan: one size for all)
        self.preprocess: dict[str, Any] = dict(preprocess or {})
        self.dataset_dead: dict[str, int] | None = None  # {layer name: dead count} from onnxact.stats
        self.dataset_images = 0
        self.on_close: list[Any] = []  # callables run by close(): background jobs to stop

    def scan_dead_filters(self, limit: int = 64) -> None:
        """Dead filters over (up to ``limit``) gallery images with onnxact.stats; run in a background thread."""
        try:
            from ..dead_filters import find_dead_filters

            paths = [str(e.path) for e in self.scan()[:limit]]
            if not paths:
                return
            report = find_dead_filters(self.model, paths, show_progress=False, **self.preprocess)
            counts: dict[str, int] = {}
            for name, _ in report.dead:
                counts[name] = counts.get(name, 0) + 1
            with self._lock:
                self.dataset_dead = counts
                self.dataset_images = int(getattr(report, "images", len(paths)) or len(paths))
        except Exception:  # noqa: BLE001 - the per-image counts remain; the scan is a bonus
            import logging

            logging.getLogger("onnxact.viewer").warning("dead-filter scan of the gallery failed", exc_info=True)

    def close(self) -> None:
        for stop in self.on_close:
            stop()
        self._tmp.cleanup()

    # -- images -----------------------------------------------------------------------------
    def scan(self) -> list[ImageEntry]:
        """Index the image files under IMAGES_DIR (symlinks that leave it are skipped)."""
        if self.root is None:
            return []
        found: dict[str, ImageEntry] = {}
        walk = [(str(self.root), [], [self.single])] if self.single else os.walk(self.root, followlinks=False)
        for dirpath, dirnames, filenames in walk:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or not fn.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                p = Path(dirpath) / fn
                real = self._inside(p)
                if real is None:
                    continue
                rel = p.relative_to(self.root).as_posix()
                st = real.stat()
                digest = hashlib.sha256(f"{rel}\0{st.st_mtime_ns}\0{st.st_size}".encode()).hexdigest()[:16]
                found["g" + digest] = ImageEntry("g" + digest, rel, real, "gallery")
        with self._lock:
            self.gallery = found
            self._scanned = True
        return list(found.values())

    def _inside(self, p: Path) -> Path | None:
        """The resolved path when it is a regular file inside IMAGES_DIR, else None."""
        assert self.root is not None
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real

    def _gallery_index(self) -> dict[str, ImageEntry]:
        """The gallery as last indexed; the folder is walked only the first time (later: GET /api/images).

        Why not rescan on a miss: ids are handed out by the listing, so an unknown id is a
        client's mistake or a probe, and walking 2000 files per probe is a cheap way to load the server.
        """
        if not self._scanned:
            self.scan()
        with self._lock:
            return self.gallery

    def image(self, image_id: str) -> ImageEntry:
        with self._lock:
            e = self.uploads.get(image_id)
        if e is None and image_id.startswith("g"):
            e = self._gallery_index().get(image_id)
        if e is None:
            raise _http(404, f"no image with id '{image_id}'; list them with GET /api/images")
        if e.source == "gallery" and (self.root is None or self._inside(e.path) is None):
            raise _http(404, f"image '{e.name}' is no longer in the images folder")
        return e

    def gallery_by_name(self, name: str) -> ImageEntry:
        e = next((x for x in self._gallery_index().values() if x.name == name), None)
        if e is None:
            raise _http(404, "no such image in the images folder")
        return self.image(e.id)

    def add_upload(self, data: bytes, filename: str) -> ImageEntry:
        """Validate (a full decode) and keep an upload; blocking, so the app calls it in a worker thread."""
        fmt = check_upload(data, self.max_upload)  # refuses with 413 / 415 / 422
        token = "u" + secrets.token_hex(8)
        path = self.upload_dir / (token + _ALLOWED_FORMATS[fmt])
        path.write_bytes(data)
        safe_name = "".join(ch for ch in Path(filename or "upload").name if ch.isprintable())[:80] or "upload"
        entry = ImageEntry(token, safe_name, path, "upload")
        with self._lock:
            self.uploads[token] = entry
            while len(self.uploads) > MAX_UPLOADS:
                _, old = self.uploads.popitem(last=False)
                old.path.unlink(missing_ok=True)
                self.cache.drop(lambda k, i=old.id: k[1] == i)
        return entry

    # -- captures ---------------------------------------------------------------------------
    def capture(self, image_id: str) -> Capture:
        key = (self.model.sha256, image_id)
        c = self.cache.get(key)
        if c is not None:
            return c
        entry = self.image(image_id)  # 404 before anything is held for an unknown id
        lock = self._capture_locks[int(hashlib.blake2b(image_id.encode(), digest_size=4).hexdigest(), 16)
                                   % _LOCK_STRIPES]
        with lock:  # one capture per image even when many tile requests arrive at once
            c = self.cache.get(key)
            if c is not None:
                return c
            c = self._compute(entry)
            self.cache.put(key, c)
            self._record(image_id, c)
            return c

    def _decoded(self, entry: ImageEntry) -> Any:
        """The entry's image, decoded within the byte bound; errors name it by its gallery name, not its path."""
        from ..preprocess import load_image

        try:
            return load_image(entry.path)
        except OnnxactError as e:
            raise InputError(self.public(str(e), entry)) from None

    def public(self, message: str, entry: ImageEntry | None = None) -> str:
        """``message`` with the server's folders taken out (the image named by its gallery name)."""
        if entry is not None:
            message = message.replace(str(entry.path), entry.name)
        for folder in (self.root, self.upload_dir):
            if folder is not None:
                message = message.replace(str(folder) + os.sep, "").replace(str(folder), "<folder>")
        return message

    def thumbnail(self, entry: ImageEntry, size: int) -> np.ndarray:
        """The image as H x W x 3 uint8, at most ``size`` pixels a side (shrunk before widening to RGB)."""
        from ..limits import decode_slot

        with decode_slot():
            img = self._decoded(entry)
            img.thumbnail((size, size))
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    def _compute(self, entry: ImageEntry) -> Capture:
        from ..capture import get_activations
        from ..limits import decode_slot
        from ..preprocess import preprocess_with_geometry

        with decode_slot():  # decoded once, for the model and for display
            img = self._decoded(entry)
            try:
                x, geometry = preprocess_with_geometry(img, self.model, **self.preprocess)
            except OnnxactError as e:
                raise InputError(self.public(str(e), entry)) from None
            stretched = geometry[0].mode == "stretch"
            if stretched:
                img.thumbnail((384, 384))
                display = np.asarray(img.convert("RGB"), dtype=np.uint8)
            del img
        acts = get_activations(self.model, x, output_format="numbered")
        stats = _channel_stats(acts)
        if not stretched:
            # letterboxed or cropped: show what the model saw, so tiles laid over it line up
            from PIL import Image

            from ..render import load_display_image

            seen = Image.fromarray(np.rint(load_display_image(x, 0) * 255).astype(np.uint8))
            seen.thumbnail((384, 384))
            display = np.asarray(seen.convert("RGB"), dtype=np.uint8)
        nbytes = acts.nbytes + sum(np.asarray(v).nbytes for v in acts.outputs.values()) + display.nbytes
        return Capture(acts, display, nbytes=nbytes, stats=stats)

    def _record(self, image_id: str, cap: Capture) -> None:
        """Merge this image's per-channel statistics into the running ones (dead counts over the images seen)."""
        with self._lock:
            self.shapes.update({int(k): [int(d) for d in np.shape(v)] for k, v in cap.acts.items()})
            if image_id in self.seen or cap.stats is None:
                return
            self.seen.add(image_id)
            for k, st in cap.stats.layers.items():
                old = self.running.get(k)
                self.running[k] = st if old is None or old.channels != st.channels else old.merge(st)
                self.running_infos[k] = cap.stats.infos[k]

    def dead_report(self) -> Any:
        """``onnxact.stats.DeadFilterReport`` over the images seen: the definition ``check`` uses."""
        from ..stats_records import ChannelStats
        from ..stats_report import DeadFilterReport

        with self._lock:
            stats = ChannelStats(dict(self.running), dict(self.running_infos), len(self.seen))
        return DeadFilterReport(stats, model_name=self.model.name)

    def page(self, offset: int, limit: int) -> tuple[list[ImageEntry], int]:
        """Uploads (newest first) then the gallery in path order: ``limit`` entries from ``offset``, and the total."""
        with self._lock:
            uploads = list(reversed(self.uploads.values()))
        # the first page walks the folder again (new files show up); later pages read that index,
        # so paging through a big folder is not one walk per page
        gallery = (self.scan() if offset == 0 else list(self._gallery_index().values())) if self.root is not None else []
        entries = uploads + gallery
        return entries[offset:offset + limit], len(entries)

    def layer_tiles(self, cap: Capture, layer: int) -> tuple[np.ndarray, float, float]:
        """(n, h, w) float32 tiles of one layer for sample 0, plus the layer's min and max."""
        t = cap.tiles.get(layer)
        if t is None:
            from ..render import sample_tiles

            key = str(layer)
            if key not in cap.acts:
                raise _http(404, f"layer {layer} does not exist; the model has {len(cap.acts)} layers")
            info = cap.acts.layers.get(key)
            tiles, _ = sample_tiles(np.asarray(cap.acts[key]), info.layout if info else "NCHW", 0)
            tiles = np.nan_to_num(tiles, nan=0.0, posinf=0.0, neginf=0.0)
            t = (tiles, float(tiles.min(initial=0.0)), float(tiles.max(initial=0.0)))
            cap.tiles[layer] = t
        return t


class _Named(dict):  # a {key: array} mapping carrying the layer records, as ChannelStats reads them
    layers: dict[str, Any]


def _channel_stats(acts: Activations) -> Any:
    """One image's per-channel statistics (``onnxact.stats.ChannelStats``), for layers with a channel axis."""
    from ..stats_records import ChannelStats

    named = _Named()
    named.layers = {}
    for k, arr in acts.items():
        info = acts.layers.get(k)
        a = np.asarray(arr)
        if info is None or info.channel_axis is None or a.ndim < 2 or a.size == 0 or info.channel_axis >= a.ndim:
            continue
        if not np.issubdtype(a.dtype, np.number):
            continue
        named[k] = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        named.layers[k] = info
    return ChannelStats.from_activations(named)
