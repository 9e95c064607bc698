"""The import graph of the onnxact package: no import cycles, and the scan's engines on top.

Why a test: a cycle (even through an import inside a function) ties two stages together, so
neither can be read, tested or replaced alone; ``stats`` and ``ray_engine`` once imported each
other. The graph is read from the source with ``ast`` (every ``import`` statement, at module level
or inside a function), so the test sees lazy imports that a run would not.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import onnxact

PACKAGE = Path(onnxact.__file__).parent

#: Cycles through imports inside functions that predate this test, each as the set of modules it
#: ties together. A cycle may shrink or go; a new one, or a module joining one, fails the test.
KNOWN_LAZY_CYCLES = [
    {"onnxact.activations", "onnxact.feeds", "onnxact.graph", "onnxact.images", "onnxact.limits",
     "onnxact.membound", "onnxact.model", "onnxact.normalization", "onnxact.preprocess",
     "onnxact.render.heatmaps", "onnxact.run", "onnxact.sizing"},
    {"onnxact.render.charts", "onnxact.render.picture"},
    {"onnxact.compare_html", "onnxact.compare_report"},
]

#: The dead-filter scan, bottom to top: nothing in a lower group imports a higher one.
SCAN_LAYERS = [
    {"onnxact.stats_records"},
    {"onnxact.stats_graph"},
    {"onnxact.stats_runner", "onnxact.stats_report"},
    {"onnxact.ray_engine"},  # an engine: above the runner and the report
    {"onnxact.dead_filters"},  # picks the engine
    {"onnxact.stats"},  # the old import path: re-exports only
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(every import, module-level imports only)``: ``{module: {onnxact modules it imports}}``."""
    mods = _modules()
    every: dict[str, set[str]] = {m: set() for m in mods}
    top: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        package = name.split(".") if is_pkg else name.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        at_top = {id(n) for n in tree.body}
        at_top |= {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else str(node.module)
                # ``from . import layout`` imports the module onnxact.layout; ``from .x import f`` imports onnxact.x
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                if t in mods and t != name:
                    every[name].add(t)
                    if id(node) in at_top:
                        top[name].add(t)
    return every, top


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_imports_inside_functions() -> None:
    every, top = import_graph()
    assert "onnxact.stats_graph" in every["onnxact.stats_runner"]  # module level
    assert "onnxact.ray_engine" in every["onnxact.dead_filters"]  # inside find_dead_filters
    assert "onnxact.ray_engine" not in top["onnxact.dead_filters"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_at_module_level() -> None:
    _, top = import_graph()
    assert cycles(top) == []


def test_no_new_import_cycle() -> None:
    every, _ = import_graph()
    new = [sorted(c) for c in cycles(every) if not any(c <= known for known in KNOWN_LAZY_CYCLES)]
    assert new == [], f"import cycles (counting imports inside functions): {new}"


def test_the_scan_is_layered_and_in_no_cycle() -> None:
    every, _ = import_graph()
    scan = set().union(*SCAN_LAYERS)
    assert scan <= set(every), sorted(scan - set(every))
    assert not [c for c in cycles(every) if c & scan]
    for i, group in enumerate(SCAN_LAYERS):
        above = set().union(*SCAN_LAYERS[i + 1:])
        for m in sorted(group):
            assert not every[m] & above, f"{m} imports {sorted(every[m] & above)}, a module above it"


def test_the_old_stats_path_keeps_every_name() -> None:
    """``onnxact.stats`` re-exports what code and tests import from it; ``onnxact`` keeps its public names."""
    stats = importlib.import_module("onnxact.stats")
    for name in stats.__all__:
        value = getattr(stats, name)
        assert not isinstance(value, type) or value.__module__.startswith("onnxact.stats_"), name
    assert onnxact.find_dead_filters is stats.find_dead_filters
    assert onnxact.DeadFilterReport is stats.DeadFilterReport


def test_no_module_reads_the_model_s_private_attributes() -> None:
    """What other stages need from a ``Model`` is public (``elem_types``, ``producer``, ``build_session``)."""
    tree = ast.parse((PACKAGE / "model.py").read_text(encoding="utf-8"))
    private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
               and n.value.id == "self" and n.attr.startswith("_") and not n.attr.startswith("__")}
    assert {"_elem", "_producers", "_sessions"} <= private
    reads = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "model.py" and path.parent == PACKAGE:
            continue
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Attribute) and n.attr in private and ast.unparse(n.value) not in ("self", "cls"):
                reads.append(f"{path.relative_to(PACKAGE.parent)}:{n.lineno}: {ast.unparse(n)}")
    assert reads == []


def test_every_error_class_lives_in_errors_py_under_the_root() -> None:
    """One family of exceptions, in one module: the CLI maps exactly it to exit 2.

    A private signal such as the viewer's ``_Stopped`` (ends a scan nobody wants) never leaves its module.
    """
    from onnxact import errors

    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "errors.py":
            continue
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(n, ast.ClassDef):
                continue
            signal = n.name.startswith("_") and not n.name.endswith("Error")  # private control flow, never raised out
            if not signal and any(
                    ast.unparse(b).split(".")[-1].endswith(("Error", "Exception")) for b in n.bases):
                elsewhere.append(f"{path.relative_to(PACKAGE.parent)}:{n.lineno}: class {n.name}")
    assert elsewhere == []
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.OnnxactError) and getattr(onnxact, name) is cls, name
    # still importable from where they were
    from onnxact.feeds import MissingInputError
    from onnxact.ray_engine import ClusterError

    assert (MissingInputError, ClusterError) == (errors.MissingInputError, errors.ClusterError)
