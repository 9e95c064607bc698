"""Layout propagation through Keras-style Transposes, and framework names."""

from __future__ import annotations

import json

import numpy as np
import onnx

import onnxact
from onnxact.naming import closest, keras_layer_from_tensor, torch_module_from_node
from tests import tiny


def test_keras_style_nhwc_input_conv_layers_are_nchw():
    m = onnxact.load(tiny.conv_net(nhwc=True))
    assert m.inputs[0].layout == "NHWC"
    assert m.layouts["to_nchw"] == "NCHW"
    assert all(lay.layout == "NCHW" for lay in m.layers)
    assert m.layouts["flat"] == "NC"


def test_square_ambiguous_shape_follows_the_graph_not_the_shape():
    # 3 channels and width 3: shape alone can't tell; the graph can.
    proto = tiny.conv_net(size=16, nhwc=True)
    m = onnxact.load(proto)
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    acts = onnxact.get_activations(m, x, output_format="full")
    assert acts.layers["relu0"].layout == "NCHW" and acts["relu0"].shape == (1, 4, 16, 16)


def test_layout_source_returns_channels_last_when_the_source_was():
    proto = tiny.conv_net(nhwc=True)
    proto.metadata_props.add(key="onnxact.source_layout", value="NHWC")
    x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    onnx_layout = onnxact.get_activations(proto, x, output_format="full")
    source = onnxact.get_activations(proto, x, output_format="full", layout="source")
    assert source["relu0"].shape == (1, 16, 16, 4) and source.layers["relu0"].layout == "NHWC"
    np.testing.assert_array_equal(source["relu0"], onnx_layout["relu0"].transpose(0, 2, 3, 1))


def test_recorded_layer_names_win():
    proto = tiny.conv_net()
    names = {"relu0": "conv_a", "pool0": "pool_a", "relu1": "conv_b", "pool1": "pool_b", "gap": "gap_layer"}
    proto.metadata_props.add(key="onnxact.layer_names", value=json.dumps(names))
    m = onnxact.load(proto)
    assert [lay.name for lay in m.layers] == list(names.values())
    acts = onnxact.get_activations(m, np.zeros((1, 3, 16, 16), np.float32), layer_names=["conv_b"])
    assert list(acts) == ["conv_b"]


def test_dynamo_name_scopes():
    proto = tiny.conv_net()
    for node in proto.graph.node:
        node.name = node.output[0]
        if node.op_type == "Relu":
            i = node.output[0][-1]
            p = node.metadata_props.add()
            p.key, p.value = "pkg.torch.onnx.name_scopes", f"['', 'features', 'features.{2 * int(i) + 1}', 'relu']"
    m = onnxact.load(proto)
    assert [lay.name for lay in m.layers][0] == "features.1"
    assert [lay.name for lay in m.layers][2] == "features.3"


def test_name_parsers():
    assert keras_layer_from_tensor("model_1/conv1_1/Relu:0") == "conv1"
    assert keras_layer_from_tensor("sequential/conv2d/BiasAdd:0") == "conv2d"
    assert keras_layer_from_tensor("conv1") is None
    assert torch_module_from_node("/features/features.0/Conv") == "features.0"
    assert torch_module_from_node("/conv1/Conv") == "conv1"
    assert torch_module_from_node("Conv_0") is None
    assert closest("conv_1", ["conv1", "pool1", "dense"])[0] == "conv1"


def test_names_are_unique_even_when_layers_share_a_scope():
    proto = tiny.conv_net()
    for node in proto.graph.node:
        node.name = "/same/Op"
    m = onnxact.load(proto)
    names = [lay.name for lay in m.all_layers]
    assert len(names) == len(set(names))
    assert onnx.checker.check_model(proto) is None
