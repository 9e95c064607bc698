"""What the endpoints send back, computed from a capture: PNG bytes, scaling, softmax, class maps.

Its own stage because these are plain functions of arrays (no request, no state), shared by
the tile, heatmap, CAM and prediction endpoints and testable without a server.
"""


import numpy as np

from ..errors import OnnxactError
from ..model import Model
from .cache import Capture


def _png(rgb: np.ndarray) -> bytes:
    from ..render.png import png_bytes

    return png_bytes(np.ascontiguousarray(rgb))


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


def _cache_headers() -> dict[str, str]:
    # Image ids change when a file changes (mtime/size are in the id) and the model is fixed.
    return {"Cache-Control": "private, max-age=3600"}


def _cam_method(m: Model) -> str:
    """"cam" (exact, class-specific) when the model has a GAP -> FC head, else "eigencam"."""
    from ..cam import find_cam_head

    try:
        return "cam" if find_cam_head(m.proto, m.external_data_dir) is not None else "eigencam"
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
