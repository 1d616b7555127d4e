"""The gated net that modules 05 (TorchScript) and 06 (torch.export) both grade, as the grader's workers build it:
`if x.sum() > 0` picks `up` or `down` after a tanh layer (its ground truth is in autograder.exercises._gated). And
the bytes of the files both modules move from the student's worker to a fresh verifier."""
from __future__ import annotations

import numpy as np

# The order of the weights a spec sends (autograder.exercises._gated.SHAPES has their shapes, in this order).
KEYS = ["hidden.weight", "hidden.bias", "up.weight", "up.bias", "down.weight", "down.bias"]


def net_class():
    """The grader's copy of the notebooks' GatedNet, defined on first use (torch is imported here, not at the top).
    It is registered as this module's `GatedNet`, so that pickle (a student's torch.save of the model) finds it by
    name, as it would find a notebook's class; torch.jit.script reads its source from this file."""
    if "GatedNet" not in globals():
        import torch
        from torch import nn

        class GatedNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden = nn.Linear(4, 8)
                self.up = nn.Linear(8, 3)
                self.down = nn.Linear(8, 3)

            def forward(self, x):
                h = torch.tanh(self.hidden(x))
                if x.sum() > 0:
                    return self.up(h)
                return self.down(h)

        GatedNet.__qualname__ = "GatedNet"
        globals()["GatedNet"] = GatedNet
    return globals()["GatedNet"]


def model(weights):
    """A fresh net on the CPU holding the weights the parent drew, in eval mode."""
    import torch
    net = net_class()()
    with torch.no_grad():
        net.load_state_dict({k: w.detach().clone().float().cpu() for k, w in zip(KEYS, weights)})
    return net.eval()


def state(weights) -> dict:
    """The weights as the notebooks' state_dict of NumPy arrays (what save_savedmodel receives)."""
    return {k: np.array(w.numpy()) for k, w in zip(KEYS, weights)}


_saves = {"n": 0}


def scratch_path(stem: str, suffix: str = "") -> str:
    """A new file name in the scratch folder (the worker's cwd) for each file saved: a second save never reads the
    first one's leftovers."""
    _saves["n"] += 1
    return f"{stem}_{_saves['n']}{suffix}"


def as_array(raw: bytes) -> np.ndarray:
    """Bytes as a uint8 array: how a file travels between the workers and the parent."""
    return np.frombuffer(raw, dtype=np.uint8).copy()


def as_bytes(data) -> bytes:
    return np.asarray(data, dtype=np.uint8).tobytes()


def read_bytes(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return as_array(f.read())


def write_bytes(data, path: str) -> str:
    """Write the bytes the parent sent at `path`, in a verifier's scratch folder."""
    with open(path, "wb") as f:
        f.write(as_bytes(data))
    return path
