"""Recipe for the bundled demo model: ``python -m models.recipe`` (or ``python models/recipe.py``).

Generates the seeded 5-class shapes dataset (circle, square, triangle, star, cross at random
sizes, positions, rotations and colours on noisy backgrounds), trains the seed's CNN on it with
Keras (five Conv 3x3 + MaxPool blocks 16/32/64/64/64, Flatten, Dense 512 relu, Dense softmax;
128x128x3 input scaled to 0-1), and writes next to this file:

- ``demo_cnn.onnx``   the model, with class names, layer names and preprocessing in its metadata
- ``accuracy.json``   validation accuracy and the settings used
- ``sample.png``      one generated image (a star) that is not in the training set

Takes about a minute or two on 2 CPU cores. Needs ``pip install 'onnxact[keras]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train and export the onnxact demo CNN.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=300, help="generated images per class")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=128, help="image height and width")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for demo_cnn.onnx, accuracy.json, sample.png")
    ap.add_argument("--data", type=Path, default=None, help="keep the generated dataset in this folder")
    args = ap.parse_args(argv)

    if __package__ in (None, ""):  # run as a script: make the repository importable
        sys.path.insert(0, str(HERE.parent))
    import numpy as np
    from onnxact.converters import make_shapes_dataset, train_image_classifier
    from onnxact.converters.shapes import draw_shape_image

    args.out.mkdir(parents=True, exist_ok=True)
    size = (args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "shapes"
        t0 = time.perf_counter()
        make_shapes_dataset(data, n_per_class=args.per_class, image_size=size, seed=args.seed)
        print(f"dataset: {args.per_class} x 5 images in {time.perf_counter() - t0:.1f}s -> {data}")
        res = train_image_classifier(data, framework="keras", image_size=size, epochs=args.epochs,
                                     validation_split=0.2, seed=args.seed, output=args.out / "demo_cnn.onnx",
                                     verbose=True)
    print(f"trained in {res.seconds:.0f}s: train accuracy {res.train_accuracy:.3f}, "
          f"validation accuracy {res.val_accuracy:.3f} ({res.n_val} images)")
    (args.out / "accuracy.json").write_text(json.dumps({
        "val_accuracy": round(res.val_accuracy, 4),
        "train_accuracy": round(res.train_accuracy, 4),
        "n_train": res.n_train,
        "n_val": res.n_val,
        "classes": res.class_names,
        "epochs": args.epochs,
        "per_class": args.per_class,
        "image_size": list(size),
        "seed": args.seed,
        "framework": "keras",
        "train_seconds": round(res.seconds, 1),
    }, indent=2) + "\n")
    # a sample from a different seed, so it is not a training image
    draw_shape_image("star", np.random.default_rng(args.seed + 12345), size).save(args.out / "sample.png")
    onnx_size = os.path.getsize(args.out / "demo_cnn.onnx")
    print(f"wrote {args.out / 'demo_cnn.onnx'} ({onnx_size / 1e6:.2f} MB), accuracy.json, sample.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
