"""The activation mapping every stage passes around, its per-layer records, and its save format.

Why a dict subclass: Keract users love that activations are a plain ``{name: array}``; render
and stats accept any mapping. ``Activations`` adds the per-layer metadata (layout above all, so
the channels-first/last question is answered once, here, and never guessed again downstream).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError

__all__ = ["LayerInfo", "InputInfo", "Activations", "Outputs", "save_activations", "load_activations"]

#: Version of the ``.npz`` + ``manifest.json`` format written by :func:`save_activations`.
FORMAT_VERSION = 1

@dataclass(frozen=True)
class InputInfo:
    """One model input: ONNX name, shape (ints, symbolic names or None), numpy dtype, layout."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    layout: str

    @property
    def is_image(self) -> bool:
        """True when the input is a 4-D NCHW/NHWC tensor with 1, 3 or 4 channels."""
        from .layout import channel_axis

        if self.layout not in ("NCHW", "NHWC") or len(self.shape) != 4:
            return False
        c = self.shape[channel_axis(self.layout)]
        return c is None or isinstance(c, str) or c in (1, 2, 3, 4)


@dataclass(frozen=True)
class LayerInfo:
    """One capturable layer: the record declared once and reused by every stage.

    ``name`` is the framework layer name (``simple`` format), ``tensor`` the ONNX tensor that
    holds the layer's output, ``op_type`` the op that defines the layer (``Conv``, ``MaxPool``),
    ``activation`` the activation op folded into it (``Relu``) or None, ``layout`` one of the
    strings in :mod:`onnxact.layout`, ``shape`` the statically known shape (None where unknown).
    ``fused`` names the framework layers folded into this one, in graph order: a conv read after
    its BatchNormalization and activation is keyed by the conv (``conv2d_3``) and lists
    ``("batch_normalization_3", "activation_3")`` here; each of those names selects its own tensor.
    """

    name: str
    tensor: str
    op_type: str
    layout: str
    shape: tuple[int | str | None, ...] | None = None
    activation: str | None = None
    index: int = 0
    node: str = ""
    fused: tuple[str, ...] = ()

    @property
    def channel_axis(self) -> int | None:
        """Axis of the channels in the captured array, or None when the layout has none."""
        from .layout import channel_axis

        return channel_axis(self.layout)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["fused"] = list(self.fused)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LayerInfo:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("shape") is not None:
            kw["shape"] = tuple(kw["shape"])
        if "fused" in kw:
            kw["fused"] = tuple(str(f) for f in kw["fused"] or ())
        return cls(**kw)


class Outputs(dict):
    """The model's own outputs, keyed by the framework's names (``predictions``) where known.

    The ONNX output names still reach the same arrays (``outputs["Identity:0"]``, ``in``,
    ``.get``), and ``.tensors`` maps each key to its ONNX output name, so code written against
    ONNX names keeps working.
    """

    tensors: dict[str, str]

    def __init__(self, data: Mapping[str, np.ndarray] | None = None, tensors: Mapping[str, str] | None = None) -> None:
        super().__init__(data or {})
        self.tensors = dict(tensors or {k: k for k in self})
        self._alias = {v: k for k, v in self.tensors.items() if not dict.__contains__(self, v)}

    def __missing__(self, key: str) -> np.ndarray:
        if key in self._alias:
            return dict.__getitem__(self, self._alias[key])
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._alias

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else default


class Activations(dict):
    """Ordered ``{layer key: ndarray}`` in graph order, plus ``.layers`` metadata per key.

    Behaves exactly like a dict (so code written for Keract keeps working); the extra
    attributes are optional for every consumer.
    """

    #: the image preprocessing used (``onnxact.normalization.Normalization.to_json()``), when known;
    #: saved in manifest.json so a report says whether its pixels' scaling was guessed
    preprocessing: dict[str, Any] | None = None

    layers: dict[str, LayerInfo]
    outputs: dict[str, np.ndarray]
    model_sha256: str | None
    class_names: list[str] | None
    inputs: dict[str, np.ndarray]
    geometry: list[Any] | None  # per sample: how the image was fitted (onnxact.sizing.Geometry)

    def __init__(
        self,
        data: Mapping[str, np.ndarray] | None = None,
        layers: Mapping[str, LayerInfo] | None = None,
        *,
        outputs: Mapping[str, np.ndarray] | None = None,
        model_sha256: str | None = None,
        class_names: list[str] | None = None,
        inputs: Mapping[str, np.ndarray] | None = None,
        geometry: list[Any] | None = None,
    ) -> None:
        super().__init__(data or {})
        self.layers = dict(layers or {})
        self.outputs = outputs if isinstance(outputs, Outputs) else dict(outputs or {})
        self.model_sha256 = model_sha256
        self.class_names = list(class_names) if class_names else None
        self.inputs = dict(inputs or {})
        self.geometry = list(geometry) if geometry else None

    def info(self, key: str) -> LayerInfo | None:
        """The LayerInfo of ``key`` when known."""
        return self.layers.get(key)

    def __repr__(self) -> str:
        """One line per layer (name, shape, op), the first dozen only: never the arrays' numbers."""
        from .render.table import activations_text

        return activations_text(self)

    def _repr_html_(self) -> str:
        """The notebook's view: a table of the layers (op, shape, min / max / mean, zeros) with
        thumbnails of their first maps, capped at :data:`onnxact.render.table.MAX_ROWS` rows."""
        from .render.table import activations_html

        return activations_html(self)

    @property
    def nbytes(self) -> int:
        """Total bytes held by the captured arrays."""
        return int(sum(np.asarray(v).nbytes for v in self.values()))

    def save(self, directory: str | os.PathLike[str], name: str = "activations") -> Path:
        """Write ``{name}.npz`` and ``manifest.json`` into ``directory``; see save_activations."""
        return save_activations(self, directory, name=name)


def _safe_key(i: int) -> str:
    return f"a{i:05d}"


#: zlib level of the arrays that are deflated, and the sampled size ratio below which one is.
NPZ_LEVEL = 1
NPZ_DEFLATE_BELOW = 0.85
_NPZ_SAMPLE = 1 << 18


def _write_npz(file: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` (``np.load`` reads it) into an open binary file, compressed where it pays.

    Why not ``np.savez_compressed``: float32 feature maps compress poorly unless a ReLU zeroed
    much of them, and zlib's default level is slow. Measured on a loaded 2-CPU machine: the demo's
    2.4 MB of maps (54% zeros) -> 1.07 MB in 0.17 s at level 6, 1.10 MB in 0.10 s at level 1;
    rapidocr det on a 640x640 photo, 102 MB (8% zeros, HardSwish maps) -> 83.6 MB in 13.7 s at
    level 6, 84.2 MB in 8.4 s at level 1. So each array is deflated at level 1 only when a 256 KB
    sample of it shrinks below 85% (a ReLU map, a constant one), and stored as it is otherwise
    (det: 93.2 MB in 2.5 s; demo: 1.10 MB in 0.16 s); a zip holds stored and deflated members alike.
    ``onnxact inspect --no-arrays`` writes none at all.
    """
    import zlib

    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL,
                         allowZip64=True) as z:
        for key, value in arrays.items():
            a = np.asanyarray(value)
            sample = np.ascontiguousarray(a).reshape(-1)[: _NPZ_SAMPLE // max(a.itemsize, 1)].tobytes()
            deflate = len(sample) >= 64 and len(zlib.compress(sample, NPZ_LEVEL)) < NPZ_DEFLATE_BELOW * len(sample)
            member: Any = f"{key}.npy"
            if not deflate:
                member = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_STORED
                member.external_attr = 0o644 << 16
            with z.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)


def save_activations(
    acts: Mapping[str, np.ndarray], directory: str | os.PathLike[str], name: str = "activations"
) -> Path:
    """Save activations as ``{name}.npz`` (deflated where that pays) plus a versioned ``manifest.json``.

    Array keys in the npz are positional (``a00000``...), because layer names may contain
    characters that are not valid npz member names; the manifest maps them back and records
    the format version, the model's sha256 and each layer's metadata.
    Returns the path of the npz file.
    """
    from .safeio import atomic_file, write_text

    d = Path(directory)
    npz_path = d / f"{name}.npz"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write activations to {d}: {e.strerror or e}; choose a writable folder") from None
    arrays = {_safe_key(i): np.asarray(v) for i, v in enumerate(acts.values())}
    # Written under a temporary name and renamed: a full disk or Ctrl-C leaves no truncated npz.
    with atomic_file(npz_path) as f:
        _write_npz(f, arrays)
    layers = getattr(acts, "layers", {}) or {}
    entries = []
    for i, (k, v) in enumerate(acts.items()):
        info = layers.get(k)
        entries.append(
            {
                "key": k,
                "array": _safe_key(i),
                "shape": list(np.shape(v)),
                "dtype": str(np.asarray(v).dtype),
                "info": info.to_json() if info is not None else None,
            }
        )
    manifest = {
        "format": "onnxact.activations",
        "format_version": FORMAT_VERSION,
        "model_sha256": getattr(acts, "model_sha256", None),
        "class_names": getattr(acts, "class_names", None),
        # how each image was fitted (size, letterbox padding, crop): maps can be put back on the photo
        "geometry": [g.to_json() for g in getattr(acts, "geometry", None) or []] or None,
        "npz": npz_path.name,
        "preprocessing": getattr(acts, "preprocessing", None),
        "layers": entries,
    }
    write_text(d / "manifest.json", json.dumps(manifest, indent=2))
    return npz_path


def _geometry_of(entries: Any) -> list[Any] | None:
    """Geometry records of a manifest (untrusted); None when absent or not well formed."""
    from .sizing import RESIZE_MODES, Geometry

    def ints(v: Any) -> tuple[int, int]:
        if not (isinstance(v, list) and len(v) == 2 and all(type(i) is int and i > 0 for i in v)):
            raise ValueError(v)
        return int(v[0]), int(v[1])

    def box(v: Any) -> tuple[float, float, float, float]:
        if not (isinstance(v, list) and len(v) == 4 and all(type(i) in (int, float) for i in v)):
            raise ValueError(v)
        out = tuple(float(i) for i in v)
        if not all(np.isfinite(out)) or out[2] <= 0 or out[3] <= 0:
            raise ValueError(v)
        return out  # type: ignore[return-value]

    if not isinstance(entries, list):
        return None
    try:
        out = []
        for e in entries:
            if not isinstance(e, dict) or e.get("mode") not in RESIZE_MODES:
                return None
            out.append(Geometry(e["mode"], ints(e["image_size"]), ints(e["input_size"]), box(e["content"]),
                                box(e["source"])))
        return out or None
    except (KeyError, TypeError, ValueError):
        return None


#: Default bound on the bytes :func:`load_activations` may decompress (sum of the arrays read).
#: A saved folder is untrusted input: a 1 MB npz can declare (and deflate to) many gigabytes.
MAX_LOAD_BYTES = 4 * 2**30
_MAX_MANIFEST_BYTES = 64 * 2**20


def _fail(manifest_path: Path, what: str) -> InputError:
    return InputError(f"{manifest_path} is not a valid onnxact activations manifest: {what}; "
                      "pass a folder written by save_activations")


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        with open(manifest_path, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"no manifest.json at {manifest_path}; pass the folder written by save_activations") from None
    except OSError as e:
        raise InputError(f"cannot read {manifest_path}: {e.strerror or e}") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise _fail(manifest_path, f"it is over {_MAX_MANIFEST_BYTES >> 20} MB")
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise InputError(f"cannot read {manifest_path}: {str(e)[:200] or 'nested too deep'}") from None
    if not isinstance(manifest, dict):
        raise _fail(manifest_path, f"it holds a JSON {type(manifest).__name__}, not an object")
    return manifest


def _npz_beside(manifest_path: Path, name: Any) -> Path:
    """The npz the manifest names, which may only be a plain file in the manifest's own folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name:
        raise _fail(manifest_path, f'"npz" must be the name of a file beside it, not {str(name)[:80]!r}')
    npz = manifest_path.with_name(name)
    real = Path(os.path.realpath(npz))
    if real.parent != Path(os.path.realpath(manifest_path)).parent:
        raise _fail(manifest_path, f'"npz" {name!r} leads outside its folder')
    if not real.is_file():  # missing, or a folder / device / FIFO that reading would hang on
        raise InputError(f"the activations file {npz} is missing or not a file; keep it beside {manifest_path.name}")
    return npz


def _entries(manifest_path: Path, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise _fail(manifest_path, '"layers" must be a list')
    for e in layers:
        if not isinstance(e, dict) or not isinstance(e.get("key"), str) or not isinstance(e.get("array"), str) \
                or not isinstance(e.get("info"), (dict, type(None))):
            raise _fail(manifest_path, 'each layer needs a "key" and an "array" name and an "info" object or null')
    return layers


def _layer_info(manifest_path: Path, d: Mapping[str, Any]) -> LayerInfo:
    try:
        info = LayerInfo.from_json(d)
    except (TypeError, ValueError):
        raise _fail(manifest_path, f"layer info {str(d)[:80]} lacks fields or has wrong types") from None
    if not all(isinstance(getattr(info, f), str) for f in ("name", "tensor", "op_type", "layout", "node")):
        raise _fail(manifest_path, f"layer info {str(d)[:80]} has names that are not text")
    return info


def _array_bytes(z: zipfile.ZipFile, member: str) -> int:
    """Bytes the array ``member`` will take once read, from its .npy header alone (nothing inflated)."""
    with z.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def load_activations(path: str | os.PathLike[str], max_bytes: int | None = MAX_LOAD_BYTES) -> Activations:
    """Load what :func:`save_activations` wrote; ``path`` is the folder or its manifest.json.

    The folder is treated as untrusted input: a manifest that is malformed, names an npz
    outside its own folder, or is over 64 MB is an ``InputError``, and so is a set of arrays
    whose size once read (from the ``.npy`` headers, before anything is decompressed) is over
    ``max_bytes`` (default :data:`MAX_LOAD_BYTES`, 4 GiB; None for no bound).
    """
    p = Path(path)
    manifest_path = p / "manifest.json" if p.is_dir() else p
    if manifest_path.suffix == ".npz":
        manifest_path = manifest_path.with_name("manifest.json")
    manifest = _read_manifest(manifest_path)
    if manifest.get("format") != "onnxact.activations":
        raise InputError(f"{manifest_path} is not an onnxact activations manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{manifest_path} has format version {version}; this onnxact reads up to {FORMAT_VERSION}, upgrade onnxact"
        )
    entries = _entries(manifest_path, manifest)
    npz_path = _npz_beside(manifest_path, manifest.get("npz"))
    names = manifest.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise _fail(manifest_path, '"class_names" must be a list of names')
    sha = manifest.get("model_sha256")
    if sha is not None and not isinstance(sha, str):
        raise _fail(manifest_path, '"model_sha256" must be text')
    layers = {e["key"]: _layer_info(manifest_path, e["info"]) for e in entries if e.get("info")}
    try:
        with zipfile.ZipFile(npz_path) as z:
            members = set(z.namelist())
            wanted = list(dict.fromkeys(e["array"] for e in entries))
            missing = [a for a in wanted if f"{a}.npy" not in members]
            if missing:
                raise InputError(f"{npz_path} lacks the array {missing[0]!r} that {manifest_path.name} lists")
            if max_bytes is not None:
                total = sum(_array_bytes(z, f"{a}.npy") for a in wanted)
                if total > max_bytes:
                    raise InputError(f"{npz_path} holds {total / 2**30:.3g} GiB of arrays, over the bound of "
                                     f"{max_bytes / 2**30:.3g} GiB; pass max_bytes= to load_activations to allow more")
        with np.load(npz_path, allow_pickle=False) as z:
            read = {a: z[a] for a in wanted}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise InputError(f"cannot read {npz_path}: {str(e)[:200]}") from None
    data = {e["key"]: read[e["array"]] for e in entries}
    return Activations(data, layers, model_sha256=sha, class_names=names, geometry=_geometry_of(manifest.get("geometry")))
