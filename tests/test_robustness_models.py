"""Every kind of model a user may point onnxact at either works or is refused with one clear line.

Each test here backs a row of docs/robustness.md. Model files are hash-checked before and after
(onnxact never modifies them), and onnxact must leave no temporary files behind.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxact
from tests.models.make_models import (
    HUGE_ELEMENTS,
    OPSETS,
    build,
    input_for,
    save,
    save_external,
    save_external_own_folder,
    save_huge_external,
    save_missing_external,
)
from tests.subjects import sha256_of

IMG = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)



def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tensor: str) -> np.ndarray:
    """An independent onnxruntime run with only ``tensor`` promoted (no onnxact involved)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=tensor))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run([tensor], feeds)[0]


def run_promoted(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tensors: list[str]) -> dict[str, np.ndarray]:
    """An independent onnxruntime run (default optimizations) with ``tensors`` promoted beside the
    model's own outputs: the same graph onnxruntime optimizes for a capture of those tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture(autouse=True)
def no_temp_files_left(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """onnxact's temporary files go to a private folder here, which must be empty afterwards."""
    tmp = tmp_path_factory.mktemp("onnxact-tmp")
    monkeypatch.setenv("ONNXACT_TMPDIR", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield
    left = [p.name for p in tmp.iterdir()]
    assert left == [], f"onnxact left temporary files behind: {left}"


def refused(exc: type[Exception], fn, *match: str) -> str:
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    assert msg and "\n" not in msg, msg
    for m in match:
        assert m.lower() in msg.lower(), msg
    return msg


# -- files that are not (usable) models ------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    refused(onnxact.ModelError, lambda: onnxact.load(tmp_path / "nope.onnx"), "not found")


def test_directory(tmp_path: Path) -> None:
    refused(onnxact.ModelError, lambda: onnxact.load(tmp_path), "directory")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    refused(onnxact.ModelError, lambda: onnxact.load(p), "empty")


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "random.onnx"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    before = sha256_of(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refused(onnxact.ModelError, lambda: onnxact.get_activations(p, IMG), "not a valid onnx model")
    assert sha256_of(p) == before


def test_truncated_model(tmp_path: Path) -> None:
    data = build("conv_opset13").SerializeToString()
    for cut in (10, len(data) // 2, len(data) - 3):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        refused(onnxact.ModelError, lambda p=p: onnxact.get_activations(p, IMG))


def test_image_renamed_onnx(tmp_path: Path) -> None:
    from PIL import Image

    for fmt, word in (("PNG", "png"), ("JPEG", "jpeg")):
        p = tmp_path / f"photo_{word}.onnx"
        Image.new("RGB", (8, 8)).save(p, fmt)
        refused(onnxact.ModelError, lambda p=p: onnxact.load(p), f"a {word} image", "not an onnx model")


def test_model_bytes_and_proto_work() -> None:
    proto = build("conv_opset13")
    a = onnxact.get_activations(proto.SerializeToString(), IMG)
    b = onnxact.get_activations(proto, IMG)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


# -- external data ---------------------------------------------------------------------------------

def test_missing_external_data(tmp_path: Path) -> None:
    p = save_missing_external(tmp_path)
    refused(onnxact.ModelError, lambda: onnxact.load(p), "missing_external.data", "missing")


def test_external_data_loaded_by_bytes_is_explained(tmp_path: Path) -> None:
    p = save_external(tmp_path)
    refused(onnxact.ModelError, lambda: onnxact.load(p.read_bytes()), "external data", "by path")


def test_external_data_beside_model(tmp_path: Path) -> None:
    p = save_external(tmp_path)
    hashes = tree_hashes(tmp_path)
    acts = onnxact.get_activations(p, IMG)
    inline = onnxact.get_activations(build("conv_opset13"), IMG)
    assert list(acts) == list(inline)
    for k in acts:
        np.testing.assert_allclose(acts[k], inline[k], rtol=1e-5, atol=1e-6)
    assert tree_hashes(tmp_path) == hashes


def test_external_data_in_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = save_external_own_folder(tmp_path / "store")
    assert (p.parent / "weights" / "params.bin").is_file()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative locations resolve against the model's folder, not the cwd
    hashes = tree_hashes(tmp_path / "store")
    acts = onnxact.get_activations(str(p), IMG)
    inline = onnxact.get_activations(build("conv_opset13"), IMG)
    for k in inline:
        np.testing.assert_allclose(acts[k], inline[k], rtol=1e-5, atol=1e-6)
    assert tree_hashes(tmp_path / "store") == hashes
    assert list(elsewhere.iterdir()) == []


def _free_ram_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        return info.get("MemAvailable", 0) / 2**20
    except OSError:
        return 0.0


@pytest.mark.skipif(_free_ram_gb() < 8, reason="the >2 GB model needs ~5 GB of free memory for onnxruntime")
def test_model_over_2gb_external_data(tmp_path: Path) -> None:
    d = tmp_path / "huge"
    try:
        p = save_huge_external(d)
        assert (d / "huge.bin").stat().st_size == HUGE_ELEMENTS * 4 > 2**31
        size_before, head_before = p.stat().st_size, sha256_of(p)
        m = onnxact.load(p)
        assert m.external_data_dir == d.resolve()
        acts = onnxact.get_activations(m, IMG)
        assert list(acts) == ["conv1", "pool1", "conv2", "gap"]
        np.testing.assert_array_equal(acts.outputs["big_head"], np.zeros(2, np.float32))
        assert p.stat().st_size == size_before and sha256_of(p) == head_before
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- opsets, dynamic dims, several inputs ------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_opsets_7_to_21(opset: int) -> None:
    proto = build(f"conv_opset{opset}")
    acts = onnxact.get_activations(proto, IMG)
    assert list(acts) == ["conv1", "pool1", "conv2", "gap"]
    assert [acts.layers[k].layout for k in acts] == ["NCHW"] * 4
    for k in acts:
        np.testing.assert_allclose(acts[k], reference(proto, {"x": IMG}, acts.layers[k].tensor), rtol=1e-5, atol=1e-6)


def test_dynamic_batch_and_spatial() -> None:
    m = onnxact.load(build("conv_dynamic"))
    assert m.inputs[0].shape == ("N", 3, "H", "W")
    x = np.random.default_rng(2).random((3, 3, 20, 24), dtype=np.float32)
    acts = onnxact.get_activations(m, x)
    assert acts["conv1"].shape == (3, 4, 20, 24) and acts["pool1"].shape == (3, 4, 10, 12)
    assert acts.layers["pool1"].shape == (3, 4, 10, 12)  # concrete shape recorded after the run
    # an image needs a size when the model's spatial dims are dynamic; the image's own size is kept
    from PIL import Image

    img = Image.new("RGB", (30, 20), (200, 10, 10))
    assert onnxact.preprocess_image(img, m).shape == (1, 3, 20, 30)
    assert onnxact.preprocess_image(img, m, size=(8, 12)).shape == (1, 3, 8, 12)


def test_two_image_inputs(tmp_path: Path) -> None:
    proto = build("two_images")
    m = onnxact.load(proto)
    assert [i.name for i in m.inputs] == ["left", "right"] and all(i.is_image for i in m.inputs)
    feeds = input_for(proto)
    acts = onnxact.get_activations(m, feeds)
    assert list(acts) == ["left_conv", "right_conv", "pool"]
    for k in acts:
        np.testing.assert_allclose(acts[k], reference(proto, feeds, acts.layers[k].tensor), rtol=1e-5, atol=1e-6)
    refused(onnxact.InputError, lambda: onnxact.get_activations(m, feeds["left"]), "2 inputs", "dict")
    refused(onnxact.InputError, lambda: onnxact.get_activations(m, {"left": feeds["left"]}), "'right' is missing")
    # images per input, by name
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(a)
    Image.new("RGB", (16, 16), (0, 0, 255)).save(b)
    acts = onnxact.get_activations(m, {"left": a, "right": b})
    assert acts["pool"].shape == (1, 4, 8, 8)


def test_signal_1d_input() -> None:
    proto = build("signal_1d")
    m = onnxact.load(proto)
    assert not m.inputs[0].is_image and m.inputs[0].layout == "NCW"
    feeds = input_for(proto)
    acts = onnxact.get_activations(m, feeds["sig"])
    assert list(acts) == ["conv1", "pool1", "conv2", "gap"]
    assert all(acts.layers[k].layout == "NCW" for k in acts) and acts.layers["pool1"].channel_axis == 1
    for k in acts:
        np.testing.assert_allclose(acts[k], reference(proto, feeds, acts.layers[k].tensor), rtol=1e-5, atol=1e-6)
    refused(onnxact.InputError, lambda: onnxact.preprocess_image(_png(), m), "not an image", "array")


def test_token_sequence_input(tmp_path: Path) -> None:
    proto = build("tokens")
    m = onnxact.load(proto)
    assert m.inputs[0].dtype == "int64" and not m.inputs[0].is_image
    ids = np.arange(12, dtype=np.int64)[None] % 50
    acts = onnxact.get_activations(m, ids)
    assert list(acts) == ["conv", "pool"] and acts["conv"].shape == (1, 6, 12)
    np.testing.assert_allclose(acts["conv"], reference(proto, {"ids": ids}, acts.layers["conv"].tensor), rtol=1e-6)
    refused(onnxact.InputError, lambda: onnxact.get_activations(m, ids.astype(np.float32) + 0.5), "int64")
    p = tmp_path / "img.png"
    p.write_bytes(_png())
    refused(onnxact.InputError, lambda: onnxact.get_activations(m, p), "not an image")


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


# -- control flow, precision, quantization, no conv -------------------------------------------------

def test_if_and_loop_bodies_reported_not_captured() -> None:
    proto = build("control_flow")
    m = onnxact.load(proto)
    assert sorted(m.skipped_subgraph_layers) == ["body_conv", "else_pool", "then_conv"]
    feeds = input_for(proto)
    acts = onnxact.get_activations(m, feeds)
    assert list(acts) == ["stem", "gap"]
    for k in acts:
        np.testing.assert_allclose(acts[k], reference(proto, feeds, acts.layers[k].tensor), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        every = onnxact.get_activations(m, feeds, all_tensors=True, output_format="full")
    assert not {"then_conv", "else_pool", "body_conv"} & set(every)
    refused(onnxact.LayerError, lambda: m.select(["then_conv"]))


def test_float16_model() -> None:
    m16 = onnxact.load(build("float16"))
    x = IMG.astype(np.float16)
    acts = onnxact.get_activations(m16, x)
    ref = onnxact.get_activations(build("conv_opset13"), IMG)
    assert list(acts) == list(ref)
    for k in acts:
        assert acts[k].dtype == np.float16
        np.testing.assert_allclose(acts[k].astype(np.float32), ref[k], rtol=2e-2, atol=2e-2)
    # a float32 array is cast to the model's float16 input
    acts32 = onnxact.get_activations(m16, IMG)
    assert acts32["conv1"].dtype == np.float16


def test_float16_upcast_for_statistics_and_pictures() -> None:
    acts = onnxact.get_activations(build("float16"), IMG.astype(np.float16))
    from onnxact import render, stats

    out = render.display_activations(acts)
    assert len(out) == len(acts)
    st = stats.ChannelStats.from_activations(acts)
    assert all(np.isfinite(layer.max_abs).all() and layer.max_abs.dtype != np.float16 for layer in st.layers.values())


def test_int8_qdq_model() -> None:
    """What onnxact promises on an int8 QDQ model, on any CPU.

    Which int8 kernels onnxruntime fuses the Q/DQ pairs into depends on the graph (a promoted
    tensor is never fused) and on the CPU (VNNI or not; the AVX2 u8s8 path can saturate sums),
    so the captured values are compared with an independent run that promotes the same tensors
    at the same optimization level (bit-equal on every machine), never with an unoptimized run.
    """
    proto = build("qdq_int8")
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    m = onnxact.load(proto)
    acts = onnxact.get_activations(m, IMG)
    assert list(acts) == ["conv1", "pool1", "conv2", "gap"]
    tensors = [acts.layers[k].tensor for k in acts]
    same = run_promoted(proto, {"x": IMG}, tensors)
    plain = run_promoted(proto, {"x": IMG}, [])
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}

    def step(tensor: str) -> float:
        dq = next(n for n in proto.graph.node if n.output[0] == tensor)
        return float(scales[dq.input[1]])

    f32 = onnxact.get_activations(build("conv_opset13"), IMG)
    for (k, arr), ref32 in zip(acts.items(), f32.values()):
        assert arr.dtype == np.float32
        tensor = acts.layers[k].tensor
        assert tensor.endswith("DequantizeLinear_Output"), tensor  # the dequantized activation
        np.testing.assert_array_equal(arr, same[tensor])
        steps = arr / step(tensor)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # on the int8 grid
        # int8 rounding accumulates layer by layer: 1.6 / 7 / 6.3 steps measured on an Intel VNNI CPU
        assert np.abs(arr - ref32).max() <= 16 * step(tensor), k
    assert acts["conv1"].min() >= 0  # the quantizer's Relu (folded into the range) is applied
    # the model's own output: as in the same-tensors run, and within a few output steps of the plain
    # run (which may fuse the convs into int8 kernels that the capture leaves unfused)
    np.testing.assert_array_equal(acts.outputs["logits"], same["logits"])
    assert np.abs(acts.outputs["logits"] - plain["logits"]).max() <= 4 * step("logits")


def test_model_without_conv() -> None:
    m = onnxact.load(build("no_conv"))
    assert m.layers == []
    x = np.ones((1, 10), np.float32)
    refused(onnxact.LayerError, lambda: onnxact.get_activations(m, x), "no conv or pool layer", "all_tensors=True")
    acts = onnxact.get_activations(m, x, all_tensors=True)
    assert len(acts) >= 2


def test_registry_models_pass_checker() -> None:
    from tests.models.make_models import MODELS

    for name in MODELS:
        if name != "qdq_int8":
            onnx.checker.check_model(build(name), full_check=True)


def test_saved_model_file_unchanged(tmp_path: Path) -> None:
    p = save("conv_opset13", tmp_path)
    before = tree_hashes(tmp_path)
    m = onnxact.load(p)
    onnxact.get_activations(m, IMG, layer_names=["pool1"])
    onnxact.get_activations(m, IMG, all_tensors=True, max_memory=1)
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_temp_files_removed_on_error_and_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    """A streamed (max_memory) capture interrupted midway leaves no temporary files (fixture checks)."""
    from onnxact import membound

    calls = {"n": 0}
    real = membound._run_ort

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc()
        return real(*a, **k)

    monkeypatch.setattr(membound, "_run_ort", flaky)
    m = onnxact.load(build("conv_dynamic"))
    x = np.random.default_rng(3).random((8, 3, 16, 16), dtype=np.float32)
    with pytest.raises(exc):
        onnxact.get_activations(m, x, max_memory=20_000)
    assert calls["n"] == 2, "the capture was not streamed in several passes; lower max_memory"


def test_robustness_doc_rows_name_real_tests() -> None:
    """docs/robustness.md: at least 25 rows, each naming tests that exist."""
    import re

    root = Path(__file__).parent
    doc = (root.parent / "docs" / "robustness.md").read_text()
    files = {"M": "test_robustness_models.py", "I": "test_robustness_images.py", "C": "test_cli_errors.py",
             "F": "test_fuzz.py"}
    rows = re.findall(r"^\| \d+\w? \|.*$", doc, re.M)
    assert len(rows) >= 25
    for row in rows:
        named = re.findall(r"\b([MICF]) `(test_\w+)`", row)
        assert named, row
        for f, name in named:
            assert f"def {name}(" in (root / files[f]).read_text(), (f, name)
