"""Benchmark subjects: the 10-block Conv-BN-ReLU net (ONNX built directly, and the same net in
PyTorch), and the seed's CNN (the demo's architecture, see models/README.md) in Keras 3, PyTorch and tf-keras.

Why build the ONNX net with onnx.helper: it needs no framework, takes milliseconds, and keeps
BatchNormalization as its own node (onnxruntime fuses it, as it would an exported model's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Output channels of the 10 blocks, and the blocks followed by a 2x2 max pool.
TENBLOCK_WIDTHS = (32, 32, 64, 64, 64, 128, 128, 128, 256, 256)
TENBLOCK_POOL_AFTER = (1, 4, 7)
#: The seed's CNN: five blocks of Conv 3x3 + MaxPool 2x2, Flatten, Dense 512 relu, Dense softmax.
SEED_FILTERS = (16, 32, 64, 64, 64)
SEED_CLASSES = 5


def tenblock_onnx(size: int = 224, widths: tuple[int, ...] = TENBLOCK_WIDTHS, seed: int = 0,
                  pool_after: tuple[int, ...] = TENBLOCK_POOL_AFTER) -> onnx.ModelProto:
    """Conv 3x3 (pad 1) -> BatchNormalization -> Relu, x len(widths), pools, GAP, Gemm to 10 classes.

    Input ``x``: (N, 3, size, size) float32 with a symbolic batch axis.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, cin = "x", 3
    for i, c in enumerate(widths):
        w = (rng.standard_normal((c, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}"),
                  numpy_helper.from_array((1 + 0.1 * rng.standard_normal(c)).astype(np.float32), f"g{i}"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"be{i}"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"mu{i}"),
                  numpy_helper.from_array((1 + 0.1 * rng.random(c)).astype(np.float32), f"var{i}")]
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], name=f"block{i}/conv",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [f"conv{i}", f"g{i}", f"be{i}", f"mu{i}", f"var{i}"],
                             [f"bn{i}"], name=f"block{i}/bn"),
            helper.make_node("Relu", [f"bn{i}"], [f"relu{i}"], name=f"block{i}/relu"),
        ]
        prev, cin = f"relu{i}", c
        if i in pool_after:
            nodes.append(helper.make_node("MaxPool", [prev], [f"pool{i}"], name=f"block{i}/pool",
                                          kernel_shape=[2, 2], strides=[2, 2]))
            prev = f"pool{i}"
    wf = (rng.standard_normal((10, cin)) * 0.05).astype(np.float32)
    inits += [numpy_helper.from_array(wf, "fc_w"), numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "tenblock",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxact-bench")
    m.ir_version = 8
    return m


def tenblock_torch(widths: tuple[int, ...] = TENBLOCK_WIDTHS, pool_after: tuple[int, ...] = TENBLOCK_POOL_AFTER,
                   proto: onnx.ModelProto | None = None) -> Any:
    """The same net in PyTorch (eval mode); with ``proto``, its weights are copied from the ONNX net."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    cin = 3
    for i, c in enumerate(widths):
        layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
        cin = c
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)).eval()
    if proto is not None:
        w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        convs = [m for m in net if isinstance(m, nn.Conv2d)]
        bns = [m for m in net if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for i, (cv, bn) in enumerate(zip(convs, bns)):
                cv.weight.copy_(torch.tensor(w[f"w{i}"]))
                cv.bias.copy_(torch.tensor(w[f"b{i}"]))
                bn.weight.copy_(torch.tensor(w[f"g{i}"]))
                bn.bias.copy_(torch.tensor(w[f"be{i}"]))
                bn.running_mean.copy_(torch.tensor(w[f"mu{i}"]))
                bn.running_var.copy_(torch.tensor(w[f"var{i}"]))
            net[-1].weight.copy_(torch.tensor(w["fc_w"]))
            net[-1].bias.copy_(torch.tensor(w["fc_b"]))
    return net


def seed_torch(size: int = 256) -> Any:
    """The seed's CNN in PyTorch (same layer sizes as the Keras one; 'valid' 3x3 convs)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    cin, s = 3, size
    for f in SEED_FILTERS:
        layers += [nn.Conv2d(cin, f, 3), nn.ReLU(), nn.MaxPool2d(2)]
        cin, s = f, (s - 2) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * s * s, 512), nn.ReLU(),
                         nn.Linear(512, SEED_CLASSES), nn.Softmax(dim=1)).eval()


def seed_keras(size: int = 256, keras_module: Any = None) -> Any:
    """The seed's CNN in Keras (Keras 3 by default; pass ``tf_keras`` for Keract)."""
    if keras_module is None:
        import keras as keras_module
    k = keras_module
    k.utils.set_random_seed(0)
    layers = [k.Input((size, size, 3))]
    for f in SEED_FILTERS:
        layers += [k.layers.Conv2D(f, 3, activation="relu"), k.layers.MaxPooling2D(2)]
    layers += [k.layers.Flatten(), k.layers.Dense(512, activation="relu"),
               k.layers.Dense(SEED_CLASSES, activation="softmax")]
    return k.Sequential(layers, name="seed_cnn")


def seed_onnx(path: Path, size: int = 256) -> Path:
    """Export the Keras 3 seed CNN to ONNX with the project's converter (cached at ``path``)."""
    path = Path(path)
    if not path.exists():
        from onnxact.converters import from_keras

        path.parent.mkdir(parents=True, exist_ok=True)
        from_keras(seed_keras(size), path)
    return path
