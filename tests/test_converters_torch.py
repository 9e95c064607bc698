"""from_torch: module names per tensor, checked against forward hooks, for both exporters and both BN modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from onnxact.converters import from_torch  # noqa: E402

import onnxact  # noqa: E402
from onnxact.errors import ConversionError, InputError  # noqa: E402

from .models.torch_nets import hook_outputs, tiny_resnet  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def _close(a, b, key):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.fixture(scope="module")
def net():
    module, x = tiny_resnet()
    return module, x, hook_outputs(module, x)


@pytest.fixture(scope="module", params=[("dynamo", False), ("dynamo", True), ("legacy", False), ("legacy", True)],
                ids=lambda p: f"{p[0]}-{'keepbn' if p[1] else 'foldbn'}")
def converted(request, net):
    module, x, _ = net
    exporter, keep = request.param
    proto = from_torch(module, x, exporter=exporter, keep_batchnorm=keep)
    return exporter, keep, onnxact.load(proto)


def _modules(module, kind):
    return [n for n, m in module.named_modules() if isinstance(m, kind)]


def test_every_captured_module_matches_its_forward_hook(net, converted):
    module, x, ref = net
    exporter, keep, model = converted
    acts = onnxact.get_activations(model, x.numpy(), all_tensors=True)
    named = [k for k in acts if k in ref]
    for k in named:
        _close(acts[k], ref[k], k)
    nn = torch.nn
    bns = _modules(module, nn.BatchNorm2d)
    relus = ["stem.2", "layer1.0.relu", "layer1.0.relu:2", "layer1.1.relu", "layer1.1.relu:2"]
    expected = set(bns + relus + ["pool", "gap", "fc"])
    if keep:  # every Conv, BN and ReLU module has a tensor of its own
        expected |= set(_modules(module, nn.Conv2d))
    missing = expected - set(named)
    assert not missing, f"{exporter} keep_batchnorm={keep}: no key for {sorted(missing)}"
    if not keep:  # folded: the Conv's own (pre-BN) output is gone, never mislabelled
        assert not set(_modules(module, nn.Conv2d)) & set(acts)


def test_default_capture_keys_are_module_names(net, converted):
    module, x, ref = net
    _exporter, keep, model = converted
    acts = onnxact.get_activations(model, x.numpy())
    assert acts, "nothing captured"
    modules = {n for n, _ in module.named_modules() if n}
    for k, v in acts.items():
        assert k in modules, f"{k!r} is not a module name ({sorted(modules)})"
        # a conv read after its BN / ReLU is keyed by the conv; its value is the last fused module's
        fused = acts.layers[k].fused
        _close(v, ref[fused[-1] if fused else k], k)
    assert "pool" in acts
    assert acts.layers["layer1.0.conv1"].fused[-1] == "layer1.0.relu"
    # folded or kept, the stem's Conv -> (BN) -> ReLU block is read after its ReLU (a kept BN is
    # stepped over so onnxruntime can still fuse Conv+BN+ReLU); the Sequential that wraps exactly
    # those three is its key (same value as its forward hook); the raw conv stays capturable by name
    assert "stem" in acts and "stem.0" not in acts and "stem.2" not in acts
    _close(acts["stem"], ref["stem"], "stem")
    assert acts.layers["stem"].fused[-1] == "stem.2"
    _close(onnxact.get_activations(model, x.numpy(), layer_names=["stem.2"])["stem.2"], ref["stem.2"], "stem.2")
    if keep:
        assert "stem.0" in onnxact.get_activations(model, x.numpy(), layer_names=["stem.0"])


def test_metadata(converted):
    _exporter, _keep, model = converted
    md = model.metadata
    assert md["onnxact.framework"] == "torch"
    assert md["onnxact.source_layout"] == "NCHW"
    assert isinstance(json.loads(md["onnxact.layer_names"]), dict)


def test_writes_path_and_restores_training_flag(tmp_path, net):
    module, x, _ = net
    module.train()
    try:
        from_torch(module, x, tmp_path / "m.onnx", exporter="legacy", class_names=list("abcde"))
        assert module.training
    finally:
        module.eval()
    model = onnxact.load(tmp_path / "m.onnx")
    assert model.class_names == list("abcde")


def test_bad_input():
    with pytest.raises(InputError, match="torch.nn.Module"):
        from_torch("not a module", torch.zeros(1))
    with pytest.raises(InputError, match="exporter"):
        from_torch(torch.nn.ReLU(), torch.zeros(1), exporter="nope")
    with pytest.raises(InputError, match="example_input"):
        from_torch(torch.nn.ReLU(), "x")


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        return {"a": x} if x.sum() > 0 else x  # torch.export rejects data-dependent control flow


class _Fft(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft(x)  # no ONNX symbolic in the legacy exporter


@pytest.mark.parametrize("module, exporter", [(_DataDependent(), "dynamo"), (_Fft(), "legacy")])
def test_exporter_rejection_is_one_line(module, exporter, capsys):
    with pytest.raises(ConversionError, match=f"torch.onnx.export \\({exporter}\\) failed") as e:
        from_torch(module, torch.ones(4), exporter=exporter)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert capsys.readouterr().out == ""


def test_missing_torch_names_the_extra(monkeypatch, capsys):
    import sys

    from onnxact.cli import main
    from onnxact.errors import DependencyError

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(DependencyError, match=r"pip install 'onnxact\[torch\]'"):
        from_torch(object(), None)
    assert main(["convert", "tests.models.torch_nets:tiny_resnet", "-o", "x.onnx"]) == 2
    assert "pip install 'onnxact[torch]'" in capsys.readouterr().err
