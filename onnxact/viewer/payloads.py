"""What the endpoints send back, computed from a capture: PNG bytes, scaling, softmax, class maps.

Its own stage because these are plain functions of arrays (no request, no state), shared by
the tile, heatmap, CAM and prediction endpoints and testable without a server.
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
    from .schema import OutputPredictions, Prediction

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
        groups.append(OutputPredictions(output=name, probabilities=already, top=[
            Prediction(index=i, label=cname if cname is not None else f"class {i}", score=p) for i, cname, p in top]))
    if not groups:
        return {"output": None, "probabilities": False, "top": [], "note": found.reason}
    first = groups[0]
    return {"output": first.output, "probabilities": first.probabilities, "top": first.top, "note": None,
            "others": groups[1:]}


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
