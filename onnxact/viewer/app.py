"""The browser viewer's web app: a JSON API over one loaded model plus the static page.

Why this shape: the model is loaded once and never changes (no endpoint can replace it);
images are addressed by opaque ids handed out by the app itself (gallery files are indexed
by walking IMAGES_DIR, uploads get random tokens), so no request path is ever joined onto a
folder: a traversal attempt is simply an id that does not exist. Activations are captured once
per (model, image) into a bounded LRU cache and every tile, heatmap and statistic is a cheap
slice of that capture, rendered on demand with the shared renderer (``onnxact.render``).
"""

import hashlib
import io
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ..activations import Activations
from ..errors import InputError, OnnxactError
from ..model import Model, load

__all__ = ["create_app", "ViewerState", "IMAGE_EXTENSIONS", "MAX_UPLOAD_BYTES"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOADS = 64
MAX_GALLERY = 2000
_ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_ID_PATTERN = r"^[gu][0-9a-f]{16}$"
_STATIC = Path(__file__).parent / "static"
Colormap = Literal["viridis", "magma", "gray", "jet", "inferno", "plasma", "cividis", "hot", "coolwarm"]
Normalize = Literal["tile", "layer"]


# ----------------------------------------------------------------------------- state
@dataclass
class ImageEntry:
    id: str
    name: str
    path: Path
    source: str  # "gallery" | "upload"


@dataclass
class Capture:
    """One image's activations plus lazily computed per-layer tiles (the LRU cache's value)."""

    acts: Activations
    display: np.ndarray  # H x W x 3 uint8, the image at display size
    tiles: dict[int, tuple[np.ndarray, float, float]] = field(default_factory=dict)
    nbytes: int = 0


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
                 cache_entries: int = 16, cache_bytes: int = 1 << 30, max_upload: int = MAX_UPLOAD_BYTES) -> None:
        self.model = model
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
            kw: dict[str, Any] = {"size": self.size} if self.size else {}
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
        from PIL import Image

        from ..preprocess import load_image

        if not data:
            raise _http(422, "the uploaded file is empty")
        if len(data) > self.max_upload:
            raise _http(413, f"the upload is over the {self.max_upload // (1024 * 1024)} MB limit")
        try:
            fmt = Image.open(io.BytesIO(data)).format
        except Image.DecompressionBombError:
            raise _http(422, "the uploaded image has too many pixels to decode safely; resize it first") from None
        except Exception:  # noqa: BLE001 - any failure to identify means "not an image"
            fmt = None
        if fmt not in _ALLOWED_FORMATS:
            raise _http(415, "the upload is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)")
        try:
            load_image(data)  # full decode, with the pixel-count (bomb) limit
        except OnnxactError as e:
            raise _http(422, str(e)) from None
        except Exception:  # noqa: BLE001 - Pillow raises many types for hostile files
            raise _http(422, "the upload could not be decoded as an image") from None
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

        kw: dict[str, Any] = {"size": self.size} if self.size else {}
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


# ----------------------------------------------------------------------------- helpers
class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a JSON 413.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it arrives and the read fails with HTTPException(413) (FastAPI re-raises
    HTTPExceptions from body parsing, so the client gets the JSON error, not a 400 or 500).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over the {self.limit // 1024} KB limit"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > self.limit):
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(status_code=413, detail=detail)
            return msg

        await self.app(scope, counted, send)


def _http(status: int, detail: str) -> Exception:
    return HTTPException(status_code=status, detail=detail)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _unit(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    lo = float(a.min()) if lo is None else lo
    hi = float(a.max()) if hi is None else hi
    if not hi > lo:
        return np.zeros(a.shape, np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _softmax_if_needed(v: np.ndarray) -> tuple[np.ndarray, bool]:
    v = np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if v.size and v.min() >= 0 and abs(v.sum() - 1.0) < 1e-3:
        return v, True
    e = np.exp(v - v.max(initial=0.0))
    return e / e.sum(), False


# ----------------------------------------------------------------------------- API schema
class InputModel(BaseModel):
    name: str
    shape: list[Any]
    dtype: str
    layout: str

class LayerModel(BaseModel):
    index: int
    name: str
    tensor: str
    op_type: str
    activation: str | None
    layout: str
    shape: list[Any] | None
    channels: int | None
    spatial: bool
    dead_filters: int | None
    dead_over_images: int

class ModelSummary(BaseModel):
    name: str
    sha256: str
    framework: str | None
    inputs: list[InputModel]
    outputs: list[str]
    class_names: list[str] | None
    layers: list[LayerModel]
    cam_method: str

class ImageModel(BaseModel):
    id: str
    name: str
    source: str

class Prediction(BaseModel):
    index: int
    label: str
    score: float

class Predictions(BaseModel):
    image: str
    output: str | None
    probabilities: bool
    top: list[Prediction]

class LayerStats(BaseModel):
    image: str
    layer: int
    name: str
    shape: list[int]
    min: float
    max: float
    mean: float
    std: float
    zero_fraction: float
    channels: int
    dead_on_image: int
    channel_max: list[float]
    channel_mean: list[float]

class Error(BaseModel):
    detail: Any


# ----------------------------------------------------------------------------- the app
def create_app(model: Any, images_dir: str | os.PathLike[str] | None = None, labels: Any = None, *,
               allowed_hosts: list[str] | None = None, cache_entries: int = 16, cache_bytes: int = 1 << 30,
               max_upload: int = MAX_UPLOAD_BYTES, scan_dead: bool = True) -> Any:
    """The FastAPI app for ``model`` (path, bytes, proto or Model), gallery ``images_dir`` and ``labels``.

    ``labels``: a list of class names or a file (one name a line, or a JSON list); default the
    model's own class names. ``allowed_hosts`` turns on Host-header checking (DNS rebinding).
    ``scan_dead``: count dead filters over the gallery (``onnxact.stats``) in a background thread;
    until it is done (or without it) the counts cover the images viewed so far.
    """
    m = load(model)
    root: Path | None = None
    if images_dir is not None:
        root = Path(images_dir).expanduser()
        if not root.is_dir():
            raise InputError(f"images folder not found: {root}; pass a folder of images")
    state = ViewerState(m, root, _read_labels(labels) or m.class_names, cache_entries, cache_bytes, max_upload)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Error} for code in (400, 404, 413, 415, 422)
    }
    png = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}

    app = FastAPI(title="onnxact viewer", version="1", description=f"Activations of {m.name}, in a browser.",
                  responses=errors)
    app.add_middleware(BodyLimit, limit=max_upload + 64 * 1024)
    app.state.viewer = state
    if scan_dead and root is not None:
        threading.Thread(target=state.scan_dead_filters, name="onnxact-dead-scan", daemon=True).start()
    cam_method = _cam_method(m)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if allowed_hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in allowed_hosts:
                return JSONResponse({"detail": "host not allowed"}, status_code=400)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        return response

    @app.exception_handler(OnnxactError)
    async def onnxact_error(request: Request, exc: OnnxactError) -> Any:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:  # never a stack trace
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)

    ImageId = PathParam(pattern=_ID_PATTERN, description="an image id from GET /api/images")

    def layer_or_404(layer: int) -> Any:
        if layer >= len(m.layers):
            raise _http(404, f"layer {layer} does not exist; the model has {len(m.layers)} layers (0-based)")
        return m.layers[layer]

    # -- model and images ---------------------------------------------------------------------
    @app.get("/api/model", response_model=ModelSummary, summary="Model summary: inputs, outputs and layers")
    def model_summary() -> Any:
        out = []
        with state._lock:
            seen = len(state.seen)
            cmax = dict(state.channel_max)
            dataset = state.dataset_dead if state.dataset_images >= seen else None
            n_dataset = state.dataset_images
        for i, layer in enumerate(m.layers):
            shape = list(layer.shape) if layer.shape is not None else None
            ax = layer.channel_axis
            ch = shape[ax] if shape is not None and ax is not None and ax < len(shape) else None
            ch = ch if isinstance(ch, int) else None
            dead = int((cmax[i] <= 0).sum()) if i in cmax else None
            if dataset is not None:
                dead = dataset.get(layer.name, 0)
            out.append(LayerModel(
                index=i, name=layer.name, tensor=layer.tensor, op_type=layer.op_type, activation=layer.activation,
                layout=layer.layout, shape=shape, channels=ch if ch is not None else (
                    int(cmax[i].size) if i in cmax else None),
                spatial=layer.layout in ("NCHW", "NHWC", "NCDHW", "NDHWC"), dead_filters=dead,
                dead_over_images=n_dataset if dataset is not None else seen,
            ))
        return ModelSummary(
            name=m.name, sha256=m.sha256, framework=m.framework,
            inputs=[InputModel(name=i.name, shape=list(i.shape), dtype=i.dtype, layout=i.layout) for i in m.inputs],
            outputs=list(m.output_names), class_names=state.labels, layers=out, cam_method=cam_method,
        )

    @app.get("/api/images", response_model=list[ImageModel], summary="The gallery images and the uploads")
    def list_images() -> Any:
        entries = state.scan() + list(state.uploads.values())
        return [ImageModel(id=e.id, name=e.name, source=e.source) for e in entries]

    @app.post("/api/images", response_model=ImageModel, status_code=201, summary="Upload an image (max 10 MB)")
    async def upload_image(file: UploadFile = File(...)) -> Any:
        data = await file.read(state.max_upload + 1)
        entry = state.add_upload(data, file.filename or "upload")
        return ImageModel(id=entry.id, name=entry.name, source=entry.source)

    @app.get("/api/images/{image_id}/image.png", responses=png, response_class=Response,
             summary="The image, re-encoded as PNG and shrunk to at most `size` pixels")
    def image_png(image_id: str = ImageId, size: int = Query(384, ge=16, le=1024)) -> Any:
        from ..preprocess import load_image

        entry = state.image(image_id)
        img = load_image(entry.path).convert("RGB")
        img.thumbnail((size, size))
        return Response(_png(np.asarray(img)), media_type="image/png", headers=_cache_headers())

    @app.get("/api/gallery/{name:path}", responses=png, response_class=Response,
             summary="A gallery image by its path relative to IMAGES_DIR, as PNG")
    def gallery_file(name: str, size: int = Query(384, ge=16, le=1024)) -> Any:
        entry = state.gallery_by_name(name)
        return image_png(entry.id, size)

    # -- per image ----------------------------------------------------------------------------
    @app.get("/api/images/{image_id}/predictions", response_model=Predictions,
             summary="Top-k classes of the model's first output (captures the image's activations)")
    def predictions(image_id: str = ImageId, k: int = Query(5, ge=1, le=100)) -> Any:
        cap = state.capture(image_id)
        outs = cap.acts.outputs
        name = next(iter(outs), None)
        if name is None:
            return Predictions(image=image_id, output=None, probabilities=False, top=[])
        v = np.asarray(outs[name])
        if v.ndim == 0 or v.size == 0 or v.size != v.shape[0] * (v.size // max(v.shape[0], 1)):
            return Predictions(image=image_id, output=name, probabilities=False, top=[])
        scores = v.reshape(v.shape[0], -1)[0] if v.ndim > 1 else v.ravel()
        if scores.size > 100_000:
            return Predictions(image=image_id, output=name, probabilities=False, top=[])
        probs, already = _softmax_if_needed(scores)
        order = np.argsort(-probs)[:k]
        labels = state.labels or []
        top = [Prediction(index=int(i), label=labels[i] if i < len(labels) else f"class {int(i)}",
                          score=float(probs[i])) for i in order]
        return Predictions(image=image_id, output=name, probabilities=already, top=top)

    @app.get("/api/images/{image_id}/layers/{layer}/stats", response_model=LayerStats,
             summary="Statistics of one layer's activation for this image")
    def layer_stats(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000)) -> Any:
        layer_or_404(layer)
        cap = state.capture(image_id)
        tiles, lo, hi = state.layer_tiles(cap, layer)
        a = np.asarray(cap.acts[str(layer)], dtype=np.float32)
        flat = tiles.reshape(tiles.shape[0], -1)
        cmax = flat.max(axis=1)
        return LayerStats(
            image=image_id, layer=layer, name=m.layers[layer].name, shape=[int(d) for d in a.shape],
            min=lo, max=hi, mean=float(a.mean()), std=float(a.std()), zero_fraction=float((a == 0).mean()),
            channels=int(tiles.shape[0]), dead_on_image=int((cmax <= 0).sum()),
            channel_max=[round(float(x), 6) for x in cmax], channel_mean=[round(float(x), 6) for x in flat.mean(1)],
        )

    @app.get("/api/images/{image_id}/layers/{layer}/tiles/{channel}.png", responses=png, response_class=Response,
             summary="One filter's map as a coloured PNG (one pixel per activation)")
    def tile(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000),
             channel: int = PathParam(ge=0, le=1_000_000), cmap: Colormap = "viridis",
             normalize: Normalize = "tile", scale: int = Query(1, ge=1, le=16)) -> Any:
        from ..render import apply_colormap

        layer_or_404(layer)
        cap = state.capture(image_id)
        tiles, lo, hi = state.layer_tiles(cap, layer)
        if channel >= tiles.shape[0]:
            raise _http(404, f"layer {layer} has {tiles.shape[0]} filters; channel {channel} does not exist")
        t = tiles[channel]
        v = _unit(t) if normalize == "tile" else _unit(t, lo, hi)
        rgb = apply_colormap(v, cmap)
        if scale > 1 and max(rgb.shape[:2]) * scale <= 2048:
            rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
        return Response(_png(rgb), media_type="image/png", headers=_cache_headers())

    @app.get("/api/images/{image_id}/layers/{layer}/heatmap.png", responses=png, response_class=Response,
             summary="A filter's map (or, with channel=-1, the mean of the layer's maps) over the image")
    def heatmap(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000),
                channel: int = Query(-1, ge=-1, le=1_000_000), alpha: float = Query(0.4, ge=0.0, le=1.0),
                cmap: Colormap = "jet") -> Any:
        from ..render import overlay

        info = layer_or_404(layer)
        if info.layout not in ("NCHW", "NHWC", "NCDHW", "NDHWC"):
            raise _http(422, f"layer {info.name} has no spatial maps (layout {info.layout}); pick a conv or pool layer")
        cap = state.capture(image_id)
        tiles, _, _ = state.layer_tiles(cap, layer)
        if channel >= tiles.shape[0]:
            raise _http(404, f"layer {layer} has {tiles.shape[0]} filters; channel {channel} does not exist")
        heat = tiles.mean(axis=0) if channel < 0 else tiles[channel]
        img = overlay(cap.display, heat, cmap=cmap, alpha=alpha)
        return Response(_png(np.asarray(img)), media_type="image/png", headers=_cache_headers())

    @app.get("/api/images/{image_id}/cam.png", responses=png, response_class=Response,
             summary="Class activation map over the image (class_index=-1: the top class)")
    def cam(image_id: str = ImageId, class_index: int = Query(-1, ge=-1, le=100_000),
            alpha: float = Query(0.45, ge=0.0, le=1.0), cmap: Colormap = "jet") -> Any:
        from ..render import overlay

        cap = state.capture(image_id)
        found = _class_map(m, cap, class_index)
        if found is None:
            raise _http(422, "this model has no spatial layer to compute a class activation map from")
        heat, extra = found
        img = overlay(cap.display, heat, cmap=cmap, alpha=alpha)
        return Response(_png(np.asarray(img)), media_type="image/png", headers={**_cache_headers(), **extra})

    # -- the page -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Any:
        return FileResponse(_STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Any:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=_STATIC, follow_symlink=False), name="static")
    return app


def _cache_headers() -> dict[str, str]:
    # Image ids change when a file changes (mtime/size are in the id) and the model is fixed.
    return {"Cache-Control": "private, max-age=3600"}


def _cam_method(m: Model) -> str:
    """"cam" (exact, class-specific) when the model has a GAP -> FC head, else "eigencam"."""
    from ..cam import find_cam_head

    try:
        return "cam" if find_cam_head(m.proto) is not None else "eigencam"
    except Exception:  # noqa: BLE001 - a head we cannot read just means no exact CAM
        return "eigencam"


def _class_map(m: Model, cap: Capture, class_index: int) -> tuple[np.ndarray, dict[str, str]] | None:
    """A 2-D class activation map + headers describing it, from onnxact.cam (exact CAM, else EigenCAM)."""
    from ..cam import class_activation_map

    key = -2 - class_index  # cache slot inside Capture.tiles that never clashes with layer indices
    hit = cap.tiles.get(key)
    if hit is not None:
        return hit[0], {"X-Cam-Method": "cached"}
    try:
        res = class_activation_map(m, None, None if class_index < 0 else class_index, acts=cap.acts)
    except OnnxactError:
        return None
    heat = np.asarray(res.map, dtype=np.float32)
    if heat.ndim != 2 or not np.isfinite(heat).all():
        return None
    headers = {"X-Cam-Method": str(res.method), "X-Cam-Layer": _ascii(res.layer)}
    if res.class_index is not None:
        headers["X-Cam-Class"] = str(res.class_index)
    cap.tiles[key] = (heat, 0.0, 0.0)
    return heat, headers


def _ascii(s: str) -> str:
    return s.encode("ascii", "replace").decode()[:200]
