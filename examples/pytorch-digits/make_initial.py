#!/usr/bin/python3
"""
Regenerates initial.safetensors (the CNN's initial weights) and the model section of
manifest.json (its tensors, in state_dict order, and initialWeightsSha256).

    /usr/bin/python3 examples/pytorch-digits/make_initial.py           # rewrite both
    /usr/bin/python3 examples/pytorch-digits/make_initial.py --check   # exit 1 if they differ

The weights are PyTorch's default initialisation under torch.manual_seed(SEED): the same
PyTorch version gives byte-identical weights. initialWeightsSha256 is what Aegis checks at
launch: the SHA-256 of the flat vector, every declared tensor's float32 little-endian values
concatenated in declared order (shared/protocol/manifest.ts) — not of the safetensors file.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import aegis_trainer  # noqa: E402
import model as cnn  # noqa: E402

SEED = 42
WEIGHTS = os.path.join(HERE, "initial.safetensors")
MANIFEST = os.path.join(HERE, "manifest.json")


def initial_arrays():
    torch.manual_seed(SEED)
    return cnn.state_arrays(cnn.DigitsCNN())


def flat_sha256(arrays):
    """SHA-256 of the tensors' float32 little-endian values, concatenated in order."""
    h = hashlib.sha256()
    for a in arrays.values():
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


def model_section(arrays):
    return {
        "format": "safetensors",
        "tensors": [{"name": n, "shape": list(a.shape), "dtype": "F32"} for n, a in arrays.items()],
        "initialWeightsSha256": flat_sha256(arrays),
    }


def main(argv):
    arrays = initial_arrays()
    with open(MANIFEST) as f:
        manifest = json.load(f)
    want = model_section(arrays)
    dim = sum(int(a.size) for a in arrays.values())
    if "--check" in argv:
        on_disk = aegis_trainer.load_safetensors(WEIGHTS)
        same = list(on_disk) == list(arrays) and all(np.array_equal(on_disk[n], arrays[n]) for n in arrays)
        ok = same and manifest.get("model") == want and manifest.get("round", {}).get("dim") == dim
        print("initial.safetensors and manifest.json are " + ("up to date" if ok else "OUT OF DATE (run make_initial.py)"))
        return 0 if ok else 1
    aegis_trainer.save_safetensors(WEIGHTS, arrays)
    manifest["model"] = want
    manifest.setdefault("round", {})["dim"] = dim
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {os.path.basename(WEIGHTS)} ({dim} parameters) and manifest.json's model section (sha256 {want['initialWeightsSha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
