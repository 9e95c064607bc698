"""The result of a comparison: per-layer metrics, the first divergence, and its outputs.

Why a report object (not a DataFrame): it is shaped like ``DeadFilterReport`` so the CLI and CI
scripts treat both the same way: ``bool(report)`` is True when something was found (a layer past
the tolerance), ``table()`` for terminals, ``to_json()`` / ``to_junit()`` for machines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

__all__ = ["LayerResult", "Unmatched", "Comparison", "layer_metrics"]


@dataclass(frozen=True)
class LayerResult:
    """One matched layer: the A and B tensors compared and the metrics over every image.

    ``rel_l2`` = ||A-B|| / ||A||; ``sqnr_db`` = 10 log10(sum A^2 / sum (A-B)^2) (inf when equal);
    ``worst_channel`` is the channel with the largest relative error (-1: the layer has no
    channel axis). ``matched_by`` says how the pair was found (name, tensor, position, map).
    """

    name: str
    a_tensor: str
    b_tensor: str
    rel_l2: float
    cosine: float
    sqnr_db: float
    max_abs: float
    worst_channel: int
    matched_by: str = "name"
    passed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "a_tensor": self.a_tensor, "b_tensor": self.b_tensor, "rel_l2": self.rel_l2,
                "cosine": self.cosine, "sqnr_db": self.sqnr_db, "max_abs": self.max_abs,
                "worst_channel": self.worst_channel}


@dataclass(frozen=True)
class Unmatched:
    """A layer of one side with no partner on the other, and why (listed, never dropped)."""

    side: str  # "a" | "b"
    name: str
    reason: str


def layer_metrics(sum_a2: float, sum_b2: float, sum_ab: float, sum_d2: float) -> tuple[float, float, float]:
    """(rel_l2, cosine, sqnr_db) from the four sums; never NaN for finite sums (0/0 cases defined)."""
    if sum_a2 > 0:
        rel = math.sqrt(sum_d2 / sum_a2)
    else:
        rel = 0.0 if sum_d2 == 0 else math.inf
    if sum_a2 > 0 and sum_b2 > 0:
        cos = max(-1.0, min(1.0, sum_ab / math.sqrt(sum_a2 * sum_b2)))  # float32 partial sums: ~1e-7
    else:
        cos = 1.0 if sum_a2 == 0 and sum_b2 == 0 else 0.0
    if sum_d2 > 0:
        sqnr = 10 * math.log10(sum_a2 / sum_d2) if sum_a2 > 0 else -math.inf
    else:
        sqnr = math.inf if sum_d2 == 0 else math.nan
    return rel, cos, sqnr


@dataclass
class Comparison:
    """Layer-by-layer comparison of A and B (``onnxact.compare`` / ``compare_activations``).

    ``layers`` in A's graph order; ``first_divergence`` names the first layer past the tolerance
    (``rel_l2 > rtol``, or ``sqnr_db < min_sqnr`` when that is given) or is None.
    ``bool(report)`` is True when a layer diverged, as ``DeadFilterReport`` is when filters are found.
    """

    a: str
    b: str
    images: int
    layers: list[LayerResult]
    unmatched_a: list[Unmatched] = field(default_factory=list)
    unmatched_b: list[Unmatched] = field(default_factory=list)
    rtol: float | None = 1e-3
    min_sqnr: float | None = None
    #: image files that could not be read and were skipped: (path, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: {layer: (A, B)} of the first sample, kept when asked (``keep_samples=True``) for pictures
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    #: {layer: (layout of A's array, LayerInfo or None)} for drawing the samples
    sample_info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def first_divergence(self) -> str | None:
        return next((r.name for r in self.layers if not r.passed), None)

    @property
    def diverged(self) -> list[LayerResult]:
        return [r for r in self.layers if not r.passed]

    @property
    def worst(self) -> LayerResult | None:
        """The layer with the lowest SQNR (the most error relative to its signal)."""
        if not self.layers:
            return None
        return min(self.layers, key=lambda r: (r.sqnr_db if not math.isnan(r.sqnr_db) else -math.inf))

    def layer(self, name: str) -> LayerResult:
        for r in self.layers:
            if r.name == name:
                return r
        from .errors import LayerError

        raise LayerError(f"no matched layer named '{name}' in this comparison")

    def __bool__(self) -> bool:
        return any(not r.passed for r in self.layers)

    def __repr__(self) -> str:
        return (f"Comparison({self.a!r} vs {self.b!r}, images={self.images}, layers={len(self.layers)}, "
                f"first_divergence={self.first_divergence!r})")

    def tolerance_text(self) -> str:
        parts = ([f"rel_l2 <= {self.rtol:g}"] if self.rtol is not None else []) + (
            [f"SQNR >= {self.min_sqnr:g} dB"] if self.min_sqnr is not None else [])
        return " and ".join(parts)

    # -- outputs ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Exactly the schema of issue 16 (tests and CI scripts read it); SQNR inf is JSON ``Infinity``."""
        return {"a": self.a, "b": self.b, "images": self.images, "first_divergence": self.first_divergence,
                "layers": [r.to_json() for r in self.layers],
                "unmatched_a": [u.name for u in self.unmatched_a], "unmatched_b": [u.name for u in self.unmatched_b]}

    def to_json(self, path: Any = None, indent: int | None = 2) -> str:
        text = json.dumps(self.as_dict(), indent=indent)
        if path is not None:
            _write(path, text + "\n")
        return text

    def table(self) -> str:
        """Terminal table in graph order; the first divergence is marked with '>>'."""
        first = self.first_divergence
        head = ("", "layer", "rel_l2", "cosine", "SQNR dB", "max |A-B|", "worst ch", "")
        rows = []
        for r in self.layers:
            mark = ">>" if r.name == first else ""
            rows.append((mark, r.name, f"{r.rel_l2:.3g}", f"{r.cosine:.6f}", _db(r.sqnr_db), f"{r.max_abs:.3g}",
                         str(r.worst_channel), "" if r.passed else "DIVERGED"))
        w = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        left = {0, 1, 7}
        lines = ["  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(row)).rstrip()
                 for row in [head, *rows]]
        for u in self.unmatched_a + self.unmatched_b:
            lines.append(f"   only in {u.side.upper()}: {u.name} ({u.reason})")
        summary = f"{self.images} images, {len(self.layers)} layers compared ({self.tolerance_text()})"
        if first:
            summary += f": first divergence at {first} ({len(self.diverged)} layers past the tolerance)"
        else:
            summary += ": all within tolerance"
        if self.failed:
            summary += f"; {len(self.failed)} unreadable images skipped"
        lines.append(summary)
        return "\n".join(lines)

    def to_junit(self, path: Any = None) -> str:
        """JUnit XML, one testcase per matched layer (failing past the tolerance) and per unmatched one (skipped)."""
        cases = []
        suite = quoteattr("onnxact.compare." + self.a)
        for r in self.layers:
            body = ""
            if not r.passed:
                msg = (f"rel_l2 {r.rel_l2:.3g}, SQNR {_db(r.sqnr_db)} dB, max |A-B| {r.max_abs:.3g}, "
                       f"worst channel {r.worst_channel} (tolerance: {self.tolerance_text()})")
                body = f"<failure message={quoteattr(msg)}>{escape(msg)}</failure>"
            cases.append(f"  <testcase classname={suite} name={quoteattr(r.name)}>{body}</testcase>")
        for u in self.unmatched_a + self.unmatched_b:
            msg = f"only in {u.side.upper()}: {u.reason}"
            cases.append(f"  <testcase classname={suite} name={quoteattr(u.name)}>"
                         f"<skipped message={quoteattr(msg)}/></testcase>")
        n_skip = len(self.unmatched_a) + len(self.unmatched_b)
        text = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="onnxact compare" '
                f'tests="{len(self.layers) + n_skip}" failures="{len(self.diverged)}" errors="0" '
                f'skipped="{n_skip}">\n' + "\n".join(cases) + "\n</testsuite>\n")
        if path is not None:
            _write(path, text)
        return text

    def to_html(self, directory: Any) -> Any:
        """Write ``index.html`` (SQNR and rel error against depth) plus A / B / |A-B| grids; returns the page path."""
        from .compare_html import write_html

        return write_html(self, directory)


def _db(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:.1f}"


def _write(path: Any, text: str) -> None:
    from .safeio import write_text

    write_text(path, text)
