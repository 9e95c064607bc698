"""The report page's HTML as written (no browser): lazy pictures with sizes, collapsible sections,
previews linked to the full picture, the neutral all-zero column and its note, 1x1 layers, hover
maps that match the arrays, and ``--embed`` over several images giving one self-contained page.
(tests/test_report_browser.py opens the same pages in Chromium.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import onnxact
from onnxact.cli import main
from onnxact.report import layer_stats, write_report
from onnxact.report_page import PREVIEW_BOX, ZERO_COLUMN_NOTE, png_size, tile_map, write_preview

from .subjects import photo, rapidocr_models

IMG = re.compile(r"<img [^>]*>")


def _attr(tag: str, name: str) -> str | None:
    m = re.search(rf'{name}="([^"]*)"', tag)
    return m.group(1) if m else None


def _sections(text: str) -> list[str]:
    return re.findall(r"<section id='[^']*'><details class='layer'.*?</details></section>", text, re.S)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "rep"
    assert main(["inspect", "-o", str(out), "--no-arrays"]) == 0
    return out


def test_layer_pictures_are_lazy_sized_and_first_screen_is_not(demo_report):
    text = (demo_report / "index.html").read_text()
    first, _, rest = text.partition("<details class='layer'")
    assert rest, "no layer section"
    top = IMG.findall(first)
    assert len(top) == 2 and all("loading=" not in t for t in top)  # input + CAM load at once
    layer_imgs = IMG.findall(rest)
    assert len(layer_imgs) == 20  # 10 grids + 10 heatmaps
    for tag in layer_imgs:
        assert 'loading="lazy"' in tag, tag
        src = demo_report / _attr(tag, "src")
        assert (int(_attr(tag, "width")), int(_attr(tag, "height"))) == png_size(src), tag


def test_demo_sections_are_details_open_and_table_links_them(demo_report):
    text = (demo_report / "index.html").read_text()
    sections = _sections(text)
    assert len(sections) == 10 and all("<details class='layer' open>" in s for s in sections)  # 10 <= 12: open
    for anchor in re.findall(r"<a href='#(layer-\d+)'>", text):
        assert f"<section id='{anchor}'>" in text
    assert "expand all" in text and "collapse all" in text


def test_zero_column_is_neutral_and_explained(demo_report):
    text = (demo_report / "index.html").read_text()
    css = re.search(r"td\.zeroch\{color:#([0-9a-f]{6})\}", text)
    assert css, "no colour for the all-zero column"
    r, g, b = (int(css.group(1)[i:i + 2], 16) for i in (0, 2, 4))
    assert max(r, g, b) - min(r, g, b) < 40  # grey, not red (#b71c1c is kept for check's dead filters)
    assert ZERO_COLUMN_NOTE.replace("`", "&#x60;") in text or ZERO_COLUMN_NOTE in text
    assert "ReLU sparsity" in ZERO_COLUMN_NOTE and "onnxact check" in ZERO_COLUMN_NOTE
    zero_cells = re.findall(r"<td class='([^']*)'[^>]*><span>(\d+)/(\d+)</span></td>", text)
    assert zero_cells and all("zeroch" in c and "dead" not in c for c, _, _ in zero_cells)  # the demo's ReLUs
    assert "class='dead'" not in text


def test_one_by_one_layers_are_not_alarming(tmp_path):
    """rapidocr cls: squeeze-excite 1x1 maps; a zero channel there is one value <= 0."""
    cls = rapidocr_models()["cls"]
    out = tmp_path / "cls"
    assert main(["inspect", str(cls), str(photo("coffee.png")), "-o", str(out), "--no-arrays", "--heatmaps", "none"]) == 0
    text = (out / "index.html").read_text()
    rows = re.findall(r"<tr><td>.*?</tr>", text)
    one_by_one = [r for r in rows if re.search(r"<td>1x\d+x1x1</td>", r)]
    assert one_by_one, "rapidocr cls has squeeze-excite layers"
    flagged = [r for r in one_by_one if "zeroch" in r]
    assert flagged, "expected some 1x1 channel to be zero on this input (ReLU after the SE reduction)"
    assert all("zeroch onebyone" in r for r in flagged)
    assert all("onebyone" not in r for r in rows if r not in one_by_one)


def test_big_grid_gets_a_preview_linked_to_the_full_picture(tmp_path):
    from onnxact.render import display_activations

    acts = {"wide": np.random.default_rng(1).random((1, 64, 200, 200), dtype=np.float32)}
    pics = display_activations(acts, save=True, directory=tmp_path / "grids", show=False)
    full = pics.paths[0]
    w, h = png_size(full)
    assert w > PREVIEW_BOX[0] or h > PREVIEW_BOX[1]
    small = write_preview(pics["wide"], tmp_path / "previews" / full.name)
    assert small is not None
    sw, sh = png_size(small)
    assert sw <= PREVIEW_BOX[0] and sh <= PREVIEW_BOX[1] and sw >= w // 3
    assert write_preview(pics["wide"].reduce(4), tmp_path / "none.png") is None  # small enough: no preview
    assert not (tmp_path / "none.png").exists()
    tiles = {"wide": tile_map(pics.details["wide"], acts["wide"])}
    write_report(tmp_path, [layer_stats("wide", acts["wide"])], grids={"wide": full.relative_to(tmp_path)},
                 previews={"wide": small.relative_to(tmp_path)}, tiles=tiles)
    text = (tmp_path / "index.html").read_text()
    link = re.search(r'<a href="([^"]+)"[^>]*><img ([^>]*)>', text)
    assert link and link.group(1) == "grids/" + full.name and (tmp_path / link.group(1)).is_file()
    assert _attr(link.group(2), "src") == "previews/" + full.name
    assert "data-tiles=" in text


def test_hover_map_matches_the_arrays(demo_report):
    """Each tile's range in the hover map is the min / max of that channel of the captured array."""
    import json

    model, image = onnxact.demo_paths()
    acts = onnxact.get_activations(model, str(image))
    text = (demo_report / "index.html").read_text()
    maps = re.findall(r"<section id='layer-(\d+)'>.*?data-tiles='([^']*)'", text, re.S)
    assert len(maps) == 10
    keys = list(acts)
    for idx, raw in maps:
        t = json.loads(raw.replace("&lt;", "<").replace("&#39;", "'").replace("&amp;", "&"))
        a = acts[keys[int(idx)]][0]
        assert len(t["r"]) == a.shape[0]
        if "ch" in t:
            assert t["ch"] == list(range(a.shape[0]))
        for c, (lo, hi) in enumerate(t["r"]):
            assert lo == pytest.approx(float(a[c].min()), rel=5e-3, abs=1e-6)
            assert hi == pytest.approx(float(a[c].max()), rel=5e-3, abs=1e-6)


def test_embed_with_several_images_is_one_self_contained_page(tmp_path):
    model, image = onnxact.demo_paths()
    out = tmp_path / "two"
    imgs = [str(image), str(photo("astronaut.png"))]
    assert main(["inspect", str(model), *imgs, "-o", str(out), "--embed", "--no-arrays"]) == 0
    text = (out / "index.html").read_text()
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    hrefs = re.findall(r"\shref=[\"']([^\"']*)[\"']", text)
    assert len(srcs) >= 2 * 22 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert hrefs and all(h.startswith("#") for h in hrefs), [h for h in hrefs if not h.startswith("#")][:3]
    assert text.count("<section id='img-") == 2 and text.count("<details class='layer'") == 20
    ids = re.findall(r"\sid='([^']*)'", text)
    assert len(ids) == len(set(ids))  # the two reports' anchors do not collide
    for href in set(hrefs):
        assert f"id='{href[1:]}'" in text
    for sub in ("0_sample", "1_astronaut"):  # each image's own page links its pictures (no second copy)
        own = (out / sub / "index.html").read_text()
        assert "data:image" not in own and all((out / sub / s).is_file() for s in re.findall(r'\ssrc="([^"]*)"', own))


def test_several_images_without_embed_index_links_each_report(tmp_path):
    model, image = onnxact.demo_paths()
    out = tmp_path / "two"
    assert main(["inspect", str(model), str(image), str(photo("astronaut.png")), "-o", str(out), "--no-arrays"]) == 0
    text = (out / "index.html").read_text()
    links = re.findall(r"<a href='([^']*)'>", text)
    assert len(links) == 2 and all((out / link).is_file() for link in links)
    thumbs = [_attr(t, "src") for t in IMG.findall(text)]
    assert len(thumbs) == 2 and all((out / s).is_file() for s in thumbs)
    assert "star" in text  # the demo image's top prediction is in the table
