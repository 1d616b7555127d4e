"""Module 05's grader code in the workers.

In the student's worker: the student's functions run on the grader's own GatedNet (autograder.worker._gated) with
the weights the parent drew, and what they make (a scripted module, a TorchScript file, a SavedModel) is saved into
the scratch folder; its bytes go back to the parent. What is read back here words a failure, never a pass.
In a fresh verifier that runs no notebook code: those bytes are loaded (torch.jit.load, tf.saved_model.load),
inspected and run on the parent's inputs. In the reference worker: the grader's own trace of the model.
"""
from __future__ import annotations

import io
import os
import tarfile
import warnings

from autograder.worker import _files, _gated

_loaded: dict = {}   # what a verifier has loaded: "torchscript", "savedmodel"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


# -- in the student's worker ---------------------------------------------------------------------------------
def script(student, *weights):
    """The student's script_model on a fresh net with these weights, saved by the grader with torch.jit.save: the
    archive's bytes, for a verifier. A str says what was returned instead (the type check only words the failure)."""
    import torch
    from torch import nn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = student.script_model(_gated.model(weights))
        if scripted is None:
            return "returned None (a missing return statement?)"
        if not isinstance(scripted, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
            kind = "an eager nn.Module" if isinstance(scripted, nn.Module) else f"a {type(scripted).__name__}"
            return f"returned {kind}, not a TorchScript module: pass the model through torch.jit.script"
        path = _gated.scratch_path("m05_scripted", ".pt")
        torch.jit.save(scripted, path)
    return _gated.read_bytes(path)


def save_torchscript(student, *weights):
    """The student's save_torchscript writes a file at the path it is given: its bytes, for a verifier. A str says
    why there are none: "nofile PATH", or "noload PATH: ERROR" when torch.jit.load cannot read it here either."""
    import torch
    path = _gated.scratch_path("m05_gated", ".pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.save_torchscript(_gated.model(weights), path)
        unusable = _files.status(path, "zip")
        if unusable:
            return unusable
        try:
            torch.jit.load(path)
        except Exception as e:  # not an archive: what torch says words the failure
            return f"noload {path}: {_first_line(e)}"
    return _gated.read_bytes(path)


def save_savedmodel(student, *weights):
    """The student's save_savedmodel writes a SavedModel folder at the path it is given: a tar archive of it, for a
    verifier. A str says why there is none: "nofile PATH", "noload PATH: ERROR" or "nocall"."""
    import tensorflow as tf
    path = _gated.scratch_path("m05_savedmodel")
    student.save_savedmodel(_gated.state(weights), path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return f"nofile {path}"
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # not a SavedModel: what TensorFlow says words the failure
        return f"noload {path}: {_first_line(e)}"
    if "serving_default" not in loaded.signatures and not callable(loaded):
        return "nocall"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname="savedmodel")
    return _gated.as_array(buffer.getvalue())


# -- in the reference worker ---------------------------------------------------------------------------------
def trace_vs_eager(student, *args):
    """The grader's net traced on `example`, and the eager net, both run on `x` (the student's counterexample)."""
    import torch
    *weights, example, x = args
    net = _gated.model(weights).to(x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example.to(x.device))
    with torch.no_grad():
        return net(x), traced(x)


# -- in a fresh verifier: no notebook code ran here, so torch.jit.load and tf.saved_model.load are torch's own --
def load_torchscript(student, data):
    import torch
    path = _gated.write_bytes(data, _gated.scratch_path("m05_from_student", ".pt"))
    module = torch.jit.load(path, map_location="cpu")
    if not hasattr(module, "forward"):
        raise ValueError("the archive holds no forward: it was saved from a module whose forward is Python, not "
                         "TorchScript (torch.jit.script compiles it)")
    _loaded["torchscript"] = module
    return "ok"


def torchscript_nodes(student):
    """The kinds of the loaded module's nodes, submodules' calls inlined and nested blocks included, one string
    ("prim::If" is there when a data-dependent `if` survived)."""
    kinds = []

    def walk(block):
        for node in block.nodes():
            kinds.append(node.kind())
            for inner in node.blocks():
                walk(inner)
    walk(_loaded["torchscript"].inlined_graph)
    return " ".join(kinds)


def run_torchscript(student, x):
    import torch
    with torch.no_grad():  # the archive holds CPU weights; the answer goes back to the input's device
        return _loaded["torchscript"](x.cpu()).to(x.device)


def load_savedmodel(student, data):
    import tensorflow as tf
    folder = _gated.scratch_path("m05_from_student")
    with tarfile.open(fileobj=io.BytesIO(_gated.as_bytes(data))) as tar:
        tar.extractall(folder, filter="data")
    loaded = tf.saved_model.load(os.path.join(folder, "savedmodel"))
    if "serving_default" in loaded.signatures:
        _loaded["savedmodel"] = (loaded, loaded.signatures["serving_default"])
    elif callable(loaded):
        _loaded["savedmodel"] = (loaded, loaded)
    else:
        return "nocall"
    return "ok"


def run_savedmodel(student, x):
    """The loaded SavedModel on x; a str when it has no function for x's shape ("nomatch ...") or returns several
    outputs ("outputs [names]")."""
    _, fn = _loaded["savedmodel"]
    try:
        out = fn(x)
    except (ValueError, TypeError) as e:
        return "nomatch " + str(e).strip().splitlines()[0][:200]
    if isinstance(out, dict):
        if len(out) != 1:
            return f"outputs {sorted(out)}"
        out = next(iter(out.values()))
    return out
