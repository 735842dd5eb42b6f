"""
The PyTorch side of the pytorch-digits example: a small CNN for 28x28 digits, its training and
its evaluation. Nothing here knows about Aegis; train.py connects it to the trainer protocol.

The network (9,098 parameters, float32):

    conv1  1 -> 8,  3x3, padding 1, relu, 2x2 max-pool   28x28 -> 14x14
    conv2  8 -> 16, 3x3, padding 1, relu, 2x2 max-pool   14x14 -> 7x7
    fc     16*7*7 = 784 -> 10 logits

Its state_dict order (conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc.weight, fc.bias)
is the order manifest.json declares in `model.tensors`: Aegis concatenates the tensors in that
order into the flat vector it aggregates.
"""
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# Two cores on the machines this runs on, and several trainers at once: one thread each.
torch.set_num_threads(1)

SIDE = 28
CLASSES = 10


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def tensor_specs(model=None):
    """[(name, shape)] in state_dict order: what the manifest's model.tensors lists."""
    model = model or DigitsCNN()
    return [(name, list(t.shape)) for name, t in model.state_dict().items()]


def seed_from(*parts):
    """A 63-bit seed from the round context (job, round, model version, ...): every client and
    every rerun of the same round shuffles the same way, and different rounds differently."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_state(model, weights):
    """Puts numpy arrays (name -> array, the manifest's shapes) into the model."""
    state = {name: torch.from_numpy(weights[name].astype("float32", copy=True)) for name in model.state_dict()}
    model.load_state_dict(state, strict=True)


def state_arrays(model):
    """The model's tensors as numpy float32 arrays, name -> array, in state_dict order."""
    return {name: t.detach().cpu().numpy().astype("float32") for name, t in model.state_dict().items()}


def examples(records):
    """Stacks trainer-protocol records {"x": 784 pixels, "y": digit} into (x [n, 1, 28, 28]
    float32, y [n] int64)."""
    xs, ys = [], []
    for r in records:
        px = r["x"]
        if len(px) != SIDE * SIDE:
            raise ValueError(f"a record has {len(px)} features, the CNN takes {SIDE * SIDE} pixels")
        xs.append(px)
        y = r["y"]
        if not float(y).is_integer() or not 0 <= int(y) < CLASSES:
            raise ValueError(f"labels must be integers in 0..{CLASSES - 1}")
        ys.append(int(y))
    if not xs:
        return torch.zeros((0, 1, SIDE, SIDE)), torch.zeros((0,), dtype=torch.int64)
    x = torch.tensor(xs, dtype=torch.float32).view(-1, 1, SIDE, SIDE)
    return x, torch.tensor(ys, dtype=torch.int64)


def make_optimizer(name, params, lr):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.SGD(params, lr=lr)


def train(model, x, y, epochs, batch_size, lr, optimizer, seed):
    """Local training: `epochs` passes over (x, y) in seeded random order. Returns the mean
    loss of the last epoch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    model.train()
    n = x.shape[0]
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        last = total / max(1, n)
    return last


@torch.no_grad()
def evaluate(model, x, y):
    """(mean cross-entropy, accuracy) of the model on (x, y)."""
    model.eval()
    if x.shape[0] == 0:
        return float("nan"), float("nan")
    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc
