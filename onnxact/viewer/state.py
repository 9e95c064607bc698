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
from ..model import Model
from .cache import Capture, LRUCache
from .security import _ALLOWED_FORMATS, MAX_UPLOAD_BYTES, _http, check_upload

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UPLOADS = 64
MAX_GALLERY = 2000


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
        self.preprocess = dict(preprocess or {})  # normalize= / mean= / std= chosen by the user
        self.root = images_dir.resolve() if images_dir is not None else None
        self.labels = labels
        self.max_upload = max_upload
        self.cache = LRUCache(cache_entries, cache_bytes)
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxact-uploads-")
        self.upload_dir = Path(self._tmp.name)
        self.uploads: OrderedDict[str, ImageEntry] = OrderedDict()
        self.gallery: dict[str, ImageEntry] = {}
        self._lock = threading.Lock()
        self._capture_locks: dict[str, threading.Lock] = {}
        self.channel_max: dict[int, np.ndarray] = {}  # running max per channel over images seen
        self.seen: set[str] = set()
        self.size = self._input_size()
        self.dataset_dead: dict[str, int] | None = None  # {layer name: dead count} from onnxact.stats
        self.dataset_images = 0

    def scan_dead_filters(self, limit: int = 64) -> None:
        """Dead filters over (up to ``limit``) gallery images with onnxact.stats; run in a background thread."""
        try:
            from ..stats import find_dead_filters

            paths = [str(e.path) for e in self.scan()[:limit]]
            if not paths:
                return
            kw: dict[str, Any] = {**self.preprocess, **({"size": self.size} if self.size else {})}
            report = find_dead_filters(self.model, paths, show_progress=False, **kw)
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
        self._tmp.cleanup()

    # -- images -----------------------------------------------------------------------------
    def _input_size(self) -> tuple[int, int] | None:
        """The size to resize images to when the model's spatial dims are dynamic (224 x 224)."""
        imgs = [i for i in self.model.inputs if len(i.shape) == 4]
        if not imgs:
            return None
        i = imgs[0]
        hw = (i.shape[1], i.shape[2]) if i.layout == "NHWC" else (i.shape[2], i.shape[3])
        return None if all(isinstance(d, int) and d > 0 for d in hw) else (224, 224)

    def scan(self) -> list[ImageEntry]:
        """Index the image files under IMAGES_DIR (symlinks that leave it are skipped)."""
        if self.root is None:
            return []
        found: dict[str, ImageEntry] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
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
                if len(found) >= MAX_GALLERY:
                    break
            if len(found) >= MAX_GALLERY:
                break
        with self._lock:
            self.gallery = found
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

    def image(self, image_id: str) -> ImageEntry:
        with self._lock:
            e = self.uploads.get(image_id) or self.gallery.get(image_id)
        if e is None and image_id.startswith("g"):
            e = next((x for x in self.scan() if x.id == image_id), None)
        if e is None:
            raise _http(404, f"no image with id '{image_id}'; list them with GET /api/images")
        if e.source == "gallery" and (self.root is None or self._inside(e.path) is None):
            raise _http(404, f"image '{e.name}' is no longer in the images folder")
        return e

    def gallery_by_name(self, name: str) -> ImageEntry:
        entries = {e.name: e for e in (self.gallery.values() if self.gallery else self.scan())}
        e = entries.get(name)
        if e is None:
            e = {x.name: x for x in self.scan()}.get(name)
        if e is None:
            raise _http(404, "no such image in the images folder")
        return self.image(e.id)

    def add_upload(self, data: bytes, filename: str) -> ImageEntry:
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
        with self._lock:
            lock = self._capture_locks.setdefault(image_id, threading.Lock())
        with lock:  # one capture per image even when many tile requests arrive at once
            c = self.cache.get(key)
            if c is not None:
                return c
            entry = self.image(image_id)
            c = self._compute(entry)
            self.cache.put(key, c)
            self._record(image_id, c.acts)
            return c

    def _compute(self, entry: ImageEntry) -> Capture:
        from ..capture import get_activations
        from ..preprocess import load_image, preprocess_image

        kw: dict[str, Any] = {**self.preprocess, **({"size": self.size} if self.size else {})}
        x = preprocess_image(entry.path, self.model, **kw)
        acts = get_activations(self.model, x, output_format="numbered")
        img = load_image(entry.path).convert("RGB")
        img.thumbnail((384, 384))
        display = np.asarray(img, dtype=np.uint8)
        nbytes = acts.nbytes + sum(np.asarray(v).nbytes for v in acts.outputs.values()) + display.nbytes
        return Capture(acts, display, nbytes=nbytes)

    def _record(self, image_id: str, acts: Activations) -> None:
        """Fold this image's per-channel maxima into the running dead-filter counts."""
        with self._lock:
            if image_id in self.seen:
                return
            self.seen.add(image_id)
            for k, arr in acts.items():
                info = acts.layers.get(k)
                ax = info.channel_axis if info is not None else None
                a = np.asarray(arr)
                if ax is None or a.ndim < 2:
                    continue
                mx = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1).max(axis=1)
                i = int(k)
                self.channel_max[i] = mx if i not in self.channel_max else np.maximum(self.channel_max[i], mx)

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
