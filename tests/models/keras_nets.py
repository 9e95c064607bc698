"""Small Keras models for the converter tests (imported only where keras is installed)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def randomize_batchnorm(model, seed: int = 0):
    """Non-trivial BN statistics, so a folded BN is visibly different from its conv."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 1.5, n)])
    return model


def branchy_net(seed: int = 0):
    """Functional model: two branches, BatchNormalization, SeparableConv2D, Add, GlobalAveragePooling."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    x = L.MaxPooling2D(2, name="stem_pool")(x)
    a = L.SeparableConv2D(8, 3, padding="same", name="a_sep")(x)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.Activation("relu", name="a_relu")(a)
    b = L.Conv2D(8, 1, activation="relu", name="b_conv")(x)
    x = L.Add(name="merge")([a, b])
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="head_conv")(x)
    x = L.AveragePooling2D(2, name="head_avgpool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, activation="softmax", name="predictions")(x)
    m = keras.Model(inp, out, name="branchy")
    return randomize_batchnorm(m, seed)


def keras_layer_outputs(model, x) -> dict[str, np.ndarray]:
    """Reference activations, the Keras way: ``keras.Model(inputs, [layer.output ...])``."""
    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    ref = keras.Model(model.inputs, [la.output for la in layers])
    outs = ref(x, training=False)
    return {la.name: np.asarray(o) for la, o in zip(layers, outs)}
