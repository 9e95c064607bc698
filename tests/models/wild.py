"""Real-world-shaped test models, exported the way people export them (issue 20).

Each ``build_xxx(path)`` writes one ONNX file (and what a test needs to compare with the source
framework beside it) and returns the path; a path that exists is returned as is, so a pytest
session builds each model once (fixtures in ``tests/wild_fixtures.py``). Weights are random but
seeded, so the same call always gives the same model; the ``xxx_module()`` functions rebuild the
framework model for reference runs.

- :func:`build_yolo_detector`: an Ultralytics-YOLOv8-shaped detector (stride 32, C2f blocks, SPPF,
  an upsample+concat neck, a Detect head with DFL), exported by torch's legacy exporter with
  dynamic batch/height/width and the metadata Ultralytics writes (``imgsz``, ``stride``, ``names``...).
- :func:`build_keras_bn_act`: a Keras 3 functional classifier with separate Conv2D /
  BatchNormalization / Activation layers, layers ``conv2d_1`` and ``separable_conv2d_1``, exported
  with ``model.export(format="onnx")``; the ``.keras`` file is saved beside it.
- :func:`build_torch_no_metadata`: a small ResNet-like classifier (``conv1``, ``bn1``,
  ``layer1.0.conv1`` ... ``fc``) exported by the legacy exporter with dynamic height/width and no
  onnxact metadata.

torch and keras are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "YOLO_NAMES", "YOLO_METADATA", "KERAS_CLASSES", "build_yolo_detector", "yolo_module", "build_keras_bn_act",
    "keras_bn_act_model", "build_torch_no_metadata", "resnet_module", "keras_path_of",
]

#: class names of the detector, as Ultralytics stores them (``str(dict)``)
YOLO_NAMES = {0: "person", 1: "car", 2: "dog"}

#: metadata_props written exactly as Ultralytics' ONNX export writes them (every value a ``str``)
YOLO_METADATA = {
    "description": "Ultralytics YOLOv8n-shaped test detector (random weights)",
    "author": "Ultralytics",
    "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    "docs": "https://docs.ultralytics.com",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[320, 320]",
    "names": str(YOLO_NAMES),
}

#: number of classes of the Keras classifier
KERAS_CLASSES = 5


def _torch_export(module, x, path: Path, dynamic_axes: dict, input_name: str, output_name: str) -> None:
    """Legacy exporter (``dynamo=False``), opset 17, default constant folding (BN folded into Conv)."""
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=[input_name],
                          output_names=[output_name], dynamic_axes=dynamic_axes)


def _randomize_bn(module, seed: int):
    """Non-trivial BatchNorm statistics (a folded BN must visibly change its conv's values)."""
    from tests.models.torch_nets import randomize_batchnorm

    return randomize_batchnorm(module, seed, mean_scale=0.3, bias_scale=0.2)


# --------------------------------------------------------------------------- YOLOv8-shaped detector

def _yolo_classes():
    """The Ultralytics building blocks (same attribute names, so the exporter's scopes match)."""
    import torch
    from torch import nn

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c, shortcut=True):
            super().__init__()
            self.cv1 = Conv(c, c, 3)
            self.cv2 = Conv(c, c, 3)
            self.add = shortcut

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=False):
            super().__init__()
            self.c = c2 // 2
            self.cv1 = Conv(c1, 2 * self.c, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            c_ = c1 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c_ * 4, c2, 1)
            self.m = nn.MaxPool2d(k, 1, k // 2)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(self.m(y[-1]) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    class Concat(nn.Module):
        def __init__(self, d=1):
            super().__init__()
            self.d = d

        def forward(self, x):
            return torch.cat(x, self.d)

    class DFL(nn.Module):
        """Distribution focal loss integral: a fixed 1x1 conv 16 -> 1 with weights 0..15."""

        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class Detect(nn.Module):
        def __init__(self, nc, ch, strides):
            super().__init__()
            self.nc, self.reg_max, self.nl = nc, 16, len(ch)
            self.no = nc + 4 * self.reg_max
            self.stride = strides
            # Ultralytics uses max(16, ch[0] // 4, 64) box channels; 32 keeps this test file near 1 MB
            c2, c3 = max(16, ch[0] // 4, 2 * self.reg_max), max(ch[0], min(nc, 100))
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1))
                                     for x in ch)
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
            self.dfl = DFL(self.reg_max)

        def forward(self, xs):
            xs = [torch.cat((self.cv2[i](xs[i]), self.cv3[i](xs[i])), 1) for i in range(self.nl)]
            anchors, strides = [], []
            for x, s in zip(xs, self.stride):
                h, w = x.shape[2:]
                sx = torch.arange(w, dtype=torch.float) + 0.5
                sy = torch.arange(h, dtype=torch.float) + 0.5
                yy, xx = torch.meshgrid(sy, sx, indexing="ij")
                anchors.append(torch.stack((xx, yy), -1).view(-1, 2))
                strides.append(torch.full((h * w, 1), float(s)))
            anchor_points, stride_t = torch.cat(anchors).transpose(0, 1), torch.cat(strides).transpose(0, 1)
            b = xs[0].shape[0]
            x_cat = torch.cat([xi.view(b, self.no, -1) for xi in xs], 2)
            box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
            lt, rb = self.dfl(box).chunk(2, 1)
            x1y1, x2y2 = anchor_points.unsqueeze(0) - lt, anchor_points.unsqueeze(0) + rb
            dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_t
            return torch.cat((dbox, cls.sigmoid()), 1)

    class DetectionModel(nn.Module):
        """``self.model`` is an ``nn.Sequential`` whose modules carry ``f`` (inputs) and ``i`` (index)."""

        def __init__(self, nc=3):
            super().__init__()
            w = [8, 16, 16, 32, 32, 48, 48, 80]  # about YOLOv8n widths / 3: a ~1.5 MB file
            layers = [
                (-1, Conv(3, w[0], 3, 2)),  # 0 P1/2
                (-1, Conv(w[0], w[1], 3, 2)),  # 1 P2/4
                (-1, C2f(w[1], w[2], 1, True)),  # 2
                (-1, Conv(w[2], w[3], 3, 2)),  # 3 P3/8
                (-1, C2f(w[3], w[4], 1, True)),  # 4
                (-1, Conv(w[4], w[5], 3, 2)),  # 5 P4/16
                (-1, C2f(w[5], w[6], 1, True)),  # 6
                (-1, Conv(w[6], w[7], 3, 2)),  # 7 P5/32
                (-1, C2f(w[7], w[7], 1, True)),  # 8
                (-1, SPPF(w[7], w[7], 5)),  # 9
                (-1, nn.Upsample(None, 2, "nearest")),  # 10
                ([-1, 6], Concat(1)),  # 11 cat backbone P4
                (-1, C2f(w[7] + w[6], w[6], 1)),  # 12
                (-1, nn.Upsample(None, 2, "nearest")),  # 13
                ([-1, 4], Concat(1)),  # 14 cat backbone P3
                (-1, C2f(w[6] + w[4], w[4], 1)),  # 15 (P3/8-small)
                (-1, Conv(w[4], w[4], 3, 2)),  # 16
                ([-1, 12], Concat(1)),  # 17 cat head P4
                (-1, C2f(w[4] + w[6], w[6], 1)),  # 18 (P4/16-medium)
                (-1, Conv(w[6], w[6], 3, 2)),  # 19
                ([-1, 9], Concat(1)),  # 20 cat head P5
                (-1, C2f(w[6] + w[7], w[7], 1)),  # 21 (P5/32-large)
                ([15, 18, 21], Detect(nc, (w[4], w[6], w[7]), (8, 16, 32))),  # 22
            ]
            for i, (f, m) in enumerate(layers):
                m.f, m.i = f, i
            self.model = nn.Sequential(*(m for _, m in layers))
            self.save = {6, 4, 12, 9, 15, 18, 21}

        def forward(self, x):
            y = []
            for m in self.model:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                x = m(x)
                y.append(x if m.i in self.save else None)
            return x

    return DetectionModel


def yolo_module(seed: int = 0):
    """The detector as a torch module in eval mode (the same weights as :func:`build_yolo_detector`)."""
    import torch

    torch.manual_seed(seed)
    model = _yolo_classes()(nc=len(YOLO_NAMES))
    return _randomize_bn(model, seed).eval()


def build_yolo_detector(path: Path, seed: int = 0) -> Path:
    """An Ultralytics-YOLOv8-shaped detector: input ``images [b,3,h,w]``, output ``output0 [b, 4+nc, A]``.

    Stride 32; odd sizes (600x400, 40x50) break the neck's Concat inside onnxruntime, as they do
    on a real YOLOv8 export. Ultralytics' metadata_props (``imgsz``, ``stride``, ``names``, ...).
    """
    path = Path(path)
    if path.exists():
        return path
    import onnx
    import torch

    model = yolo_module(seed)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    _torch_export(model, torch.zeros(1, 3, 320, 320), tmp, axes, "images", "output0")
    proto = onnx.load(str(tmp))
    for k, v in YOLO_METADATA.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- Keras BN / Activation classifier

def keras_bn_act_model(seed: int = 0):
    """The Keras 3 classifier, with the names Keras 3 gives by default in a fresh session.

    Names are explicit because Keras 3 numbers auto-names per process (a second model built in
    the same session would get ``conv2d_4``...); they are the ones a fresh session gives.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((64, 64, 3), name="input_layer")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv2d")(inp)
    x = L.BatchNormalization(name="batch_normalization")(x)
    x = L.Activation("relu", name="activation")(x)
    x = L.MaxPooling2D(2, name="max_pooling2d")(x)
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="conv2d_1")(x)
    x = L.BatchNormalization(name="batch_normalization_1")(x)
    x = L.Activation("relu", name="activation_1")(x)
    x = L.MaxPooling2D(2, name="max_pooling2d_1")(x)
    x = L.SeparableConv2D(32, 3, padding="same", use_bias=False, name="separable_conv2d")(x)
    x = L.BatchNormalization(name="batch_normalization_2")(x)
    x = L.Activation("relu", name="activation_2")(x)
    x = L.SeparableConv2D(64, 3, padding="same", use_bias=False, name="separable_conv2d_1")(x)
    x = L.BatchNormalization(name="batch_normalization_3")(x)
    x = L.Activation("relu", name="activation_3")(x)
    x = L.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    out = L.Dense(KERAS_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out, name="functional")
    model(np.zeros((1, 64, 64, 3), "float32"), training=False)  # Keras 3 exports only a model that was called
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 1.5, n)])
    return model


def keras_path_of(onnx_path: Path) -> Path:
    """The ``.keras`` file :func:`build_keras_bn_act` saves beside its ONNX file."""
    return Path(onnx_path).with_suffix(".keras")


def build_keras_bn_act(path: Path, seed: int = 0) -> Path:
    """Keras 3 classifier, NHWC input ``64x64x3``, exported with ``model.export(path, format="onnx")``.

    The ``.keras`` file is saved beside it (:func:`keras_path_of`) for reference runs.
    """
    path = Path(path)
    if path.exists() and keras_path_of(path).exists():
        return path
    model = keras_bn_act_model(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(keras_path_of(path)))
    tmp = path.with_suffix(".tmp.onnx")
    quiet = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow", "absl")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model.export(str(tmp), format="onnx", verbose=False)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- ResNet-like, no metadata

def resnet_module(seed: int = 0, n_classes: int = 10):
    """A torchvision-ResNet-shaped classifier (same attribute names), eval mode, seeded weights."""
    import torch
    from torch import nn

    from tests.models.torch_nets import BasicBlock

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
            self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
            self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(64, n_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(seed)
    return _randomize_bn(ResNet(), seed).eval()


def build_torch_no_metadata(path: Path, seed: int = 0) -> Path:
    """ResNet-like classifier, legacy exporter, input ``input [b,3,h,w]`` dynamic, output ``output [b,10]``.

    No onnxact metadata: names come only from the exporter's scopes (``/layer1/layer1.0/conv1/Conv``).
    """
    path = Path(path)
    if path.exists():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch"}}
    _torch_export(resnet_module(seed), torch.zeros(1, 3, 224, 224), tmp, axes, "input", "output")
    tmp.replace(path)
    return path
