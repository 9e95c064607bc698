"""Framework sides for ``onnxact.compare``: a torch module or a Keras model captured in its own terms.

Why here (not in onnxact/compare.py): the core never imports a framework. ``compare`` imports
this module only when a side is a ``torch.nn.Module`` or a ``keras.Model``.

Each side's ``capture(x)`` returns an ``Activations`` of every layer's own output (torch: forward
hooks keyed by ``named_modules()`` names, ``name:2`` for a second call, as the converter records
them; Keras: one sub-model returning every layer's output, keyed by layer name), in the
framework's own layout, with ``raw_outputs = True`` (nothing fused: ``compare`` then looks an ONNX
layer read after its BN/ReLU up at that ReLU) and ``lookup_only`` = the layers that are not
conv/pool (matched when asked for, not listed as unmatched).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxact.activations import Activations, LayerInfo
from onnxact.errors import InputError

from .quiet import quietly

__all__ = ["TorchSide", "KerasSide"]

_FIRST = {2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}
_LAST = {2: "NC", 3: "NWC", 4: "NHWC", 5: "NDHWC"}


def _is_layer(kind: str) -> bool:
    k = kind.lower()
    return "conv" in k or "pool" in k


def _activations(outs: list[tuple[str, str, np.ndarray]], layouts: dict[int, str]) -> Activations:
    data, infos, lookup = {}, {}, set()
    for key, kind, arr in outs:
        data[key] = arr
        infos[key] = LayerInfo(key, "", kind, layouts.get(arr.ndim, "other"), tuple(arr.shape))
        if not _is_layer(kind):
            lookup.add(key)
    acts = Activations(data, infos)
    acts.raw_outputs = True
    acts.lookup_only = frozenset(lookup)
    return acts


class TorchSide:
    """A ``torch.nn.Module`` (put in eval mode for the comparison, then restored)."""

    def __init__(self, module: Any) -> None:
        from .torch import _import_torch

        self.torch = _import_torch()
        self.module = module
        self.name = type(module).__name__
        self.kinds = {n: type(m).__name__ for n, m in module.named_modules() if n}

    def capture(self, x: Any) -> Activations:
        from .torch import torch_module_outputs

        if isinstance(x, dict):
            raise InputError("a torch module side takes one input array; compare multi-input models as ONNX files")
        t = self.torch.from_numpy(np.ascontiguousarray(x))
        was_training = self.module.training
        self.module.eval()
        try:
            outs = torch_module_outputs(self.module, t)
        except Exception as e:  # noqa: BLE001 - the user's forward: report it in one line
            raise InputError(f"the torch module failed on an input of shape {tuple(t.shape)}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]) from None
        finally:
            self.module.train(was_training)
        return _activations([(k, self.kinds.get(k.split(":")[0], ""), a) for k, a in outs], _FIRST)


class KerasSide:
    """A ``keras.Model``: one sub-model returns every layer's output (built once)."""

    def __init__(self, model: Any) -> None:
        from .keras import _layers_with_output

        self.model = model
        self.name = model.name
        self.layers = _layers_with_output(model)
        self._sub = None

    @quietly  # the first Keras call probes for a GPU (TF's "failed call to cuInit" without one)
    def capture(self, x: Any) -> Activations:
        if self._sub is None:
            from .keras import _family

            k = _family(self.model)
            self._sub = k.Model(self.model.inputs, [la.output for la in self.layers])
        # a list, one array per model input: the structure Keras 3 expects (no warning)
        feed = [x] if not isinstance(x, dict) else [x[t.name] if t.name in x else next(iter(x.values()))
                                                   for t in self.model.inputs]
        outs = self._sub(feed, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return _activations([(la.name, type(la).__name__, np.asarray(o)) for la, o in zip(self.layers, outs)], _LAST)
