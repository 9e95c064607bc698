"""PyTorch -> ONNX with ``named_modules()`` names recorded per ONNX tensor.

Why verify numerically: both exporters fold BatchNorm into the preceding Conv in eval mode, and
they label the folded tensor differently (the legacy exporter keeps the Conv's scope on the
post-BN value, dynamo labels it with the BN module). We run forward hooks and onnxruntime once
on the example input and give a module's name only to the ONNX tensor that holds that module's
output, so a name never points at the wrong values.

Names: a module called once is keyed by its ``named_modules()`` name (``layer1.0.conv1``); a module
called several times (a ReLU reused in a block) is keyed by its name for the first call and
``name:2``, ``name:3`` ... for later calls. Leaf modules win over containers; a container gets a
tensor only when no child holds the same value (e.g. a block ending in a functional ``relu``).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import re
from collections import defaultdict
from typing import Any

import numpy as np

from onnxact.errors import ConversionError, DependencyError, InputError

from .metadata import arrays_match, set_metadata, tensor_values
from .quiet import quietly

__all__ = ["from_torch", "torch_module_outputs", "torch_layer_tensor_names"]

_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Cast"}
_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise DependencyError(
            f"PyTorch conversion needs torch ({e}); install it with: pip install 'onnxact[torch]'"
        ) from None
    return torch


def _one_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _as_tuple(example_input) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def torch_module_outputs(module, example_input) -> list[tuple[str, np.ndarray]]:
    """Forward hooks on every named submodule: ``[(key, output)]`` in call order, keyed as documented above."""
    torch = _import_torch()
    calls: list[tuple[str, Any]] = []
    hooks = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, name=name):
            if isinstance(out, torch.Tensor):
                calls.append((name, out.detach().cpu().numpy().copy()))

        hooks.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*_as_tuple(example_input))
    finally:
        for h in hooks:
            h.remove()
    counts: dict[str, int] = defaultdict(int)
    keyed = []
    for name, arr in calls:
        counts[name] += 1
        keyed.append((name if counts[name] == 1 else f"{name}:{counts[name]}", arr))
    return keyed


def _node_scope(node, modules: set[str]) -> str | None:
    """The deepest module a node was created in: dynamo metadata, else the legacy node-name path."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                scopes = []
            found = [s for s in scopes if s in modules]
            return found[-1] if found else ""
    if not node.name.startswith("/"):
        return None
    parts = node.name.strip("/").split("/")[:-1]
    qual = ""
    for c in parts:
        m = _SUFFIX.match(c)  # the n-th call of a module: relu_1
        found = None
        for comp in (c, m.group(1) if m else None):
            if comp is None:
                continue
            last = qual.rsplit(".", 1)[-1]
            cands = [f"{qual}.{comp}" if qual else comp, comp]
            if qual and comp.startswith(last + "."):  # Sequential children: "/stem/stem.0", "/downsample/downsample.0"
                cands.insert(0, qual + comp[len(last):])
            found = next((k for k in cands if k in modules), None)
            if found:
                break
        if found is None:
            break
        qual = found
    return qual


def torch_layer_tensor_names(module, example_input, proto) -> dict[str, str]:
    """``{onnx tensor: module key}`` verified by value; unclaimed tensors of a module scope get ``module/tensor``."""
    names_children = {n: list(m.children()) for n, m in module.named_modules()}
    modules = {n for n in names_children if n}
    graph = proto.graph
    init = {t.name for t in graph.initializer}
    by_scope: dict[str, list[tuple[Any, str]]] = defaultdict(list)
    order: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        scope = _node_scope(node, modules)
        for t in node.output:
            if t and t not in init:
                by_scope[scope or ""].append((node, t))
                order[t] = len(order)
    calls = torch_module_outputs(module, example_input)
    x = _as_tuple(example_input)
    feeds = {i.name: np.asarray(v.detach().cpu().numpy()) for i, v in zip(graph.input, x)}
    values = tensor_values(proto, feeds, list(order))

    def subtree(scope: str) -> list[tuple[Any, str]]:
        items = [it for s, its in by_scope.items() if s == scope or (s or "").startswith(scope + ".") or not scope
                 for it in its]
        return sorted(items, key=lambda it: order[it[1]])

    def ranked(items):
        return [it for it in reversed(items) if it[0].op_type not in _LAYOUT_OPS] + \
               [it for it in reversed(items) if it[0].op_type in _LAYOUT_OPS]

    def base(key: str) -> str:
        return key.split(":")[0]

    def depth(key: str) -> int:
        return base(key).count(".")

    def claim(key: str, ref: np.ndarray, items) -> bool:
        hit = next((t for _n, t in ranked(items) if t not in claimed and arrays_match(values[t], ref)), None)
        if hit is not None:
            claimed[hit] = key
        return hit is not None

    claimed: dict[str, str] = {}
    leaves = [(k, r) for k, r in calls if not names_children[base(k)]]
    containers = sorted(((k, r) for k, r in calls if names_children[base(k)]), key=lambda kv: -depth(kv[0]))
    # 1. a leaf module's value in its own scope
    unmatched = [(k, r) for k, r in leaves if not claim(k, r, by_scope.get(base(k), []))]
    # 2. folded layers: the value lives in a sibling's scope (legacy Conv+BN keeps the Conv's name)
    for k, r in unmatched:
        claim(k, r, subtree(base(k).rpartition(".")[0]))
    # 3. containers, only for values no child holds (e.g. a block ending in a functional relu)
    for k, r in containers:
        claim(k, r, subtree(base(k)))
    names = dict(claimed)
    used = set(names.values())
    for scope, items in by_scope.items():
        if not scope:
            continue
        for node, t in items:
            if t in names or not np.issubdtype(values[t].dtype, np.floating):
                continue
            part = node.name.rsplit("/", 1)[-1] if node.name.startswith("/") else t
            name = f"{scope}/{part}"
            while name in used:
                name += "_"
            used.add(name)
            names[t] = name
    return dict(sorted(names.items(), key=lambda kv: order[kv[0]]))


@quietly
def from_torch(
    module: Any,
    example_input: Any,
    path: str | os.PathLike | None = None,
    exporter: str = "dynamo",
    keep_batchnorm: bool = False,
    *,
    opset: int | None = None,
    class_names: list[str] | None = None,
    preprocess: dict | None = None,
    dynamic_batch: bool = False,
    output_names: list[str] | None = None,
):
    """Convert a ``torch.nn.Module`` to ONNX; returns the ``onnx.ModelProto`` (also written to ``path``).

    The module is exported in eval mode (its training flag is restored afterwards) with
    ``torch.onnx.export``: ``exporter="dynamo"`` (the default in torch 2.13) or ``"legacy"``
    (TorchScript tracing). ``example_input`` is a tensor or a tuple of tensors.

    Module names are recorded in the metadata (``onnxact.layer_names``) so that
    ``get_activations(..., output_format="simple")`` keys are ``named_modules()`` names, as a
    forward hook would key them; a module called several times gets ``name``, ``name:2``, ...
    Each name is given only to the ONNX tensor verified (by running hooks and onnxruntime on
    ``example_input``) to hold that module's output.

    **BatchNorm folding.** In eval mode both exporters fold a BatchNorm into the Conv before it:
    one Conv remains whose output is the BatchNorm's output, so that tensor is keyed by the BN
    module and the Conv module has no key of its own (the legacy exporter even names the node
    after the Conv; the value check above puts the right name on it). With
    ``keep_batchnorm=True`` the export skips those optimisations (``do_constant_folding=False``
    for legacy, ``optimize=False`` for dynamo), BN stays a node of its own, and every Conv, BN
    and ReLU module has a key.

    ``output_names`` names the graph outputs (``["predictions"]``); onnxact keys the model's
    own outputs (``Activations.outputs``) by them.
    """
    torch = _import_torch()
    import onnx

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if exporter not in ("dynamo", "legacy"):
        raise InputError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    args = _as_tuple(example_input)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise InputError("example_input must be a torch.Tensor or a tuple of tensors")
    was_training = module.training
    module.eval()
    try:
        try:
            params = list(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError):
            params = []
        input_names = params[: len(args)] if len(params) >= len(args) else [f"input_{i}" for i in range(len(args))]
        kw: dict[str, Any] = {"input_names": input_names, "verbose": False}
        if opset is not None:
            kw["opset_version"] = opset
        if output_names:
            kw["output_names"] = list(output_names)
        if dynamic_batch:
            kw["dynamic_axes"] = {n: {0: "batch"} for n in input_names}
        if exporter == "legacy":
            kw.update(dynamo=False, do_constant_folding=not keep_batchnorm)
        else:
            kw.update(dynamo=True, optimize=not keep_batchnorm)
        buf = io.BytesIO()
        # the exporters print graphs and progress on stdout; their known noise on stderr is
        # filtered by @quietly (converters/quiet.py), so a real warning (a TracerWarning) still shows
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                if exporter == "dynamo":
                    prog = torch.onnx.export(module, args, **kw)
                    prog.save(buf) if hasattr(prog, "save") else buf.write(prog.model_proto.SerializeToString())
                else:
                    torch.onnx.export(module, args, buf, **kw)
            except Exception as e:  # noqa: BLE001 - the exporter rejects this module or input
                raise ConversionError(f"torch.onnx.export ({exporter}) failed: {_one_line(e)}") from None
        proto = onnx.load_from_string(buf.getvalue())
        names = torch_layer_tensor_names(module, args, proto)
    finally:
        module.train(was_training)
    layout = "NCHW" if any(a.ndim >= 3 for a in args) else None
    set_metadata(proto, framework="torch", layer_names=names, source_layout=layout,
                 class_names=class_names, preprocess=preprocess)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto
