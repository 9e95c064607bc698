"""Activations and biases written as several ops are read as part of the conv layer.

HardSwish without the op (x * HardSigmoid(x), Paddle's x * Clip(x + 3, 0, 6) / 6), Swish with a
constant beta, and a bias or affine written as separate Add/Mul ops of constants (Paddle exports):
checked on built graphs, on torch.onnx's opset-13 export against a forward hook, and on the
rapidocr models against independent onnxruntime runs."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxact

from . import subjects


def _net(tail: str, three: float = 3.0, six: float = 6.0) -> onnx.ModelProto:
    """Conv -> one HardSwish spelling -> AveragePool."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(three), "three"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.float32(six), "six"), numpy_helper.from_array(np.float32(1 / six), "sixth")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    if tail == "hardsigmoid":
        nodes += [helper.make_node("HardSigmoid", ["c"], ["g"], alpha=1 / six, beta=0.5, name="hs"),
                  helper.make_node("Mul", ["c", "g"], ["act"], name="mul")]
    else:
        nodes += [helper.make_node("Add", ["c", "three"], ["p"], name="add"),
                  helper.make_node("Clip", ["p", "zero", "six"], ["r"], name="clip")]
        if tail == "mul_div":
            nodes += [helper.make_node("Mul", ["c", "r"], ["m"], name="mul"),
                      helper.make_node("Div", ["m", "six"], ["act"], name="div")]
        elif tail == "mul_sixth":
            nodes += [helper.make_node("Mul", ["c", "r"], ["m"], name="mul"),
                      helper.make_node("Mul", ["m", "sixth"], ["act"], name="scale")]
        else:  # div_mul: Clip / 6 first, then x * that
            nodes += [helper.make_node("Div", ["r", "six"], ["q"], name="div"),
                      helper.make_node("Mul", ["c", "q"], ["act"], name="mul")]
    nodes.append(helper.make_node("AveragePool", ["act"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool"))
    g = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("tail", ["hardsigmoid", "mul_div", "mul_sixth", "div_mul"])
def test_decomposed_hardswish_is_the_conv_layers_activation(tail):
    m = onnxact.load(_net(tail))
    assert [(lay.tensor, lay.op_type, lay.activation) for lay in m.layers] == [
        ("act", "Conv", "HardSwish"), ("y", "AveragePool", None)]
    x = np.random.default_rng(1).normal(0, 2, (1, 3, 8, 8)).astype(np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    conv = onnxact.get_activations(m, x, layer_names=["c"], output_format="full")["c"]
    np.testing.assert_allclose(acts["act"], conv * np.clip(conv + 3, 0, 6) / 6, rtol=1e-5, atol=1e-6)
    assert (conv < -3).any() and (conv > 3).any()  # both saturated ends are exercised


@pytest.mark.parametrize("three,six", [(2.0, 6.0), (3.0, 5.0)])
def test_lookalikes_with_other_constants_are_not_taken_for_hardswish(three, six):
    m = onnxact.load(_net("mul_div", three=three, six=six))
    assert [(lay.tensor, lay.activation) for lay in m.layers] == [("c", None), ("y", None)]


def test_torch_hardswish_exported_at_opset_13_matches_the_hook():
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Hardswish(), nn.MaxPool2d(2)).eval()
    x = torch.randn(2, 3, 12, 12) * 3
    seen = {}
    net[1].register_forward_hook(lambda _m, _i, o: seen.__setitem__("hs", o.detach().numpy()))
    with torch.no_grad():
        net(x)
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=13, input_names=["x"])
    m = onnxact.load(buf.getvalue())
    assert "HardSwish" not in {n.op_type for n in m.proto.graph.node}  # written as x * HardSigmoid(x)
    assert [(lay.op_type, lay.activation) for lay in m.layers] == [("Conv", "HardSwish"), ("MaxPool", None)]
    acts = onnxact.get_activations(m, x.numpy())
    np.testing.assert_allclose(acts[m.layers[0].name], seen["hs"], rtol=1e-4, atol=1e-5)


def test_rapidocr_cls_layers_are_read_after_paddles_hardswish():
    path = subjects.rapidocr_models()["cls"]
    m = onnxact.load(path)
    hs = [lay for lay in m.layers if lay.activation == "HardSwish"]
    assert len(hs) >= 10
    x = np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    # Independent run: promote the input of each HardSwish pattern (the BN output) one at a time
    # with plain onnxruntime and apply x * relu6(x + 3) / 6 in numpy.
    g = m.proto.graph
    producer = {o: n for n in g.node for o in n.output}
    for lay in hs[:4]:
        end = producer[lay.tensor]
        mul = end if end.op_type == "Mul" and any(producer.get(i) is not None and producer[i].op_type in ("Clip", "Div")
                                                   for i in end.input) else producer[end.input[0]]
        pre = next(i for i in mul.input if producer.get(i) is not None and producer[i].op_type not in ("Clip", "Div"))
        proto = onnx.load(str(path))
        proto.graph.output.append(onnx.ValueInfoProto(name=pre))
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        (v,) = sess.run([pre], {m.inputs[0].name: x})
        np.testing.assert_allclose(acts[lay.tensor], v * np.clip(v + 3, 0, 6) / 6, rtol=1e-4, atol=1e-5,
                                   err_msg=lay.name)


def _bias_net(bias_from_reshape: bool = True, residual: bool = False, affine: bool = False) -> onnx.ModelProto:
    """Conv without bias -> Add(bias) [-> Mul(s) -> Add(b)] -> Relu -> MaxPool, as Paddle writes it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, (4,)).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "bshape"),
             numpy_helper.from_array(np.float32(0.7), "s"), numpy_helper.from_array(np.float32(-0.2), "b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    if bias_from_reshape:
        nodes.append(helper.make_node("Reshape", ["bias", "bshape"], ["bias4"], name="reshape_bias"))
    nodes.append(helper.make_node("Add", ["c", "bias4" if bias_from_reshape else "x"], ["cb"], name="add_bias"))
    cur = "cb"
    if affine:
        nodes += [helper.make_node("Mul", ["s", cur], ["sc"], name="lab_scale"),
                  helper.make_node("Add", ["sc", "b"], ["af"], name="lab_bias")]
        cur = "af"
    if residual:
        nodes.append(helper.make_node("Add", [cur, "x"], ["res"], name="residual"))
        cur = "res"
    nodes += [helper.make_node("Relu", [cur], ["r"], name="relu"),
              helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    xshape = [1, 3, 8, 8] if not (residual or not bias_from_reshape) else [1, 4, 8, 8]
    if residual or not bias_from_reshape:
        inits[0] = numpy_helper.from_array(rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(nodes, "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("affine", [False, True])
def test_a_bias_or_affine_of_constants_between_conv_and_relu_is_part_of_the_layer(affine):
    m = onnxact.load(_bias_net(affine=affine))
    assert [(lay.tensor, lay.op_type, lay.activation) for lay in m.layers] == [
        ("r", "Conv", "Relu"), ("y", "MaxPool", None)]
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    got = onnxact.get_activations(m, x, output_format="full")["r"]
    c = onnxact.get_activations(m, x, layer_names=["c"], output_format="full")["c"]
    pre = c + numpy_helper.to_array(m.proto.graph.initializer[1]).reshape(1, 4, 1, 1)
    if affine:
        pre = 0.7 * pre - 0.2
    np.testing.assert_allclose(got, np.maximum(pre, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("residual,bias_from_reshape,tensor", [(True, True, "cb"), (False, False, "c")])
def test_adding_a_computed_tensor_is_not_a_bias(residual, bias_from_reshape, tensor):
    # conv + bias, then a residual add before the Relu: the layer is the biased conv output;
    # conv + the input itself: no bias at all, the layer is the conv output.
    m = onnxact.load(_bias_net(bias_from_reshape=bias_from_reshape, residual=residual))
    assert m.layers[0].tensor == tensor and m.layers[0].activation is None


def test_swish_with_a_constant_beta_is_silu():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(1.5), "beta")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "beta"], ["bc"]), helper.make_node("Sigmoid", ["bc"], ["g"]),
             helper.make_node("Mul", ["c", "g"], ["sw"]),
             helper.make_node("GlobalAveragePool", ["sw"], ["y"])]
    g = helper.make_graph(nodes, "swish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    m = onnxact.load(proto)
    assert [(lay.tensor, lay.activation) for lay in m.layers] == [("sw", "SiLU"), ("y", None)]
    x = rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    c = onnxact.get_activations(m, x, layer_names=["c"], output_format="full")["c"]
    np.testing.assert_allclose(onnxact.get_activations(m, x, output_format="full")["sw"],
                               c / (1 + np.exp(-1.5 * c)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", ["det", "rec"])
def test_rapidocr_lcnet_layers_are_read_after_their_affine_and_hardswish(key):
    m = onnxact.load(subjects.rapidocr_models()[key])
    acts = {lay.activation for lay in m.layers}
    assert sum(lay.activation == "HardSwish" for lay in m.layers) >= 20
    assert "Relu" in acts
