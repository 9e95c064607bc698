"""The exemplar panel's endpoints: start the folder scan, poll its progress, read a filter's top list and crops.

Its own module so the app factory only registers it (one call); the work and the cache are in
:mod:`.exemplars_job`. All GETs are side-effect free: only the POST starts a scan (a POST passes
the app's same-origin check, so another site's page cannot make the viewer scan the folder).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .exemplars_job import ExemplarJobs
from .payloads import _cache_headers, _png, layer_info
from .schema import Error

__all__ = ["add_exemplar_routes", "ExemplarStatus", "ExemplarList"]


class SkippedImage(BaseModel):
    image: str  # relative to the folder
    reason: str


class ExemplarStatus(BaseModel):
    state: Literal["idle", "running", "done", "failed", "unavailable"]
    folder: str | None  # the folder's own name, never a server path
    top: int
    done: int
    total: int
    images: int | None  # images scanned, once done
    skipped: int
    skipped_images: list[SkippedImage]
    error: str | None  # one line, when failed or unavailable
    scan: str | None  # this scan's token: crop URLs carry it, so a browser never shows an older scan's crop


class ExemplarEntry(BaseModel):
    rank: int
    image: str  # path relative to the served folder
    id: str | None  # the gallery id (GET /api/images/{id}/...), when the file is still listed
    value: float | None  # the filter's maximum activation on this image (None: not finite, NaN or inf)
    box: list[int]  # x0, y0, x1, y1 in the original image's pixels: the receptive field of the maximum
    position: list[int]  # where the maximum is in the layer's map


class ExemplarList(BaseModel):
    layer: int
    name: str
    channel: int
    folder: str | None
    images: int
    top: list[ExemplarEntry]


def add_exemplar_routes(app: FastAPI, jobs: ExemplarJobs) -> None:
    png = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
    busy: dict[int | str, dict[str, Any]] = {409: {"model": Error}}

    @app.post("/api/exemplars", response_model=ExemplarStatus, status_code=202, responses=busy,
              summary="Start (or reuse) the scan of IMAGES_DIR for every filter's top images; returns its status")
    def start_exemplars() -> Any:
        jobs.start()
        return JSONResponse(jobs.status(), status_code=202)

    @app.get("/api/exemplars", response_model=ExemplarStatus,
             summary="The exemplar scan's state and progress (done of total images)")
    def exemplar_status() -> Any:
        return jobs.status()

    @app.get("/api/exemplars/layers/{layer}/channels/{channel}", response_model=ExemplarList, responses=busy,
             summary="One filter's top images over IMAGES_DIR, highest maximum first")
    def exemplar_list(layer: int = PathParam(ge=0, le=100_000), channel: int = PathParam(ge=0, le=1_000_000)) -> Any:
        info = layer_info(jobs.state.model, layer)  # 404 for a layer the model lacks
        top = jobs.top_list(layer, channel)
        images = jobs.status()["images"] or 0
        return ExemplarList(layer=layer, name=info.name, channel=channel, folder=jobs.folder, images=images, top=top)

    @app.get("/api/exemplars/layers/{layer}/channels/{channel}/{rank}.png", responses={**png, **busy},
             response_class=Response, summary="The rank-th top image of a filter around its box (box outlined)")
    def exemplar_crop(layer: int = PathParam(ge=0, le=100_000), channel: int = PathParam(ge=0, le=1_000_000),
                      rank: int = PathParam(ge=0, le=1000), size: int = Query(160, ge=32, le=512),
                      scan: str | None = Query(None, max_length=64, description="the status' scan token "
                                               "(only makes the URL differ from an older scan's)")) -> Any:
        layer_info(jobs.state.model, layer)  # 404 for a layer the model lacks
        rgb = jobs.crop(layer, channel, rank, size)
        return Response(_png(rgb), media_type="image/png", headers=_cache_headers())


