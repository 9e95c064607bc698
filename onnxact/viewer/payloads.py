"""What the endpoints send back, computed from a capture: PNG bytes, scaling, softmax, class maps.

Its own stage because these are plain functions of arrays and the viewer's state (no request, no
web framework), shared by the app's endpoints (:mod:`.app`) and the notebook widget
(:mod:`.widget`), and testable without a server. They return plain dicts and PNG bytes and refuse
with :class:`onnxact.errors.RequestError` (its ``status`` is the app's HTTP status).
"""

from typing import Any

import numpy as np

from ..errors import OnnxactError
from ..model import Model
from .cache import Capture


def _png(rgb: np.ndarray) -> bytes:
    from ..render.png import png_bytes

    return png_bytes(np.ascontiguousarray(rgb))


def _cache_headers() -> dict[str, str]:
    # Image ids change when a file changes (mtime/size are in the id) and the model is fixed.
    return {"Cache-Control": "private, max-age=3600"}


def _cam_method(m: Model) -> str:
    """"cam" (exact, class-specific) when the model's head is a global average pool followed by one
    linear layer to an output, else "eigencam"."""
    from ..cam import find_cam_head
    from ..heads import static_shapes

    try:
        return "cam" if find_cam_head(m.proto, m.external_data_dir, shapes=static_shapes(m)) is not None else "eigencam"
    except Exception:  # noqa: BLE001 - a head we cannot read just means no exact CAM
        return "eigencam"


def _predictions(m: Model, acts: Any, labels: list[str] | None, k: int, output: str | None = None) -> dict[str, Any]:
    """The predictions endpoint's fields, from the same choice as the report's
    (:func:`onnxact.report.predict`): only classifier outputs get a top-k; a detector or a
    segmenter gets none and a ``note`` saying so. Several classifier outputs (an MTCNN stage's
    ``prob1`` beside its box regression is one) come first one, then ``others``, each by name."""
    from ..report import predict

    numeric = {n: v for n, v in (getattr(acts, "outputs", None) or {}).items()
               if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number)}
    try:
        batch = next((len(v) for v in (getattr(acts, "inputs", None) or {}).values() if np.ndim(v)), None)
        found = predict(numeric, labels, k=k, model=m, output=output if output in numeric else None, batch=batch)
    except OnnxactError as e:
        return {"output": None, "probabilities": False, "top": [], "note": str(e)}
    groups = []
    for name, top in found.groups:
        v = np.asarray(numeric[name], dtype=np.float64)[0].reshape(-1)
        already = bool(v.size and v.min() >= 0 and v.max() <= 1 and abs(v.sum() - 1.0) < 1e-3)
        groups.append({"output": name, "probabilities": already, "top": [
            {"index": int(i), "label": cname if cname is not None else f"class {i}", "score": float(p)}
            for i, cname, p in top]})
    if not groups:
        return {"output": None, "probabilities": False, "top": [], "note": found.reason}
    first = groups[0]
    return {**first, "note": None, "others": groups[1:]}


def _dead_channels(cap: Capture, layer: int) -> list[int]:
    """Channels of ``layer`` dead on this image, by ``check``'s definition (max |a| <= eps, with its
    default eps): :class:`onnxact.stats.DeadFilterReport` over this capture's statistics."""
    from ..stats_records import ChannelStats
    from ..stats_report import DeadFilterReport

    key = str(layer)
    st = cap.stats.layers.get(key) if cap.stats is not None else None
    if st is None:
        return []
    report = DeadFilterReport(ChannelStats({key: st}, {key: cap.stats.infos[key]}, 1))
    return [c for _, c in report.dead]


def _channel_summary(cap: Capture, layer: int, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel max and mean of ``layer`` on this image. Where a tile is a channel (the maps of one
    image), they are the capture's :class:`onnxact.stats_records.ChannelStats`, made once when the image
    was captured; other layers (vectors, sequences, depth means) summarise their tiles."""
    key = str(layer)
    st = cap.stats.layers.get(key) if cap.stats is not None else None
    info = cap.stats.infos.get(key) if st is not None else None
    if st is not None and info is not None and info.layout in ("NCHW", "NHWC") and np.ndim(cap.acts[key]) == 4 \
            and np.shape(cap.acts[key])[0] == 1 and st.channels == tiles.shape[0]:
        return st.max, st.mean
    flat = tiles.reshape(tiles.shape[0], -1)
    return flat.max(axis=1), flat.mean(axis=1)


def _class_map(m: Model, cap: Capture, class_index: int, cam_layer: str | None = None,
               output: str | None = None) -> tuple[np.ndarray, dict[str, str]] | None:
    """A 2-D class activation map + headers describing it (method, the layer's name, why), from
    onnxact.cam: the same layer and method as the report's."""
    from ..cam import class_activation_map

    key = (class_index, output)
    hit = cap.cams.get(key)
    if hit is not None:
        return hit
    try:
        res = class_activation_map(m, None, None if class_index < 0 else class_index, acts=cap.acts,
                                   cam_layer=cam_layer, output=output)
    except OnnxactError:
        return None
    heat = np.asarray(res.map, dtype=np.float32)
    if heat.ndim != 2 or not np.isfinite(heat).all():
        return None
    headers = {"X-Cam-Method": str(res.method), "X-Cam-Layer": _ascii(res.layer),
               "X-Cam-Caption": _ascii(res.caption, 600)}
    if res.class_index is not None:
        headers["X-Cam-Class"] = str(res.class_index)
    cap.cams[key] = (heat, headers)
    return heat, headers


def _ascii(s: str, limit: int = 200) -> str:
    return s.encode("ascii", "replace").decode()[:limit]


# -- the endpoints' bodies, shared by the app and the notebook widget ----------------------------
_SPATIAL = ("NCHW", "NHWC", "NCDHW", "NDHWC")


def layer_info(m: Model, layer: int) -> Any:
    """The LayerInfo of layer ``layer`` (0-based position in ``m.layers``), or a 404 refusal."""
    from .checks import _http

    if not 0 <= layer < len(m.layers):
        raise _http(404, f"layer {layer} does not exist; the model has {len(m.layers)} layers (0-based)")
    return m.layers[layer]


def spatial_layer(m: Model, layer: int) -> Any:
    """The LayerInfo of a layer with 2-D (or 3-D) maps to lay over the image, else a refusal."""
    from .checks import _http

    info = layer_info(m, layer)
    if info.layout not in _SPATIAL:
        raise _http(422, f"layer {info.name} has no spatial maps (layout {info.layout}); pick a conv or pool layer")
    return info


def _channel_tiles(state: Any, cap: Capture, layer: int, channel: int) -> tuple[np.ndarray, float, float]:
    from .checks import _http

    tiles, lo, hi = state.layer_tiles(cap, layer)
    if channel >= tiles.shape[0]:
        raise _http(404, f"layer {layer} has {tiles.shape[0]} filters; channel {channel} does not exist")
    return tiles, lo, hi


def model_summary(state: Any, cam_method: str, cap: Capture | None = None) -> dict[str, Any]:
    """GET /api/model: inputs, outputs, and each layer with its shape, kind and dead-filter count
    (over the gallery when its scan is done, else over the images seen); ``cap`` fills in shapes."""
    from ..render.tiles import layer_kind

    m = state.model
    report = state.dead_report()
    dead_now = {row["layer"]: row["dead"] for row in report.per_layer}
    with state._lock:
        seen = len(state.seen)
        shapes = dict(state.shapes)
        dataset = state.dataset_dead if state.dataset_images >= seen else None
        n_dataset = state.dataset_images
    if cap is not None:
        shapes.update({int(k): [int(d) for d in np.shape(v)] for k, v in cap.acts.items()})
    out = []
    for i, layer in enumerate(m.layers):
        shape = list(layer.shape) if layer.shape is not None else None
        got = shapes.get(i)
        ax = layer.channel_axis
        ch = shape[ax] if shape is not None and ax is not None and ax < len(shape) else None
        if not isinstance(ch, int) and got is not None and ax is not None and ax < len(got):
            ch = got[ax]
        ch = ch if isinstance(ch, int) else None
        dead = dead_now.get(str(i))
        if dataset is not None:
            dead = dataset.get(layer.name, 0)
        # how the page draws it: a tile grid ("maps"), or one picture (bars for 1x1 maps, ...)
        kind = layer_kind(np.broadcast_to(np.float32(0), got), layer.layout) if got else None
        out.append({
            "index": i, "name": layer.name, "tensor": layer.tensor, "op_type": layer.op_type,
            "activation": layer.activation, "layout": layer.layout, "shape": shape, "captured_shape": got,
            "kind": kind, "channels": ch, "spatial": layer.layout in _SPATIAL, "dead_filters": dead,
            "dead_over_images": n_dataset if dataset is not None else seen,
        })
    return {
        "name": m.name, "sha256": m.sha256, "framework": m.framework,
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout} for i in m.inputs],
        "outputs": list(m.output_names), "class_names": state.labels, "layers": out, "cam_method": cam_method,
        "dead_eps": report.eps,
    }


def layer_stats(state: Any, cap: Capture, layer: int) -> dict[str, Any]:
    """GET .../layers/{layer}/stats (without the image id): one layer's numbers on this image."""
    info = layer_info(state.model, layer)
    tiles, lo, hi = state.layer_tiles(cap, layer)
    a = np.asarray(cap.acts[str(layer)], dtype=np.float32)
    cmax, cmean = _channel_summary(cap, layer, tiles)
    dead = _dead_channels(cap, layer)
    return {
        "layer": layer, "name": info.name, "shape": [int(d) for d in a.shape], "min": lo, "max": hi,
        "mean": float(a.mean()), "std": float(a.std()), "zero_fraction": float((a == 0).mean()),
        "channels": int(tiles.shape[0]), "dead_on_image": len(dead), "dead_channels": dead,
        "channel_max": [round(float(x), 6) for x in cmax],
        "channel_mean": [round(float(x), 6) for x in cmean],
    }


def tile_png(state: Any, cap: Capture, layer: int, channel: int, cmap: str = "viridis", normalize: str = "tile",
             scale: int = 1) -> bytes:
    """One filter's map as a coloured PNG, one pixel per activation (``scale`` x bigger up to 2048 px)."""
    from ..render import apply_colormap
    from ..render.colors import unit_scale

    layer_info(state.model, layer)
    tiles, lo, hi = _channel_tiles(state, cap, layer, channel)
    t = tiles[channel]
    v = unit_scale(t) if normalize == "tile" else unit_scale(t, lo, hi)
    rgb = apply_colormap(v, cmap)
    if scale > 1 and max(rgb.shape[:2]) * scale <= 2048:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return _png(rgb)


def picture_png(state: Any, cap: Capture, layer: int, cmap: str = "viridis", normalize: str = "tile",
                width: int = 720) -> bytes:
    """The whole layer as the report draws it (numbered tile grid, bars, channels x time), as PNG."""
    from ..render import render_layer
    from .checks import _http

    info = layer_info(state.model, layer)
    key = str(layer)
    if key not in cap.acts:
        raise _http(404, f"layer {layer} was not captured for this image")
    pic = render_layer(info.name, np.asarray(cap.acts[key]), cap.acts.layers.get(key), cmap=cmap,
                       normalize=normalize, max_width=width, channel_numbers=True)
    return _png(np.asarray(pic.image.convert("RGB")))


def heatmap_png(state: Any, cap: Capture, layer: int, channel: int = -1, alpha: float = 0.4,
                cmap: str = "jet") -> bytes:
    """A filter's map (channel -1: the mean of the layer's maps) over the image, as PNG."""
    from ..render import overlay

    spatial_layer(state.model, layer)
    tiles, _, _ = _channel_tiles(state, cap, layer, channel)
    heat = tiles.mean(axis=0) if channel < 0 else tiles[channel]
    return _png(np.asarray(overlay(cap.display, heat, cmap=cmap, alpha=alpha)))


def cam_png(m: Model, cap: Capture, class_index: int = -1, cam_layer: str | None = None, output: str | None = None,
            alpha: float = 0.45, cmap: str = "jet") -> tuple[bytes, dict[str, str]]:
    """The class activation map over the image (class -1: the top class) as PNG, plus what it is
    (method, layer, class, caption) as the app's ``X-Cam-*`` headers."""
    from ..render import overlay
    from .checks import _http

    found = _class_map(m, cap, class_index, cam_layer, output)
    if found is None:
        raise _http(422, "this model has no spatial layer to compute a class activation map from")
    heat, extra = found
    return _png(np.asarray(overlay(cap.display, heat, cmap=cmap, alpha=alpha))), extra
