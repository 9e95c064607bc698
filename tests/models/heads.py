"""Small torch models whose heads decide what onnxact shows (issue 18 section 3, issue 20 section 4).

- ``mtcnn_like``: an MTCNN-ONet-shaped stage with three outputs in MTCNN's order and names:
  box regression ``conv6-2 [N, 4]``, landmarks ``conv6-3 [N, 10]``, face probability
  ``prob1 [N, 2]`` (Softmax). Only ``prob1`` is a classifier.
- ``gap_hidden_head``: conv -> GAP -> Linear(16, 128) -> ReLU -> Linear(128, 4) -> Softmax.
  The first Linear after the pool is a hidden layer: its rows are no class weights (EigenCAM).
- ``gap_linear_head``: conv -> GAP -> Linear(16, 5): exact CAM, class weights = ``fc.weight``.
- ``two_classifiers``: one trunk, two Softmax heads ``age [N, 3]`` and ``gender [N, 2]``.
- ``avgpool_linear_head``: AvgPool2d(16) on the 16x16 map -> Linear(16, 5): a global average only
  because the kernel covers the map (tf2onnx's ResNet heads look like this).

Each ``build(kind, path)`` exports with the legacy exporter (as most ONNX files in the wild
were) and returns ``(path, module)``: the module in eval mode, for reference runs. torch is
imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

__all__ = ["build", "KINDS"]


def _modules() -> dict[str, Any]:
    import torch
    from torch import nn

    def trunk() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())

    class MtcnnLike(nn.Module):
        """ONet-like: 48x48 input, a shared dense layer, then box / landmarks / face probability."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.MaxPool2d(3, 2, ceil_mode=True),
                                          nn.Conv2d(8, 16, 3), nn.PReLU(16), nn.MaxPool2d(3, 2, ceil_mode=True),
                                          nn.Conv2d(16, 32, 3), nn.PReLU(32), nn.MaxPool2d(2, 2, ceil_mode=True))
            self.conv5 = nn.Linear(32 * 4 * 4, 64)
            self.prelu5 = nn.PReLU(64)
            self.conv6_1 = nn.Linear(64, 2)
            self.conv6_2 = nn.Linear(64, 4)
            self.conv6_3 = nn.Linear(64, 10)

        def forward(self, x):
            h = self.prelu5(self.conv5(torch.flatten(self.features(x), 1)))
            return self.conv6_2(h), self.conv6_3(h), torch.softmax(self.conv6_1(h), 1)

    class GapHidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = trunk()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.hidden = nn.Linear(16, 128)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(128, 4)

        def forward(self, x):
            h = self.relu(self.hidden(torch.flatten(self.pool(self.features(x)), 1)))
            return torch.softmax(self.fc(h), 1)

    class GapLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = trunk()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    class AvgPoolLinear(nn.Module):
        """A fixed-size head pooling with AvgPool2d(16) over the 16x16 map (as tf2onnx writes
        ResNet's head): a global average only because the kernel covers the map."""

        def __init__(self) -> None:
            super().__init__()
            self.features = trunk()
            self.pool = nn.AvgPool2d(16)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    class TwoClassifiers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = trunk()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.age = nn.Linear(16, 3)
            self.gender = nn.Linear(16, 2)

        def forward(self, x):
            h = torch.flatten(self.pool(self.features(x)), 1)
            return torch.softmax(self.age(h), 1), torch.softmax(self.gender(h), 1)

    return {"mtcnn_like": (MtcnnLike, (48, 48), ["conv6-2", "conv6-3", "prob1"]),
            "gap_hidden_head": (GapHidden, (32, 32), ["probs"]),
            "gap_linear_head": (GapLinear, (32, 32), ["logits"]),
            "two_classifiers": (TwoClassifiers, (32, 32), ["age", "gender"]),
            "avgpool_linear_head": (AvgPoolLinear, (32, 32), ["logits"])}


KINDS = ("mtcnn_like", "gap_hidden_head", "gap_linear_head", "two_classifiers", "avgpool_linear_head")


def build(kind: str, path: Path, seed: int = 0) -> tuple[Path, Any]:
    """Export model ``kind`` to ``path`` (legacy exporter, opset 17, input ``image [N, 3, H, W]``
    with a dynamic batch); returns ``(path, module in eval mode)``. Same seed, same weights."""
    import torch

    cls, (h, w), outputs = _modules()[kind]
    torch.manual_seed(seed)
    module = cls().eval()
    with torch.no_grad():  # biases large enough that classes differ visibly
        for p in module.parameters():
            p.mul_(2.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, h, w),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=outputs, dynamic_axes=axes)
    return path, module
