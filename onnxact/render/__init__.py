"""Pictures of activations: one tiled grid per layer, heatmap overlays on the input image.

Why tiling into one array: Keract draws one matplotlib subplot per filter and needs ~19 s for
the seed's CNN. Here every layer becomes ONE numpy array (tiles + 1-px separators), is coloured
with a 256-entry lookup table and written by a numpy + zlib PNG encoder (:mod:`.png`): milliseconds per layer. matplotlib is
only imported for colormaps we don't carry ourselves or when a Figure is asked for, and
Pillow / matplotlib are imported inside functions so ``import onnxact`` stays light.

Layout is read once per layer from ``LayerInfo.layout`` (``Activations``); a plain dict has its
layout guessed once per array by :func:`guess_array_layout`. Everything downstream works on
``(n, h, w)`` tiles.

One module per stage: :mod:`.colors` (colormap LUTs), :mod:`.tiles` (layout -> what kind of
picture -> tiles -> grid geometry), :mod:`.text` (numbers stamped from cached glyph masks, no
system font), :mod:`.picture` (one layer's titled grid with a numbered colour bar),
:mod:`.charts` (bar charts of 1x1 maps, channels x time images of 1-D maps), :mod:`.display`
(selection, Keract's arguments, output formats, saving, notebooks; :func:`display_activations`)
and :mod:`.heatmaps` (overlays on the input image). This package re-exports the names other code imports from ``onnxact.render``.
"""

from __future__ import annotations

from .colors import apply_colormap as apply_colormap
from .colors import colormap_lut as colormap_lut
from .display import REPORT_WIDTH as REPORT_WIDTH
from .display import Pictures as Pictures
from .display import _prepare_dir as _prepare_dir
from .display import display_activations as display_activations
from .display import safe_filename as safe_filename
from .display import save_png as save_png
from .heatmaps import display_heatmaps as display_heatmaps
from .heatmaps import load_display_image as load_display_image
from .heatmaps import overlay as overlay
from .heatmaps import resize_bilinear as resize_bilinear
from .picture import LayerPicture as LayerPicture
from .picture import render_layer as render_layer
from .tiles import NORMALIZE_MODES as NORMALIZE_MODES
from .tiles import guess_array_layout as guess_array_layout
from .tiles import sample_tiles as sample_tiles
from .tiles import tile_grid as tile_grid

__all__ = [
    "display_activations", "display_heatmaps", "render_layer", "tile_grid", "colormap_lut",
    "apply_colormap", "overlay", "load_display_image", "resize_bilinear", "guess_array_layout",
    "safe_filename", "save_png", "Pictures", "LayerPicture", "REPORT_WIDTH",
]
