"""The browser viewer's web app: a JSON API over one loaded model plus the static page.

Why this shape: the model is loaded once and never changes (no endpoint can replace it);
images are addressed by opaque ids handed out by the app itself (gallery files are indexed
by walking IMAGES_DIR, uploads get random tokens), so no request path is ever joined onto a
folder: a traversal attempt is simply an id that does not exist. Activations are captured once
per (model, image) into a bounded LRU cache and every tile, heatmap and statistic is a cheap
slice of that capture, rendered on demand with the shared renderer (``onnxact.render``).

This module is the app factory and its routes; the stages it wires together each have their
own module: :mod:`.state` (model, images, uploads, captures), :mod:`.cache` (the bounded capture
LRU), :mod:`.checks` (limits, upload checks, refusals), :mod:`.security` (headers, Host and
same-origin checks, errors as JSON), :mod:`.payloads` (each endpoint's body: statistics, PNG
bytes, predictions, class maps; the notebook widget, :mod:`.widget`, calls the same) and
:mod:`.schema` (the JSON response models).
"""

import os
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..errors import InputError
from ..model import load
from . import payloads
from .exemplars_job import ExemplarJobs, check_top
from .exemplars_routes import add_exemplar_routes
from .payloads import _cache_headers, _cam_method, _png, _predictions
from .schema import (
    Colormap,
    Error,
    ImageModel,
    LayerStats,
    ModelSummary,
    Normalize,
    Predictions,
)
from .security import _ID_PATTERN, MAX_UPLOAD_BYTES, BodyLimit, install_guards
from .state import IMAGE_EXTENSIONS, PAGE_SIZE, ViewerState, _read_labels

__all__ = ["create_app", "ViewerState", "IMAGE_EXTENSIONS", "MAX_UPLOAD_BYTES"]

_STATIC = Path(__file__).parent / "static"


def create_app(model: Any, images_dir: str | os.PathLike[str] | None = None, labels: Any = None, *,
               allowed_hosts: list[str] | None = None, cache_entries: int = 16, cache_bytes: int = 1 << 30,
               max_upload: int = MAX_UPLOAD_BYTES, scan_dead: bool = True,
               preprocess: dict[str, Any] | None = None, cam_layer: str | None = None,
               class_output: str | None = None, exemplar_top: int = 9) -> Any:
    """The FastAPI app for ``model`` (path, bytes, proto or Model), gallery ``images_dir`` and ``labels``.

    ``labels``: a list of class names or a file (one name a line, or a JSON list); default the
    model's own class names. ``allowed_hosts`` turns on Host-header checking (DNS rebinding).
    ``scan_dead``: count dead filters over the gallery (``onnxact.stats``) in a background thread;
    until it is done (or without it) the counts cover the images viewed so far. ``preprocess``:
    keyword arguments of ``preprocess_image`` for every image: ``size`` / ``resize`` (default: see
    onnxact.sizing), ``normalize`` / ``mean`` / ``std`` (default: see onnxact.normalization).
    ``cam_layer`` / ``class_output``: the CAM's layer and the classifier output, as in ``inspect``.
    ``exemplar_top``: how many top images per filter the exemplar panel shows (:mod:`.exemplars_job`).
    """
    check_top(exemplar_top)
    m = load(model)
    root: Path | None = None
    if images_dir is not None:
        root = Path(images_dir).expanduser()
        if root.is_file() and not root.name.lower().endswith(IMAGE_EXTENSIONS):
            raise InputError(f"{root} is not an image ({', '.join(IMAGE_EXTENSIONS)}); pass a folder of images "
                             "(or one image)")
        if not root.is_dir() and not root.is_file():
            raise InputError(f"images folder not found: {root}; pass a folder of images (or one image)")
    state = ViewerState(m, root, _read_labels(labels) or m.class_names, cache_entries, cache_bytes, max_upload,
                        preprocess=preprocess)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Error} for code in (400, 404, 413, 415, 422)
    }
    png = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}

    # no /docs or /redoc: FastAPI's pages load their JS and CSS from a CDN, which the page's CSP
    # (and an offline machine) refuses; the schema itself is at /openapi.json
    app = FastAPI(title="onnxact viewer", version="1", description=f"Activations of {m.name}, in a browser.",
                  responses=errors, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=max_upload + 64 * 1024)
    app.state.viewer = state
    if scan_dead and root is not None:
        threading.Thread(target=state.scan_dead_filters, name="onnxact-dead-scan", daemon=True).start()
    cam_method = _cam_method(m)

    install_guards(app, allowed_hosts, state.public)

    ImageId = PathParam(pattern=_ID_PATTERN, description="an image id from GET /api/images")

    # -- model and images ---------------------------------------------------------------------
    @app.get("/api/model", response_model=ModelSummary, summary="Model summary: inputs, outputs and layers")
    def model_summary(image: str | None = Query(None, pattern=_ID_PATTERN,
                                                description="an image id: `captured_shape` from its capture")) -> Any:
        cap = state.capture(image) if image is not None else None  # 404 for an unknown id
        return ModelSummary(**payloads.model_summary(state, cam_method, cap))

    @app.get("/api/images", response_model=list[ImageModel],
             responses={200: {"headers": {"X-Total-Count": {"description": "images in all pages",
                                                            "schema": {"type": "integer"}}}}},
             summary="The uploads (newest first) and the gallery images, a page at a time")
    def list_images(offset: int = Query(0, ge=0, le=10_000_000),
                    limit: int = Query(PAGE_SIZE, ge=1, le=PAGE_SIZE)) -> Any:
        entries, total = state.page(offset, limit)
        body = [ImageModel(id=e.id, name=e.name, source=e.source).model_dump() for e in entries]
        return JSONResponse(body, headers={"X-Total-Count": str(total)})

    @app.post("/api/images", response_model=ImageModel, status_code=201, summary="Upload an image (max 10 MB)")
    async def upload_image(file: UploadFile = File(...)) -> Any:
        data = await file.read(state.max_upload + 1)
        # validating decodes the whole image (seconds for a big one): in a worker thread, never
        # on the event loop, which would stop every other request meanwhile
        entry = await run_in_threadpool(state.add_upload, data, file.filename or "upload")
        return ImageModel(id=entry.id, name=entry.name, source=entry.source)

    @app.get("/api/images/{image_id}/image.png", responses=png, response_class=Response,
             summary="The image, re-encoded as PNG and shrunk to at most `size` pixels")
    def image_png(image_id: str = ImageId, size: int = Query(384, ge=16, le=1024)) -> Any:
        entry = state.image(image_id)
        return Response(_png(state.thumbnail(entry, size)), media_type="image/png", headers=_cache_headers())

    @app.get("/api/gallery/{name:path}", responses=png, response_class=Response,
             summary="A gallery image by its path relative to IMAGES_DIR, as PNG")
    def gallery_file(name: str, size: int = Query(384, ge=16, le=1024)) -> Any:
        entry = state.gallery_by_name(name)
        return image_png(entry.id, size)

    # -- per image ----------------------------------------------------------------------------
    @app.get("/api/images/{image_id}/predictions", response_model=Predictions,
             summary="Top-k classes of the model's classifier output(s); none for detectors (captures the image)")
    def predictions(image_id: str = ImageId, k: int = Query(5, ge=1, le=100)) -> Any:
        cap = state.capture(image_id)
        return Predictions(image=image_id, **_predictions(m, cap.acts, state.labels, k, class_output))

    @app.get("/api/images/{image_id}/layers/{layer}/stats", response_model=LayerStats,
             summary="Statistics of one layer's activation for this image")
    def layer_stats(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000)) -> Any:
        payloads.layer_info(m, layer)  # 404 before the capture
        return LayerStats(image=image_id, **payloads.layer_stats(state, state.capture(image_id), layer))

    @app.get("/api/images/{image_id}/layers/{layer}/tiles/{channel}.png", responses=png, response_class=Response,
             summary="One filter's map as a coloured PNG (one pixel per activation)")
    def tile(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000),
             channel: int = PathParam(ge=0, le=1_000_000), cmap: Colormap = "viridis",
             normalize: Normalize = "tile", scale: int = Query(1, ge=1, le=16)) -> Any:
        payloads.layer_info(m, layer)
        png = payloads.tile_png(state, state.capture(image_id), layer, channel, cmap, normalize, scale)
        return Response(png, media_type="image/png", headers=_cache_headers())

    @app.get("/api/images/{image_id}/layers/{layer}/picture.png", responses=png, response_class=Response,
             summary="The whole layer as one picture, as the report draws it: a bar chart for 1x1 maps "
                     "(global pools, squeeze-excite), a channels x time image for 1-D maps, else a tile grid")
    def picture(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000), cmap: Colormap = "viridis",
                normalize: Normalize = "tile", width: int = Query(720, ge=200, le=2000)) -> Any:
        payloads.layer_info(m, layer)
        png = payloads.picture_png(state, state.capture(image_id), layer, cmap, normalize, width)
        return Response(png, media_type="image/png", headers=_cache_headers())

    @app.get("/api/images/{image_id}/layers/{layer}/heatmap.png", responses=png, response_class=Response,
             summary="A filter's map (or, with channel=-1, the mean of the layer's maps) over the image")
    def heatmap(image_id: str = ImageId, layer: int = PathParam(ge=0, le=100_000),
                channel: int = Query(-1, ge=-1, le=1_000_000), alpha: float = Query(0.4, ge=0.0, le=1.0),
                cmap: Colormap = "jet") -> Any:
        payloads.spatial_layer(m, layer)  # refused before the capture
        png = payloads.heatmap_png(state, state.capture(image_id), layer, channel, alpha, cmap)
        return Response(png, media_type="image/png", headers=_cache_headers())

    @app.get("/api/images/{image_id}/cam.png", responses=png, response_class=Response,
             summary="Class activation map over the image (class_index=-1: the top class)")
    def cam(image_id: str = ImageId, class_index: int = Query(-1, ge=-1, le=100_000),
            alpha: float = Query(0.45, ge=0.0, le=1.0), cmap: Colormap = "jet",
            output: str | None = Query(None, max_length=256, description="classifier output of class_index")) -> Any:
        png, extra = payloads.cam_png(m, state.capture(image_id), class_index, cam_layer, output or class_output,
                                      alpha, cmap)
        return Response(png, media_type="image/png", headers={**_cache_headers(), **extra})

    app.state.exemplars = ExemplarJobs(state, exemplar_top)
    add_exemplar_routes(app, app.state.exemplars)

    # -- the page -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Any:
        return FileResponse(_STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Any:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=_STATIC, follow_symlink=False), name="static")
    return app
