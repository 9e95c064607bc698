"""examples/seed_workflow.ipynb runs end to end in a real Jupyter kernel and shows what it says.

The notebook is executed with nbclient in a kernel started from the interpreter that runs pytest
(a kernelspec written into the test's folder, so the kernel imports this onnxact, not another
install), with its working folder in tmp_path: every file it writes lands there. Then its outputs
are read: no error, pictures in the display cells, the layer table, the numbers it prints.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("torch")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "seed_workflow.ipynb"
DEMO_LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "conv4", "pool4", "conv5", "pool5"]


def _kernel(tmp_path: Path) -> tuple[str, object]:
    """A kernel manager whose kernel is ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "onnxact-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "onnxact test", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return "onnxact-test", KernelManager(kernel_name="onnxact-test", kernel_spec_manager=ksm)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebook")
    work = tmp / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    name, km = _kernel(tmp)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=name, km=km,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()
    return nb, work


def _cell(nb, source_part: str):
    found = [c for c in nb.cells if c.cell_type == "code" and source_part in c.source]
    assert len(found) == 1, source_part
    return found[0]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_runs_without_errors_and_writes_only_in_its_folder(executed):
    nb, work = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert {p.name for p in work.iterdir()} == {"shapes", "shapes_cnn.onnx", "check.json", "star.png"}
    assert not NOTEBOOK.with_name("shapes").exists() and not NOTEBOOK.with_name("shapes_cnn.onnx").exists()


def test_the_kernel_ran_this_onnxact(executed):
    nb, _ = executed
    import onnxact

    assert _text(_cell(nb, "import onnxact")).strip() == f"onnxact {onnxact.__version__}"


def test_training_and_export(executed):
    nb, work = executed
    out = _text(_cell(nb, "train_image_classifier(data"))
    m = re.search(r"trained in ([\d.]+) s: train accuracy ([\d.]+), validation accuracy ([\d.]+)", out)
    assert m and 0 <= float(m.group(3)) <= 1
    assert "classes: ['circle', 'cross', 'square', 'star', 'triangle']" in out
    import onnxact

    trained = onnxact.load(work / "shapes_cnn.onnx")
    assert trained.class_names == ["circle", "cross", "square", "star", "triangle"]
    assert [layer.name for layer in trained.layers] == DEMO_LAYERS  # the seed's five conv + pool blocks


def test_check_found_what_find_dead_filters_finds(executed):
    nb, work = executed
    import onnxact

    out = _text(_cell(nb, "onnxact_cli([\"check\""))
    code = int(re.search(r"exit code (\d)", out).group(1))
    report = json.loads((work / "check.json").read_text())
    dead = onnxact.find_dead_filters(work / "shapes_cnn.onnx", work / "shapes").dead
    assert code == (1 if dead else 0)
    line = _text(_cell(nb, "quick = onnxact.find_dead_filters"))
    assert f"dead filters: {len(dead)} after seconds of training" in line
    assert report["images"] == 300 and len(report["dead"]) == len(dead)
    assert sum(row["dead"] for row in report["layers"]) == len(dead)


def test_activation_table_and_pictures(executed):
    nb, _ = executed
    cell = _cell(nb, "acts = onnxact.get_activations")
    assert _text(cell).strip() == "layers: " + ", ".join(DEMO_LAYERS)
    html = next(o["data"]["text/html"] for o in cell.outputs if o.output_type == "execute_result")
    assert html.count("<tr>") == 1 + len(DEMO_LAYERS) and html.count("data:image/png;base64,") == len(DEMO_LAYERS)
    assert _images(_cell(nb, "display_activations(acts)")) == len(DEMO_LAYERS)
    assert _images(_cell(nb, "display_heatmaps(acts")) == 3
    cam = _cell(nb, "class_activation_map(model")
    assert _images(cam) == 1 and "predicted 'star'" in _text(cam)


def test_widget_cell_shows_a_widget(executed):
    nb, _ = executed
    out = _cell(nb, "onnxact.widget(model")
    views = [o for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1


def test_inline_pictures_are_the_numbered_ones(executed):
    """What the notebook showed inline is display_activations / display_heatmaps with each tile
    numbered by its channel (the default when shown in a notebook), pixel for pixel."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    import onnxact

    nb, work = executed
    model = onnxact.load(onnxact.demo_paths()[0])
    acts = onnxact.get_activations(model, onnxact.preprocess_image(str(work / "star.png"), model))

    def shown(cell) -> list:
        return [np.asarray(Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))).convert("RGB"))
                for o in cell.outputs if "image/png" in o.get("data", {})]

    grids = onnxact.display_activations(acts, show=False, channel_numbers=True)
    plain = onnxact.display_activations(acts, show=False)
    got = shown(_cell(nb, "display_activations(acts)"))
    assert len(got) == len(grids)
    for g, want, flat in zip(got, grids.values(), plain.values()):
        assert np.array_equal(g, np.asarray(want.convert("RGB")))
        assert g.shape != np.asarray(flat).shape  # the numbers take a band above each row of tiles
    heat = onnxact.display_heatmaps(acts, str(work / "star.png"), layers=["conv1", "conv3", "pool5"], show=False,
                                    channel_numbers=True)
    for g, want in zip(shown(_cell(nb, "display_heatmaps(acts")), heat.values()):
        assert np.array_equal(g, np.asarray(want.convert("RGB")))
