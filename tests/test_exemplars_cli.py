"""``onnxact explore`` (issue 15): outputs, bad input, and the Ray engine's identical JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxact
from onnxact.cli import main
from tests.subjects import photo

DEMO = str(onnxact.demo_paths()[0])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"):
        shutil.copy(photo(name), d / name)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one_pixel.png")
    return d


def test_cli_writes_json_crops_and_pages(photos, tmp_path, capsys):
    out = tmp_path / "ex"
    assert main(["explore", DEMO, str(photos), "-o", str(out), "--top", "3", "--layers", "conv2", "pool5"]) == 0
    said = capsys.readouterr().out
    assert "6 images scanned, 2 layers" in said and str(out / "exemplars.json") in said
    d = json.loads((out / "exemplars.json").read_text())
    assert d["images"] == 6 and set(d["layers"]) == {"conv2", "pool5"}
    for name, chans in d["layers"].items():
        page = (out / "layers" / name / "index.html").read_text()
        assert "<script src" not in page and "http" not in page.replace("http-equiv", "")
        for c in chans:
            assert len(c["top"]) == 3
            for e in c["top"]:
                with Image.open(out / e["crop"]) as im:
                    assert min(im.size) >= 1 and im.format == "PNG"
                assert f"../../{e['crop']}" in page
    index = (out / "index.html").read_text()
    assert "layers/conv2/index.html" in index and "layers/pool5/index.html" in index
    # a filter that never fires is said in its own row, after its crops (not above the next row's)
    for name, chans in d["layers"].items():
        page = (out / "layers" / name / "index.html").read_text()
        for c in chans:
            row = page.split(f"<tr id='c{c['channel']}'>", 1)[1].split("</tr>", 1)[0]
            silent = all(e["value"] == 0 for e in c["top"])
            assert ("does not fire" in row) == silent
            if silent:
                assert row.index("does not fire") > row.rindex("<figure")
    # a crop is the box of the original image, upscaled: its aspect follows the box
    e = d["layers"]["conv2"][0]["top"][0]
    x0, y0, x1, y1 = e["box"]
    with Image.open(out / e["crop"]) as im:
        assert abs(im.size[0] / im.size[1] - (x1 - x0) / (y1 - y0)) < 0.1


def test_cli_bad_top(photos, tmp_path, capsys):
    for bad in ("0", "-3", "x"):
        assert main(["explore", DEMO, str(photos), "-o", str(tmp_path / "o"), "--top", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--top" in err[0]


def test_cli_fewer_images_than_top_said_once(photos, tmp_path, capsys):
    assert main(["explore", DEMO, str(photos / "coffee.png"), str(photos / "camera.png"), "-o", str(tmp_path / "o"),
                 "--top", "5", "--layers", "conv1", "--no-pages"]) == 0
    err = capsys.readouterr().err
    assert err.count("fewer than --top 5") == 1
    d = json.loads((tmp_path / "o" / "exemplars.json").read_text())
    assert all(len(c["top"]) == 2 for c in d["layers"]["conv1"])


def test_cli_unreadable_images_skipped_or_strict(photos, tmp_path, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(photos / "coffee.png", d / "coffee.png")
    (d / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    assert main(["explore", DEMO, str(d), "-o", str(tmp_path / "o"), "--layers", "conv1", "--no-pages"]) == 0
    assert "1 unreadable images skipped" in capsys.readouterr().err
    assert main(["explore", DEMO, str(d), "-o", str(tmp_path / "o2"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jpg" in err[0]
    assert not (tmp_path / "o2").exists()


def test_cli_unknown_layer_and_refused_folder(photos, tmp_path, capsys):
    assert main(["explore", DEMO, str(photos), "-o", str(tmp_path / "o"), "--layers", "conv9"]) == 2
    assert "conv9" in capsys.readouterr().err
    # the output folder may not be the folder of the images
    assert main(["explore", DEMO, str(photos), "-o", str(photos)]) == 2
    assert "choose another output folder" in capsys.readouterr().err
    assert (photos / "coffee.png").exists()


def test_arrays_are_labelled_and_boxed_in_input_pixels(tmp_path):
    x = np.random.default_rng(0).random((3, 128, 128, 3), dtype=np.float32)
    ex = onnxact.find_exemplars(DEMO, x, top=2, layers=["conv1"])
    for chans in ex.layers["conv1"]:
        for e in chans:
            assert e.image in {"array[0]", "array[1]", "array[2]"}
            assert 0 <= e.box[0] < e.box[2] <= 128 and 0 <= e.box[1] < e.box[3] <= 128
    ex.save(tmp_path / "arr")  # no original image to crop: JSON and pages still written
    assert (tmp_path / "arr" / "exemplars.json").exists() and (tmp_path / "arr" / "index.html").exists()


def test_ray_json_equals_local(photos):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seen = []
        kw = dict(top=3, layers=["conv2", "pool3"], batch_size=2)
        local = onnxact.find_exemplars(DEMO, photos, **kw).to_json()
        remote = onnxact.find_exemplars(DEMO, photos, engine="ray", workers=2,
                                        progress=lambda d, t: seen.append((d, t)), **kw).to_json()
    finally:
        ray.shutdown()
    assert json.dumps(remote, sort_keys=True) == json.dumps(local, sort_keys=True)
    assert seen and seen[-1] == (6, 6)


def test_pages_escape_names(photos, tmp_path):
    """A layer or image name with markup is text on the pages, and its folder name is safe."""
    from onnxact.exemplars import Exemplar, Exemplars

    img = str(photos / "coffee.png")
    name = "<script>alert('x')</script>/../conv"
    ex = Exemplars("m<b>.onnx", 1, 1, {name: [[Exemplar(img, 1.5, (0, 0, 10, 10), (0, 0))]]}, {name: 0.5}, [])
    out = ex.save(tmp_path / "esc")
    pages = [p.read_text() for p in out.rglob("index.html")]
    assert len(pages) == 2 and all("<script>alert" not in p and "<b>.onnx" not in p for p in pages)
    assert any("&lt;script&gt;alert" in p for p in pages)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
