"""Tiny ONNX models built with onnx.helper for the core tests (no framework needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def conv_net(
    channels: tuple[int, ...] = (4, 8), size: int = 16, nhwc: bool = False, seed: int = 0, batch: int | str = 1,
    opset: int = 13, head: bool = True,
) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool blocks, then GlobalAveragePool -> Flatten -> Gemm -> Softmax.

    With ``nhwc`` the input is NHWC and a Transpose switches to NCHW (like a Keras export).
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    shape = [batch, size, size, 3] if nhwc else [batch, 3, size, size]
    x = "input"
    cur = x
    if nhwc:
        nodes.append(helper.make_node("Transpose", [x], ["to_nchw"], perm=[0, 3, 1, 2], name="model_1/conv0_1/transpose"))
        cur = "to_nchw"
    cin = 3
    for i, c in enumerate(channels):
        w = rng.normal(0, 0.5, (c, cin, 3, 3))
        b = rng.normal(0, 0.1, (c,))
        inits += [_init(f"w{i}", w), _init(f"b{i}", b)]
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1], name=f"/block{i}/block{i}.conv/Conv"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"/block{i}/block{i}.relu/Relu"))
        nodes.append(helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2], name=f"/block{i}/block{i}.pool/MaxPool"))
        cur, cin = f"pool{i}", c
    outputs = []
    if head:
        nodes.append(helper.make_node("GlobalAveragePool", [cur], ["gap"], name="/gap/GlobalAveragePool"))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten"))
        inits += [_init("fc_w", rng.normal(0, 0.5, (cin, 5))), _init("fc_b", rng.normal(0, 0.1, (5,)))]
        nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="/fc/Gemm"))
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="/softmax/Softmax"))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 5]))
    else:
        outputs.append(helper.make_tensor_value_info(cur, TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if head:  # without a head the output is name-only (untyped): onnxruntime runs it, the checker objects
        onnx.checker.check_model(m)
    return m


def no_conv_net() -> onnx.ModelProto:
    """MatMul -> Relu: nothing to capture by default."""
    w = _init("w", np.ones((4, 2)))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "noconv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def two_input_net() -> onnx.ModelProto:
    """Two image inputs, one conv each, added."""
    rng = np.random.default_rng(1)
    inits = [_init("wa", rng.normal(size=(2, 3, 3, 3))), _init("wb", rng.normal(size=(2, 1, 3, 3)))]
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Conv", ["b", "wb"], ["cb"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Add", ["ca", "cb"], ["y"], name="add"),
    ]
    g = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8]),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def silu_net() -> onnx.ModelProto:
    """Conv followed by x*Sigmoid(x) (SiLU as exporters write it)."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["c", "s"], ["silu"]),
        helper.make_node("AveragePool", ["silu"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    g = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [_init("w", rng.normal(size=(4, 3, 3, 3)))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def reference_tensor(model: onnx.ModelProto, tensor: str, feeds: dict, level: str = "all") -> np.ndarray:
    """Independent onnxruntime run that promotes only ``tensor``."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(onnx.ValueInfoProto(name=tensor))
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run([tensor], feeds)[0]
