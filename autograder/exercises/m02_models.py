"""Checks for module 02, "Models and layers, and porting them".

The student configures BatchNorm across the frameworks (a PyTorch BN that behaves like Keras's defaults, a Keras
twin of a PyTorch CNN whose BN behaves like PyTorch's), writes weight converters in both directions for a small CNN
(conv, BatchNorm, max-pool, flatten, two dense layers), and a Keras training step that reproduces PyTorch's.

Ground truth: the parent draws every weight and BN statistic from the run's generator and computes the model in
float64 NumPy here (parts 1-4); the training step's truth comes from the grader's own PyTorch code in the reference
worker (part 5). When an answer is wrong, the parent recomputes the model under the usual porting mistakes (kernel
axes reversed, flatten order ignored, statistics not copied, BN momentum left at a default) and names the one the
answer matches.

The one difference no setting removes: PyTorch updates running_var with the *unbiased* batch variance, Keras updates
moving_variance with the *biased* one (both normalise a training batch with the biased variance). The truth for each
framework follows that framework's own rule, so nothing is tolerated loosely; the lesson measures the gap.
"""
from __future__ import annotations

import numpy as np

from autograder.spec import Mismatch, compare, leaves

# The grader's own copies of the architectures, which build a model from the parent's arrays, call the student's
# code on it and return plain tensors, are in autograder/worker/m02_models.py.

# ---------------------------------------------------------------------------------------------------------------
# The model in float64 NumPy, the two layouts, and the usual porting mistakes.
# ---------------------------------------------------------------------------------------------------------------
TORCH_MOMENTUM, TORCH_EPS = 0.1, 1e-5      # PyTorch's BatchNorm defaults
KERAS_MOMENTUM, KERAS_EPS = 0.99, 1e-3     # Keras's BatchNormalization defaults
OUTPUTS = ["logits", "BN running mean", "BN running variance"]


def _params(rng: np.random.Generator) -> list[np.ndarray]:
    """Random weights and random BN statistics for the CNN, in PyTorch's layout (float32)."""
    shapes = [
        ("normal", 0.3, (4, 3, 3, 3)), ("normal", 0.1, (4,)),            # conv OIHW, bias
        ("uniform", (0.5, 1.5), (4,)), ("normal", 0.2, (4,)),           # BN gamma, beta
        ("normal", 0.5, (4,)), ("uniform", (0.05, 0.5), (4,)),          # running mean, running var
        ("normal", 0.2, (16, 64)), ("normal", 0.1, (16,)),              # fc1 (out, in), bias
        ("normal", 0.3, (5, 16)), ("normal", 0.1, (5,)),                # fc2 (out, in), bias
    ]
    out = []
    for kind, scale, shape in shapes:
        a = rng.normal(0.0, scale, shape) if kind == "normal" else rng.uniform(*scale, shape)
        out.append(a.astype(np.float32))
    return out


def _to_keras(p: list[np.ndarray], mistake: str | None = None) -> list[np.ndarray]:
    """PyTorch layout -> Keras layout (what a right torch_to_keras does), or with one classic mistake."""
    cw, cb, g, b, rm, rv, w1, b1, w2, b2 = p
    k = {"kernel_T": cw.T, "kernel_reshape": cw.reshape(3, 3, 3, 4)}.get(mistake, cw.transpose(2, 3, 1, 0))
    k1 = w1.T if mistake == "flatten" else w1.reshape(16, 4, 4, 4).transpose(2, 3, 1, 0).reshape(64, 16)
    if mistake == "no_stats":
        rm, rv = np.zeros_like(rm), np.ones_like(rv)
    return [np.ascontiguousarray(a) for a in (k, cb, g, b, rm, rv, k1, b1, w2.T, b2)]


def _to_torch(k: list[np.ndarray], mistake: str | None = None) -> list[np.ndarray]:
    """Keras layout -> PyTorch layout (what a right keras_to_torch does), or with one classic mistake."""
    kk, cb, g, b, mm, mv, k1, b1, k2, b2 = k
    cw = {"kernel_T": kk.T, "kernel_reshape": kk.reshape(4, 3, 3, 3)}.get(mistake, kk.transpose(3, 2, 0, 1))
    w1 = k1.T if mistake == "flatten" else k1.reshape(4, 4, 4, 16).transpose(3, 2, 0, 1).reshape(16, 64)
    if mistake == "no_stats":
        mm, mv = np.zeros_like(mm), np.ones_like(mv)
    return [np.ascontiguousarray(a) for a in (cw, cb, g, b, mm, mv, w1, b1, k2.T, b2)]


def _bn(z, gamma, beta, mean, var, training, momentum, eps, unbiased):
    """BatchNorm over all axes but 1, in float64; momentum in PyTorch's sense (weight of the new batch)."""
    axes = tuple(i for i in range(z.ndim) if i != 1)
    shape = [1] * z.ndim
    shape[1] = -1
    if training:
        n = z.size // z.shape[1]
        bm, bv = z.mean(axes), z.var(axes)
        new_mean = (1 - momentum) * mean + momentum * bm
        new_var = (1 - momentum) * var + momentum * bv * (n / (n - 1) if unbiased else 1.0)
        use_mean, use_var = bm, bv
    else:
        new_mean, new_var, use_mean, use_var = mean, var, mean, var
    y = (z - use_mean.reshape(shape)) / np.sqrt(use_var.reshape(shape) + eps) * gamma.reshape(shape) \
        + beta.reshape(shape)
    return y, new_mean, new_var


def _forward(x, p, training, momentum=TORCH_MOMENTUM, eps=TORCH_EPS, unbiased=True):
    """TorchCNN in float64 NumPy on NCHW x with PyTorch-layout params: (logits, new running mean, new running var)."""
    cw, cb, g, b, rm, rv, w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in p)
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    z = np.broadcast_to(cb[None, :, None, None], (n, 4, 8, 8)).copy()
    for i in range(3):
        for j in range(3):
            z += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 8, j:j + 8], cw[:, :, i, j])
    h, new_mean, new_var = _bn(z, g, b, rm, rv, training, momentum, eps, unbiased)
    h = np.maximum(h, 0.0).reshape(n, 4, 4, 2, 4, 2).max(axis=(3, 5)).reshape(n, 64)
    a = np.maximum(h @ w1.T + b1, 0.0)
    return a @ w2.T + b2, new_mean, new_var


MISTAKES = {
    "kernel_T": "the conv kernel's axes were reversed with .T (OIHW -> WHIO swaps the kernel's height and width; "
                "the right order is permute(2, 3, 1, 0), OIHW -> HWIO)",
    "kernel_reshape": "the conv kernel was reshaped instead of transposed (reshape keeps the memory order: "
                      "permute/transpose the axes, OIHW <-> HWIO)",
    "flatten": "the first dense layer's weight was transposed but its inputs were left in the other framework's "
               "flatten order (PyTorch flattens NCHW as (C, H, W), Keras flattens NHWC as (H, W, C): reorder fc1's "
               "input axis)",
    "no_stats": "the BatchNorm running mean and variance were not copied (only gamma and beta were)",
}


def _explain(err: Mismatch, got: np.ndarray, candidates: dict[str, np.ndarray], rtol: float, atol: float):
    """Re-raise `err`, naming the mistake whose output the student's output matches, if any."""
    for key, cand in candidates.items():
        try:
            compare(got, cand, "candidate", rtol=rtol, atol=atol, actual_dtype="x", expected_dtype="x")
        except Mismatch:
            continue
        raise Mismatch(f"{err} — your output matches what a port gives when {MISTAKES.get(key, key)}",
                       **err.details) from None
    raise err


def _port_output(ctx, output: dict, truth: tuple, framework: str, what: str, candidates: dict) -> None:
    """Compare (logits, mean, var); on a logits mismatch, name the mistake the answer matches."""
    got = leaves(output, 3, what)
    try:
        ctx.same(output, ctx.truth(*truth), framework, OUTPUTS, what, want_framework="any")
    except Mismatch as err:
        if "[logits]" in str(err) and "differ beyond" in str(err):
            _explain(err, got[0]["array"], candidates, ctx.part.rtol, ctx.part.atol)
        raise


def _call(ctx, fn: str, args: list, framework: str, blame: str) -> dict:
    """ctx.call of the grader's `fn` (which runs the student's `blame`), a layout error told with the layouts."""
    try:
        return ctx.call(fn, args, framework, blame=blame)
    except Mismatch as err:
        raise _shape_hint(err) from None


def _shape_hint(err: Mismatch) -> Mismatch:
    text = str(err)
    if "shape" in text.lower() and " raised " in text:
        return Mismatch(f"{text} — layouts differ: torch Linear.weight is (out, in) and Keras Dense.kernel is "
                        f"(in, out); torch Conv2d.weight is OIHW (out, in, kh, kw) and Keras Conv2D.kernel is HWIO "
                        f"(kh, kw, in, out)", **err.details)
    return err


def _momentum_hint(err: Mismatch, got_mean, old_mean, want_mean, torch_momentum: float, where: str):
    """If the running mean is wrong, say which momentum the answer used (in PyTorch's sense)."""
    batch_mean = (np.asarray(want_mean, np.float64) - (1 - torch_momentum) * old_mean) / torch_momentum
    got_mean = np.asarray(got_mean, np.float64)
    for m in (0.1, 0.01, 0.9, 0.99, 0.001):
        if abs(m - torch_momentum) < 1e-12:
            continue
        if np.allclose(got_mean, (1 - m) * old_mean + m * batch_mean, rtol=1e-4, atol=1e-5):
            raise Mismatch(f"{err} — {where} updated its running mean with a weight of {m:g} on the new batch, "
                           f"expected {torch_momentum:g}. PyTorch's momentum is the weight of the new batch, "
                           f"Keras's is the weight of the old value: torch momentum m is Keras momentum 1 - m",
                           **err.details) from None
    raise err


# ---------------------------------------------------------------------------------------------------------------
# The parts.
# ---------------------------------------------------------------------------------------------------------------
def _in_order(ctx, got: dict, truth: tuple, framework: str, names: list[str], what: str, order: list[int],
              on_fail) -> None:
    """Compare the leaves of `got` with float64 `truth` one by one in `order`; on_fail(i, err) may explain."""
    got_leaves = leaves(got, len(names), what)
    for i in order:
        try:
            ctx.same(got_leaves[i], ctx.truth(truth[i]), framework, [names[i]], f"{what} [{names[i]}]",
                     want_framework="any")
        except Mismatch as err:
            on_fail(i, err, got_leaves[i]["array"])
            raise


def torch_bn(ctx):
    for training in (1, 0, 1):
        n, c = int(ctx.rng.integers(4, 9)), int(ctx.rng.integers(2, 7))
        hw = int(ctx.rng.integers(2, 6))
        x = ctx.rng.normal(0.5, 1.5, (n, c, hw, hw)).astype(np.float32)
        gamma = ctx.rng.uniform(0.5, 1.5, c).astype(np.float32)
        beta = ctx.rng.normal(0, 0.2, c).astype(np.float32)
        mean = ctx.rng.normal(0, 0.5, c).astype(np.float32)
        var = ctx.rng.uniform(0.02, 0.3, c).astype(np.float32)
        got = _call(ctx, "@bn_like_keras", [x, training, gamma, beta, mean, var], "torch",
                    "make_torch_bn_like_keras")
        truth = _bn(x.astype(np.float64), *(a.astype(np.float64) for a in (gamma, beta, mean, var)), bool(training),
                    1 - KERAS_MOMENTUM, KERAS_EPS, unbiased=True)

        def explain(i, err, got_array, mean=mean, truth=truth):   # used within this iteration; bound all the same
            if i == 1:
                _momentum_hint(err, got_array, mean, truth[1], 1 - KERAS_MOMENTUM, "your BatchNorm2d")
            if i == 0:
                raise Mismatch(f"{err} — Keras's default epsilon is 1e-3, PyTorch's 1e-5 (eps=)", **err.details) \
                    from None

        mode = "training" if training else "eval"
        _in_order(ctx, got, truth, "torch", ["output", "running mean", "running variance"],
                  f"make_torch_bn_like_keras({c}) in {mode} mode", [1, 2, 0], explain)
    return "behaves like Keras's BatchNormalization defaults (momentum 0.99, epsilon 1e-3) in training and eval mode"


def keras_twin(ctx):
    for training in (1, 0):
        p = _params(ctx.rng)
        x = ctx.rng.normal(0, 1, (int(ctx.rng.integers(4, 12)), 3, 8, 8)).astype(np.float32)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        got = _call(ctx, "@keras_twin", [x_nhwc, training, *_to_keras(p)], "tensorflow", "make_keras_cnn")
        truth = _forward(x, p, bool(training), unbiased=False)  # PyTorch's momentum and eps, Keras's variance rule

        def explain(i, err, got_array, p=p, truth=truth):
            if i == 1:
                _momentum_hint(err, got_array, p[4], truth[1], TORCH_MOMENTUM, "your Keras BatchNormalization")
            if i == 0:
                raise Mismatch(f"{err} — is the BatchNormalization epsilon PyTorch's 1e-5? Keras's default is 1e-3",
                               **err.details) from None

        mode = "training" if training else "eval"
        _in_order(ctx, got, truth, "tensorflow", OUTPUTS, f"make_keras_cnn() in {mode} mode", [1, 2, 0], explain)
    return "the Keras twin's BatchNorm behaves like PyTorch's (momentum 0.1 as 0.9, eps 1e-5) in both modes"


def torch_to_keras(ctx):
    for training in (0, 1):
        p = _params(ctx.rng)
        x = ctx.rng.normal(0, 1, (int(ctx.rng.integers(4, 12)), 3, 8, 8)).astype(np.float32)
        got = _call(ctx, "@to_keras", [x, training, *p], "torch", "torch_to_keras")
        truth = _forward(x, p, bool(training), unbiased=False)  # the target is Keras: its variance rule
        candidates = {m: _forward(x, _to_torch(_to_keras(p, m)), bool(training), unbiased=False)[0]
                      for m in MISTAKES}
        mode = "training" if training else "eval"
        _port_output(ctx, got, truth, "tensorflow", f"torch_to_keras, then the Keras model in {mode} mode",
                     candidates)
    return "the ported Keras model matches the PyTorch source in eval and training mode, statistics included"


def keras_to_torch(ctx):
    for training in (0, 1):
        k = _to_keras(_params(ctx.rng))  # the source: a Keras model's weights
        x = ctx.rng.normal(0, 1, (int(ctx.rng.integers(4, 12)), 3, 8, 8)).astype(np.float32)
        got = _call(ctx, "@to_torch", [x, training, *k], "tensorflow", "keras_to_torch")
        truth = _forward(x, _to_torch(k), bool(training), unbiased=True)  # the target is PyTorch: its rule
        candidates = {m: _forward(x, _to_torch(k, m), bool(training), unbiased=True)[0] for m in MISTAKES}
        mode = "training" if training else "eval"
        _port_output(ctx, got, truth, "torch", f"keras_to_torch, then the PyTorch model in {mode} mode", candidates)
    return "the ported PyTorch model matches the Keras source in eval and training mode, statistics included"


def train_step(ctx):
    for _ in range(2):
        p = _params(ctx.rng)
        n = int(ctx.rng.integers(6, 13))
        x = ctx.rng.normal(0, 1, (n, 3, 8, 8)).astype(np.float32)
        y = ctx.rng.integers(0, 5, n).astype(np.int64)
        x2 = ctx.rng.normal(0, 1, (int(ctx.rng.integers(4, 9)), 3, 8, 8)).astype(np.float32)
        lr = float(ctx.rng.uniform(0.05, 0.5))
        nhwc = [np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, x2)]
        got = _call(ctx, "@keras_train", [nhwc[0], y, nhwc[1], lr, *_to_keras(p)], "tensorflow",
                    "keras_train_step")
        want = ctx.call_reference("@torch_train_reference", [x, y, x2, lr, *p], "torch")
        what = "make_keras_cnn + keras_train_step"
        got_leaves = leaves(got, 4, what)
        want_leaves = leaves(want, 4, "the reference")
        # The statistics first: a wrong momentum also spoils everything after it.
        for i, name in ((1, "BN running mean"), (2, "BN running variance"), (0, "loss"),
                        (3, "eval logits after the step")):
            try:
                ctx.same(got_leaves[i], want_leaves[i], "tensorflow", [name], f"{what} [{name}]",
                         want_framework="torch")
            except Mismatch as err:
                if i == 1:
                    _momentum_hint(err, got_leaves[1]["array"], p[4], want_leaves[1]["array"], TORCH_MOMENTUM,
                                   "your Keras model")
                if i == 0 and err.details.get("max_rel_err", 0) > 1e-2:
                    raise Mismatch(f"{err} — PyTorch's cross_entropy takes logits; Keras's "
                                   f"SparseCategoricalCrossentropy assumes probabilities unless from_logits=True",
                                   **err.details) from None
                if i in (0, 3):
                    raise Mismatch(f"{err} — check the BatchNormalization epsilon (PyTorch 1e-5, Keras 1e-3), the "
                                   f"mean (not the sum) of the loss, and that the update is plain SGD, "
                                   f"w <- w - lr * grad, on every trainable weight", **err.details) from None
                raise
    return "one Keras training step reproduces PyTorch's: loss, BN statistics and the updated model agree"


PARTS = {f.__name__: f for f in (torch_bn, keras_twin, torch_to_keras, keras_to_torch, train_step)}
