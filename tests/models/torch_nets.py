"""Small PyTorch models for the converter tests (imported only where torch is installed)."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """A ResNet basic block; its ``relu`` module is called twice, as in torchvision."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class TinyResNet(nn.Module):
    def __init__(self, n_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = self.layer1(x)
        return self.fc(torch.flatten(self.gap(x), 1))


def randomize_batchnorm(module: nn.Module, seed: int = 0, mean_scale: float = 0.5,
                        bias_scale: float = 0.3) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so a folded BN is visibly different from its conv."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * mean_scale)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * bias_scale)
    return module


def tiny_resnet(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``(module in eval mode, example input 1x3x32x32)`` — also a ``module:factory`` for ``onnxact convert``."""
    torch.manual_seed(seed)
    m = randomize_batchnorm(TinyResNet(), seed).eval()
    return m, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))


def hook_outputs(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference activations: forward hooks keyed by ``named_modules()`` name (``name:2`` for a second call)."""
    out: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(_m, _i, o, name=name):
            counts[name] = counts.get(name, 0) + 1
            out[name if counts[name] == 1 else f"{name}:{counts[name]}"] = o.detach().numpy().copy()

        hooks.append(sub.register_forward_hook(hook))
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return out


def failing_factory():
    raise RuntimeError("this factory fails on purpose")


def not_a_pair():
    return 42
