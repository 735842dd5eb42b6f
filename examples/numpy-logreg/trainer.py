#!/usr/bin/env python3
"""Softmax regression (multinomial logistic regression) in NumPy, as an Aegis external trainer.

The model: logits = x @ W + b, with W [features, classes] and b [classes] (the manifest's
tensors). fit runs `epochs` passes of mini-batch SGD with the manifest's batch size and learning
rate, starting from the round's global weights; evaluate reports the mean cross-entropy and the
accuracy. Pixels arrive as 0..255 or 0..1; they are scaled to 0..1 either way.

    aegis client run --trainer-cmd '/usr/bin/python3 examples/numpy-logreg/trainer.py' ...
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import aegis_trainer  # noqa: E402


def _prepare(records, classes):
    x, y = aegis_trainer.as_numpy(records)
    if x.size and x.max() > 1.0:
        x = x / 255.0
    return x, y.astype(np.int64).clip(0, classes - 1)


def _forward(x, W, b):
    z = x @ W + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def fit(weights, records, context):
    W, b = weights["W"].astype(np.float64), weights["b"].astype(np.float64)
    x, y = _prepare(records, W.shape[1])
    n = len(y)
    training = context["training"]
    epochs, batch, lr = int(training.get("epochs", 1)), int(training.get("batchSize", 32)), float(training.get("learningRate", 0.1))
    # The shuffle is seeded by the round, so a rerun of the same round trains the same way.
    rng = np.random.default_rng(1000003 * int(context["round"]) + int(context["model_version"]))
    loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            xb, yb = x[idx], y[idx]
            p = _forward(xb, W, b)
            total += -np.log(p[np.arange(len(yb)), yb] + 1e-12).sum()
            p[np.arange(len(yb)), yb] -= 1.0  # d(cross-entropy)/d(logits)
            W -= lr * (xb.T @ p) / len(yb)
            b -= lr * p.mean(axis=0)
        loss = total / max(n, 1)
    return {"W": W.astype(np.float32), "b": b.astype(np.float32)}, n, {"loss": loss}


def evaluate(weights, records, context):
    W, b = weights["W"], weights["b"]
    x, y = _prepare(records, W.shape[1])
    if len(y) == 0:
        return 0.0, 0, {"accuracy": 0.0}
    p = _forward(x, W, b)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    accuracy = float((p.argmax(axis=1) == y).mean())
    return loss, len(y), {"accuracy": accuracy}


if __name__ == "__main__":
    aegis_trainer.run(fit=fit, evaluate=evaluate)
