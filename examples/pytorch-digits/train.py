#!/usr/bin/python3
"""
An Aegis external trainer in PyTorch: the small CNN of model.py on 28x28 digits.

    aegis client run --data-dir ./dev1 --train-data ./digits.jsonl \
      --trainer-cmd '/usr/bin/python3 examples/pytorch-digits/train.py'

Aegis runs it once per local fit or evaluation (docs/trainer-protocol.md); examples/aegis_trainer.py
does the protocol: it reads the round's header and records from stdin, loads the global
weights, calls `fit` or `evaluate` below and writes the reply (and, for a fit, the trained
weights). Each record is {"x": [784 pixels in 0..1], "y": digit}.

Local training follows the manifest's `training` section (epochs, batchSize, learningRate,
optimizer; the loss is cross-entropy on the logits) and is seeded from the round context (job,
round, model version): rerunning a round's fit on the same data gives the same weights.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # examples/, for aegis_trainer

import aegis_trainer  # noqa: E402
import model as cnn  # noqa: E402


def _model_from(weights):
    m = cnn.DigitsCNN()
    cnn.load_state(m, weights)
    return m


def fit(weights, records, context):
    t = context.get("training", {})
    x, y = cnn.examples(records)
    if x.shape[0] == 0:
        raise ValueError("no training examples")
    m = _model_from(weights)
    loss = cnn.train(
        m,
        x,
        y,
        epochs=int(t.get("epochs", 1)),
        batch_size=int(t.get("batchSize", 32)),
        lr=float(t.get("learningRate", 0.01)),
        optimizer=str(t.get("optimizer", "sgd")),
        seed=cnn.seed_from(context.get("job"), context.get("round"), context.get("model_version")),
    )
    return cnn.state_arrays(m), x.shape[0], {"loss": loss}


def evaluate(weights, records, context):
    x, y = cnn.examples(records)
    loss, accuracy = cnn.evaluate(_model_from(weights), x, y)
    if x.shape[0] == 0:
        return 0.0, 0, {"accuracy": 0.0}
    return loss, x.shape[0], {"accuracy": accuracy}


if __name__ == "__main__":
    aegis_trainer.run(fit=fit, evaluate=evaluate)
