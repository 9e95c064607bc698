"""``--cam-layer`` and ``--class-output``: the user's word on the model's head, for ``inspect`` and ``serve``.

Why checked up front: a misspelt layer or output name, or a model whose ``names`` metadata is
malformed, must stop the command with one line before anything is written or served, not
surface as a missing picture halfway through a report.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError, ModelError

__all__ = ["add_head_options", "check_head_options"]


def add_head_options(p: Any) -> None:
    p.add_argument("--cam-layer", default=None, metavar="NAME",
                   help="layer the class activation map is drawn on (exact name; default: the last spatial "
                        "map feeding the head)")
    p.add_argument("--class-output", default=None, metavar="NAME",
                   help="model output that holds the class scores (default: the one made by Softmax/Sigmoid, "
                        "else named like prob/cls/logits; none for detectors)")


def check_head_options(args: argparse.Namespace, model: Any, acts: Any = None) -> None:
    """Raise the one-line error for an unknown ``--cam-layer`` / ``--class-output``, or for
    malformed ``names`` metadata when no ``--labels`` replaces it."""
    from ..heads import classifier_outputs, find_layer_tensor
    from ..layout import channel_axis

    problem = getattr(model, "class_names_error", None)
    if problem and not getattr(args, "labels", None):
        raise ModelError(problem)
    cam_layer = getattr(args, "cam_layer", None)
    if cam_layer is not None:
        tensor = find_layer_tensor(model, acts, cam_layer)
        layout = model.layouts.get(tensor, "other")
        if channel_axis(layout) is None or layout not in ("NCHW", "NHWC"):
            raise InputError(f"--cam-layer {cam_layer!r} is not a spatial map (layout {layout}); "
                             "name a conv or pool layer")
    output = getattr(args, "class_output", None)
    if output is not None:
        if acts is not None:
            classifier_outputs(acts.outputs, model, output)
        else:
            keys = getattr(model, "output_keys", {}) or {}
            if output not in model.output_names and output not in keys.values():
                classifier_outputs({keys.get(n, n): None for n in model.output_names}, model, output)
