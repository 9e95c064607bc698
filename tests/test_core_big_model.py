"""A model over 2 GB (weights in external data) loads by path and captures."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import onnxact


def test_model_over_2gb_by_path(tmp_path):
    # A 2.1 GB initializer written straight to the external data file (sparse, so the disk stays
    # nearly empty), used by a Gather that reads one row; the conv path is what we capture.
    rows, cols = 2**31 // (4 * 1024) + 16, 1024
    big = onnx.TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[rows, cols])
    big.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "big.bin"), ("offset", "0"), ("length", str(rows * cols * 4))):
        big.external_data.add(key=k, value=v)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(rows * cols * 4)
    w = onnx.numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    idx = onnx.numpy_helper.from_array(np.array([5], np.int64), "idx")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Gather", ["big", "idx"], ["row"]),
        helper.make_node("ReduceSum", ["row"], ["s"], keepdims=0),
    ]
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 2, 4, 4]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, None)], [big, w, idx])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "big.onnx"
    path.write_bytes(m.SerializeToString())
    assert (tmp_path / "big.bin").stat().st_size > 2**31
    model = onnxact.load(path)
    acts = onnxact.get_activations(model, np.ones((1, 1, 4, 4), np.float32), output_format="full")
    assert list(acts) == ["r"]
    assert acts["r"][0, 0, 1, 1] == 9.0
    assert float(acts.outputs["s"]) == 0.0
