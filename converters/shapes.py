"""A small, seeded, 5-class image-folder dataset of shapes: the demo model's training data.

Why generated: the seed trains a CNN from a folder with one sub-folder per class; we need such a
folder without shipping or downloading images. Each image is a circle, square, triangle, star or
cross at a random size, position, rotation and colour on a noisy random background, so the task is
easy enough to learn in seconds on a CPU yet not trivial (colour and position carry no signal).
Only numpy and Pillow are used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["SHAPE_CLASSES", "draw_shape_image", "make_shapes_dataset"]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")


def _polygon(cx: float, cy: float, r: float, angle: float, kind: str) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(r * math.cos(angle + k * math.pi / 2 + math.pi / 4), r * math.sin(angle + k * math.pi / 2 + math.pi / 4))
               for k in range(4)]
    elif kind == "triangle":
        pts = [(r * math.cos(angle + k * 2 * math.pi / 3), r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.42
            a = angle + k * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    elif kind == "cross":
        w = r * 0.33  # half the arm width
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(x * ca - y * sa, x * sa + y * ca) for x, y in base]
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    return [(cx + x, cy + y) for x, y in pts]


def draw_shape_image(kind: str, rng: np.random.Generator, size: tuple[int, int] = (128, 128), noise: float = 1.0):
    """One RGB ``PIL.Image`` of shape ``kind`` (one of :data:`SHAPE_CLASSES`), drawn with ``rng``.

    ``noise`` scales the background gradient and the pixel noise (0: a plain background, an easier task).
    """
    from PIL import Image, ImageDraw

    if kind not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape {kind!r}; expected one of {', '.join(SHAPE_CLASSES)}")
    h, w = size
    # noisy background: a random base colour, a smooth gradient and per-pixel noise
    base = rng.uniform(0, 255, 3)
    grad = rng.uniform(-60, 60, 3) * noise
    yy = np.linspace(0, 1, h)[:, None, None]
    bg = base + grad * yy + rng.normal(0, rng.uniform(5, 25) * noise + 1e-9, (h, w, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    # a shape colour far enough from the background to be visible
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - base).sum() > 150:
            break
    fill = tuple(int(c) for c in colour)
    m = min(h, w)
    r = rng.uniform(0.15, 0.38) * m
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(cx, cy, r, angle, kind), fill=fill)
    # light noise over the whole image so the shape edges are not perfectly clean
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 6 * noise + 1e-9, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def make_shapes_dataset(
    folder: str | Path,
    n_per_class: int = 200,
    image_size: tuple[int, int] = (128, 128),
    seed: int = 0,
    classes: tuple[str, ...] | list[str] = SHAPE_CLASSES,
    noise: float = 1.0,
) -> Path:
    """Write ``folder/<class>/<class>_0000.png ...``: ``n_per_class`` PNG images per shape class.

    Deterministic for a given ``seed``; ``noise`` as in :func:`draw_shape_image`. Returns the folder.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for kind in classes:
        d = folder / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            draw_shape_image(kind, rng, image_size, noise).save(d / f"{kind}_{i:04d}.png")
    return folder
