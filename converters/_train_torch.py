"""PyTorch half of :func:`onnxact.converters.train_image_classifier` (imported only when used).

The recipe mirrors the Keras half on purpose, so that "same settings" means the same training:
Keras' initialisers (glorot_uniform weights, zero biases), Keras' Adam epsilon (1e-7), and the
cross-entropy computed from the logits (as Keras does for a softmax output). Measured on the
README's 5-class shapes task: with torch's own defaults (kaiming_uniform(a=sqrt(5)) weights and
uniform biases) the signal shrinks layer by layer until the biases dominate, half of conv5's
filters never fire and the network stays near chance for most of its epochs.
"""

from __future__ import annotations

import numpy as np

from .torch import _import_torch

KERAS_ADAM_EPSILON = 1e-7


def build_seed_cnn_torch(n_classes: int, image_size=(128, 128), filters=(16, 32, 64, 64, 64), dense: int = 512,
                         channels: int = 3):
    """The seed's CNN in PyTorch, with the Keras version's layer names and initial weights.

    ``conv{i}`` (a Conv 3x3 + ReLU pair, so its output is the Keras ``Conv2D(activation="relu")``
    output) and ``pool{i}`` blocks, ``flatten``, ``dense`` (Linear + ReLU) and ``predictions``
    (Linear + Softmax): ``named_modules()`` -- and so onnxact's keys -- read ``conv1``, ``pool1``,
    ... as on the Keras model, not ``0.0``, ``0.1``. Softmax is part of the model (as in the Keras
    version) so the exported ONNX gives probabilities. Weights start as Keras starts them
    (glorot_uniform, zero biases): the same architecture then also trains the same way.
    """
    from collections import OrderedDict

    torch = _import_torch()
    nn = torch.nn
    layers: list = []
    cin = channels
    for i, f in enumerate(filters, 1):
        layers += [(f"conv{i}", nn.Sequential(nn.Conv2d(cin, f, 3, padding=1), nn.ReLU())),
                   (f"pool{i}", nn.MaxPool2d(2))]
        cin = f
    h, w = image_size[0] >> len(filters), image_size[1] >> len(filters)
    layers.append(("flatten", nn.Flatten()))
    flat = cin * h * w
    if dense:
        layers.append(("dense", nn.Sequential(nn.Linear(flat, dense), nn.ReLU())))
        flat = dense
    layers.append(("predictions", nn.Sequential(nn.Linear(flat, n_classes), nn.Softmax(dim=1))))
    model = nn.Sequential(OrderedDict(layers))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            # Keras' glorot_uniform over the same fan-in/fan-out (kernel size x channels), and zero bias
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _training_threads(torch, image_pixels: int) -> int:
    """Intra-op threads to train with: one for tiny images, torch's own setting otherwise.

    Why: torch's OpenMP threads wait for each other at every op; on tiny images that
    synchronisation costs more than it saves (30x on 32x32 images on 2 cores). The choice never
    depends on the machine's load, so a run repeats exactly with the same torch settings. On cores
    shared with other work, ``torch.set_num_threads(1)`` before training can be faster (measured on
    2 loaded cores: 1.0 s per 32-image batch of 128x128 with 2 threads, 0.45 s with 1).
    """
    return 1 if image_pixels <= 64 * 64 else torch.get_num_threads()


def train_torch(x_tr, y_tr, x_va, y_va, n_classes, *, epochs, batch_size, learning_rate, seed, filters, dense, verbose):
    torch = _import_torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(_training_threads(torch, x_tr.shape[1] * x_tr.shape[2]))
    try:
        return _train(torch, x_tr, y_tr, x_va, y_va, n_classes, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed, filters=filters, dense=dense, verbose=verbose)
    finally:
        torch.set_num_threads(threads)


def _train(torch, x_tr, y_tr, x_va, y_va, n_classes, *, epochs, batch_size, learning_rate, seed, filters, dense,
           verbose):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x_tr, (0, 3, 1, 2))))
    yt = torch.from_numpy(y_tr)
    model = build_seed_cnn_torch(n_classes, x_tr.shape[1:3], filters, dense, channels=x_tr.shape[3])
    # the model without its final Softmax (same parameters): cross-entropy on logits is exact where
    # log(softmax) underflows, as Keras computes it from the logits of a softmax output layer
    logits_of = torch.nn.Sequential(*list(model.children())[:-1], model.predictions[0])
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=KERAS_ADAM_EPSILON)
    cross_entropy = torch.nn.CrossEntropyLoss()
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            logits = logits_of(xt[idx])
            loss = cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yt[idx]).sum())
            total += len(idx)
        history["loss"].append(loss_sum / total)
        history["accuracy"].append(correct / total)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f}, accuracy {correct / total:.3f}")
    model.eval()

    def acc(x, y):
        with torch.no_grad():
            xb = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
            pred = torch.cat([model(xb[i:i + 256]).argmax(1) for i in range(0, len(xb), 256)]).numpy()
        return float(np.mean(pred == y))

    return model, history, acc(x_tr, y_tr), (acc(x_va, y_va) if x_va is not None else None)
