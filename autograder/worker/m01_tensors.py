"""Module 01's grader code in the workers: the course's eager baseline for the timed part, and the student's
tf.function exported as a SavedModel (module 04 exports its graphs with the same helpers).

Whether a function is a graph, and how often it traced, is never asked of the student's process, which could
answer anything. Its graphs are saved instead, in the student's worker; the parent hands the files to a fresh
verifier that runs no notebook code, which counts the graphs and runs them on inputs the student's process never
saw.
"""
from __future__ import annotations

import io
import itertools
import tarfile

import numpy as np

_SAVES = itertools.count(1)
_LOADED: dict = {}   # in a verifier: the SavedModel it loaded


def baseline_tf_loss_and_grad(student, w, x, y):
    """The mean squared error of x @ w against y and its gradient, in eager TensorFlow: what a tf.function must beat.
    Runs in the clean reference worker, so the student's process cannot slow it down."""
    import tensorflow as tf
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
    return loss, tape.gradient(loss, w)


# -- helpers for exporting and verifying graphs (modules 01 and 04) ------------------------------------------
def is_tf_function(fn) -> bool:
    import tensorflow as tf
    return isinstance(fn, tf.types.experimental.PolymorphicFunction)


def graphs_used(fn, calls) -> list:
    """Call the tf.function `fn` on each argument list of `calls`; return the distinct graphs (concrete functions)
    the calls ran, in order of first use. Each is one trace: a new one for every retrace."""
    graphs = []
    for args in calls:
        fn(*args)
        graph = fn.get_concrete_function(*args)  # the cached graph the call just ran: no new trace
        if not any(graph is g for g in graphs):
            graphs.append(graph)
    return graphs


def saved_bytes(name: str, graphs: list, state: list = ()) -> np.ndarray:
    """A tf.Module holding `graphs` (concrete functions) and `state` (the variables they update), saved with
    tf.saved_model.save in the scratch folder, as the bytes of a tar archive: what the parent hands to a verifier."""
    import tensorflow as tf
    module = tf.Module()
    module.graphs, module.state = list(graphs), list(state)
    # A graph is saved only with every variable it captures tracked (an optimizer's iteration count, say).
    module.captured = [v for g in graphs for v in g.variables]
    folder = f"{name}_{next(_SAVES)}"
    tf.saved_model.save(module, folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname="savedmodel")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8).copy()


def load_saved(data: np.ndarray):
    """In a fresh verifier: the SavedModel in these tar bytes, loaded."""
    import tensorflow as tf
    folder = f"from_student_{next(_SAVES)}"
    with tarfile.open(fileobj=io.BytesIO(np.asarray(data, dtype=np.uint8).tobytes())) as tar:
        tar.extractall(folder, filter="data")
    return tf.saved_model.load(f"{folder}/savedmodel")


def accepts(graph, args) -> bool:
    """Whether a graph's input signature admits these tensors (a restored graph does not check it itself)."""
    import tensorflow as tf
    specs, kwargs = graph.structured_input_signature
    return (not kwargs and len(specs) == len(args)
            and all(isinstance(s, tf.TensorSpec) and s.is_compatible_with(a) for s, a in zip(specs, args)))


def shapes(graph) -> str:
    """The input shapes a graph was traced for, e.g. "(None, 3), (None, 2)"."""
    specs, _ = graph.structured_input_signature
    return ", ".join(str(tuple(s.shape.as_list())) if hasattr(s, "shape") else repr(s) for s in specs)


# -- tf_graph ----------------------------------------------------------------------------------------------
def export_loss_graph(student, ws, xs, ys):
    """In the student's worker: call tf_loss_and_grad_graph on each problem (ws[i], xs[i], ys[i]), all of one
    shape, and save the graphs those calls ran. A plain Python function has no graph: "plain"."""
    fn = student.tf_loss_and_grad_graph
    if not is_tf_function(fn):
        return "plain"
    return saved_bytes("m01_graph", graphs_used(fn, [(ws[i], xs[i], ys[i]) for i in range(len(ws))]))


def load_loss_graph(student, data):
    """In the verifier: how many graphs the student's calls ran (one per trace)."""
    _LOADED["module"] = load_saved(data)
    return len(_LOADED["module"].graphs)


def run_loss_graph(student, w, x, y):
    """In the verifier: the exported graph on the grader's fresh inputs; "shapes ..." if it does not accept them."""
    graph = _LOADED["module"].graphs[0]
    if not accepts(graph, [w, x, y]):
        return f"shapes {shapes(graph)}"
    return graph(w, x, y)
