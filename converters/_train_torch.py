"""PyTorch half of :func:`onnxact.converters.train_image_classifier` (imported only when used)."""

from __future__ import annotations

import numpy as np

from .torch import _import_torch


def build_seed_cnn_torch(n_classes: int, image_size=(128, 128), filters=(16, 32, 64, 64, 64), dense: int = 512,
                         channels: int = 3):
    """The seed's CNN in PyTorch, with the Keras version's layer names.

    ``conv{i}`` (a Conv 3x3 + ReLU pair, so its output is the Keras ``Conv2D(activation="relu")``
    output) and ``pool{i}`` blocks, ``flatten``, ``dense`` (Linear + ReLU) and ``predictions``
    (Linear + Softmax): ``named_modules()`` -- and so onnxact's keys -- read ``conv1``, ``pool1``,
    ... as on the Keras model, not ``0.0``, ``0.1``. Softmax is part of the model (as in the Keras
    version) so the exported ONNX gives probabilities.
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
    return nn.Sequential(OrderedDict(layers))


def train_torch(x_tr, y_tr, x_va, y_va, n_classes, *, epochs, batch_size, learning_rate, seed, filters, dense, verbose):
    torch = _import_torch()
    threads = torch.get_num_threads()
    if x_tr.shape[1] * x_tr.shape[2] <= 64 * 64:
        # why: on tiny images intra-op thread synchronisation costs more than it saves (measured 30x on
        # 2 busy cores: 0.26 s vs 0.009 s per 32x32 batch), so train those single-threaded
        torch.set_num_threads(1)
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
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    nll = torch.nn.NLLLoss()
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            probs = model(xt[idx])
            loss = nll(torch.log(probs.clamp_min(1e-7)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((probs.argmax(1) == yt[idx]).sum())
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
