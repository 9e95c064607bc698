"""Keras -> ONNX with the Keras layer names recorded per ONNX tensor.

Why verify numerically: Keras 3's ONNX export (tf2onnx underneath) names nodes after the layer
scope that created them (``{model}_1/{layer}_1/Relu``), but its optimiser folds BatchNormalization
into the preceding conv and leaves parts of a layer (a SeparableConv2D's depthwise half) in a scope
whose final value is gone. A name alone can therefore point at the wrong values. We run Keras and
onnxruntime once on a random input at conversion time and record a layer name only for the ONNX
tensor that really holds that layer's output; other tensors of a layer's scope get a
``layer/part`` name so they can't be mistaken for the layer.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onnxact.errors import ConversionError, DependencyError, InputError

from .metadata import arrays_match, cancel_transpose_pairs, remove_dead_nodes, set_metadata, tensor_values
from .quiet import framework_quiet, import_tensorflow, quietly

__all__ = ["from_keras", "load_keras_model"]

#: ops that only move or relabel values; a layer's own tensor is preferably not one of them
_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Cast"}


def _import_keras():
    try:
        import_tensorflow()
        import keras
    except ImportError as e:
        raise DependencyError(
            f"Keras conversion needs tensorflow and keras ({e}); install them with: pip install 'onnxact[keras]'"
        ) from None
    return keras


def _tf_keras():
    """The legacy tf-keras package when installed (Keras 2 API), else None."""
    try:
        import_tensorflow()
        with framework_quiet():
            import tf_keras
    except ImportError:
        return None
    return tf_keras


def _family(model):
    """The Keras package a model belongs to: keras (3) or tf_keras."""
    tfk = _tf_keras()
    if tfk is not None and isinstance(model, tfk.Model):
        return tfk
    return _import_keras()


@quietly
def load_keras_model(src: Any):
    """A Keras model from a model object, a ``.keras`` / ``.h5`` / ``.hdf5`` file or a SavedModel folder."""
    keras = _import_keras()
    tfk = _tf_keras()
    if isinstance(src, keras.Model) or (tfk is not None and isinstance(src, tfk.Model)):
        return src
    if not isinstance(src, (str, os.PathLike)):
        raise InputError(f"expected a Keras model or a path to a Keras file, got {type(src).__name__}")
    p = Path(src)
    if not p.exists():
        raise InputError(f"Keras model not found: {p}")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise InputError(f"{p} is a folder but not a SavedModel (no saved_model.pb inside)")
        try:
            layer = keras.layers.TFSMLayer(str(p), call_endpoint="serving_default")
        except Exception as e:  # noqa: BLE001 - any load failure is the user's file
            raise ConversionError(f"can't load the SavedModel {p}: {_one_line(e)}") from None
        return layer
    if p.suffix.lower() not in {".keras", ".h5", ".hdf5"}:
        raise InputError(f"{p} is not a Keras file (expected .keras, .h5, .hdf5 or a SavedModel folder)")
    try:
        return keras.models.load_model(str(p), compile=False)
    except Exception as e:  # noqa: BLE001
        if tfk is not None and p.suffix.lower() in {".h5", ".hdf5"}:  # an old Keras 2 file: try tf-keras
            try:
                return tfk.models.load_model(str(p), compile=False)
            except Exception:  # noqa: BLE001, S110 - report the Keras 3 error below
                pass
        raise ConversionError(f"can't load the Keras model {p}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _input_specs(model) -> list[tuple[str, tuple[int, ...], str]]:
    specs = []
    for t in model.inputs:
        shape = tuple(1 if (d is None and i == 0) else d for i, d in enumerate(t.shape))
        if any(d is None for d in shape):
            # dynamic spatial dims: pick a moderate size for the verification run
            shape = tuple(32 if d is None else d for d in shape)
        dtype = getattr(t, "dtype", "float32")
        specs.append((t.name, shape, str(getattr(dtype, "name", dtype))))  # tf-keras: a tf.DType
    return specs


def _random_inputs(model, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = []
    for _name, shape, dtype in _input_specs(model):
        if "int" in dtype:
            xs.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            xs.append(rng.uniform(0, 1, shape).astype(dtype if "float" in dtype else "float32"))
    return xs


def _ensure_called(model) -> None:
    """Keras 3 refuses to export a model that was never called; call it once on zeros."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError(
            f"the Keras model {model.name!r} has no defined input; build it with keras.Input(...) or call it "
            "on an example batch before converting"
        )
    zeros = [np.zeros(s, dtype="float32" if "float" in d else d) for _, s, d in _input_specs(model)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(zeros if len(zeros) > 1 else zeros[0], training=False)


def _layers_with_output(model) -> list:
    out = []
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        try:
            o = layer.output
        except (AttributeError, ValueError):  # shared layers have no single output
            continue
        if isinstance(o, (list, tuple)):
            continue
        out.append(layer)
    return out


def _export(model, opset: int | None, keep_batchnorm: bool):
    import onnx

    keras = _family(model)
    export_model = model
    n_outputs = len(model.outputs)
    if keep_batchnorm:
        # Every layer output becomes a graph output of the export, so tf2onnx can't fuse a
        # layer's value away (BN into conv); the extra outputs are removed again below.
        layers = _layers_with_output(model)
        export_model = keras.Model(model.inputs, list(model.outputs) + [la.output for la in layers], name=model.name)
        _ensure_called(export_model)
    with tempfile.TemporaryDirectory() as tmp:
        f = os.path.join(tmp, "model.onnx")
        try:
            if keras is _import_keras():
                export_model.export(f, format="onnx", verbose=False, opset_version=opset)
            else:  # tf-keras: tf2onnx's own Keras path (it fails on Keras 3, hence model.export above)
                import tensorflow as tf
                import tf2onnx

                sig = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name.split(":")[0])
                       for t in export_model.inputs]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tf2onnx.convert.from_keras(export_model, input_signature=sig, opset=opset, output_path=f)
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"Keras ONNX export of {model.name!r} failed: {_one_line(e)}") from None
        proto = onnx.load(f)
    if keep_batchnorm:
        del proto.graph.output[n_outputs:]
        remove_dead_nodes(proto.graph)
        cancel_transpose_pairs(proto.graph)
    return proto


def _scope_resolver(model_name: str, layer_names: set[str]):
    """Map a node name ``{model}_1/{layer}_1/...`` (Keras 3) or ``{model}/{layer}/...`` (tf_keras) to (layer, rest)."""
    suffixed = re.compile(r"^(.*)_\d+$")

    def resolve(node_name: str) -> tuple[str, str] | None:
        parts = node_name.split("/")
        if len(parts) < 2:
            return None
        first = parts[0]
        if first != model_name and not (suffixed.match(first) and suffixed.match(first).group(1) == model_name):
            return None
        comp = parts[1]
        m = suffixed.match(comp)
        if m and m.group(1) in layer_names and first != model_name:
            layer = m.group(1)
        elif comp in layer_names:
            layer = comp
        elif m and m.group(1) in layer_names:
            layer = m.group(1)
        else:
            return None
        return layer, "/".join(parts[2:])

    return resolve


def keras_layer_tensor_names(model, proto, verify: bool = True) -> dict[str, str]:
    """``{onnx tensor: name}``: Keras layer names for tensors verified to hold the layer's output,
    ``layer/part`` names for the other tensors created inside a layer's scope."""
    layers = _layers_with_output(model)
    resolve = _scope_resolver(model.name, {la.name for la in model.layers})
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    by_layer: dict[str, list[tuple[Any, str, str]]] = {}  # layer -> [(node, tensor, rest)] in graph order
    unscoped: list[tuple[Any, str, str]] = []  # nodes tf2onnx made up (a Conv+BN fusion is named "Conv__37")
    order = {t: i for i, n in enumerate(graph.node) for t in n.output}
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        r = resolve(node.name)
        if r is None:
            unscoped.extend((node, t, "") for t in node.output if t and t not in initializers)
            continue
        layer, rest = r
        for k, t in enumerate(node.output):
            if t and t not in initializers:
                by_layer.setdefault(layer, []).append((node, t, rest if len(node.output) == 1 else f"{rest}:{k}"))

    chosen: dict[str, str] = {}  # tensor -> layer
    if verify and layers:
        keras = _family(model)
        xs = _random_inputs(model)
        ref_model = keras.Model(model.inputs, [la.output for la in layers])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs = ref_model(xs if len(xs) > 1 else xs[0], training=False)
        refs = [np.asarray(r) for r in (refs if isinstance(refs, (list, tuple)) else [refs])]
        feeds = {i.name: x for i, x in zip(graph.input, xs)}
        all_tensors = [t for items in by_layer.values() for _, t, _ in items] + [t for _, t, _ in unscoped]
        values = tensor_values(proto, feeds, all_tensors)

        def claim(layer, ref, items) -> bool:
            ordered = [it for it in reversed(items) if it[0].op_type not in _LAYOUT_OPS]
            ordered += [it for it in reversed(items) if it[0].op_type in _LAYOUT_OPS]
            for _node, t, _rest in ordered:
                if t not in chosen and t in values and arrays_match(values[t], ref):
                    chosen[t] = layer.name
                    return True
            return False

        # a layer's value in its own scope first, else in a node tf2onnx created outside any scope
        # ("Conv__37") or fused into another layer's node (tf-keras: Conv+BN keeps the Conv's node name)
        unmatched = [(la, r) for la, r in zip(layers, refs) if not claim(la, r, by_layer.get(la.name, []))]
        anywhere = sorted(unscoped + [it for items in by_layer.values() for it in items], key=lambda it: order[it[1]])
        for la, r in unmatched:
            claim(la, r, anywhere)
    else:  # no functional graph: the last non-layout tensor of each layer scope
        for layer, items in by_layer.items():
            ordered = [it for it in reversed(items) if it[0].op_type not in _LAYOUT_OPS] or list(reversed(items))
            if ordered:
                chosen[ordered[0][1]] = layer

    names: dict[str, str] = dict(chosen)
    used = set(chosen.values())
    for layer, items in by_layer.items():
        for _node, t, rest in items:
            if t in chosen:
                names[t] = chosen[t]
                continue
            base = f"{layer}/{rest}" if rest else f"{layer}/part"
            name, k = base, 1
            while name in used:
                k += 1
                name = f"{base}_{k}"
            used.add(name)
            names[t] = name
    return names


@quietly
def from_keras(
    model_or_path: Any,
    path: str | os.PathLike | None = None,
    opset: int | None = None,
    keep_batchnorm: bool = False,
    *,
    class_names: list[str] | None = None,
    preprocess: dict | None = None,
    verify: bool = True,
):
    """Convert a Keras model (object, ``.keras`` / ``.h5`` file or SavedModel folder) to ONNX.

    Returns the ``onnx.ModelProto`` and, when ``path`` is given, also writes it there.

    The Keras layer names are recorded in the metadata (``onnxact.layer_names``) so that
    ``onnxact.get_activations(..., output_format="simple")`` keys are exactly Keras layer names;
    the source layout (channels-last, ``NHWC``) is recorded too, so ``layout="source"`` returns
    arrays shaped like Keras' own. A name is recorded only for the ONNX tensor verified (on a
    random input, at conversion time) to hold that layer's output; other tensors made inside a
    layer get ``"layer/part"`` names. ``verify=False`` skips the check and names the last tensor
    of each layer's scope.

    **BatchNormalization folding.** The export (Keras 3's own ``model.export(format="onnx")``,
    tf2onnx underneath) folds each BatchNormalization, which Keras lowers to a multiply and an
    add, into the preceding convolution: a ``Conv2D`` (or ``SeparableConv2D``) followed by
    ``BatchNormalization`` becomes one Conv whose output is the BN layer's output, and the conv
    layer's own output no longer exists (for ``SeparableConv2D`` only its depthwise half survives,
    named ``"layer/separable_conv2d/depthwise"``). Those conv layers then simply have no key.
    With ``keep_batchnorm=True`` every layer's output is kept as a tensor of its own (the export
    is made with every layer as an output, which blocks the fusions, then those extra outputs are
    removed), so every layer name can be captured, at some cost in speed.

    ``class_names`` and ``preprocess`` (e.g. ``{"normalize": "0-1"}``) are written to the
    metadata when given. Keras 3 refuses to export a model that has never been called, so the
    model is called once on zeros first.
    """
    import onnx

    model = load_keras_model(model_or_path)
    keras = _import_keras()
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model) and _family(model) is keras:
        return _from_savedmodel_layer(model, model_or_path, path, opset, class_names, preprocess)
    _ensure_called(model)
    proto = _export(model, opset, keep_batchnorm)
    try:
        names = keras_layer_tensor_names(model, proto, verify=verify)
    except Exception as e:  # noqa: BLE001 - e.g. a subclassed model without a functional graph
        if not verify:
            raise
        names = keras_layer_tensor_names(model, proto, verify=False)
        import logging

        logging.getLogger(__name__).info("layer-name check skipped: %s", _one_line(e))
    layout = "NHWC" if any(len(t.shape) >= 3 for t in model.inputs) else None
    set_metadata(proto, framework="keras", layer_names=names, source_layout=layout,
                 class_names=class_names, preprocess=preprocess)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _from_savedmodel_layer(layer, src, path, opset, class_names, preprocess):
    """A SavedModel folder: convert its serving signature with tf2onnx (no Keras layer names)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(os.fspath(src))
    fn = loaded.signatures.get("serving_default")
    if fn is None:
        raise ConversionError(f"the SavedModel {src} has no 'serving_default' signature")
    sig = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in fn.structured_input_signature[1].items()]
    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda *a: fn(**{s.name: x for s, x in zip(sig, a)})),
                                                 input_signature=sig, opset=opset)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"tf2onnx could not convert the SavedModel {src}: {_one_line(e)}") from None
    set_metadata(proto, framework="keras", source_layout="NHWC", class_names=class_names, preprocess=preprocess)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto
