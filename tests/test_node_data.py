"""``--node-data`` / ``onnxact.to_node_data``: Model Explorer overlays, checked with Model Explorer's own code.

Every file written is read back into ``model_explorer.node_data_builder``'s dataclasses (strictly,
with dacite, as Model Explorer reads its own dataclasses) and its keys are checked against the graph
that the ``model-explorer-onnx`` adapter builds from the same model file. The nodes expected for a
layer are found through the adapter's graph alone (the node whose output tensor tag is the layer's
tensor, and its incoming edges back to the conv), never through onnxact's own mapping.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from dacite import Config, from_dict
from model_explorer import node_data_builder as ndb
from model_explorer_onnx.main import ONNXAdapter
from onnx import TensorProto, helper, numpy_helper

import onnxact
from onnxact.cli import main
from onnxact.node_data import DEAD_THRESHOLDS, SQNR_CAP_DB, adapter_node_ids, to_node_data

from .subjects import photo, rapidocr_models

_VALUE_NODES = {"Input", "Output", "Initializer", "InitializedInput"}


def _strict(text: str) -> Any:
    def refuse(c: str) -> Any:
        raise AssertionError(f"{c} in a node-data file: not JSON")
    return json.loads(text, parse_constant=refuse)


def read_node_data(path: Path) -> ndb.ModelNodeData:
    """The file as Model Explorer's ``ModelNodeData``; the library writes back the same fields."""
    raw = _strict(Path(path).read_text(encoding="utf-8"))
    data = ndb.ModelNodeData(graphsData={
        gid: from_dict(ndb.GraphNodeData, graph, config=Config(strict=True)) for gid, graph in raw.items()})
    written = json.loads(data.to_json_string())
    for gid, graph in raw.items():
        assert {k: written[gid][k] for k in graph} == graph
    return data


def adapter_graph(path: Path) -> Any:
    """The main graph the ONNX adapter builds (what Model Explorer shows)."""
    return ONNXAdapter().convert(str(path), {})["graphs"][0]


def _tag(item: Any) -> str | None:
    return next((a.value for a in item.attrs if a.key == "__tensor_tag"), None)


def producer_ids(graph: Any) -> dict[str, str]:
    """{tensor: id of the adapter node that outputs it}, from the adapter's output metadata."""
    return {_tag(md): n.id for n in graph.nodes if n.label not in _VALUE_NODES for md in n.outputsMetadata}


def path_back(graph: Any, node_id: str, op: str) -> list[str]:
    """Adapter node ids from the nearest ``op`` node (walking incoming edges back) to ``node_id``."""
    by_id = {n.id: n for n in graph.nodes}
    paths = [[node_id]]
    for _ in range(6):
        nxt = []
        for p in paths:
            if by_id[p[0]].label == op:
                return p
            for e in by_id[p[0]].incomingEdges:
                src = by_id.get(e.sourceNodeId)
                if src is not None and src.label not in _VALUE_NODES | {"Constant"}:
                    nxt.append([src.id, *p])
        paths = nxt
    return [node_id]


def check_file(path: Path, model_path: Path, expected: dict[str, float]) -> tuple[ndb.GraphNodeData, Any]:
    """Every key names a node of the adapter's graph; each layer tensor's own node holds its value."""
    data = read_node_data(path)
    graph = adapter_graph(model_path)
    assert list(data.graphsData) == [graph.id]
    g = data.graphsData[graph.id]
    ids = {n.id for n in graph.nodes}
    assert g.results and set(g.results) <= ids, set(g.results) - ids
    made_by = producer_ids(graph)
    for tensor, value in expected.items():
        assert g.results[made_by[tensor]].value == pytest.approx(value, rel=1e-12), tensor
    return g, graph


def dead_fractions(report_json: dict[str, Any]) -> dict[str, float]:
    return {r["tensor"]: r["dead"] / r["channels"] for r in report_json["layers"]}


# ------------------------------------------------------------------------------ check

def test_check_writes_the_dead_fraction_per_node_of_the_demo(tmp_path, capsys):
    model, image = onnxact.demo_paths()
    images = [str(image), str(photo("astronaut.png")), str(photo("coffee.png"))]
    rc = main(["check", str(model), *images, "--json", str(tmp_path / "r.json"), "--node-data", str(tmp_path / "n.json")])
    out = capsys.readouterr().out
    assert rc == 1 and "node data (dead filter fraction: 10 layers on 15 nodes of graph 'tf2onnx')" in out
    report = json.loads((tmp_path / "r.json").read_text())
    g, graph = check_file(tmp_path / "n.json", model, dead_fractions(report))
    assert [t.value for t in g.thresholds] == [t["value"] for t in DEAD_THRESHOLDS] and not g.gradient
    assert g.thresholds[0].value == 0 and g.thresholds[0].bgColor == "#1a9850" and g.thresholds[-1].bgColor == "#d73027"
    # independently: a channel is dead when its max |a| is 0 on every image (get_activations, numpy)
    m = onnxact.load(model)
    acts = [onnxact.get_activations(m, onnxact.preprocess_image(p, m)) for p in images]
    made_by = producer_ids(graph)
    for layer in m.layers:
        peak = np.max([np.abs(a[layer.name]).max(axis=(0, 2, 3)) for a in acts], axis=0)
        node = made_by[layer.tensor]
        assert g.results[node].value == pytest.approx(float(np.mean(peak == 0))), layer.name
        if layer.op_type == "Conv":  # the conv (BiasAdd in tf2onnx) and its Relu: both coloured
            chain = path_back(graph, node, "Conv")
            assert len(chain) == 2 and {g.results[n].value for n in chain} == {g.results[node].value}


def test_library_on_a_torch_legacy_export(torch_no_metadata, tmp_path):
    m = onnxact.load(torch_no_metadata)
    report = onnxact.find_dead_filters(m, [str(photo("chelsea.png")), str(photo("rocket.jpg"))], size=(96, 128))
    data = to_node_data(report, m, tmp_path / "n.json")
    assert data.graph_id == "main_graph" and not data.skipped
    g, graph = check_file(tmp_path / "n.json", torch_no_metadata, dead_fractions(report.as_dict()))
    assert data.results == {k: v.value for k, v in g.results.items()}
    conv1 = path_back(graph, producer_ids(graph)["/relu/Relu_output_0"], "Conv")
    assert conv1 == ["/conv1/Conv", "/relu/Relu"] == data.layers["conv1"]


def test_torch_dynamo_export(tmp_path):
    torch = pytest.importorskip("torch")
    from .models.torch_nets import tiny_resnet

    module, x = tiny_resnet()
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=True)
    m = onnxact.load(path)
    values = {layer.name: i + 0.5 for i, layer in enumerate(m.layers)}
    data = to_node_data(values, m, tmp_path / "n.json")
    _g, graph = check_file(tmp_path / "n.json", path, {layer.tensor: values[layer.name] for layer in m.layers})
    made_by = producer_ids(graph)
    assert data.layers["stem"] == path_back(graph, made_by[m.layer("stem").tensor], "Conv") and len(data.layers["stem"]) == 2


def test_keras_export_with_separate_bn_and_activation(keras_bn_act, tmp_path, capsys):
    m = onnxact.load(keras_bn_act)
    values = {layer.name: i + 0.5 for i, layer in enumerate(m.layers)}  # one value per layer: no ambiguity
    data = to_node_data(values, m, tmp_path / "mean.json")
    g, graph = check_file(tmp_path / "mean.json", keras_bn_act, {layer.tensor: values[layer.name] for layer in m.layers})
    assert [s.stop for s in g.gradient] == [0, 1] and not g.thresholds
    made_by = producer_ids(graph)
    for layer in m.layers:
        chain = path_back(graph, made_by[layer.tensor], layer.op_type)
        assert chain == data.layers[layer.name], layer.name
        assert {g.results[n].value for n in chain} == {values[layer.name]}
    conv2d = m.layer("conv2d")
    assert conv2d.fused == ("batch_normalization", "activation") and len(data.layers["conv2d"]) == 2  # BN folded
    # the CLI on the same model and a real photo
    rc = main(["check", str(keras_bn_act), str(photo("coffee.png")), "--json", str(tmp_path / "r.json"),
               "--node-data", str(tmp_path / "dead.json")])
    assert rc in (0, 1), capsys.readouterr()
    check_file(tmp_path / "dead.json", keras_bn_act, dead_fractions(json.loads((tmp_path / "r.json").read_text())))


def test_rapidocr_det_whose_nodes_are_half_unnamed(tmp_path):
    det = rapidocr_models()["det"]
    proto = onnx.load(det)
    assert sum(not n.name for n in proto.graph.node) > 300 and proto.graph.name == "Model from PaddlePaddle."
    graph = adapter_graph(det)
    assert adapter_node_ids(proto.graph) == [n.id for n in graph.nodes if n.label not in _VALUE_NODES]
    m = onnxact.load(det)
    report = onnxact.find_dead_filters(m, [str(photo("astronaut.png")), str(photo("text.png"))], size=(192, 192))
    data = to_node_data(report, m, tmp_path / "n.json")
    assert not data.skipped and len(data.layers) == len(m.layers)
    check_file(tmp_path / "n.json", det, dead_fractions(report.as_dict()))


# ------------------------------------------------------------------------------ explore

def test_explore_writes_the_mean_activation_per_node(torch_no_metadata, keras_bn_act, tmp_path, capsys):
    images = [str(photo("astronaut.png")), str(photo("coffee.png")), str(photo("chelsea.png"))]
    for model in (torch_no_metadata, keras_bn_act):
        nd = tmp_path / f"{model.stem}.json"
        rc = main(["explore", str(model), *images, "-o", str(tmp_path / model.stem), "--top", "2", "--no-pages",
                   "--node-data", str(nd)])
        assert rc == 0, capsys.readouterr()
        assert f"written to {nd}" in capsys.readouterr().out
        ex = json.loads((tmp_path / model.stem / "exemplars.json").read_text())
        expected = {ex["layer_info"][name]["tensor"]: v for name, v in ex["means"].items()}
        assert len(expected) == len(onnxact.load(model).layers)
        g, _ = check_file(nd, model, expected)
        assert [s.stop for s in g.gradient] == [0, 1]
    exemplars = onnxact.find_exemplars(keras_bn_act, images, top=1)
    data = to_node_data(exemplars, keras_bn_act)
    assert data.metric == "mean activation" and not data.skipped
    assert {data.results[nodes[-1]] for nodes in data.layers.values()} == set(exemplars.means.values())
    err = _one_line_error(capsys, ["explore", str(keras_bn_act), *images, "-o", str(tmp_path / "x"),
                                   "--node-data", str(keras_bn_act)])
    assert "is the model" in err and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ in Model Explorer itself

@contextlib.contextmanager
def model_explorer(model: Path, node_data: Path):
    """``model-explorer MODEL --extensions=model_explorer_onnx --node_data_paths=F`` (the README's
    command); yields the URL it prints; always stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "model_explorer", str(model), "--extensions=model_explorer_onnx",
                          f"--node_data_paths={node_data}", "--no_open_in_browser", "--host=127.0.0.1",
                          f"--port={port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in p.stdout], daemon=True).start()
    try:
        seen = []
        while not seen or not seen[-1].startswith("http://"):
            seen.append(lines.get(timeout=120))
        yield seen[-1].strip()
    finally:
        p.terminate()
        p.wait(timeout=30)


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian chromium is not installed")
def test_model_explorer_colours_the_nodes_in_chromium(tmp_path, capsys):
    """The file loads in Model Explorer's web app: its node-data table shows our value and colour on each node."""
    from playwright.sync_api import sync_playwright

    model, image = onnxact.demo_paths()
    assert main(["check", str(model), str(image), "--node-data", str(tmp_path / "dead.json")]) == 1
    capsys.readouterr()
    results = _strict((tmp_path / "dead.json").read_text())["tf2onnx"]["results"]
    graph = adapter_graph(model)
    expected = [(n.label, results[n.id]["value"] if n.id in results else None) for n in graph.nodes]
    colour = {"#1a9850": "rgb(26, 152, 80)", "#91cf60": "rgb(145, 207, 96)", "#fee08b": "rgb(254, 224, 139)",
              "#fc8d59": "rgb(252, 141, 89)", "#d73027": "rgb(215, 48, 39)"}
    with model_explorer(model, tmp_path / "dead.json") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            page.wait_for_selector("td.node-label", timeout=90_000)
            rows = page.evaluate("""() => {  // the last table with node labels: "Node data" (above: root-level stats)
                const t = [...document.querySelectorAll('table')].filter(t => t.querySelector('td.node-label')).pop();
                return [...t.querySelectorAll('td.node-label')].map(td => { const v = td.nextElementSibling;
                    return [td.textContent.trim(), v.textContent.trim(), v.style.backgroundColor]; }); }""")
        finally:
            browser.close()
    shown = [(label, None if v == "-" else float(v)) for label, v, _bg in rows]
    assert shown == expected and sum(v is not None for _label, v in shown) == len(results) == 15
    for (_label, value, bg) in rows:
        if value != "-":
            band = next(t["bgColor"] for t in DEAD_THRESHOLDS if float(value) <= t["value"])
            assert bg == colour[band], (value, bg)


# ------------------------------------------------------------------------------ node ids

def _unnamed_and_duplicate_names_with_a_loop() -> onnx.ModelProto:
    """Unnamed convs, a repeated name, a name equal to a generated one, and a Loop whose body holds
    unnamed nodes between them (the adapter's renaming counter runs through subgraphs)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go"),
             numpy_helper.from_array(np.zeros(1, np.float32), "v0")]
    one = helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32)))
    body = helper.make_graph(
        [one, helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["v", "one"], ["v_out"]),
         helper.make_node("Relu", ["v_out"], ["v_out2"], name="node")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out2", TensorProto.FLOAT, [1])])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Loop", ["trips", "go", "v0"], ["count"], body=body),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="dup"),
        helper.make_node("Relu", ["c2"], ["r2"], name="dup"),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w2"], ["c3"], pads=[1, 1, 1, 1], name="node_1"),
    ]
    graph = helper.make_graph(nodes, "", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("c3", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("count", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_generated_ids_for_unnamed_and_repeated_names_across_subgraphs(tmp_path):
    path = tmp_path / "unnamed.onnx"
    onnx.save(_unnamed_and_duplicate_names_with_a_loop(), path)
    graph = adapter_graph(path)
    ids = adapter_node_ids(onnx.load(path).graph)
    assert ids == [n.id for n in graph.nodes if n.label not in _VALUE_NODES]
    # the Loop body (its own scope, the same counter) took node, node_3, node_4 and node_5 (its "node")
    assert ids == ["node", "node_1", "node_2", "dup", "dup_1", "node_6", "node_1_1"]
    assert graph.id == ""  # an unnamed graph keeps the empty id
    m = onnxact.load(path)
    values = {layer.name: float(i) for i, layer in enumerate(m.layers)}
    data = to_node_data(values, m, tmp_path / "n.json")
    check_file(tmp_path / "n.json", path, {layer.tensor: values[layer.name] for layer in m.layers})
    assert list(data.layers.values()) == [["node", "node_1"], ["dup", "dup_1"], ["node_6"], ["node_1_1"]]
    with pytest.raises(onnxact.ModelError, match="two nodes with same node name"):  # why no dataset result has them
        onnxact.get_activations(m, np.zeros((1, 3, 16, 16), np.float32))


# ------------------------------------------------------------------------------ compare

def _scaled_copy(path: Path, out: Path, initializer: str) -> None:
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name == initializer:
            arr = numpy_helper.to_array(t).copy()
            arr[0] *= 1.3
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    onnx.save(m, out)


def test_compare_writes_sqnr_on_as_graph_with_a_cap_for_identical_layers(torch_no_metadata, tmp_path, capsys):
    proto = onnx.load(torch_no_metadata)
    conv = next(n for n in proto.graph.node if n.name == "/layer2/layer2.0/conv1/Conv")
    b = tmp_path / "b.onnx"
    _scaled_copy(torch_no_metadata, b, conv.input[1])
    images = [str(photo("chelsea.png")), str(photo("coffee.png"))]
    rc = main(["compare", str(torch_no_metadata), str(b), *images, "--size", "64", "64", "--json",
               str(tmp_path / "r.json"), "--node-data", str(tmp_path / "sqnr.json")])
    assert rc == 1, capsys.readouterr()
    report = _strict_layers(tmp_path / "r.json")
    expected = {r["a_tensor"]: min(r["sqnr_db"], SQNR_CAP_DB) for r in report}
    assert SQNR_CAP_DB in expected.values() and any(math.isfinite(v) and v < 100 for v in expected.values())
    g, _ = check_file(tmp_path / "sqnr.json", torch_no_metadata, expected)
    assert [t.bgColor for t in g.thresholds][0] == "#d73027" and g.thresholds[-1].value == SQNR_CAP_DB
    assert g.results["/layer1/layer1.0/conv1/Conv"].value == SQNR_CAP_DB  # before the change: identical
    assert g.results["/layer2/layer2.0/conv1/Conv"].value < 100
    # B's graph, from the library
    r = onnxact.compare(str(torch_no_metadata), str(b), images, size=(64, 64))
    data_b = to_node_data(r, b, tmp_path / "b.json", side="b")
    check_file(tmp_path / "b.json", b, {la.b_tensor: min(la.sqnr_db, SQNR_CAP_DB) for la in r.layers})
    assert data_b.results == to_node_data(r, torch_no_metadata).results  # same graph names on both sides


def _strict_layers(path: Path) -> list[dict[str, Any]]:
    """The compare JSON report's layers (its ``Infinity`` read as float inf)."""
    return json.loads(path.read_text())["layers"]


# ------------------------------------------------------------------------------ bad input

def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_node_data_paths_stop_before_the_scan(tmp_path, capsys):
    model, image = onnxact.demo_paths()
    copy = tmp_path / "m.onnx"
    copy.write_bytes(model.read_bytes())
    before = copy.read_bytes()
    for cmd in (["check", str(copy), str(image)], ["compare", str(copy), str(copy), str(image)]):
        err = _one_line_error(capsys, [*cmd, "--node-data", str(tmp_path / "no" / "n.json")])
        assert "does not exist; create it" in err
        err = _one_line_error(capsys, [*cmd, "--node-data", str(copy)])
        assert "is the model" in err and "never writes over its inputs" in err
        err = _one_line_error(capsys, [*cmd, "--node-data", str(tmp_path)])
        assert "is a folder" in err
        err = _one_line_error(capsys, [*cmd, "--node-data", str(tmp_path / "r.json"), "--json", str(tmp_path / "r.json")])
        assert "name the same file" in err
    assert copy.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with pytest.raises(onnxact.InputError, match="not list"):
        to_node_data([1, 2], copy)
    with pytest.raises(onnxact.InputError, match="layer 'conv1' has 'high'"):
        to_node_data({"conv1": "high"}, copy)
    with pytest.raises(onnxact.InputError, match="side must be"):
        to_node_data(onnxact.compare(str(copy), str(copy), [str(image)]), copy, side="c")


def test_unknown_layers_and_nan_values_are_listed_not_written(tmp_path):
    model, _ = onnxact.demo_paths()
    data = to_node_data({"conv1": 0.25, "conv9": 1.0, "pool1": float("nan"), "conv2": float("inf")}, model)
    assert list(data.layers) == ["conv1"]
    assert set(data.skipped) == {"conv9", "pool1", "conv2"} and "no layer named 'conv9'" in data.skipped["conv9"]
    assert _strict(data.to_json())["tf2onnx"]["results"] == {
        "seed_cnn_1/conv1_1/BiasAdd": {"value": 0.25}, "seed_cnn_1/conv1_1/Relu": {"value": 0.25}}
