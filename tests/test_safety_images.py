"""Hostile images and models cost bounded memory: decoded bytes and fed bytes are checked first.

Issue 21 "Bounded memory and time on hostile images". Each case is measured in a fresh
process (peak RSS via ``resource.getrusage(RUSAGE_CHILDREN)`` taken by a wrapper process, so
earlier children of pytest do not count), and backs a row of docs/robustness.md (section
"Safety: hostile images and the viewer"). The PNGs are a few hundred KB on disk: they are
written row by row through zlib, never held whole in the test process.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxact
from onnxact import limits

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ builders
def big_png(path: Path, width: int, height: int, *, bits: int = 8, colour: int = 0) -> Path:
    """A valid ``width`` x ``height`` PNG (colour type 0 grey or 2 RGB, 8 or 16 bits), written row by row.

    Every 97th row is bright, the rest black: a real image that compresses to a few hundred KB.
    """
    channels = {0: 1, 2: 3}[colour]
    row_bytes = width * channels * bits // 8
    dark = b"\0" * (row_bytes + 1)
    bright = b"\0" + b"\xc8" * row_bytes
    comp = zlib.compressobj(6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)))
        for y in range(height):
            data = comp.compress(bright if y % 97 == 0 else dark)
            if data:
                f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IDAT", comp.flush()) + chunk(b"IEND", b""))
    return path


def conv_model(path: Path, hw: int | str) -> Path:
    """Conv 1x1 -> Relu -> GlobalMaxPool on a [1, 3, hw, hw] input (``hw`` a name: dynamic): a 160-byte model."""
    w = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalMaxPool", ["r"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def peak_rss_mb(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, dict]:
    """Run ``code`` in a fresh interpreter; return (its peak RSS in MB, the JSON it printed last).

    A wrapper process runs the child and reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, so the
    figure is the child's own peak and nothing else's.
    """
    wrapper = textwrap.dedent("""
        import json, resource, subprocess, sys
        r = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"peak": peak, "rc": r.returncode, "out": r.stdout, "err": r.stderr[-2000:]}))
    """)
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **(env or {})}
    r = subprocess.run([sys.executable, "-c", wrapper, code], capture_output=True, text=True, env=full_env,
                       cwd=cwd, timeout=300)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0, res["err"]
    last = res["out"].strip().splitlines()[-1] if res["out"].strip() else "{}"
    return res["peak"], json.loads(last)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A 10000x10000 16-bit grey PNG (~200 KB), 4 copies of it, and the tiny conv model."""
    d = tmp_path_factory.mktemp("hostile")
    g16 = big_png(d / "grey16.png", 10000, 10000, bits=16)
    four = d / "four"
    four.mkdir()
    for i in range(4):
        (four / f"g{i}.png").write_bytes(g16.read_bytes())
    import tiny

    model = d / "tiny.onnx"
    onnx.save(tiny.conv_net(size=32), model)
    return {"g16": g16, "four": four, "model": model, "dir": d}


# ------------------------------------------------------------------------------ decoded bytes
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_pngs_are_small_on_disk_and_valid(hostile):
    assert hostile["g16"].stat().st_size < 400_000
    with Image.open(hostile["g16"]) as im:
        assert im.size == (10000, 10000) and im.mode == "I;16"


def test_16bit_10000x10000_png_costs_its_decoded_bytes_not_float64(hostile):
    """One 16-bit 100-Mpixel PNG through preprocess_image: was 2.6 GB peak (float64 copies), now < 600 MB."""
    code = f"""
import json, onnxact
x = onnxact.preprocess_image({str(hostile['g16'])!r}, {str(hostile['model'])!r})
print(json.dumps({{"shape": list(x.shape), "max": float(x.max()), "min": float(x.min())}}))
"""
    peak, out = peak_rss_mb(code)
    assert out["shape"] == [1, 3, 32, 32] and 0 < out["min"] <= out["max"] < 1  # stripes averaged down
    assert peak < 600, f"peak RSS {peak:.0f} MB"


def test_check_on_four_16bit_pngs_stays_bounded(hostile):
    """`onnxact check` on 4 copies: was 5 GB; now at most 2 decodes at once, each within the bound."""
    code = f"""
import sys
from onnxact.cli import main
rc = main(["check", {str(hostile['model'])!r}, {str(hostile['four'])!r}])
print('{{"rc": %d}}' % rc)
"""
    peak, out = peak_rss_mb(code)
    assert out["rc"] == 1  # the tiny net has dead filters on these black-and-stripes images
    assert peak < 1000, f"peak RSS {peak:.0f} MB"


def test_at_most_two_images_are_decoded_at_once(hostile):
    """Four decode threads on four hostile images still hold at most two decodes (one would be ~300 MB)."""
    code = f"""
import json, onnxact
from onnxact.images import expand_sources, iter_batches
m = onnxact.load({str(hostile['model'])!r})
n = sum(b.n for b in iter_batches(m, expand_sources([{str(hostile['four'])!r}]), batch_size=4, threads=4))
print(json.dumps({{"n": n}}))
"""
    peak, out = peak_rss_mb(code)
    assert out["n"] == 4
    assert peak < 900, f"peak RSS {peak:.0f} MB with 4 decode threads"


def test_grey_image_is_resized_before_it_is_widened_to_rgb(tmp_path, hostile):
    """A 14000x14000 8-bit grey PNG (196 MB decoded) for a 3-channel model: widening first cost 4x that."""
    p = big_png(tmp_path / "grey8.png", 14000, 14000)
    code = f"""
import json, onnxact
x = onnxact.preprocess_image({str(p)!r}, {str(hostile['model'])!r})
print(json.dumps({{"shape": list(x.shape), "same": bool((x[0, 0] == x[0, 1]).all() and (x[0, 1] == x[0, 2]).all())}}))
"""
    peak, out = peak_rss_mb(code)
    assert out == {"shape": [1, 3, 32, 32], "same": True}
    assert peak < 600, f"peak RSS {peak:.0f} MB"


def test_grey_widening_after_resize_gives_the_same_numbers(tmp_path, hostile):
    rng = np.random.default_rng(0)
    p = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)).save(p)
    x = onnxact.preprocess_image(p, str(hostile["model"]))
    want = np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR), np.float32) / 255
    np.testing.assert_array_equal(x[0], want.transpose(2, 0, 1))


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_modes_convert_like_the_float64_formula(mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (37, 53), dtype=np.uint16)
    elif mode == "I":
        arr = rng.integers(-100, 70000, (37, 53), dtype=np.int32)
    else:
        arr = rng.normal(0, 3, (37, 53)).astype(np.float32)
    img = Image.fromarray(arr)
    assert img.mode == mode
    got = np.asarray(limits.wide_to_uint8(img))
    a = arr.astype(np.float64)
    if mode == "F":
        want = ((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
    else:
        want = np.clip(a / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert got.dtype == np.uint8 and got.shape == arr.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_8bit_rgb_10000x10000_refused_from_the_header(tmp_path, monkeypatch):
    """381 MB once decoded (Pillow keeps RGB in 4-byte pixels): refused before any pixel is decoded."""
    p = big_png(tmp_path / "rgb.png", 10000, 10000, colour=2)
    assert p.stat().st_size < 400_000

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded a 10000x10000 image")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(onnxact.InputError) as e:
        onnxact.preprocess_image(p, onnxact.load(conv_model(tmp_path / "m.onnx", 16)))
    msg = str(e.value)
    assert "10000x10000" in msg and "381 MB" in msg and "256 MB limit" in msg and "\n" not in msg
    assert limits.ENV_MAX_IMAGE_BYTES in msg


def test_the_bound_is_raised_by_keyword_and_by_environment(tmp_path, monkeypatch):
    p = tmp_path / "small.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(p)  # 40,000 bytes decoded
    model = onnxact.load(conv_model(tmp_path / "m.onnx", 16))
    with pytest.raises(onnxact.InputError, match="40,000 bytes once decoded, over the 30,000 bytes limit"):
        onnxact.preprocess_image(p, model, max_bytes=30_000)
    assert onnxact.preprocess_image(p, model, max_bytes="50KB").shape == (1, 3, 16, 16)
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "30000")
    with pytest.raises(onnxact.InputError, match="over the 30,000 bytes limit"):
        onnxact.preprocess_image(p, model)
    assert onnxact.preprocess_image(p, model, max_bytes="1MB").shape == (1, 3, 16, 16)  # the keyword wins
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "lots")
    with pytest.raises(onnxact.InputError, match="ONNXACT_MAX_IMAGE_BYTES must be a size"):
        onnxact.preprocess_image(p, model)


def test_cli_reads_the_bound_from_the_environment(tmp_path, capsys, monkeypatch):
    from onnxact.cli import main

    p = tmp_path / "small.png"
    Image.new("RGB", (100, 100), (10, 20, 30)).save(p)
    model = conv_model(tmp_path / "m.onnx", 16)
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "30000")
    assert main(["check", str(model), str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "over the 30,000 bytes limit" in err
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "1MB")
    assert main(["check", str(model), str(p)]) in (0, 1)


# ------------------------------------------------------------------------------- model input
def _limited_as(gb: int):
    def apply() -> None:  # so a regression fails with MemoryError instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (gb << 30, gb << 30))
    return apply


@pytest.mark.parametrize("hw,shown", [(12000, "1,648 MB"), (2**31, "3x2147483648x2147483648")])
@pytest.mark.parametrize("command", ["check", "inspect"])
def test_model_input_over_the_bound_is_exit_2(tmp_path, hw, shown, command):
    """A 160-byte model asking for [1, 3, 12000, 12000] (was 5.6 GB on a 16x16 image) or 2**31 (was exit 3)."""
    model = conv_model(tmp_path / "big.onnx", hw)
    img = tmp_path / "small.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(img)
    extra = ["-o", str(tmp_path / "out")] if command == "inspect" else []
    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, command, str(model), str(img), *extra], capture_output=True,
                       text=True, preexec_fn=_limited_as(3), timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "over the 256 MB limit" in r.stderr and shown in r.stderr


def test_model_input_bound_in_the_library(tmp_path):
    model = onnxact.load(conv_model(tmp_path / "big.onnx", 12000))
    img = tmp_path / "small.png"
    Image.new("RGB", (16, 16)).save(img)
    with pytest.raises(onnxact.InputError, match=r"\[1, 3, 12000, 12000\]"):
        onnxact.find_dead_filters(model, [str(img)], show_progress=False)
    with pytest.raises(onnxact.InputError, match="12000x12000"):
        onnxact.get_activations(model, img)
    # a dynamic model: the size asked for is bounded the same way, before resizing to it
    dynamic = onnxact.load(conv_model(tmp_path / "m.onnx", "s"))
    with pytest.raises(onnxact.InputError, match="at 20000x20000"):
        onnxact.preprocess_image(img, dynamic, size=(20000, 20000))


def test_batches_are_cut_to_stay_within_the_bound(tmp_path):
    """A 1024x1024 input is 12 MB a sample: with a 40 MB bound a batch holds 3, not 32."""
    model = onnxact.load(conv_model(tmp_path / "m.onnx", 1024))
    assert limits.samples_per_batch(model, 32, max_bytes="40MiB") == 3
    assert limits.samples_per_batch(model, 2, max_bytes="40MiB") == 2
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i, i, i)).save(p)
        paths.append(str(p))
    from onnxact.images import iter_batches

    sizes = [b.n for b in iter_batches(model, paths, batch_size=32, max_bytes="40MiB")]
    assert sizes == [3, 1]


def test_decoded_bytes_follow_pillow_storage():
    assert limits.decoded_bytes("L", 10, 10) == 100
    assert limits.decoded_bytes("I;16", 10, 10) == 200
    assert limits.decoded_bytes("RGB", 10, 10) == 400  # Pillow keeps RGB in 4-byte pixels
    assert limits.decoded_bytes("F", 10, 10) == 400


def test_ordinary_photos_still_work(tmp_path):
    """The bound refuses only what is over it: a 2000x1500 photo-sized PNG (12 MB decoded) reads as before."""
    p = tmp_path / "photo.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(p)
    buf = io.BytesIO(p.read_bytes())
    assert onnxact.preprocess_image(buf.getvalue(), size=(64, 64)).shape == (1, 3, 64, 64)
