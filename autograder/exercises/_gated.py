"""The gated net that modules 05 (TorchScript) and 06 (torch.export) both grade: `if x.sum() > 0` picks `up` or
`down` after a tanh layer. Its weights, inputs and ground truth here, in the parent; the workers build it from
autograder.worker._gated, which takes the weights in the order of SHAPES.
"""
from __future__ import annotations

import numpy as np

from autograder.spec import Mismatch

D_IN, D_HIDDEN, D_OUT = 4, 8, 3
# hidden.weight, hidden.bias, up.weight, up.bias, down.weight, down.bias (nn.Linear's (out, in) layout)
SHAPES = [(D_HIDDEN, D_IN), (D_HIDDEN,), (D_OUT, D_HIDDEN), (D_OUT,), (D_OUT, D_HIDDEN), (D_OUT,)]


def weights(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.normal(scale=0.7, size=s).astype(np.float32) for s in SHAPES]


def truth(weights, x) -> np.ndarray:
    """The forward pass in float64; the branch is decided on the float32 input, as the model does."""
    w1, b1, w2, b2, w3, b3 = (w.astype(np.float64) for w in weights)
    h = np.tanh(np.asarray(x, np.float64) @ w1.T + b1)
    return h @ w2.T + b2 if np.asarray(x, np.float32).sum(dtype=np.float64) > 0 else h @ w3.T + b3


def signed(rng: np.random.Generator, shape, sign: int) -> np.ndarray:
    """A float32 array whose sum has the given sign, with a margin no rounding can cross."""
    x = rng.normal(size=shape)
    x = x - x.mean() + sign * rng.uniform(0.3, 1.0)
    return x.astype(np.float32)


def zero_sum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Small integers whose total is exactly 0 in any summation order: the boundary of `x.sum() > 0`."""
    x = rng.integers(-3, 4, size=(n, D_IN)).astype(np.float32)
    x[-1, -1] -= x.sum()
    return x


def branch(x: np.ndarray) -> str:
    s = x.sum(dtype=np.float64)
    return "x.sum() == 0" if s == 0 else ("x.sum() > 0" if s > 0 else "x.sum() < 0")


def fail_on_branches(ctx, bad: dict[str, str], frozen, wrong: str = "") -> None:
    """`bad` holds the mismatch of each branch that failed, in the order the branches came. One branch wrong and
    the other right means tracing or exporting froze the branch: fail with `frozen(branch)`. Both wrong: the first
    mismatch, followed by `wrong`."""
    if len(bad) == 1:
        ctx.fail(frozen(next(iter(bad))))
    if bad:
        ctx.fail(f"{next(iter(bad.values()))}{wrong}")


def judge_agreement(ctx, weights, x: np.ndarray, mine_torch: dict, mine_tf: dict, names: tuple[str, str],
                    boundary: str) -> None:
    """The two frameworks' gated nets on one batch must agree with each other and with float64 NumPy. When
    they disagree, say which is wrong; at x.sum() == 0 exactly, add `boundary` (the strict comparison)."""
    torch_name, tf_name = names
    what = f"{len(x)} row(s) with {branch(x)}"
    want = ctx.truth(truth(weights, x))
    try:
        ctx.same(mine_torch, mine_tf, "torch", ["output"], f"{torch_name} vs {tf_name} on {what}",
                 want_framework="tensorflow")
    except Mismatch as m:
        wrong = []
        for name, out, fw in ((torch_name, mine_torch, "torch"), (tf_name, mine_tf, "tensorflow")):
            try:
                ctx.same(out, want, fw, ["output"], name, want_framework="any")
            except Mismatch:
                wrong.append(name)
        blame = f"{' and '.join(wrong)} differ{'s' if len(wrong) == 1 else ''} from float64 NumPy" if wrong \
            else "both are within tolerance of float64 NumPy, but not of each other"
        at_zero = (f" At x.sum() == 0 exactly, the net takes `down` (x.sum() > 0 is False): {boundary}."
                   if branch(x) == "x.sum() == 0" else "")
        ctx.fail(f"{m}; {blame}.{at_zero}")
    ctx.same(mine_tf, want, "tensorflow", ["output"], f"{tf_name} on {what}", want_framework="any")
