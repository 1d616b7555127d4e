"""Checks for module 01, "Tensors, eager execution and autograd".

The student writes a mean-squared-error loss and its gradient in both frameworks, a gradient-descent loop
in both, and a tf.function version of the TensorFlow loss. Ground truth is computed here in float64 NumPy
where it can be; elsewhere it comes from the reference solution's worker. The tf.function is judged by the
graphs it saves (autograder/worker/m01_tensors.py), loaded and run in a fresh verifier, never by what the
student's process says about it.
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


def _matches_truth(ctx, fn: str, framework: str) -> str:
    # Against float64 NumPy, not the reference notebook: a student's copy of the course (`clash init`) has none.
    for _ in range(3):
        args = _problem(ctx.rng)
        got = ctx.call(fn, args, framework)
        ctx.same(got, ctx.truth(*_truth_loss_and_grad(*args)), framework, NAMES, fn, want_framework="any")
    return "loss and gradient equal float64 NumPy on 3 random problems"


def torch_grad(ctx):
    return _matches_truth(ctx, "torch_loss_and_grad", "torch")


def tf_grad(ctx):
    return _matches_truth(ctx, "tf_loss_and_grad", "tensorflow")


def cross_grad(ctx):
    # A bigger problem than the single-framework parts use, and the one-sample edge case.
    for n in (int(ctx.rng.integers(200, 400)), 1):
        args = _problem(ctx.rng, n=n, d=int(ctx.rng.integers(8, 17)))
        mine_torch = ctx.call("torch_loss_and_grad", args, "torch")
        mine_tf = ctx.call("tf_loss_and_grad", args, "tensorflow")
        truth = ctx.truth(*_truth_loss_and_grad(*args))
        ctx.agree(mine_torch, mine_tf, truth, NAMES, ("torch_loss_and_grad", "tf_loss_and_grad"))
    return "PyTorch and TensorFlow agree with each other and with float64 NumPy, gradients included"


def same_weights(ctx):
    for _ in range(2):
        w0, x, y = _problem(ctx.rng)
        lr, steps = float(ctx.rng.uniform(0.01, 0.1)), int(ctx.rng.integers(20, 60))
        args = [w0, x, y, lr, steps]
        mine_torch = ctx.call("torch_fit", args, "torch")
        mine_tf = ctx.call("tf_fit", args, "tensorflow")
        truth = ctx.truth(_truth_fit(w0, x, y, lr, steps))
        ctx.agree(mine_torch, mine_tf, truth, ["weights"], ("torch_fit", "tf_fit"))
    return "both loops reach the same weights as plain gradient descent"


NOT_A_GRAPH = "tf_loss_and_grad_graph is a plain Python function, not a tf.function: compile it with tf.function"


def tf_graph(ctx):
    # The evidence is the graphs themselves: the student's worker saves the graphs its calls ran (a SavedModel),
    # and a fresh verifier that runs no notebook code counts them and runs them on inputs the student never saw.
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    n, d = int(shape_rng.integers(16, 65)), int(shape_rng.integers(3, 9))
    verifier = ctx.fresh_worker(["tensorflow"])  # starts while the student's worker exports
    try:
        # Same shapes, new values: a graph built for the first call must serve them all.
        calls = [_problem(ctx.rng, n=n, d=d) for _ in range(5)]
        data = ctx.call("@export_loss_graph", [np.stack(a) for a in zip(*calls)], "tensorflow",
                        blame="tf_loss_and_grad_graph")
        if data.get("type") == "str":
            ctx.fail(NOT_A_GRAPH)
        if data.get("type") != "numpy.ndarray" or data.get("dtype") != "uint8":
            ctx.fail(f"saving the graphs of tf_loss_and_grad_graph gave a {data.get('type')}, not a SavedModel")
        loaded = ctx.fresh_call(verifier, "@load_loss_graph", [data["array"]], "numpy",
                                "tf.saved_model.load cannot read the graphs of tf_loss_and_grad_graph")
        traces = int(loaded["array"])
        ctx.details["traces"] = traces
        if traces > 1:
            ctx.fail(f"tf_loss_and_grad_graph traced {traces} times for 5 calls with same-shaped tensors; "
                     f"expected at most 1")
        for _ in range(5):
            args = _problem(ctx.rng, n=n, d=d)
            graph = ctx.fresh_call(verifier, "@run_loss_graph", args, "tensorflow",
                                   "the saved graph of tf_loss_and_grad_graph raised")
            if graph.get("type") == "str":
                ctx.fail(f"the graph of tf_loss_and_grad_graph was traced for inputs of shapes "
                         f"{graph['value'].removeprefix('shapes ')}; it cannot take w, x, y of shapes "
                         f"({d},), ({n}, {d}), ({n},)")
            eager = ctx.call("tf_loss_and_grad", args, "tensorflow")
            ctx.same(graph, eager, "tensorflow", NAMES, "tf_loss_and_grad_graph vs eager tf_loss_and_grad")
            ctx.same(graph, ctx.truth(*_truth_loss_and_grad(*args)), "tensorflow", NAMES,
                     "tf_loss_and_grad_graph vs float64 NumPy", want_framework="any")
    finally:
        verifier.close()
    return f"its saved graph equals eager on 5 new inputs, in a fresh process; traced {traces} time(s) for 5 calls"


def graph_speed(ctx):
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    n, d = 64, int(shape_rng.integers(4, 9))
    # The course's eager baseline (autograder/worker/m01_tensors.py) runs in the clean reference worker.
    ratio = ctx.speedup("@baseline_tf_loss_and_grad", "tf_loss_and_grad_graph",
                        lambda: _problem(ctx.rng, n=n, d=d), "tensorflow")
    return ctx.speed_verdict(ratio, "tf_loss_and_grad_graph")


PARTS = {f.__name__: f for f in (torch_grad, tf_grad, cross_grad, same_weights, tf_graph, graph_speed)}
