"""Keras half of :func:`onnxact.converters.train_image_classifier` (imported only when used)."""

from __future__ import annotations

import numpy as np

from .keras import _import_keras


def build_seed_cnn_keras(input_shape, n_classes: int, filters=(16, 32, 64, 64, 64), dense: int = 512, name="seed_cnn"):
    """The seed's CNN: ``conv{i}`` (3x3, relu, same) + ``pool{i}`` (2x2) blocks, Flatten, Dense, softmax."""
    keras = _import_keras()
    layers = keras.layers
    inp = keras.Input(shape=input_shape, name="image")
    x = inp
    for i, f in enumerate(filters, 1):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    if dense:
        x = layers.Dense(dense, activation="relu", name="dense")(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=name)


def train_keras(x_tr, y_tr, x_va, y_va, n_classes, *, epochs, batch_size, learning_rate, seed, filters, dense, verbose):
    keras = _import_keras()
    keras.utils.set_random_seed(seed)
    model = build_seed_cnn_keras(x_tr.shape[1:], n_classes, filters, dense)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    val = (x_va, y_va) if x_va is not None else None
    hist = model.fit(x_tr, y_tr, epochs=epochs, batch_size=batch_size, validation_data=val,
                     verbose=2 if verbose else 0, shuffle=True)

    def acc(x, y):
        pred = np.argmax(model.predict(x, batch_size=128, verbose=0), axis=1)
        return float(np.mean(pred == y))

    train_acc = acc(x_tr, y_tr)
    val_acc = acc(x_va, y_va) if x_va is not None else None
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return model, history, train_acc, val_acc
