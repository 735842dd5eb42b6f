#!/usr/bin/env python3
"""Writes initial.safetensors (and initial.bin, the same weights as Aegis's flat vector) for
manifest.json: W [784, 10] and b [10], all zeros (softmax regression trains fine from zeros,
and zeros are the same on every machine). Prints the SHA-256 of the flat vector, which is the
manifest's model.initialWeightsSha256.

    /usr/bin/python3 examples/numpy-logreg/make_initial.py [OUT_DIR]
"""
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import aegis_trainer  # noqa: E402

FEATURES, CLASSES = 784, 10

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
W = aegis_trainer.Tensor((FEATURES, CLASSES), [0.0] * (FEATURES * CLASSES))
b = aegis_trainer.Tensor((CLASSES,), [0.0] * CLASSES)
aegis_trainer.save_safetensors(os.path.join(out, "initial.safetensors"), {"W": W, "b": b}, {"format": "pt"})
flat = struct.pack("<%df" % (len(W.data) + len(b.data)), *(W.data + b.data))
with open(os.path.join(out, "initial.bin"), "wb") as f:
    f.write(flat)
print(hashlib.sha256(flat).hexdigest())
