"""Checks for module 04, "Graphs in TensorFlow: tf.function and AutoGraph".

The student writes a training step under tf.function that must not retrace when the batch size changes, a loop
that stays a loop in the graph, a graph function with a data-dependent `if` that equals its eager run, the same
training step in PyTorch, and gets a speed-up over eager. Ground truth is float64 NumPy computed here.

The graphs are judged as artifacts, never by what the student's process says about them: grader code in the
student's worker (autograder/worker/m04_tf_function.py) calls the tf.functions and saves the graphs the calls ran
as a SavedModel; its bytes come here and go to a fresh verifier that runs no notebook code, which counts the
graphs (one per trace), reads their ops and runs them on inputs the student's process never saw.
"""
from __future__ import annotations

import re

import numpy as np

from autograder.spec import Mismatch

STEP_NAMES = ["w", "b", "losses"]
NOT_A_TF_STEP = "make_tf_train_step returned a plain Python function, not a tf.function: wrap the step in tf.function"
NOT_A_TF_CLIP = "tf_clip_by_norm is a plain Python function, not a tf.function: keep the @tf.function decorator"
NOT_A_TF_POWER = "tf_power_iteration is a plain Python function, not a tf.function: keep the @tf.function decorator"


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


# -- exporting the student's graphs and verifying them elsewhere ----------------------------------------------
def _taught(m: Mismatch) -> Mismatch:
    """A failure of the student's step, with TensorFlow's repeated type dropped and the advice it calls for."""
    text = re.sub(r"raised (\w+): \1: ", r"raised \1: ", str(m))  # TensorFlow repeats the type in its last line
    if "singleton tf.Variables created on the first call" in text:
        text += (" Create variables, and optimizers (they own variables), once, outside the step: "
                 "in make_tf_train_step, before the tf.function")
    return Mismatch(text, **m.details)


def _unchanged(got: dict, w0, b0) -> bool:
    items = got.get("items", [])
    if len(items) < 2 or "array" not in items[0] or "array" not in items[1]:
        return False
    a, b = np.asarray(items[0]["array"]), np.asarray(items[1]["array"])
    return a.shape == w0.shape and b.shape == b0.shape and np.array_equal(a, w0) and np.array_equal(b, b0)


def _exported(ctx, output: dict, if_plain: str) -> np.ndarray:
    """The bytes of the SavedModel the student's worker wrote, or the teaching line for a plain function."""
    if output.get("type") == "str":
        ctx.fail(if_plain)
    if output.get("type") != "numpy.ndarray" or output.get("dtype") != "uint8":
        ctx.fail(f"saving the graphs gave a {output.get('type')}, not the bytes of a SavedModel")
    return output["array"]


def _verifier(ctx):
    """A fresh confined worker with TensorFlow and no notebook code; it starts while the student's worker exports."""
    return ctx.fresh_worker(["tensorflow"])


def _export_stream(ctx, w0, b0, x, y, sizes, lr) -> np.ndarray:
    """The student's step, made by their factory on the grader's variables, run over the stream in their worker:
    the SavedModel of the graphs it ran."""
    try:
        started = ctx.call("@start_tf_stream", [w0, b0, lr], "tensorflow", blame="make_tf_train_step")
        if started.get("type") == "str":
            ctx.fail(NOT_A_TF_STEP)
        return _exported(ctx, ctx.call("@export_tf_stream", [x, y, sizes], "tensorflow",
                                       blame="the step from make_tf_train_step"), NOT_A_TF_STEP)
    except Mismatch as m:
        raise _taught(m) from None


# -- the parts -----------------------------------------------------------------------------------------------
def tf_step(ctx):
    worst = 0
    verifier = _verifier(ctx)
    try:
        for _ in range(2):
            w0, b0, x, y, sizes, lr = _stream(ctx.rng)
            data = _export_stream(ctx, w0, b0, x, y, sizes, lr)
            loaded = ctx.fresh_call(verifier, "@load_tf_step", [data], "numpy",
                                    "tf.saved_model.load cannot read the graphs of your step")
            graphs = [ctx.text(item, "a graph's shapes") for item in loaded.get("items", [])]
            traces = len(graphs) - 1  # the first call traces once
            worst = max(worst, traces)
            ctx.details["traces_after_warmup"] = worst
            if traces > 1:
                ctx.fail(f"the step traced {traces} more times for {len(sizes) - 1} new batch sizes after the first "
                         f"call (at most 1 expected): every new shape builds a new graph. Give tf.function an "
                         f"input_signature with None for the batch dimension, or reduce_retracing=True")
            # ONE of the saved graphs must run a new stream (new start, batches and sizes) the student never saw.
            w1, b1, x1, y1, sizes1, _ = _stream(ctx.rng, d=w0.shape[0], k=w0.shape[1])
            got = ctx.fresh_call(verifier, "@run_tf_stream", [w1, b1, x1, y1, sizes1], "tensorflow",
                                 "the saved graph of your step raised")
            if got.get("type") == "str":
                ctx.fail(f"no graph your step traced accepts every batch size (it traced for x, y of shapes "
                         f"{'; '.join(graphs)}): one graph must serve a stream of any sizes. Give tf.function an "
                         f"input_signature with None for the batch dimension, or reduce_retracing=True")
            if _unchanged(got, w1, b1):
                ctx.fail("after the stream of batches w and b are still their starting values: the step must update "
                         "the tf.Variables it was given (assign_sub, or an optimizer's apply_gradients)")
            ctx.same(got, ctx.truth(*_truth_fit(w1, b1, x1, y1, sizes1, lr)), "tensorflow", STEP_NAMES,
                     "your step's saved graph over a new stream of batches vs float64 NumPy", want_framework="any")
    finally:
        verifier.close()
    return (f"one saved graph of your step runs new streams of 6 batch sizes in a fresh process and equals float64 "
            f"NumPy; at most {worst} trace(s) after the first call")


def tf_while(ctx):
    a, v = _power_problem(ctx.rng)
    d, n_graph = len(v), int(ctx.rng.integers(30, 61))
    verifier = _verifier(ctx)
    try:
        data = _exported(ctx, ctx.call("@export_power", [a, v, n_graph], "tensorflow", blame="tf_power_iteration"),
                         NOT_A_TF_POWER)
        graph = ctx.fresh_call(verifier, "@load_power", [data], "numpy",
                               "tf.saved_model.load cannot read the graphs of tf_power_iteration")
        traced_for = ctx.text(graph["items"][0], "the graph's inputs")
        if traced_for != f"({d}, {d}), ({d},), {n_graph}":  # the graph for this Python int, not another one
            ctx.fail(f"the saved graph of tf_power_iteration for A, v and n={n_graph} was traced for {traced_for}")
        ops, total = ctx.text(graph["items"][1], "the graph's ops").split(), int(graph["items"][2]["array"])
        loops = {"While", "StatelessWhile"} & set(ops)
        ctx.details.update(graph_ops=len(ops), all_nodes=total, loop_ops=sorted(loops))
        if not loops:
            counts = {op: ops.count(op) for op in ("MatMul", "MatVec", "RealDiv", "Sqrt") if ops.count(op)}
            shown = ", ".join(f"{c} {op}" for op, c in counts.items())
            ctx.fail(f"for n={n_graph} (a Python int) the graph of tf_power_iteration has {len(ops)} ops ({shown}) "
                     f"and no While op: the Python loop was unrolled, one copy of the body per step. Loop over "
                     f"tf.range(n) (AutoGraph turns that into a while loop) or use tf.while_loop")
        if len(ops) > 60:
            ctx.fail(f"the graph of tf_power_iteration has a while loop but {len(ops)} ops at the top level for "
                     f"n={n_graph}: part of the work is still unrolled; keep the whole step inside the loop body")
        a, v = _power_problem(ctx.rng, d)
        got = ctx.fresh_call(verifier, "@run_power_int", [a, v], "tensorflow", "the saved graph raised")
        ctx.same(got, ctx.truth(_truth_power(a, v, n_graph)), "tensorflow", ["v"],
                 f"the saved graph of tf_power_iteration for n={n_graph} on new inputs vs float64 NumPy",
                 want_framework="any")
        for n in (0, 1, int(ctx.rng.integers(2, 10)), int(ctx.rng.integers(20, 60))):
            a, v = _power_problem(ctx.rng, d)
            got = ctx.fresh_call(verifier, "@run_power", [a, v, np.array(n, dtype=np.int32)], "tensorflow",
                                 "the saved graph raised")
            ctx.same(got, ctx.truth(_truth_power(a, v, n)), "tensorflow", ["v"],
                     f"the saved graph of tf_power_iteration with n={n} (a tensor) vs float64 NumPy",
                     want_framework="any")
    finally:
        verifier.close()
    return (f"a {min(loops)} op and {len(ops)} graph ops for n={n_graph}; its saved graph equals float64 NumPy "
            f"in a fresh process for n = 0, 1 and two more tensor lengths")


def _clip_inputs(ctx, shape, i: int):
    g = ctx.rng.normal(size=shape).astype(np.float32)
    norm = float(np.linalg.norm(g.astype(np.float64)))
    factor = (0.3, 0.8, 1.5, 3.0)[i % 4] * float(ctx.rng.uniform(0.9, 1.1))  # both branches, twice or more
    return g, np.array(norm * factor, dtype=np.float32)


def tf_clip(ctx):
    shape_rng = np.random.default_rng(ctx.rng.integers(1 << 32))
    shape = tuple(int(s) for s in shape_rng.integers(2, 9, size=2))
    verifier = _verifier(ctx)
    try:
        gs, cs = zip(*(_clip_inputs(ctx, shape, i) for i in range(6)))
        try:
            data = _exported(ctx, ctx.call("@export_clip", [np.stack(gs), np.stack(cs)], "tensorflow",
                                           blame="tf_clip_by_norm"), NOT_A_TF_CLIP)
        except Mismatch as m:
            text = str(_taught(m))
            if "numpy" in text.lower() or "symbolic" in text.lower():
                ctx.fail(f"{text.rstrip('.')}. While tf.function traces, tensors are symbolic and have no value yet: "
                         f".numpy() and NumPy functions cannot read them. Use TensorFlow ops (tf.norm), and an `if` "
                         f"on a tensor (AutoGraph makes it a tf.cond)")
            raise
        loaded = ctx.fresh_call(verifier, "@load_clip", [data], "numpy",
                                "tf.saved_model.load cannot read the graphs of tf_clip_by_norm")
        traces = int(loaded["array"]) - 1
        ctx.details["traces_after_first"] = traces
        if traces > 0:
            ctx.fail(f"tf_clip_by_norm traced {traces} more times for 5 more calls with same-shaped tensors: "
                     f"something turns a tensor into a Python value while tracing")
        for i in range(6):  # new inputs, both branches: the saved graph in the verifier, eagerly in the student's
            g, c = _clip_inputs(ctx, shape, i)
            graph = ctx.fresh_call(verifier, "@run_clip", [g, c], "tensorflow", "the saved graph raised")
            if graph.get("type") == "str":
                ctx.fail(f"the graph of tf_clip_by_norm was traced for inputs of shapes "
                         f"{graph['value'].removeprefix('shapes ')}; it cannot take g of shape {shape} and a 0-d c")
            eager = ctx.call("@clip_eagerly", [g, c], "tensorflow", blame="tf_clip_by_norm")
            ctx.same(graph, eager, "tensorflow", ["clipped"],
                     "tf_clip_by_norm as a graph vs the same function run eagerly")
            ctx.same(graph, ctx.truth(_truth_clip(g, c)), "tensorflow", ["clipped"],
                     "tf_clip_by_norm vs float64 NumPy", want_framework="any")
    finally:
        verifier.close()
    return "its saved graph equals eager and float64 NumPy on 6 new inputs, both branches taken, one trace"


def torch_step(ctx):
    for _ in range(2):
        w0, b0, x, y, sizes, lr = _stream(ctx.rng)
        got = ctx.call("@torch_fit", [w0, b0, x, y, sizes, lr], "torch", blame="make_torch_train_step")
        if _unchanged(got, w0, b0):
            ctx.fail("after the stream of batches w and b are still their starting values: update the tensors you were "
                     "given in place (under torch.no_grad(), w.sub_(lr * w.grad)), or with torch.optim.SGD([w, b], lr)")
        ctx.same(got, ctx.truth(*_truth_fit(w0, b0, x, y, sizes, lr)), "torch", STEP_NAMES,
                 "make_torch_train_step over a stream of batches vs float64 NumPy", want_framework="any")
    return "weights and losses equal float64 NumPy over 2 streams of 6 batch sizes"


def cross_step(ctx):
    for d, k in ((int(ctx.rng.integers(10, 17)), 3), (1, 1)):
        w0, b0, x, y, sizes, lr = _stream(ctx.rng, count=8, d=d, k=k)
        args = [w0, b0, x, y, sizes, lr]
        mine_torch = ctx.call("@torch_fit", args, "torch", blame="make_torch_train_step")
        try:
            mine_tf = ctx.call("@tf_fit", args, "tensorflow", blame="make_tf_train_step")
        except Mismatch as m:
            raise _taught(m) from None
        ctx.agree(mine_torch, mine_tf, ctx.truth(*_truth_fit(*args)), STEP_NAMES,
                  ("make_torch_train_step", "make_tf_train_step"))
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

    try:  # fails fast, and builds the step
        ctx.call("@timed_tf_step", make_args(), "tensorflow", blame="make_tf_train_step")
    except Mismatch as m:
        raise _taught(m) from None
    # More and longer rounds than the default: the ratio is overhead against overhead, so noisy on a busy machine.
    ratio = ctx.speedup("@baseline_tf_step", "@timed_tf_step", make_args, "tensorflow", rounds=31,
                        target_round_s=0.05)
    return ctx.speed_verdict(ratio, "your step", "the eager step")


PARTS = {f.__name__: f for f in (tf_step, tf_while, tf_clip, torch_step, cross_step, speed)}
