"""How activations show themselves in a notebook: the layer table, the short repr, numbered tiles."""

from __future__ import annotations

import base64
import html
import io
import re
import subprocess
import sys

import numpy as np
import pytest
import subjects
from PIL import Image

import onnxact
from onnxact import Activations
from onnxact.render.display import numbering
from onnxact.render.table import MAX_ROWS, MAX_TEXT_ROWS, THUMB_PX


@pytest.fixture(scope="module")
def demo_acts():
    model, image = onnxact.demo_paths()
    return onnxact.get_activations(model, str(image))


def _rows(page: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", page)[1:]  # without the header


def _thumb(row: str) -> np.ndarray:
    b64 = re.search(r'src="data:image/png;base64,([^"]+)"', row).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_table_has_one_row_per_layer_with_its_numbers(demo_acts):
    page = demo_acts._repr_html_()
    rows = _rows(page)
    assert len(rows) == len(demo_acts) == 10
    for row, (key, arr) in zip(rows, demo_acts.items()):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        info = demo_acts.layers[key]
        assert cells[1] == key
        assert cells[2] == (f"{info.op_type}+{info.activation}" if info.activation else info.op_type)
        assert cells[3] == " x ".join(str(d) for d in arr.shape)
        assert float(cells[4]) == pytest.approx(float(arr.min()), rel=2e-3, abs=1e-9)
        assert float(cells[5]) == pytest.approx(float(arr.max()), rel=2e-3)
        assert float(cells[6]) == pytest.approx(float(arr.mean()), rel=2e-3)
        assert float(cells[7].rstrip("%")) == pytest.approx(100 * float((arr == 0).mean()), abs=0.05)
    assert "10 layers, batch of 1" in page


def test_thumbnails_are_the_first_channels_maps(demo_acts):
    """pool5's 4x4 maps are blown up whole (no resampling): each tile is the map, min-max scaled,
    through matplotlib's own viridis (onnxact's table is within 2/255 of it)."""
    from matplotlib import colormaps

    row = _rows(demo_acts._repr_html_())[list(demo_acts).index("pool5")]
    px = _thumb(row)
    maps = demo_acts["pool5"][0, :4]
    s = THUMB_PX // 4
    assert px.shape == (4 * s, 4 * (4 * s) + 3 * 2, 3)
    for c, m in enumerate(maps):
        tile = px[:, c * (4 * s + 2): c * (4 * s + 2) + 4 * s][::s, ::s].astype(int)
        v = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)
        want = np.rint(colormaps["viridis"](v)[..., :3] * 255).astype(int)
        assert np.abs(tile - want).max() <= 3
    assert _thumb(_rows(demo_acts._repr_html_())[0]).shape[0] <= THUMB_PX


def test_names_are_escaped_and_odd_arrays_do_not_break_it():
    evil = '<img src=x onerror="alert(1)">'
    acts = Activations({evil: np.ones((1, 2, 3, 3), np.float32), "empty": np.zeros((1, 0, 4, 4), np.float32),
                        "flags": np.ones((1, 3, 2, 2), bool), "ints": np.arange(24).reshape(1, 2, 3, 4),
                        "vector": np.linspace(-1, 1, 10)[None], "scalar": np.float32(3.0),
                        "strings": np.array(["a", "b"])})
    page = acts._repr_html_()
    assert evil not in page and html.escape(evil) in page
    assert len(_rows(page)) == 7 and page.count("data:image/png;base64,") == 2  # the evil one and ints
    assert repr(evil) in repr(acts)


def test_hundreds_of_layers_are_capped():
    acts = Activations({f"layer_{i}": np.full((1, 2, 2, 2), i, np.float32) for i in range(300)})
    page = acts._repr_html_()
    assert len(_rows(page)) == MAX_ROWS + 1 and f"... {300 - MAX_ROWS} more" in page
    text = repr(acts)
    assert text.startswith("Activations(300 layers, batch of 1,") and f"... {300 - MAX_TEXT_ROWS} more" in text
    assert len(text.splitlines()) == MAX_TEXT_ROWS + 2 and "layer_299" not in text


def test_rapidocr_detector_table():
    """A real model with hundreds of maps and HardSwish-like activations: capped table, sane numbers."""
    det = subjects.rapidocr_models()["det"]
    acts = onnxact.get_activations(det, str(subjects.photo("coffee.png")))
    page = acts._repr_html_()
    rows = _rows(page)
    assert len(rows) == min(len(acts), MAX_ROWS + 1)
    if len(acts) > MAX_ROWS:
        assert f"... {len(acts) - MAX_ROWS} more" in rows[-1]
    first = next(iter(acts))
    assert html.escape(first) in rows[0]
    assert float(re.findall(r'<td class="n">(.*?)</td>', rows[0])[2]) == pytest.approx(float(acts[first].max()),
                                                                                       rel=2e-3)


def test_repr_and_table_load_neither_pillow_nor_matplotlib():
    code = ("import sys, numpy as np, onnxact\n"
            "a = onnxact.Activations({'c': np.random.rand(1, 8, 20, 30).astype('float32')})\n"
            "assert 'data:image/png' in a._repr_html_() and 'c' in repr(a)\n"
            "print(sorted(m for m in ('PIL', 'matplotlib', 'IPython', 'anywidget') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_tiles_are_numbered_when_shown_in_a_notebook(demo_acts):
    assert numbering(True, None) == (True, True) and numbering(False, None) == (False, False)
    assert numbering(None, None) == (False, False)  # pytest is no notebook
    assert numbering(True, False) == (True, False)
    plain = onnxact.display_activations(demo_acts, layers="conv2", show=False).details["conv2"]
    numbered = onnxact.display_activations(demo_acts, layers="conv2", show=False,
                                           channel_numbers=True).details["conv2"]
    assert plain.tile_boxes[0][1] == plain.origin[1] and numbered.tile_boxes[0][1] > numbered.origin[1]


def test_heatmap_tiles_are_numbered(demo_acts):
    _, image = onnxact.demo_paths()
    plain = np.asarray(onnxact.display_heatmaps(demo_acts, str(image), layers="conv1", show=False)["conv1"])
    numbered = np.asarray(onnxact.display_heatmaps(demo_acts, str(image), layers="conv1", show=False,
                                                   channel_numbers=True)["conv1"])
    assert numbered.shape[1] == plain.shape[1] and numbered.shape[0] > plain.shape[0]
    # the grid itself: each tile under a white band holding its channel number in dark digits
    from onnxact.render.heatmaps import _numbered
    from onnxact.render.text import stamp

    tiles = np.zeros((5, 30, 40, 3), np.uint8) + np.arange(1, 6, dtype=np.uint8)[:, None, None, None] * 40
    grid = _numbered(tiles, None, True)
    band = (grid.shape[0] + 2) // 2 - 2 - 30  # 3 columns, 2 rows of (band + 30) px and a 2-px gap
    assert band >= 8 and grid.shape == (2 * (band + 30) + 2, 3 * 40 + 2 * 2, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = r * (band + 30 + 2), c * (40 + 2)
        assert (grid[y + band:y + band + 30, x:x + 40] == tiles[i]).all()
        want = np.full((band, 40, 3), 255, np.uint8)
        stamp(want, 1, 0, str(i), 10)
        assert (grid[y:y + band, x:x + 40] == want).all() and (want < 128).any()
    assert _numbered(tiles, None, False).shape == (2 * 30 + 2, 3 * 40 + 4, 3)
