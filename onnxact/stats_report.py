"""The dead / dormant / constant filter report of a scan, and its JSON, JUnit and text writers.

Definitions (per channel, over every image and position of the layer's output tensor, which is
read after the activation that follows a conv/pool):

- **dead**: max |a| <= eps (default 0): the filter never fires.
- **dormant**: not dead, the layer's outputs are non-negative (ReLU-like), and the channel's mean
  divided by the layer's mean over all its channels is <= tau (default 0).
- **constant**: not dead, and zero variance over the dataset: max == min (layers that can be
  negative), max == mean (non-negative layers, where min is not computed), within float32 rounding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from .errors import InputError
from .stats_records import ChannelStats

__all__ = ["KINDS", "Finding", "DeadFilterReport", "load_allow_list"]

KINDS = ("dead", "dormant", "constant")


@dataclass(frozen=True)
class Finding:
    kind: str  # dead | dormant | constant
    layer: str
    tensor: str
    channel: int
    value: float  # max_abs (dead), mean ratio (dormant), the constant value (constant)

    def to_json(self) -> dict[str, Any]:
        key = {"dead": "max_abs", "dormant": "ratio", "constant": "value"}[self.kind]
        return {"layer": self.layer, "tensor": self.tensor, "channel": self.channel, key: self.value}


def load_allow_list(path: Any) -> set[tuple[str, str, int]]:
    """Read a baseline (a ``--json`` report or ``--write-baseline`` file): {(kind, layer, channel)}."""
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"baseline file not found: {p}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read baseline {p}: it is not a JSON report ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"baseline {p} is not a JSON object like the --json report")
    out: set[tuple[str, str, int]] = set()
    for kind in KINDS:
        for e in data.get(kind, []) or []:
            try:
                out.add((kind, str(e["layer"]), int(e["channel"])))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"baseline {p}: each '{kind}' entry needs 'layer' and 'channel'") from None
    return out


class DeadFilterReport:
    """Dead / dormant / constant channels found by a scan (see the module docstring for definitions)."""

    def __init__(self, stats: ChannelStats, eps: float = 0.0, tau: float = 0.0, model_name: str = "model") -> None:
        self.stats = stats
        self.eps = float(eps)
        self.tau = float(tau)
        self.model_name = model_name
        self.findings: dict[str, list[Finding]] = {k: [] for k in KINDS}
        self.per_layer: list[dict[str, Any]] = []
        #: why layers asked for were left out (e.g. unknown rank); shown by ``check`` and in the JSON
        self.notes: list[str] = []
        #: the image preprocessing the scan used (``normalization.Normalization.to_json()``), if known
        self.preprocessing: dict[str, Any] | None = None
        #: ``{"size": [h, w], "resize": mode, "dynamic": bool}``: the one size every image was fed
        #: at (``dynamic``: resolved by onnxact.sizing, the model's own size is not fixed), if known
        self.input_size: dict[str, Any] | None = None
        for name, st in stats.layers.items():
            info = stats.infos[name]
            max_abs = st.max_abs
            dead = max_abs <= self.eps
            mean = st.mean
            counts = {"dead": int(dead.sum()), "dormant": 0, "constant": 0}
            for c in np.flatnonzero(dead):
                self.findings["dead"].append(Finding("dead", name, info.tensor, int(c), float(max_abs[c])))
            layer_mean = float(mean.mean()) if mean.size else 0.0
            if st.nonnegative and layer_mean > 0:
                ratio = mean / layer_mean
                for c in np.flatnonzero((ratio <= self.tau) & ~dead):
                    self.findings["dormant"].append(Finding("dormant", name, info.tensor, int(c), float(ratio[c])))
                    counts["dormant"] += 1
            const = st.constant & ~dead
            for c in np.flatnonzero(const):
                self.findings["constant"].append(Finding("constant", name, info.tensor, int(c), float(st.max[c])))
                counts["constant"] += 1
            self.per_layer.append({
                "layer": name, "tensor": info.tensor, "op_type": info.op_type, "activation": info.activation,
                "channels": st.channels, "positions": st.positions, **counts,
            })

    # -- the public lists ---------------------------------------------------------------------
    @property
    def dead(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["dead"]]

    @property
    def dormant(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["dormant"]]

    @property
    def constant(self) -> list[tuple[str, int]]:
        return [(f.layer, f.channel) for f in self.findings["constant"]]

    @property
    def images(self) -> int:
        return self.stats.images

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.stats.failed

    def failing(self, fail_on: Sequence[str] = ("dead",), allow: set[tuple[str, str, int]] | None = None) -> list[Finding]:
        """Findings of the kinds in ``fail_on`` that are not in the ``allow`` baseline."""
        bad = [k for k in fail_on if k not in KINDS]
        if bad:
            raise InputError(f"unknown kind '{bad[0]}' to fail on; use {', '.join(KINDS)}")
        allow = allow or set()
        return [f for k in fail_on for f in self.findings[k] if (k, f.layer, f.channel) not in allow]

    def __bool__(self) -> bool:  # truthy when anything was found
        return any(self.findings.values())

    def __repr__(self) -> str:
        return (f"DeadFilterReport({self.model_name!r}, images={self.images}, dead={len(self.dead)}, "
                f"dormant={len(self.dormant)}, constant={len(self.constant)})")

    # -- outputs ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "images": self.images, "failed": len(self.failed),
            "failed_images": [{"path": p, "reason": r} for p, r in self.failed],
            "eps": self.eps, "tau": self.tau, "layers": self.per_layer,
            **{k: [f.to_json() for f in self.findings[k]] for k in KINDS},
            "notes": list(self.notes), "preprocessing": self.preprocessing, "input_size": self.input_size,
        }

    def to_json(self, path: Any = None, indent: int | None = 2) -> str:
        """The JSON report (also a valid ``--allow`` baseline); written to ``path`` when given."""
        text = json.dumps(self.as_dict(), indent=indent)
        if path is not None:
            _write(path, text + "\n")
        return text

    def worst_layers(self) -> list[dict[str, Any]]:
        def badness(r: dict[str, Any]) -> float:
            return (r["dead"] + r["dormant"] + r["constant"]) / max(r["channels"], 1)
        return sorted(self.per_layer, key=lambda r: -badness(r))

    def table(self) -> str:
        """Human table, worst layers first."""
        rows = [(r["layer"], str(r["channels"]), str(r["dead"]), str(r["dormant"]), str(r["constant"]))
                for r in self.worst_layers()]
        head = ("layer", "channels", "dead", "dormant", "constant")
        w = [max(len(x[i]) for x in [head, *rows]) for i in range(5)]
        lines = ["  ".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head))]
        lines += ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        tot = [sum(r[k] for r in self.per_layer) for k in KINDS]
        lines.append(f"{self.images} images, {len(self.per_layer)} layers: {tot[0]} dead, {tot[1]} dormant, "
                     f"{tot[2]} constant" + (f"; {len(self.failed)} unreadable images skipped" if self.failed else ""))
        return "\n".join(lines)

    def to_junit(self, path: Any = None, fail_on: Sequence[str] = ("dead",),
                 allow: set[tuple[str, str, int]] | None = None) -> str:
        """JUnit XML with one testcase per layer; a layer fails when it has a finding in ``fail_on``."""
        failing = self.failing(fail_on, allow)
        by_layer: dict[str, list[Finding]] = {}
        for f in failing:
            by_layer.setdefault(f.layer, []).append(f)
        cases = []
        for r in self.per_layer:
            name = r["layer"]
            found = by_layer.get(name, [])
            body = ""
            if found:
                msg = "; ".join(f"{k}: {', '.join(str(f.channel) for f in found if f.kind == k)}"
                                for k in KINDS if any(f.kind == k for f in found))
                body = f"<failure message={quoteattr(f'{len(found)} channels: {msg}')}>{escape(msg)}</failure>"
            cases.append(f'  <testcase classname={quoteattr("onnxact.check." + self.model_name)} name={quoteattr(name)}>'
                         f"{body}</testcase>")
        text = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="onnxact check" '
                f'tests="{len(self.per_layer)}" failures="{len(by_layer)}" errors="0">\n' + "\n".join(cases)
                + "\n</testsuite>\n")
        if path is not None:
            _write(path, text)
        return text


def _write(path: Any, text: str) -> None:
    from .safeio import write_text

    write_text(path, text)  # atomic, never through a link; OutputError when it cannot
