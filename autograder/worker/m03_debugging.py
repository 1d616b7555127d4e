"""Module 03's grader code in the workers: the models whose first NaN the student's anomaly-tool functions must
name, the grader's program run under pdb with a recorder of where pdb stood when each command ran, and the export
and reload of the fixed TensorFlow function as a SavedModel."""
from __future__ import annotations

import numpy as np


# -- Part C: the grader's models. One structure for every model: four ops that can make a NaN, and parameters
# (chosen in the parent for each input) that push exactly one of them out of its domain. Reading the source
# cannot tell which op it is; running the model under the anomaly tools can.
def _torch_nan_model(W, p_sqrt, p_acos, p_div, p_pow):
    import torch
    W = torch.as_tensor(W)

    def model(x):
        h = x @ W.to(x.device)
        a = torch.sqrt(h - p_sqrt)
        b = torch.acos(torch.tanh(h) * p_acos)
        z = torch.relu(h - p_div)
        g = z / z.sum(dim=1, keepdim=True)
        e = torch.pow(h - p_pow, 1.5)
        return 0.5 * a + b + 2.0 * g + 0.1 * e
    return model


def _tf_nan_model(W, p_sqrt, p_acos, p_div, p_pow):
    import tensorflow as tf
    W = tf.constant(W)

    def model(x):
        h = x @ W
        a = tf.sqrt(h - p_sqrt)
        b = tf.acos(tf.tanh(h) * p_acos)
        z = tf.nn.relu(h - p_div)
        g = z / tf.reduce_sum(z, axis=1, keepdims=True)
        e = tf.pow(h - p_pow, 1.5)
        return 0.5 * a + b + 2.0 * g + 0.1 * e
    return model


def torch_nan(student, x, W, p_sqrt, p_acos, p_div, p_pow):
    """The student's torch_first_nan_op on the grader's PyTorch model with these parameters."""
    return student.torch_first_nan_op(_torch_nan_model(W, p_sqrt, p_acos, p_div, p_pow), x)


def tf_nan(student, x, W, p_sqrt, p_acos, p_div, p_pow):
    """The student's tf_first_nan_op on the grader's TensorFlow model with these parameters."""
    return student.tf_first_nan_op(_tf_nan_model(W, p_sqrt, p_acos, p_div, p_pow), x)


# -- Part B: a program under pdb ------------------------------------------------------------------------------
def pdb_session(student, source: str, commands: str, filename: str = "program.py", entry: str = "main") -> list:
    """Save `source` as `filename` in the current folder, run it, then call its `entry()` under pdb reading
    `commands` as if typed. Runs in a fresh worker with no notebook (`student` is unused), on commands the parent
    has checked against its whitelist, so nothing here runs the student's code.

    Returns the session as events, in order, all strings:
      ["stop", file, function, line, ""]            pdb stopped (what its location line says),
      ["command", file, function, line, text, output] a command, where pdb stood when it ran, and what it printed,
    and last ["transcript", text]: everything the session printed, what a student would see.
    The parent judges where a value was printed from the events, which printed text cannot make."""
    import bdb
    import builtins
    import contextlib
    import io
    import os
    import pdb
    import sys

    events: list[list[str]] = []
    out = io.StringIO()

    def where(frame) -> list[str]:
        return [os.path.basename(frame.f_code.co_filename), frame.f_code.co_name, str(frame.f_lineno)]

    class Recorder(pdb.Pdb):
        def interaction(self, frame, traceback):
            if frame is not None:
                events.append(["stop", *where(frame), ""])
            return super().interaction(frame, traceback)

        def onecmd(self, line):
            at, start = where(self.curframe), out.tell()
            try:
                return super().onecmd(line)
            finally:
                events.append(["command", *at, line, out.getvalue()[start:start + 5000]])

    bdb.Breakpoint.clearBreakpoints()
    path = os.path.abspath(os.path.basename(filename))
    with open(path, "w") as f:
        f.write(source)
    ns = {"__name__": "__clash_program__", "__file__": path, "__builtins__": builtins}
    with contextlib.redirect_stdout(out):
        exec(compile(source, path, "exec"), ns)
        debugger = Recorder(stdin=io.StringIO(commands), stdout=out, nosigint=True, readrc=False)
        sys.path.insert(0, os.path.dirname(path))  # so that `break program.py:LINE` finds the file, as in a shell
        try:
            debugger.runcall(ns[entry])
        except Exception as exc:  # the program's own error is part of what the student sees
            out.write(f"\n[the program raised {type(exc).__name__}: {exc}]\n")
        finally:
            sys.settrace(None)
            sys.path.remove(os.path.dirname(path))
            bdb.Breakpoint.clearBreakpoints()  # class-wide: the next run starts with none, numbered from 1
    return [*events, ["transcript", out.getvalue()[:20000]]]


# -- Part A (TensorFlow): the fixed function leaves the student's process as one graph -------------------------
_LOADED: dict = {}  # in the verifier: the reloaded SavedModel and its serving function
SAVED_DIR = "m03_tf_standardize"


def export_tf_standardize(student):
    """In the student's worker: trace tf_standardize once for any float32 (n, d) and save that graph as a
    SavedModel; return the folder as a tar archive's bytes, or "not a tf.function" for a plain Python function,
    which has no graph. The parent hands the bytes to a fresh verifier: the graph, not this process, answers."""
    import io
    import tarfile

    import tensorflow as tf
    fn = student.tf_standardize
    if not callable(getattr(fn, "get_concrete_function", None)):
        return "not a tf.function"
    graph = fn.get_concrete_function(tf.TensorSpec([None, None], tf.float32))
    tf.saved_model.save(tf.Module(), SAVED_DIR, signatures=graph)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(SAVED_DIR, arcname=SAVED_DIR)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8).copy()


def load_tf_standardize(student, data):
    """In a fresh verifier with no notebook: unpack and load the SavedModel export_tf_standardize made."""
    import io
    import tarfile

    import tensorflow as tf
    with tarfile.open(fileobj=io.BytesIO(np.asarray(data, np.uint8).tobytes())) as tar:
        tar.extractall("from_student", filter="data")
    loaded = tf.saved_model.load(f"from_student/{SAVED_DIR}")
    _LOADED["tf_standardize"] = (loaded, loaded.signatures["serving_default"])
    return "loaded"


def run_tf_standardize(student, x):
    """In the verifier: the reloaded graph on the parent's x (its one output)."""
    _, serve = _LOADED["tf_standardize"]
    out = serve(x)
    return next(iter(out.values())) if isinstance(out, dict) and len(out) == 1 else out
