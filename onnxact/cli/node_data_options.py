"""``--node-data F.json``: a per-node overlay for Model Explorer, for ``check``, ``compare`` and ``explore``.

Why checked up front: the file is written after a dataset scan that can take minutes; a path in
a folder that does not exist (or that is a folder) must stop the command before the scan, with
one line. Whether F is the model or an image is checked with the command's other outputs
(``safeio.check_outputs``, the ``--node-data`` entry).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import OutputError

__all__ = ["add_node_data_option", "check_node_data_path", "write_node_data"]


def add_node_data_option(p: Any, what: str) -> None:
    p.add_argument("--node-data", metavar="F", default=None,
                   help=f"write {what} per graph node to F, a Model Explorer node-data JSON (view it with "
                        "model-explorer MODEL --extensions=model_explorer_onnx --node_data_paths=F)")


def check_node_data_path(path: str | None, model: str | None = None, images: Sequence[str] = ()) -> None:
    """Refuse before any work a ``--node-data`` path in a missing folder or naming a folder; with
    ``model`` (commands whose other outputs are not checked already), also one that is the model
    or an image."""
    if path is None:
        return
    if model is not None and os.path.lexists(path):
        from ..images import expand_sources
        from ..safeio import check_outputs

        check_outputs({"--node-data": path},
                      {"model": [model], "image": [getattr(i, "label", i) for i in expand_sources(list(images))]})
    if os.path.isdir(path) and not os.path.islink(path):
        raise OutputError(f"--node-data {path} is a folder; give a file name, e.g. {os.path.join(path, 'nodes.json')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"--node-data {path}: the folder {folder} does not exist; create it or choose another path")


def write_node_data(result: Any, model: Any, path: str | None) -> None:
    """Write ``result`` (report, comparison, exemplars) as node data on ``model``'s graph to ``path``."""
    if path is None:
        return
    from ..node_data import to_node_data

    data = to_node_data(result, model, path)
    print(f"node data ({data.metric}: {len(data.layers)} layers on {len(data.results)} nodes of graph "
          f"'{data.graph_id}') written to {path}")
    for name, why in list(data.skipped.items())[:3]:
        print(f"onnxact: note: --node-data leaves out {name}: {why}", file=sys.stderr)
    if len(data.skipped) > 3:
        print(f"onnxact: note: --node-data leaves out {len(data.skipped) - 3} more layers", file=sys.stderr)
