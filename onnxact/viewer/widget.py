"""The viewer inside a notebook: an ``anywidget`` layer / filter browser served by the kernel.

Why a widget and not ``onnxact serve`` in an iframe: no port, no server process, nothing to stop;
the kernel that already holds the model answers. It is the viewer's own machinery without the
web framework: :class:`.state.ViewerState` (image index, bounded capture cache, running dead-filter
counts) and the endpoint bodies of :mod:`.payloads` (model summary, layer statistics, tiles,
layer picture, heatmap, CAM, predictions), so the widget and the browser viewer show the same
numbers and pictures. The front end (``static/widget.js``, a small ES module) sets traits
(``image``, ``layer``, ``channel``, ``view``, ...); the kernel answers by setting ``picture``,
``stats``, ``predictions`` and ``model_info``; a filter grid is one custom message answered with
one PNG per filter as binary buffers.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..errors import InputError, OnnxactError
from ..model import load
from . import payloads
from .state import IMAGE_EXTENSIONS, PAGE_SIZE, ViewerState, _read_labels

__all__ = ["ActivationBrowser", "widget"]

_STATIC = Path(__file__).parent / "static"
VIEWS = ("filters", "heatmap", "cam", "picture")
#: filters sent for one grid (the first ones); the picture view draws every filter of a layer
MAX_GRID_TILES = 256


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


class ActivationBrowser(anywidget.AnyWidget):
    """A layer / filter browser over one model and a few images; see :func:`widget`.

    Drive it from Python as the front end does: set ``image`` (an id from ``images``), ``layer``
    (0-based index into ``model_info["layers"]``), ``channel`` (-1: the layer's mean map) and
    ``view`` (``filters`` | ``heatmap`` | ``cam`` | ``picture``); read ``picture`` (a PNG data URL),
    ``stats`` (the viewer's layer statistics), ``predictions`` and ``error``. :meth:`handle`
    answers the front end's custom messages (``{"type": "tiles"}``).
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    # what the front end chooses
    image = t.Unicode("").tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    channel = t.Int(-1).tag(sync=True)
    view = t.Unicode("filters").tag(sync=True)
    cmap = t.Unicode("viridis").tag(sync=True)
    normalize = t.Unicode("tile").tag(sync=True)
    class_index = t.Int(-1).tag(sync=True)
    # what the kernel answers
    model_info = t.Dict().tag(sync=True)
    images = t.List().tag(sync=True)
    picture = t.Unicode("").tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    stats = t.Dict().tag(sync=True)
    predictions = t.Dict().tag(sync=True)
    error = t.Unicode("").tag(sync=True)

    def __init__(self, state: ViewerState, *, cam_layer: str | None = None, class_output: str | None = None,
                 **kwargs: Any) -> None:
        self.state = state
        self._cam_layer, self._class_output = cam_layer, class_output
        self._cam_method = payloads._cam_method(state.model)
        entries, _ = state.page(0, PAGE_SIZE)  # the first 2000 of a bigger folder: a list to pick from
        super().__init__(**kwargs)
        with self.hold_trait_notifications():
            self.images = [{"id": e.id, "name": e.name, "source": e.source} for e in entries]
            self.model_info = payloads.model_summary(state, self._cam_method)
        self.on_msg(self._on_custom)
        if self.images and not self.image:
            self.image = self.images[0]["id"]  # captures the first image and fills in every answer

    # -- answers ------------------------------------------------------------------------------
    @t.observe("image", "layer", "channel", "view", "cmap", "normalize", "class_index")
    def _changed(self, change: Any = None) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute the answers for the current choices (an error shows as ``error``, never raises)."""
        if not self.image:
            return
        st = self.state
        try:
            cap = st.capture(self.image)
            png, caption = self._picture(cap)
            stats = payloads.layer_stats(st, cap, self.layer)
            preds = payloads._predictions(st.model, cap.acts, st.labels, 5, self._class_output)
            info = payloads.model_summary(st, self._cam_method, cap)
        except OnnxactError as e:
            self.error, self.picture, self.caption = st.public(str(e)), "", ""
            return
        with self.hold_trait_notifications():
            self.error = ""
            self.picture, self.caption = (_data_url(png) if png else ""), caption
            self.stats, self.predictions, self.model_info = stats, preds, info

    def _picture(self, cap: Any) -> tuple[bytes | None, str]:
        st, layer = self.state, self.layer
        if self.view == "filters":  # the grid comes by custom message; one filter's map here when chosen
            if self.channel < 0:
                return None, ""
            png = payloads.tile_png(st, cap, layer, self.channel, self.cmap, self.normalize,
                                    scale=max(1, 192 // max(1, max(st.layer_tiles(cap, layer)[0].shape[1:]))))
            return png, f"filter {self.channel} of {st.model.layers[layer].name}"
        if self.view == "picture":
            return payloads.picture_png(st, cap, layer, self.cmap, self.normalize), ""
        if self.view == "heatmap":
            what = "mean of the filters" if self.channel < 0 else f"filter {self.channel}"
            return payloads.heatmap_png(st, cap, layer, self.channel), f"{st.model.layers[layer].name}: {what}"
        if self.view == "cam":
            png, headers = payloads.cam_png(st.model, cap, self.class_index, self._cam_layer, self._class_output)
            return png, headers.get("X-Cam-Caption", "")
        raise InputError(f"view must be one of {', '.join(VIEWS)}, not {self.view!r}")

    # -- custom messages ----------------------------------------------------------------------
    def handle(self, content: Any) -> tuple[dict[str, Any], list[bytes]]:
        """Answer one front-end message: ``{"type": "tiles", "image": id, "layer": L}`` -> the first
        filters' maps as PNGs (``normalize`` / ``cmap`` as the traits) with their channel numbers and
        the channels dead on this image. An error is answered as ``{"type": "error", "detail": ...}``."""
        req = content.get("request") if isinstance(content, dict) else None
        try:
            if not isinstance(content, dict) or content.get("type") != "tiles":
                raise InputError("the widget answers {'type': 'tiles', 'image': ID, 'layer': N} messages only")
            image, layer = str(content.get("image") or self.image), int(content.get("layer", self.layer))
            cap = self.state.capture(image)
            stats = payloads.layer_stats(self.state, cap, layer)
            n = min(stats["channels"], MAX_GRID_TILES)
            pngs = [payloads.tile_png(self.state, cap, layer, c, self.cmap, self.normalize) for c in range(n)]
            reply = {"type": "tiles", "request": req, "image": image, "layer": layer, "channels": list(range(n)),
                     "total": stats["channels"], "dead": stats["dead_channels"]}
            return reply, pngs
        except (OnnxactError, TypeError, ValueError) as e:
            return {"type": "error", "request": req, "detail": self.state.public(str(e))}, []

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        reply, buffers = self.handle(content)
        self.send(reply, buffers)

    def close(self) -> None:
        self.state.close()
        super().close()


def widget(model: Any, images: str | os.PathLike[str] | list[str | os.PathLike[str]], *, labels: Any = None,
           preprocess: dict[str, Any] | None = None, cam_layer: str | None = None, class_output: str | None = None,
           scan_dead: bool = False, cache_entries: int = 16, cache_bytes: int = 1 << 30) -> ActivationBrowser:
    """The browser of :func:`onnxact.widget`: ``images`` is a folder (its images, sub-folders too),
    one image file or a list of them; arguments as :func:`onnxact.viewer.create_app`."""
    m = load(model)
    files: list[Path] = []
    root: Path | None = None
    given = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if len(given) == 1 and Path(given[0]).expanduser().is_dir():
        root = Path(given[0]).expanduser()
    else:
        for p in given:
            p = Path(p).expanduser()
            if not p.is_file():
                raise InputError(f"image not found: {p}; pass an image file, a list of them or a folder of images")
            files.append(p)
    state = ViewerState(m, root, _read_labels(labels) or m.class_names, cache_entries, cache_bytes,
                        preprocess=preprocess)
    try:
        for p in files:  # single files join as uploads: validated, copied, never the caller's file itself
            try:
                state.add_upload(p.read_bytes(), p.name)
            except OnnxactError as e:
                raise InputError(f"{p}: {e}") from None
        if root is not None and not state.scan():
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}; pass a folder of images")
        if scan_dead and root is not None:
            state.scan_dead_filters()
        return ActivationBrowser(state, cam_layer=cam_layer, class_output=class_output)
    except BaseException:
        state.close()
        raise
