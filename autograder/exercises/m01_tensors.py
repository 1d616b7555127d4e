"""Checks for module 01, "Tensors, eager execution and autograd".

The student writes a mean-squared-error loss and its gradient in both frameworks, a gradient-descent loop
in both, and a tf.function version of the TensorFlow loss. Ground truth is computed here in float64 NumPy
where it can be; elsewhere it comes from the reference solution's worker.
"""
from __future__ import annotations

import numpy as np

NAMES = ["loss", "gradient"]


def _problem(rng: np.random.Generator, n: int | None = None, d: int | None = None) -> list[np.ndarray]:
    n = n or int(rng.integers(16, 65))
    d = d or int(rng.integers(3, 9))
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return [w, x, y]


def _truth_loss_and_grad(w, x, y) -> tuple[np.ndarray, np.ndarray]:
    w, x, y = (a.astype(np.float64) for a in (w, x, y))
    r = x @ w - y
    return np.asarray(np.mean(r * r)), 2.0 / len(y) * (x.T @ r)


def _truth_fit(w0, x, y, lr, steps) -> np.ndarray:
    w = w0.astype(np.float64)
    for _ in range(steps):
        w = w - lr * _truth_loss_and_grad(w, x, y)[1]
    return w


def _matches_reference(ctx, fn: str, framework: str) -> str:
    for _ in range(3):
        got, want = ctx.call_both(fn, _problem(ctx.rng), framework)
        ctx.same(got, want, framework, NAMES, fn)
    return "loss and gradient match the reference on 3 random problems"


def torch_grad(ctx):
    return _matches_reference(ctx, "torch_loss_and_grad", "torch")


def tf_grad(ctx):
    return _matches_reference(ctx, "tf_loss_and_grad", "tensorflow")


def cross_grad(ctx):
    # A bigger problem than the single-framework parts use, and the one-sample edge case.
    for n in (int(ctx.rng.integers(200, 400)), 1):
        args = _problem(ctx.rng, n=n, d=int(ctx.rng.integers(8, 17)))
        mine_torch = ctx.call("torch_loss_and_grad", args, "torch")
        mine_tf = ctx.call("tf_loss_and_grad", args, "tensorflow")
        truth = ctx.truth(*_truth_loss_and_grad(*args))
        ctx.same(mine_torch, mine_tf, "torch", NAMES, "torch_loss_and_grad vs tf_loss_and_grad", want_framework="tensorflow")
        ctx.same(mine_torch, truth, "torch", NAMES, "torch_loss_and_grad vs float64 NumPy", want_framework="any")
        ctx.same(mine_tf, truth, "tensorflow", NAMES, "tf_loss_and_grad vs float64 NumPy", want_framework="any")
    return "PyTorch and TensorFlow agree with each other and with float64 NumPy, gradients included"


def same_weights(ctx):
    for _ in range(2):
        w0, x, y = _problem(ctx.rng)
        lr, steps = float(ctx.rng.uniform(0.01, 0.1)), int(ctx.rng.integers(20, 60))
        args = [w0, x, y, lr, steps]
        mine_torch = ctx.call("torch_fit", args, "torch")
        mine_tf = ctx.call("tf_fit", args, "tensorflow")
        truth = ctx.truth(_truth_fit(w0, x, y, lr, steps))
        ctx.same(mine_torch, mine_tf, "torch", ["weights"], "torch_fit vs tf_fit", want_framework="tensorflow")
        ctx.same(mine_tf, truth, "tensorflow", ["weights"], "tf_fit vs float64 NumPy", want_framework="any")
    return "both loops reach the same weights as plain gradient descent"


def tf_graph(ctx):
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    n, d = int(shape_rng.integers(16, 65)), int(shape_rng.integers(3, 9))
    before = ctx.introspect("tracing_count", "tf_loss_and_grad_graph")
    for _ in range(5):  # same shapes, new values: a graph built for the first must serve them all
        args = _problem(ctx.rng, n=n, d=d)
        graph = ctx.call("tf_loss_and_grad_graph", args, "tensorflow")
        eager = ctx.call("tf_loss_and_grad", args, "tensorflow")
        ctx.same(graph, eager, "tensorflow", NAMES, "tf_loss_and_grad_graph vs eager tf_loss_and_grad")
        ctx.same(graph, ctx.truth(*_truth_loss_and_grad(*args)), "tensorflow", NAMES,
                 "tf_loss_and_grad_graph vs float64 NumPy", want_framework="any")
    traces = ctx.introspect("tracing_count", "tf_loss_and_grad_graph") - before
    ctx.details["traces"] = traces
    if traces > 1:
        ctx.fail(f"tf_loss_and_grad_graph traced {traces} times for 5 calls with same-shaped tensors; expected at most 1")
    return f"equals eager on 5 inputs and traced {traces} time(s) for them"


def graph_speed(ctx):
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    n, d = 64, int(shape_rng.integers(4, 9))
    # The course's eager baseline (autograder/worker/m01_tensors.py) runs in the clean reference worker.
    ratio = ctx.speedup("@baseline_tf_loss_and_grad", "tf_loss_and_grad_graph",
                        lambda: _problem(ctx.rng, n=n, d=d), "tensorflow")
    return ctx.speed_verdict(ratio, "tf_loss_and_grad_graph")


PARTS = {f.__name__: f for f in (torch_grad, tf_grad, cross_grad, same_weights, tf_graph, graph_speed)}
