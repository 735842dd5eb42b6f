"""Helper for writing an Aegis external trainer in Python (trainer protocol version 1).

Aegis runs your trainer once per fit or evaluate (docs/trainer-protocol.md). This module does
the protocol for you: it reads the JSON header and the records from stdin, loads the global
weights (safetensors), calls your function, writes the trained weights and prints the one reply
line. Standard library only; when NumPy is installed the weights are NumPy float32 arrays,
otherwise `Tensor` objects (a shape and a flat list of floats).

    import aegis_trainer

    def fit(weights, records, context):
        ...                       # train from `weights` on `records`
        return new_weights, num_examples, {"loss": 0.3}

    def evaluate(weights, records, context):
        ...
        return loss, num_examples, {"accuracy": 0.9}

    aegis_trainer.run(fit=fit, evaluate=evaluate)

`weights` maps each tensor name the manifest declares to its array; `records` is an iterator of
dicts {"x": [floats], "y": number}, read lazily from stdin (never written to disk by Aegis);
`context` is the header's context (job, round, model_version, training hyperparameters,
features, label, tensors). Anything your code prints goes to stderr: stdout carries the reply.
"""

import json
import struct
import sys

try:  # NumPy is optional
    import numpy as np
except ImportError:  # pragma: no cover - exercised where numpy is absent
    np = None

PROTOCOL_VERSION = 1
_HEADER_CAP = 1024 * 1024
_STRUCT = {"F32": ("f", 4), "F64": ("d", 8), "F16": ("e", 2)}


class Tensor:
    """A tensor without NumPy: `shape` (a tuple) and `data` (a flat list of floats, row-major)."""

    def __init__(self, shape, data):
        self.shape = tuple(int(d) for d in shape)
        self.data = list(data)

    def __repr__(self):
        return "Tensor(shape=%r)" % (self.shape,)


def _count(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def load_safetensors(path):
    """Reads a safetensors file (F32, F16 or F64 tensors) into {name: array}, in file order."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%s: too short for safetensors" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _HEADER_CAP or 8 + n > len(raw):
        raise ValueError("%s: header length %d out of bounds" % (path, n))
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = raw[8 + n :]
    out = {}
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
    for name, e in entries:
        dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in _STRUCT:
            raise ValueError("tensor %r: dtype %s not supported" % (name, dtype))
        code, size = _STRUCT[dtype]
        count = _count(shape)
        if end - begin != count * size or end > len(data):
            raise ValueError("tensor %r: data_offsets do not match its shape" % name)
        chunk = data[begin:end]
        if np is not None:
            arr = np.frombuffer(chunk, dtype="<" + {"F32": "f4", "F64": "f8", "F16": "f2"}[dtype]).astype(np.float32)
            out[name] = arr.reshape(shape)
        else:
            out[name] = Tensor(shape, struct.unpack("<%d%s" % (count, code), chunk))
    return out


def _as_flat_f32(value):
    """(shape, bytes) of a NumPy array, a torch tensor, a Tensor, or a (nested) list of numbers."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if np is not None and not isinstance(value, Tensor):
        arr = np.ascontiguousarray(np.asarray(value, dtype="<f4"))
        return list(arr.shape), arr.tobytes()
    if isinstance(value, Tensor):
        return list(value.shape), struct.pack("<%df" % len(value.data), *value.data)
    # nested lists without NumPy
    shape, flat = [], value
    while isinstance(flat, (list, tuple)) and flat and isinstance(flat[0], (list, tuple)):
        shape.append(len(flat))
        flat = [v for row in flat for v in row]
    shape.append(len(flat))
    return shape, struct.pack("<%df" % len(flat), *flat)


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: array} (in the dict's order) as F32 safetensors."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, value in tensors.items():
        shape, blob = _as_flat_f32(value)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def _records(stream):
    for line in stream:
        line = line.strip()
        if line:
            yield json.loads(line)


def as_numpy(records):
    """All records as (X float32 [n, features], y float32 [n]) (needs NumPy)."""
    xs, ys = [], []
    for r in records:
        xs.append(r["x"])
        ys.append(r["y"])
    if not xs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32)


def _finite_metrics(metrics):
    out = {}
    for k, v in (metrics or {}).items():
        v = float(v)
        if v == v and v not in (float("inf"), float("-inf")):
            out[str(k)] = v
    return out


def run(fit=None, evaluate=None, stdin=None, stdout=None):
    """Reads one call from stdin, runs `fit` or `evaluate`, and prints the reply. Exits 1 on error."""
    stdin = stdin or sys.stdin
    reply_to = stdout or sys.stdout
    header = json.loads(stdin.readline())
    if header.get("aegis_trainer") != PROTOCOL_VERSION:
        sys.stderr.write("aegis_trainer: protocol version %r not supported\n" % header.get("aegis_trainer"))
        sys.exit(1)
    kind, context = header["kind"], header["context"]
    weights = load_safetensors(header["weights"])
    records = _records(stdin)
    # The user's prints go to stderr: stdout carries exactly one reply line.
    sys.stdout = sys.stderr
    try:
        if kind == "fit":
            if fit is None:
                raise SystemExit("aegis_trainer: this trainer has no fit")
            new_weights, num_examples, metrics = fit(weights, records, context)
            save_safetensors(header["output"], new_weights)
            reply = {"aegis_trainer": PROTOCOL_VERSION, "num_examples": int(num_examples), "metrics": _finite_metrics(metrics)}
        elif kind == "evaluate":
            if evaluate is None:
                raise SystemExit("aegis_trainer: this trainer has no evaluate")
            loss, num_examples, metrics = evaluate(weights, records, context)
            reply = {"aegis_trainer": PROTOCOL_VERSION, "num_examples": int(num_examples), "loss": float(loss), "metrics": _finite_metrics(metrics)}
        else:
            raise SystemExit("aegis_trainer: unknown call kind %r" % kind)
    finally:
        sys.stdout = sys.__stdout__
    reply_to.write(json.dumps(reply) + "\n")
    reply_to.flush()
