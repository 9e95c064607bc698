"""Load an ONNX model once, describe its inputs and capturable layers, and own its sessions.

Why one object: parsing, shape inference, naming and onnxruntime session creation are the
expensive parts; a ``Model`` does them once and caches one session per capture set, so repeated
``get_activations`` calls cost only inference. External data is never pulled into memory:
sessions read it from the model's folder, so models over 2 GB load by path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from . import graph as graphmod
from .activations import InputInfo, LayerInfo
from .errors import InputError, LayerError, ModelError, ProviderError
from .layout import propagate_layouts
from .naming import closest, folded_hint, name_model, output_keys

__all__ = ["Model", "load", "resolve_providers", "read_tensor", "external_data_path", "parse_names_metadata"]

_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.STRING: "str",
}

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider", "coreml": "CoreMLExecutionProvider", "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider", "openvino": "OpenVINOExecutionProvider", "rocm": "ROCMExecutionProvider",
}


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """Turn ``"cuda"`` / ``["cuda", "cpu"]`` into onnxruntime provider names, checking availability."""
    import onnxruntime as ort

    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p]
    available = ort.get_available_providers()
    out: list[str] = []
    for p in providers:
        name = _PROVIDER_ALIASES.get(p.lower(), p)
        if name not in available:
            raise ProviderError(
                f"execution provider '{p}' is not available in this onnxruntime build "
                f"(available: {', '.join(available)}); for CUDA install onnxruntime-gpu"
            )
        out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def _dims(t: onnx.TypeProto) -> tuple[int | str | None, ...] | None:
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple((d.dim_value if d.dim_value > 0 else None) if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tt.shape.dim)


def _read_source(src: Any) -> tuple[onnx.ModelProto, Path | None, str]:
    """Parse a path / bytes / ModelProto without loading external data; return (proto, path, sha256)."""
    if isinstance(src, onnx.ModelProto):
        data = src.SerializeToString() if src.ByteSize() < 2**31 - 1 else b""
        return src, None, hashlib.sha256(data).hexdigest()
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ModelError("the model bytes are empty; pass the contents of an .onnx file")
        proto = _parse(data, "the model bytes")
        return proto, None, hashlib.sha256(data).hexdigest()
    if isinstance(src, (str, os.PathLike)):
        path = Path(src).expanduser()
        if not path.exists():
            raise ModelError(f"model file not found: {path}; check the path")
        if path.is_dir():
            raise ModelError(f"{path} is a directory, not an ONNX file; pass the .onnx file inside it")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
        if not data:
            raise ModelError(f"model file {path} is empty; re-export the model")
        proto = _parse(data, str(path))
        return proto, path.resolve(), hashlib.sha256(data).hexdigest()
    raise ModelError(f"cannot load a model from {type(src).__name__}; pass a path, bytes or onnx.ModelProto")


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    head = data[:16]
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                        (b"PK\x03\x04", "a zip archive (a .keras file? convert it with 'onnxact convert')"),
                        (b"\x89HDF", "an HDF5 file (a Keras .h5 model? convert it with 'onnxact convert')")):
        if head.startswith(magic):
            raise ModelError(f"{what} is {kind}, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelError(f"{what} is not a valid ONNX model (it may be truncated or another format)") from None
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelError(f"{what} is not a valid ONNX model (no graph found; truncated or another format?)")
    if not _names_are_text(proto.graph) or not all(
        isinstance(p.key, str) and isinstance(p.value, str) for p in proto.metadata_props
    ):
        raise ModelError(f"{what} is not a valid ONNX model (names that are not UTF-8 text; corrupt file?)")
    return proto


def _names_are_text(g: onnx.GraphProto) -> bool:
    """False when a corrupt file left non-UTF-8 bytes in names (protobuf then returns ``bytes``)."""
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if not isinstance(v.name, str):
            return False
    if not all(isinstance(t.name, str) for t in g.initializer):
        return False
    for n in g.node:
        if not all(isinstance(x, str) for x in (n.name, n.op_type, n.domain, *n.input, *n.output)):
            return False
        for a in n.attribute:
            if not isinstance(a.name, str):
                return False
            if a.type == onnx.AttributeProto.GRAPH and not _names_are_text(a.g):
                return False
            if a.type == onnx.AttributeProto.GRAPHS and not all(_names_are_text(sg) for sg in a.graphs):
                return False
    return True


def _tensors(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``g``: initializers, sparse ones, node attributes, subgraphs."""
    yield from g.initializer
    for sp in g.sparse_initializer:
        yield sp.values
        yield sp.indices
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for sg in a.graphs:
                yield from _tensors(sg)


def _external_locations(proto: onnx.ModelProto) -> set[str]:
    locs: set[str] = set()
    for t in _tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locs.add(next((e.value for e in t.external_data if e.key == "location"), ""))
    return locs


def external_data_path(location: str, base: Path, model: str = "the model") -> Path:
    """The file an external-data ``location`` names, refused unless it lies inside ``base``.

    Why onnxact checks itself: a hostile model can name ``/etc/shadow``, ``../../secret`` or a
    link out of its folder as the file holding its weights, and then reveal its bytes through
    the activations; whether onnxruntime refuses depends on its version. Only relative paths
    without ``..`` that resolve (links followed) inside the model's folder are read.
    """
    parts = re.split(r"[\\/]", location)
    if not location or "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\")) \
            or re.match(r"^[A-Za-z]:", location):
        why = "is empty" if not location else "is an absolute path"
    elif ".." in parts:
        why = "climbs out with '..'"
    else:
        real = Path(os.path.realpath(base / location))
        top = Path(os.path.realpath(base))
        if real == top or top not in real.parents:
            why = "leads outside the model's folder through a link"
        else:
            return real
    raise ModelError(f"{model}: the external data location '{location[:120]}' {why}; onnxact reads external "
                     f"weights only from files inside the model's folder {base}")


def read_tensor(t: onnx.TensorProto, base_dir: Path | None, model: str = "the model") -> np.ndarray:
    """A stored tensor as an array, external data read only from ``base_dir`` (the model's folder).

    The one place onnxact reads initializers: ``onnx.numpy_helper.to_array`` without a base
    folder reads external files relative to the *working directory*, so the same model gave
    other weights (or none) depending on where it was run from.
    """
    from onnx import numpy_helper

    if t.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(t)
    if base_dir is None:
        raise ModelError(f"{model} keeps the tensor '{t.name}' in an external data file; load the model by path "
                         "so it can be found")
    info = {e.key: e.value for e in t.external_data}
    path = external_data_path(info.get("location", ""), base_dir, model)
    try:
        offset = int(info.get("offset") or 0)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = int(info["length"]) if info.get("length") else size - offset
            if offset < 0 or length < 0 or offset + length > size:
                raise ModelError(f"{model}: the external data of '{t.name}' lies past the end of {path.name} "
                                 "(truncated file?)")
            f.seek(offset)
            raw = f.read(length)
    except OSError as e:
        raise ModelError(f"{model}: cannot read the external data of '{t.name}' from {path.name}: "
                         f"{e.strerror or e}") from None
    except ValueError:
        raise ModelError(f"{model}: the external data of '{t.name}' has an unreadable offset or length") from None
    inline = onnx.TensorProto()
    inline.CopyFrom(t)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = raw
    try:
        return numpy_helper.to_array(inline)
    except ValueError as e:
        raise ModelError(f"{model}: the external data of '{t.name}' does not fit its shape: {e}") from None


class Model:
    """A loaded ONNX model: inputs, capturable layers, metadata and cached onnxruntime sessions."""

    def __init__(self, src: Any, providers: str | Sequence[str] | None = None, threads: int | None = None) -> None:
        self.threads: int | None = _check_threads(threads)
        proto, path, sha = _read_source(src)
        self.proto: onnx.ModelProto = proto
        self.path: Path | None = path
        self.sha256: str = sha
        self.providers: list[str] = resolve_providers(providers)
        self._sessions: dict[tuple[str, ...], tuple[Any, list[str]]] = {}  # key -> (session, output names)
        self._shaped: dict[tuple[str, str, tuple[int, ...]], LayerInfo] = {}
        self.external_data_dir: Path | None = None
        locs = _external_locations(proto)
        if locs:
            if path is None:
                raise ModelError(
                    "this model keeps its weights in external data files; load it by path so they can be found"
                )
            base = path.parent
            missing = [loc for loc in sorted(locs) if not external_data_path(loc, base, path.name).is_file()]
            if missing:
                raise ModelError(
                    f"external data file '{missing[0]}' of {path.name} is missing; keep it in {base} beside the model"
                )
            self.external_data_dir = base
        self.metadata: dict[str, str] = {p.key: p.value for p in proto.metadata_props}
        self._analyse()

    # -- analysis -------------------------------------------------------------------------------
    def _analyse(self) -> None:
        proto = self.proto
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        except Exception:  # noqa: BLE001 - inference is best effort; layouts then fall back
            inferred = proto
        g = inferred.graph
        self.value_info: dict[str, onnx.ValueInfoProto] = {}
        elem: dict[str, int] = {}
        ranks: dict[str, int] = {}
        shapes: dict[str, tuple[int | str | None, ...] | None] = {}
        for vi in list(g.value_info) + list(g.output) + list(g.input):
            if vi.type.HasField("tensor_type"):
                self.value_info[vi.name] = vi
                elem[vi.name] = vi.type.tensor_type.elem_type
                d = _dims(vi.type)
                shapes[vi.name] = d
                if d is not None:
                    ranks[vi.name] = len(d)
        init_names = {t.name for t in proto.graph.initializer}
        self._producers: dict[str, onnx.NodeProto] = {}
        for node in proto.graph.node:
            for o in node.output:
                if o:
                    self._producers[o] = node
                    elem.setdefault(o, 0)
        # Tensors without inferred type: assume float when produced by float-only ops (Conv, pools...)
        for node in proto.graph.node:
            if node.op_type in graphmod.CONV_OPS + graphmod.POOL_OPS + graphmod.ACTIVATION_OPS:
                for o in node.output[:1]:
                    if o and not elem.get(o) and node.op_type not in ("ConvInteger",):
                        elem[o] = onnx.TensorProto.FLOAT
        self._elem = elem
        self._shapes = shapes
        self.layouts: dict[str, str] = propagate_layouts(proto.graph, ranks)
        self.inputs: list[InputInfo] = []
        for inp in proto.graph.input:
            if inp.name in init_names:
                continue
            d = _dims(inp.type) or ()
            dtype = _ONNX_TO_NP.get(inp.type.tensor_type.elem_type, "unknown")
            self.inputs.append(InputInfo(inp.name, tuple(d), dtype, self.layouts.get(inp.name, "other")))
        self.output_names: list[str] = [o.name for o in proto.graph.output]
        everything, default = graphmod.find_candidates(proto.graph, elem, base_dir=self.external_data_dir, ranks=ranks)
        order = [c.tensor for c in everything]
        named = name_model(proto, order, [(c.tensor, c.op_type) for c in default], self._producers)
        names = named.tensors
        self._aliases: dict[str, str] = named.aliases
        self._name_index: tuple[dict[str, LayerInfo], list[str]] | None = None
        #: the model's own outputs keyed by the framework's names where known (``predictions``)
        self.output_keys: dict[str, str] = output_keys(proto, self._producers, names)
        default_by_tensor = {c.tensor: c for c in default}

        def info(c: graphmod.Candidate, i: int) -> LayerInfo:
            d = default_by_tensor.get(c.tensor, c)
            return LayerInfo(
                name=names.get(c.tensor, c.tensor), tensor=c.tensor, op_type=d.op_type,
                layout=self.layouts.get(c.tensor, "other"), shape=shapes.get(c.tensor),
                activation=d.activation, index=i, node=c.node,
            )

        self.all_layers: list[LayerInfo] = [info(c, i) for i, c in enumerate(everything)]
        by_tensor = {layer.tensor: layer for layer in self.all_layers}
        self.layers: list[LayerInfo] = []
        for i, c in enumerate(default):
            base = by_tensor.get(c.tensor)
            if base is None:  # a ConvInteger/QLinearConv integer output: not a float candidate
                continue
            key, fused = named.layers.get(c.tensor, (base.name, ()))
            self.layers.append(
                LayerInfo(key, base.tensor, c.op_type, base.layout, base.shape, c.activation, i, c.node, fused)
            )
        self.skipped_subgraph_layers: list[str] = graphmod.skipped_subgraph_layers(proto.graph)

    # -- the graph, read-only ---------------------------------------------------------------------
    @property
    def elem_types(self) -> Mapping[str, int]:
        """``{tensor: ONNX element type}`` (``onnx.TensorProto.FLOAT`` ...; 0 where unknown), from
        shape inference, with conv/pool/activation outputs taken as float when inference left them out."""
        return MappingProxyType(self._elem)

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node of the main graph that outputs ``tensor``; None for inputs and initializers."""
        return self._producers.get(tensor)

    # -- metadata -------------------------------------------------------------------------------
    def _meta_json(self, key: str) -> Any:
        raw = self.metadata.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    @property
    def class_names(self) -> list[str] | None:
        """Class names from the converters' metadata (``onnxact.class_names``), else from
        Ultralytics' ``names`` (``"{0: 'person', 1: 'car'}"``); None when there are none or the
        ``names`` string is malformed (``class_names_error`` then says why)."""
        v = self._meta_json("onnxact.class_names")
        if isinstance(v, list):
            return [str(x) for x in v]
        try:
            return parse_names_metadata(self.metadata["names"]) if "names" in self.metadata else None
        except ModelError:
            return None

    @property
    def class_names_error(self) -> str | None:
        """One line on why the ``names`` metadata cannot be read, or None when it can (or is absent)."""
        if isinstance(self._meta_json("onnxact.class_names"), list) or "names" not in self.metadata:
            return None
        try:
            parse_names_metadata(self.metadata["names"])
        except ModelError as e:
            return f"{self.name}: {e}"
        return None

    @property
    def framework(self) -> str | None:
        return self.metadata.get("onnxact.framework")

    @property
    def source_layout(self) -> str | None:
        return self.metadata.get("onnxact.source_layout")

    @property
    def preprocess_defaults(self) -> dict[str, Any]:
        v = self._meta_json("onnxact.preprocess")
        return v if isinstance(v, dict) else {}

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.name
        return self.proto.graph.name or "model"

    def __repr__(self) -> str:
        return f"Model({self.name!r}, inputs={[i.name for i in self.inputs]}, layers={len(self.layers)})"

    # -- layer selection ------------------------------------------------------------------------
    def layer(self, key: str | int) -> LayerInfo:
        """The layer called exactly ``key``: an index into ``layers``, a layer name or an ONNX tensor name.

        Names are matched exactly, never by substring: a default layer's key (a conv read after its
        fused BN / activation), then any tensor's framework name (``all_layers``: the BN or
        activation names a layer lists in ``fused``, a ReLU module ``layer1.0.relu``), then the
        ONNX tensor name. A miss raises ``LayerError`` naming the closest names, and says when
        the exporter folded the layer away.
        """
        if isinstance(key, int) and not isinstance(key, bool):
            try:
                return self.layers[key]
            except IndexError:
                raise LayerError(f"layer index {key} is out of range: the model has {len(self.layers)} layers") from None
        if not isinstance(key, str):
            raise LayerError(f"a layer is named by a string or an index, not {type(key).__name__}")
        idx, names = self._index()
        found = idx.get(key)
        if found is not None:
            return found
        hint = folded_hint(key, self.proto, names)
        near = closest(key, names)
        msg = f"no layer named '{key}' in {self.name}"
        if hint:
            msg += f"; {hint}"
        if near:
            msg += f"; did you mean {', '.join(repr(h) for h in near)}?"
        elif not hint:
            msg += "; see Model.layers (or Model.all_layers) for the names"
        raise LayerError(msg)

    def _index(self) -> tuple[dict[str, LayerInfo], list[str]]:
        """(exact-name index, the framework names in it): layer keys, then tensors' framework names
        and torch containers, then ONNX tensor names. Built on first use."""
        if self._name_index is None:
            idx: dict[str, LayerInfo] = {}
            for layer in self.layers + self.all_layers:
                idx.setdefault(layer.name, layer)
            by_tensor = {layer.tensor: layer for layer in self.all_layers}
            for alias, tensor in self._aliases.items():  # torch containers: their output tensor
                if alias not in idx and tensor in by_tensor:
                    idx[alias] = dataclasses.replace(by_tensor[tensor], name=alias)
            names = list(idx)
            for layer in self.all_layers:
                idx.setdefault(layer.tensor, layer)
            self._name_index = (idx, names)
        return self._name_index

    def select(
        self,
        layer_names: Sequence[str | int] | None = None,
        op_types: Sequence[str] | None = None,
        all_tensors: bool = False,
    ) -> list[LayerInfo]:
        """The layers to capture: the default conv/pool set, or those named, or op-type filtered."""
        if layer_names:
            chosen: list[LayerInfo] = []
            for k in layer_names:
                layer = self.layer(k)
                if layer not in chosen:
                    chosen.append(layer)
            return chosen
        if op_types:
            wanted = {o.lower() for o in op_types}
            known = {layer.op_type.lower() for layer in self.all_layers} | {
                (layer.activation or "").lower() for layer in self.layers
            }
            unknown = [o for o in op_types if o.lower() not in known]
            if unknown and len(unknown) == len(op_types):
                ops = sorted({layer.op_type for layer in self.all_layers})
                raise LayerError(f"no layer has op type {', '.join(unknown)}; op types here: {', '.join(ops)}")
            chosen = [layer for layer in self.layers if layer.op_type.lower() in wanted
                      or (layer.activation or "").lower() in wanted]
            # An op type the default set already covers (Conv -> its post-activation output) is
            # taken from there only; other op types (Add, Gemm, ...) come from all float tensors.
            covered = {layer.op_type.lower() for layer in chosen} | {(layer.activation or "").lower() for layer in chosen}
            taken = {layer.tensor for layer in chosen}
            chosen += [layer for layer in self.all_layers if layer.op_type.lower() in wanted - covered
                       and layer.tensor not in taken]
            chosen.sort(key=lambda layer: self._position(layer.tensor))
            return chosen
        if all_tensors:
            return list(self.all_layers)
        if not self.layers:
            raise LayerError(
                f"{self.name} has no conv or pool layer to capture; pass all_tensors=True "
                "(CLI: --all-tensors) or layer_names=[...] to capture other tensors"
            )
        return list(self.layers)

    def _position(self, tensor: str) -> int:
        if not hasattr(self, "_pos"):
            self._pos = {layer.tensor: i for i, layer in enumerate(self.all_layers)}
        return self._pos.get(tensor, 1 << 30)

    # -- sessions -------------------------------------------------------------------------------
    def build_session(self, proto: onnx.ModelProto, many_outputs: bool = False, *, threads: int | None = None,
                      priority_order: bool = False, what: str | None = None) -> Any:
        """An onnxruntime session for ``proto`` (this model or a rewrite of it), external data handled.

        ``many_outputs``: the graph outputs many maps (promoted layers): the memory pattern is turned
        off. ``threads``: onnxruntime's intra-op threads for this session instead of the model's.
        ``priority_order``: onnxruntime's PRIORITY_BASED execution order (where it has one), which
        follows the node order more closely. ``what``: how an error names the graph (default: the model).
        """
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        threads = threads or self.threads
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        if many_outputs:
            # The memory pattern planner keeps a second copy of every promoted output (a 10-block net
            # at batch 8, every conv/relu/pool output promoted: peak RSS 2100 MB with it, 1179 MB without,
            # same speed).
            so.enable_mem_pattern = False
        order = getattr(getattr(ort, "ExecutionOrder", None), "PRIORITY_BASED", None) if priority_order else None
        if order is not None:
            so.execution_order = order
        if self.external_data_dir is not None:
            so.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(self.external_data_dir)
            )
        try:
            data = proto.SerializeToString()
            return ort.InferenceSession(data, so, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises many types; all mean "cannot run"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"onnxruntime cannot load {what or self.name}: {msg[:300]}") from None

    def session(self, output_tensors: Sequence[str] = ()) -> Any:
        """Cached session whose outputs are the model's own followed by ``output_tensors``."""
        return self._session_entry(tuple(output_tensors))[0]

    def session_outputs(self, output_tensors: Sequence[str] = ()) -> list[str]:
        """The output names of ``session(output_tensors)``, in order (cached with the session).

        Asking onnxruntime for them builds one NodeArg object per output: 0.3 ms at 64 outputs.
        """
        return self._session_entry(tuple(output_tensors))[1]

    def _session_entry(self, key: tuple[str, ...]) -> tuple[Any, list[str]]:
        entry = self._sessions.get(key)
        if entry is None:
            proto = graphmod.expose_outputs(self.proto, key, self.value_info) if key else self.proto
            s = self.build_session(proto, many_outputs=bool(key))
            if len(self._sessions) >= 8:
                self._sessions.pop(next(iter(self._sessions)))
            entry = self._sessions[key] = (s, [o.name for o in s.get_outputs()])
        return entry

    def shaped(self, layer: LayerInfo, shape: tuple[int, ...]) -> LayerInfo:
        """``layer`` with its shape filled in from a captured array (cached: one object per shape).

        Why cached: a model with symbolic dims would otherwise get a fresh record per layer
        per call, ~2 us each, which adds up on small models with many layers.
        """
        key = (layer.name, layer.tensor, shape)  # one tensor may be two records (a layer and its ReLU's name)
        info = self._shaped.get(key)
        if info is None:
            if len(self._shaped) > 4096:
                self._shaped.clear()
            static = layer.shape is not None and len(layer.shape) == len(shape) and all(
                isinstance(d, int) for d in layer.shape)
            info = self._shaped[key] = layer if static else dataclasses.replace(layer, shape=shape)
        return info


_MAX_NAMES_TEXT = 1 << 20  # a names string of a million characters is no class list; refuse before parsing


def parse_names_metadata(text: str) -> list[str]:
    """Class names from Ultralytics' ``names`` metadata: a Python dict literal ``{0: 'person', ...}``
    (or a list literal), read with ``ast.literal_eval``, never ``eval`` (the model file may be
    hostile). Keys must be the indices 0..n-1; raises ``ModelError`` (one line) otherwise."""
    import ast

    fix = "; fix the model's 'names' metadata or pass the names with --labels FILE"
    if len(text) > _MAX_NAMES_TEXT:
        raise ModelError(f"metadata 'names' is {len(text)} characters long, too long for a class list{fix}")
    try:
        v = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ModelError(f"metadata 'names' is not a Python dict literal like {{0: 'person', 1: 'car'}} "
                         f"(it starts {text[:40]!r}){fix}") from None
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    if not isinstance(v, dict) or not v:
        raise ModelError(f"metadata 'names' must map class indices to names, like {{0: 'person'}}, "
                         f"not a {type(v).__name__}{fix}")
    try:
        keys = sorted(int(k) for k in v)
    except (TypeError, ValueError):
        raise ModelError(f"metadata 'names' has keys that are not class indices (0, 1, ...){fix}") from None
    if keys != list(range(len(keys))):
        raise ModelError(f"metadata 'names' must number the classes 0..{len(keys) - 1} with no gap; "
                         f"it has {keys[:4]}...{fix}")
    by_index = {int(k): str(name) for k, name in v.items()}
    return [by_index[i] for i in range(len(keys))]


def load(src: Any, providers: str | Sequence[str] | None = None, threads: int | None = None) -> Model:
    """Load an ONNX model from a path, bytes or ``onnx.ModelProto`` (a ``Model`` is returned as is).

    External data files are read from the model's folder by onnxruntime, never into memory here,
    so a model over 2 GB loads by path. ``threads`` caps onnxruntime's intra-op threads (default:
    onnxruntime's own choice, one per core); on tiny models one thread can be faster, since
    waking a pool for each small op costs more than the op.
    """
    if isinstance(src, Model):
        return src
    return Model(src, providers=providers, threads=threads)


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"threads must be a whole number of at least 1 (leave it unset for onnxruntime's default), "
                         f"not {threads!r}")
    return int(threads)


def dtype_of(name: str) -> np.dtype:
    return np.dtype(name) if name not in ("bfloat16", "str", "unknown") else np.dtype("float32")
