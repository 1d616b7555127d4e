"""Checks for module 04, "Graphs in TensorFlow: tf.function and AutoGraph".

The student writes a training step under tf.function that must not retrace when the batch size changes, a loop
that stays a loop in the graph, a graph function with a data-dependent `if` that equals its eager run, the same
training step in PyTorch, and gets a speed-up over eager. Ground truth is float64 NumPy computed here; the
graph itself is read through the worker's introspection ops (tracing count, op types), not the student's
attributes.
"""
from __future__ import annotations

import re

import numpy as np

from autograder._compare import Mismatch

# The course's public eager baseline for the timed part: one step of the same linear model, eagerly. It runs
# in the clean reference worker. Like the student's side (see HELPERS), it first resets the weights to the
# given start, so that every timed call computes the same thing whatever ran before it.
BASELINE = '''
import tensorflow as tf

_baseline_vars = {}

def baseline_tf_step(w0, b0, x, y):
    key = tuple(w0.shape)
    if key not in _baseline_vars:
        _baseline_vars[key] = (tf.Variable(w0), tf.Variable(b0))
    w, b = _baseline_vars[key]
    w.assign(w0)
    b.assign(b0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
    gw, gb = tape.gradient(loss, [w, b])
    w.assign_sub(0.05 * gw)
    b.assign_sub(0.05 * gb)
    return loss, tf.convert_to_tensor(w), tf.convert_to_tensor(b)
'''

# Grader-owned functions, run in both workers after the notebook's cells: they build the variables from the
# grader's numbers, call the student's code on them and return tensors. TF-only and torch-only in separate strings.
HELPERS = [
    '''
def _clash_tf_start(w0, b0, lr):
    """New variables from the grader's start, and a new step from the student's factory."""
    global _clash_tf_w, _clash_tf_b, _clash_tf_step
    _clash_tf_w, _clash_tf_b = tf.Variable(w0), tf.Variable(b0)
    _clash_tf_step = make_tf_train_step(_clash_tf_w, _clash_tf_b, lr)
    return None


def _clash_numpy_while_tracing(call, *args):
    """TensorFlow raises NotImplementedError when NumPy meets a symbolic tensor: not an unwritten function."""
    try:
        return call(*args)
    except NotImplementedError as e:
        lines = [line.strip() for line in str(e).splitlines() if "symbolic" in line]
        if lines:
            raise TypeError(lines[0].removeprefix("NotImplementedError: ")) from None
        raise


def _clash_tf_batch(x, y):
    return _clash_numpy_while_tracing(_clash_tf_step, x, y)


def _clash_clip(g, c):
    return _clash_numpy_while_tracing(tf_clip_by_norm, g, c)


def _clash_tf_weights():
    return tf.convert_to_tensor(_clash_tf_w), tf.convert_to_tensor(_clash_tf_b)


def _clash_tf_fit(w0, b0, x, y, sizes, lr):
    """The whole stream in one call: for the cross-framework part."""
    _clash_tf_start(w0, b0, lr)
    losses, start = [], 0
    for n in sizes.numpy().tolist():
        losses.append(_clash_tf_step(x[start:start + n], y[start:start + n]))
        start += n
    return tf.convert_to_tensor(_clash_tf_w), tf.convert_to_tensor(_clash_tf_b), tf.stack(losses)


def _clash_clip_eagerly(g, c):
    """The student's tf.function run eagerly: the same Python, op by op."""
    tf.config.run_functions_eagerly(True)
    try:
        return tf_clip_by_norm(g, c)
    finally:
        tf.config.run_functions_eagerly(False)


_clash_timed = {}

def _clash_timed_tf_step(w0, b0, x, y):
    """The timed side: reset the weights to the start (as the baseline does), then one step of the student's."""
    key = tuple(w0.shape)
    if key not in _clash_timed:
        w, b = tf.Variable(w0), tf.Variable(b0)
        _clash_timed[key] = (w, b, make_tf_train_step(w, b, 0.05))
    w, b, step = _clash_timed[key]
    w.assign(w0)
    b.assign(b0)
    loss = step(x, y)
    return loss, tf.convert_to_tensor(w), tf.convert_to_tensor(b)
''',
    '''
def _clash_torch_fit(w0, b0, x, y, sizes, lr):
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    step = make_torch_train_step(w, b, lr)
    losses, start = [], 0
    for n in sizes.tolist():
        loss = step(x[start:start + n], y[start:start + n])
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"the step returned a {type(loss).__name__}; return the loss as a 0-d torch.Tensor")
        losses.append(loss.detach().reshape(()))
        start += n
    return w.detach(), b.detach(), torch.stack(losses)
''',
]

STEP_NAMES = ["w", "b", "losses"]
NOT_A_TF_STEP = "make_tf_train_step returned a plain Python function, not a tf.function: wrap the step in tf.function"
NOT_A_TF_CLIP = "tf_clip_by_norm is a plain Python function, not a tf.function: keep the @tf.function decorator"


# -- problems and float64 truth -----------------------------------------------------------------------------
def _stream(rng: np.random.Generator, count: int = 6, d: int | None = None, k: int | None = None):
    """A regression problem and a stream of `count` distinct batch sizes (the first one is the warm-up)."""
    d = d or int(rng.integers(3, 9))
    k = k or int(rng.integers(1, 4))
    sizes = rng.choice(np.arange(2, 65), size=count, replace=False).astype(np.int64)
    n = int(sizes.sum())
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(n, k))).astype(np.float32)
    w0 = (0.5 * rng.normal(size=(d, k))).astype(np.float32)
    b0 = (0.1 * rng.normal(size=k)).astype(np.float32)
    lr = float(np.round(rng.uniform(0.02, 0.1), 3))
    return w0, b0, x, y, sizes, lr


def _truth_fit(w0, b0, x, y, sizes, lr):
    w, b = w0.astype(np.float64), b0.astype(np.float64)
    x, y = x.astype(np.float64), y.astype(np.float64)
    losses, start = [], 0
    for n in sizes:
        xb, yb = x[start:start + n], y[start:start + n]
        r = xb @ w + b - yb
        losses.append(np.mean(r * r))
        scale = 2.0 / r.size
        w, b = w - lr * scale * (xb.T @ r), b - lr * scale * r.sum(axis=0)
        start += n
    return w, b, np.array(losses)


def _power_problem(rng: np.random.Generator, d: int | None = None):
    d = d or int(rng.integers(4, 11))
    m = rng.normal(size=(d, d))
    a = (m @ m.T / d + np.eye(d)).astype(np.float32)  # symmetric positive definite
    v = rng.normal(size=d).astype(np.float32)
    return a, v


def _truth_power(a, v, n):
    a, v = a.astype(np.float64), v.astype(np.float64)
    for _ in range(n):
        v = a @ v
        v = v / np.linalg.norm(v)
    return v


def _truth_clip(g, c):
    g = g.astype(np.float64)
    norm = np.linalg.norm(g)
    return g * (float(c) / norm) if norm > float(c) else g


# -- calling through grader helpers --------------------------------------------------------------------------
def _call(ctx, helper: str, args: list, framework: str, student_fn: str):
    """Call a grader helper; a failure reads as the student's function's, not the helper's."""
    try:
        return ctx.call(helper, args, framework)
    except Mismatch as m:
        text = str(m).replace(helper, student_fn, 1)
        text = re.sub(r" \(at course helpers, line \d+\)", "", text)  # the helper's line is not the student's
        text = re.sub(r"raised (\w+): \1: ", r"raised \1: ", text)  # TensorFlow repeats the type in its last line
        if "singleton tf.Variables created on the first call" in text:
            text += (" Create variables, and optimizers (they own variables), once, outside the step: "
                     "in make_tf_train_step, before the tf.function")
        raise Mismatch(text, **m.details) from None


def _unchanged(ctx, got: dict, w0, b0) -> bool:
    items = got.get("items", [])
    if len(items) < 2 or "array" not in items[0] or "array" not in items[1]:
        return False
    a, b = np.asarray(items[0]["array"]), np.asarray(items[1]["array"])
    return a.shape == w0.shape and b.shape == b0.shape and np.array_equal(a, w0) and np.array_equal(b, b0)


def _traces(ctx, name: str, if_plain: str) -> int:
    try:
        return ctx.introspect("tracing_count", name)
    except Mismatch as m:
        if "plain Python function" in str(m):
            ctx.fail(if_plain)
        raise


# -- the parts -----------------------------------------------------------------------------------------------
def tf_step(ctx):
    worst = 0
    for stream in range(2):
        w0, b0, x, y, sizes, lr = _stream(ctx.rng)
        _call(ctx, "_clash_tf_start", [w0, b0, lr], "tensorflow", "make_tf_train_step")
        losses, start = [], 0
        for i, n in enumerate(sizes):
            losses.append(_call(ctx, "_clash_tf_batch", [x[start:start + n], y[start:start + n]], "tensorflow",
                                "the step from make_tf_train_step"))
            start += int(n)
            if i == 0:
                after_warmup = _traces(ctx, "_clash_tf_step", NOT_A_TF_STEP)
        traces = _traces(ctx, "_clash_tf_step", NOT_A_TF_STEP) - after_warmup
        worst = max(worst, traces)
        ctx.details["traces_after_warmup"] = worst
        if traces > 1:
            ctx.fail(f"the step traced {traces} more times for {len(sizes) - 1} new batch sizes after the first call "
                     f"(at most 1 expected): every new shape builds a new graph. Give tf.function an input_signature "
                     f"with None for the batch dimension, or reduce_retracing=True")
        weights = _call(ctx, "_clash_tf_weights", [], "tensorflow", "make_tf_train_step")
        if _unchanged(ctx, weights, w0, b0):
            ctx.fail("after the stream of batches w and b are still their starting values: the step must update the "
                     "tf.Variables it was given (assign_sub, or an optimizer's apply_gradients)")
        tw, tb, tl = _truth_fit(w0, b0, x, y, sizes, lr)
        ctx.same(weights, ctx.truth(tw, tb), "tensorflow", ["w", "b"], "weights after the stream vs float64 NumPy",
                 want_framework="any")
        for i, (loss, want) in enumerate(zip(losses, tl)):
            ctx.same(loss, ctx.truth(want), "tensorflow", ["loss"],
                     f"the loss returned by step {i + 1} vs float64 NumPy", want_framework="any")
    return (f"weights and losses equal float64 NumPy over 2 streams of 6 batch sizes; "
            f"at most {worst} trace(s) after the first call")


def tf_while(ctx):
    a, v = _power_problem(ctx.rng)
    n_graph = int(ctx.rng.integers(30, 61))
    graph = ctx.introspect("graph_ops", "tf_power_iteration", [a, v, n_graph])
    ops = graph["ops"]
    loops = {"While", "StatelessWhile"} & set(ops)
    ctx.details.update(graph_ops=len(ops), loop_ops=sorted(loops))
    if not loops:
        counts = {op: ops.count(op) for op in ("MatMul", "MatVec", "RealDiv", "Sqrt") if ops.count(op)}
        shown = ", ".join(f"{c} {op}" for op, c in counts.items())
        ctx.fail(f"for n={n_graph} (a Python int) the graph of tf_power_iteration has {len(ops)} ops ({shown}) and no "
                 f"While op: the Python loop was unrolled, one copy of the body per step. Loop over tf.range(n) "
                 f"(AutoGraph turns that into a while loop) or use tf.while_loop")
    if len(ops) > 60:
        ctx.fail(f"the graph of tf_power_iteration has a while loop but {len(ops)} ops at the top level for "
                 f"n={n_graph}: part of the work is still unrolled; keep the whole step inside the loop body")
    for n in (0, 1, int(ctx.rng.integers(2, 10)), int(ctx.rng.integers(20, 60))):
        a, v = _power_problem(ctx.rng)
        got = ctx.call("tf_power_iteration", [a, v, np.array(n, dtype=np.int32)], "tensorflow")
        ctx.same(got, ctx.truth(_truth_power(a, v, n)), "tensorflow", ["v"],
                 f"tf_power_iteration with n={n} (a tensor) vs float64 NumPy", want_framework="any")
    return (f"a {sorted(loops)[0]} op and {len(ops)} graph ops for n={n_graph}; "
            f"equals float64 NumPy for n = 0, 1 and two more tensor lengths")


def tf_clip(ctx):
    before = None
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    shape = tuple(int(s) for s in shape_rng.integers(2, 9, size=2))
    for i in range(6):
        g = ctx.rng.normal(size=shape).astype(np.float32)
        norm = float(np.linalg.norm(g.astype(np.float64)))
        factor = (0.3, 0.8, 1.5, 3.0)[i % 4] * float(ctx.rng.uniform(0.9, 1.1))  # both branches, twice or more
        c = np.array(norm * factor, dtype=np.float32)
        try:
            graph = _call(ctx, "_clash_clip", [g, c], "tensorflow", "tf_clip_by_norm")
        except Mismatch as m:
            text = str(m)
            if "numpy" in text.lower() or "symbolic" in text.lower():
                ctx.fail(f"{text.rstrip('.')}. While tf.function traces, tensors are symbolic and have no value yet: "
                         f".numpy() and NumPy functions cannot read them. Use TensorFlow ops (tf.norm), and an `if` "
                         f"on a tensor (AutoGraph makes it a tf.cond)")
            raise
        if before is None:
            before = _traces(ctx, "tf_clip_by_norm", NOT_A_TF_CLIP)
        eager = ctx.call("_clash_clip_eagerly", [g, c], "tensorflow")
        ctx.same(graph, eager, "tensorflow", ["clipped"], "tf_clip_by_norm as a graph vs the same function run eagerly")
        ctx.same(graph, ctx.truth(_truth_clip(g, c)), "tensorflow", ["clipped"], "tf_clip_by_norm vs float64 NumPy",
                 want_framework="any")
    traces = _traces(ctx, "tf_clip_by_norm", NOT_A_TF_CLIP) - before
    ctx.details["traces_after_first"] = traces
    if traces > 0:
        ctx.fail(f"tf_clip_by_norm traced {traces} more times for 5 more calls with same-shaped tensors: something "
                 f"turns a tensor into a Python value while tracing")
    return "graph equals eager and float64 NumPy on 6 inputs, both branches taken, one trace"


def torch_step(ctx):
    for _ in range(2):
        w0, b0, x, y, sizes, lr = _stream(ctx.rng)
        got = _call(ctx, "_clash_torch_fit", [w0, b0, x, y, sizes, lr], "torch", "make_torch_train_step")
        if _unchanged(ctx, got, w0, b0):
            ctx.fail("after the stream of batches w and b are still their starting values: update the tensors you were "
                     "given in place (under torch.no_grad(), w.sub_(lr * w.grad)), or with torch.optim.SGD([w, b], lr)")
        ctx.same(got, ctx.truth(*_truth_fit(w0, b0, x, y, sizes, lr)), "torch", STEP_NAMES,
                 "make_torch_train_step over a stream of batches vs float64 NumPy", want_framework="any")
    return "weights and losses equal float64 NumPy over 2 streams of 6 batch sizes"


def cross_step(ctx):
    for d, k in ((int(ctx.rng.integers(10, 17)), 3), (1, 1)):
        w0, b0, x, y, sizes, lr = _stream(ctx.rng, count=8, d=d, k=k)
        args = [w0, b0, x, y, sizes, lr]
        mine_torch = _call(ctx, "_clash_torch_fit", args, "torch", "make_torch_train_step")
        mine_tf = _call(ctx, "_clash_tf_fit", args, "tensorflow", "make_tf_train_step")
        ctx.same(mine_torch, mine_tf, "torch", STEP_NAMES, "the PyTorch step vs the TensorFlow step",
                 want_framework="tensorflow")
        ctx.same(mine_tf, ctx.truth(*_truth_fit(*args)), "tensorflow", STEP_NAMES,
                 "the TensorFlow step vs float64 NumPy", want_framework="any")
    return "the PyTorch and TensorFlow steps reach the same weights and losses, and equal float64 NumPy"


def speed(ctx):
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    d, k, n = int(shape_rng.integers(6, 11)), 2, 64

    def make_args():
        w0 = (0.5 * ctx.rng.normal(size=(d, k))).astype(np.float32)
        b0 = (0.1 * ctx.rng.normal(size=k)).astype(np.float32)
        x = ctx.rng.normal(size=(n, d)).astype(np.float32)
        y = ctx.rng.normal(size=(n, k)).astype(np.float32)
        return [w0, b0, x, y]

    _call(ctx, "_clash_timed_tf_step", make_args(), "tensorflow", "make_tf_train_step")  # fails fast, builds the step
    # More and longer rounds than the default: the ratio is overhead against overhead, so noisy on a busy machine.
    ratio = ctx.speedup("baseline_tf_step", "_clash_timed_tf_step", make_args, "tensorflow", rounds=31,
                        target_round_s=0.05)
    return ctx.speed_verdict(ratio, "your step", "the eager step")


PARTS = {f.__name__: f for f in (tf_step, tf_while, tf_clip, torch_step, cross_step, speed)}
