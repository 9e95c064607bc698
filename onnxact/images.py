"""Image sources for dataset scans: expand folders / globs / list files / arrays, stream batches.

Why streaming: a dead-filter scan may read a million images; only one batch (plus one being
decoded ahead, on a few threads, since Pillow releases the GIL while decoding and resizing)
is ever held, so memory does not grow with the number of images.

Sources: an image file; a folder (searched recursively for image files); a glob
(``data/**/*.jpg``); a ``.txt``/``.lst`` file listing one path per line (relative paths are read
from the list's folder; ``#`` starts a comment); a ``.npy`` / ``.npz`` file of ready inputs
(N, ...) fed as they are; or an in-memory ndarray (library use).
"""

from __future__ import annotations

import glob as globmod
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ArrayRef", "Batch", "expand_sources", "iter_batches", "count_samples"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
ARRAY_SUFFIXES = {".npy", ".npz"}
LIST_SUFFIXES = {".txt", ".lst"}


@dataclass(frozen=True)
class ArrayRef:
    """Ready inputs: a .npy file, one array of a .npz file, or an in-memory array."""

    label: str
    key: str | None = None
    array: Any = None  # in-memory arrays only

    def load(self) -> np.ndarray:
        if self.array is not None:
            return np.asarray(self.array)
        try:
            if self.key is None:
                return np.load(self.label, mmap_mode="r", allow_pickle=False)
            with np.load(self.label, allow_pickle=False) as z:
                return z[self.key]
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"cannot read array file {self.label}: {str(e).splitlines()[0] if str(e) else e}") from None

    def __len__(self) -> int:
        a = self.load()
        return int(a.shape[0]) if a.ndim else 1


Item = str | ArrayRef


@dataclass
class Batch:
    """One batch of model input (``x``, N samples) and the items that failed to decode."""

    x: np.ndarray | None
    paths: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return 0 if self.x is None else int(self.x.shape[0])


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _folder_images(folder: Path) -> list[str]:
    out = [str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(out)


def _list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the image list {path}: {e}") from None
    out = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = Path(s).expanduser()
        out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def _array_refs(path: Path) -> list[ArrayRef]:
    if path.suffix.lower() == ".npy":
        return [ArrayRef(str(path))]
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read array file {path}: {e}") from None
    if not keys:
        raise InputError(f"{path} holds no arrays")
    return [ArrayRef(str(path), k) for k in keys]


def expand_sources(sources: Any) -> list[Item]:
    """Turn paths, folders, globs, list files, array files and ndarrays into a flat item list.

    Raises ``InputError`` for a path that does not exist, a glob that matches nothing, or when
    no image at all is found (an empty folder).
    """
    if isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    items: list[Item] = []
    for src in sources:
        if isinstance(src, np.ndarray):
            items.append(ArrayRef("<array>", None, src))
            continue
        s = os.fspath(src)
        p = Path(s).expanduser()
        if p.is_dir():
            found = _folder_images(p)
            if not found:
                raise InputError(f"no image files found in folder {p} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            items.extend(found)
        elif p.is_file():
            suf = p.suffix.lower()
            if suf in ARRAY_SUFFIXES:
                items.extend(_array_refs(p))
            elif suf in LIST_SUFFIXES:
                listed = _list_file(p)
                if not listed:
                    raise InputError(f"the image list {p} is empty")
                items.extend(listed)
            else:
                items.append(str(p))
        elif _has_glob(s):
            matched = sorted(m for m in globmod.glob(os.path.expanduser(s), recursive=True) if Path(m).is_file())
            if not matched:
                raise InputError(f"the pattern '{s}' matches no files")
            for m in matched:
                items.extend(expand_sources([m]) if Path(m).suffix.lower() in ARRAY_SUFFIXES else [m])
        else:
            raise InputError(f"image source not found: {s}")
    if not items:
        raise InputError("no images given")
    return items


def count_samples(items: Sequence[Item]) -> int:
    """Number of samples: one per image file, N per (N, ...) array."""
    return sum(len(i) if isinstance(i, ArrayRef) else 1 for i in items)


def _decode(model: Any, path: str, preprocess_kw: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    from .limits import decode_slot
    from .preprocess import preprocess_image

    try:
        with decode_slot():  # at most MAX_CONCURRENT_DECODES big images in memory at once
            return preprocess_image(path, model, **preprocess_kw), ""
    except InputError as e:
        return None, str(e)


def iter_batches(
    model: Any,
    items: Sequence[Item],
    batch_size: int = 32,
    strict: bool = False,
    threads: int | None = None,
    **preprocess_kw: Any,
) -> Iterator[Batch]:
    """Yield ``Batch``es of at most ``batch_size`` samples fitted to one input of ``model``.

    That input is ``input_name`` (in ``preprocess_kw``, as for ``preprocess_image``), else the
    model's first.

    Image files are decoded on ``threads`` threads, one batch ahead. Unreadable images are
    returned in ``Batch.failed`` (or raise ``InputError`` with ``strict``). Images of different
    sizes (a model with dynamic spatial dims) end the batch early instead of failing.
    A model whose input for one image is over the byte bound of :mod:`onnxact.limits` is
    refused before any image is read, and batches are made small enough to stay within it.
    """
    from .feeds import check_array, input_info
    from .limits import check_model_input, samples_per_batch

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    size, max_bytes, name = (preprocess_kw.get(k) for k in ("size", "max_bytes", "input_name"))
    check_model_input(model, size, max_bytes, name)
    batch_size = samples_per_batch(model, batch_size, size, max_bytes, name)
    threads = threads or min(4, os.cpu_count() or 1)
    chunks: list[list[Item]] = []
    cur: list[Item] = []
    for it in items:
        if isinstance(it, ArrayRef):
            if cur:
                chunks.append(cur)
                cur = []
            chunks.append([it])
            continue
        cur.append(it)
        if len(cur) == batch_size:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)

    def arrays(ref: ArrayRef) -> Iterator[Batch]:
        a = ref.load()
        if a.ndim == 0:
            raise InputError(f"{ref.label} holds a scalar, not inputs")
        name = preprocess_kw.get("input_name") or model.inputs[0].name
        rank = len(input_info(model, name).shape or ())
        if rank and a.ndim == rank - 1:
            a = a[None]  # one sample without its batch axis
        for start in range(0, a.shape[0], batch_size):
            part = np.asarray(a[start:start + batch_size])
            try:
                x = check_array(model, name, part)
            except InputError as e:
                raise InputError(f"{ref.label}{'[' + ref.key + ']' if ref.key else ''}: {e}") from None
            yield Batch(x, [ref.label] * part.shape[0])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        def submit(chunk: list[Item]) -> Any:
            if isinstance(chunk[0], ArrayRef):
                return None
            return [pool.submit(_decode, model, p, preprocess_kw) for p in chunk]

        pending = submit(chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            futures = pending
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else None
            if futures is None:
                yield from arrays(chunk[0])  # type: ignore[arg-type]
                continue
            good: list[np.ndarray] = []
            paths: list[str] = []
            failed: list[tuple[str, str]] = []
            for path, fut in zip(chunk, futures):
                arr, why = fut.result()
                if arr is None:
                    if strict:
                        for f in futures + (pending or []):
                            f.cancel()
                        raise InputError(f"{why} (use a non-strict scan to skip unreadable images)")
                    failed.append((str(path), why))
                    continue
                if good and arr.shape[1:] != good[-1].shape[1:]:
                    yield Batch(np.concatenate(good, axis=0), paths, failed)
                    good, paths, failed = [], [], []
                good.append(arr)
                paths.append(str(path))
            yield Batch(np.concatenate(good, axis=0) if good else None, paths, failed)
