"""Module 04's grader code in the workers.

In the student's worker: build tf.Variables from the grader's numbers, call the student's factories and functions
on them, and save the graphs those calls ran (autograder.worker.m01_tensors.saved_bytes). In a fresh verifier
(no notebook code): load those graphs, count them, read their ops and run them on inputs the student's process
never saw. In the reference worker: the course's eager baseline for the timed part.
"""
from __future__ import annotations

from autograder.worker.m01_tensors import (
    accepts,
    graphs_used,
    is_tf_function,
    load_saved,
    saved_bytes,
    shapes,
)

_STREAM: dict = {}        # the student's step of the current stream, and its variables
_TIMED: dict = {}         # per weight shape: the variables and the student's step for the timed part
_BASELINE_VARS: dict = {}  # per weight shape: the baseline's variables
_LOADED: dict = {}        # in a verifier: the SavedModel it loaded last


def _numpy_while_tracing(call, *args):
    """TensorFlow raises NotImplementedError when NumPy meets a symbolic tensor: not an unwritten function."""
    try:
        return call(*args)
    except NotImplementedError as e:
        lines = [line.strip() for line in str(e).splitlines() if "symbolic" in line]
        if lines:
            raise TypeError(lines[0].removeprefix("NotImplementedError: ")) from None
        raise


def _batches(x, y, sizes) -> list:
    """The stream: consecutive slices of x and y, sizes[i] rows each."""
    batches, start = [], 0
    for n in sizes.numpy().tolist():
        batches.append((x[start:start + n], y[start:start + n]))
        start += n
    return batches


# -- Part 1: the training step, exported after a stream of batch sizes --------------------------------------
def start_tf_stream(student, w0, b0, lr):
    """New variables from the grader's start and a new step from the student's factory; "plain" if the step is not
    a tf.function."""
    import tensorflow as tf
    w, b = tf.Variable(w0), tf.Variable(b0)
    step = student.make_tf_train_step(w, b, lr)
    _STREAM.update(w=w, b=b, step=step)
    return None if is_tf_function(step) else "plain"


def export_tf_stream(student, x, y, sizes):
    """Run the stream of batches (sizes[i] rows each) through the step; save the graphs it ran and its variables."""
    graphs = _numpy_while_tracing(graphs_used, _STREAM["step"], _batches(x, y, sizes))
    return saved_bytes("m04_step", graphs, [_STREAM["w"], _STREAM["b"]])


def load_tf_step(student, data):
    """In the verifier: the input shapes of each graph the step ran (one per trace), in order of first use."""
    _LOADED["module"] = load_saved(data)
    return [shapes(g) for g in _LOADED["module"].graphs]


def run_tf_stream(student, w0, b0, x, y, sizes):
    """In the verifier: ONE saved graph runs the whole stream from the start (w0, b0); the weights and the losses.
    "none" when no saved graph accepts every batch of it."""
    module, batches = _LOADED["module"], _batches(x, y, sizes)
    graph = next((g for g in module.graphs if all(accepts(g, batch) for batch in batches)), None)
    if graph is None:
        return "none"
    import tensorflow as tf
    w, b = module.state
    w.assign(w0)
    b.assign(b0)
    losses = [graph(*batch) for batch in batches]
    return tf.convert_to_tensor(w), tf.convert_to_tensor(b), tf.stack(losses)


def tf_fit(student, w0, b0, x, y, sizes, lr):
    """The student's step over the whole stream in its own worker: for the cross-framework part."""
    import tensorflow as tf
    w, b = tf.Variable(w0), tf.Variable(b0)
    step = student.make_tf_train_step(w, b, lr)
    losses = [_numpy_while_tracing(step, *batch) for batch in _batches(x, y, sizes)]
    return tf.convert_to_tensor(w), tf.convert_to_tensor(b), tf.stack(losses)


# -- Part 2: the loop, exported for a Python int n and for a tensor n ----------------------------------------
def export_power(student, a, v, n_graph):
    """Save tf_power_iteration's graph for the Python int n_graph, and for any 0-d int32 tensor n."""
    import tensorflow as tf
    fn = student.tf_power_iteration
    if not is_tf_function(fn):
        return "plain"
    by_int = fn.get_concrete_function(a, v, n_graph)
    by_tensor = fn.get_concrete_function(a, v, tf.TensorSpec([], tf.int32))
    return saved_bytes("m04_power", [by_int, by_tensor])


def load_power(student, data):
    """In the verifier: the graph for the Python int n: what it was traced for (e.g. "(5, 5), (5,), 40"), the op
    types at its top level (one string), and the number of nodes in it and in every function it calls (a while
    loop's body and condition included)."""
    _LOADED["module"] = load_saved(data)
    graph = _LOADED["module"].graphs[0]
    graph_def = graph.graph.as_graph_def()
    total = len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)
    return shapes(graph), " ".join(sorted(node.op for node in graph_def.node)), total


def run_power_int(student, a, v):
    """In the verifier: the graph traced for the Python int n, on new inputs."""
    return _LOADED["module"].graphs[0](a, v)


def run_power(student, a, v, n):
    """In the verifier: the graph traced for a tensor n."""
    return _LOADED["module"].graphs[1](a, v, n)


# -- Part 3: a data-dependent `if` ---------------------------------------------------------------------------
def export_clip(student, gs, cs):
    """Call tf_clip_by_norm on each (gs[i], cs[i]), all of one shape; save the graphs the calls ran."""
    fn = student.tf_clip_by_norm
    if not is_tf_function(fn):
        return "plain"
    graphs = _numpy_while_tracing(graphs_used, fn, [(gs[i], cs[i]) for i in range(len(gs))])
    return saved_bytes("m04_clip", graphs)


def load_clip(student, data):
    """In the verifier: how many graphs the calls ran (one per trace)."""
    _LOADED["module"] = load_saved(data)
    return len(_LOADED["module"].graphs)


def run_clip(student, g, c):
    """In the verifier: the saved graph on new inputs; "shapes ..." if it does not accept them."""
    graph = _LOADED["module"].graphs[0]
    if not accepts(graph, [g, c]):
        return f"shapes {shapes(graph)}"
    return graph(g, c)


def clip_eagerly(student, g, c):
    """The student's tf.function run eagerly: the same Python, op by op."""
    import tensorflow as tf
    tf.config.run_functions_eagerly(True)
    try:
        return student.tf_clip_by_norm(g, c)
    finally:
        tf.config.run_functions_eagerly(False)


# -- Part 6: the timed step ----------------------------------------------------------------------------------
def timed_tf_step(student, w0, b0, x, y):
    """The timed side: reset the weights to the start (as the baseline does), then one step of the student's."""
    import tensorflow as tf
    key = tuple(w0.shape)
    if key not in _TIMED:
        w, b = tf.Variable(w0), tf.Variable(b0)
        _TIMED[key] = (w, b, student.make_tf_train_step(w, b, 0.05))
    w, b, step = _TIMED[key]
    w.assign(w0)
    b.assign(b0)
    loss = step(x, y)
    return loss, tf.convert_to_tensor(w), tf.convert_to_tensor(b)


def baseline_tf_step(student, w0, b0, x, y):
    """The course's eager baseline, in the clean reference worker: one step of the same linear model, after the
    same reset of the weights, so that every timed call computes the same thing whatever ran before it."""
    import tensorflow as tf
    key = tuple(w0.shape)
    if key not in _BASELINE_VARS:
        _BASELINE_VARS[key] = (tf.Variable(w0), tf.Variable(b0))
    w, b = _BASELINE_VARS[key]
    w.assign(w0)
    b.assign(b0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
    gw, gb = tape.gradient(loss, [w, b])
    w.assign_sub(0.05 * gw)
    b.assign_sub(0.05 * gb)
    return loss, tf.convert_to_tensor(w), tf.convert_to_tensor(b)


# -- Part 4 (and 5): the PyTorch step ------------------------------------------------------------------------
def torch_fit(student, w0, b0, x, y, sizes, lr):
    """The student's PyTorch step over the stream, from leaf tensors made from the grader's start."""
    import torch
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    step = student.make_torch_train_step(w, b, lr)
    losses, start = [], 0
    for n in sizes.tolist():
        loss = step(x[start:start + n], y[start:start + n])
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"the step returned a {type(loss).__name__}; return the loss as a 0-d torch.Tensor")
        losses.append(loss.detach().reshape(()))
        start += n
    return w.detach(), b.detach(), torch.stack(losses)
