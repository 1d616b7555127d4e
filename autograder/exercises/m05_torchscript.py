"""Checks for module 05, "TorchScript, and the SavedModel on the other side".

The notebook gives a small model whose forward pass branches on its input (`if x.sum() > 0`). The student
scripts it, proves a traced copy wrong with an input of their choosing, saves it as a TorchScript archive and
writes the same model as a TensorFlow SavedModel with an input signature.

Weights are drawn here, in the parent, on every run and sent to the grader's own copy of the model (HELPERS),
so ground truth is a float64 NumPy forward pass computed here. The counterexample is judged in the clean
reference worker, which traces the model itself. Exported files are written by the student's function into
the worker's scratch folder; their bytes come back here and are loaded (torch.jit.load, tf.saved_model.load) and
run in a fresh confined worker that never runs the student's code.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from autograder._compare import Mismatch
from autograder.exercises._gated import D_IN, KEYS, MODEL_HELPER, NET_SOURCE, fail_on_branches, judge_agreement
from autograder.exercises._gated import signed as _signed
from autograder.exercises._gated import truth as _truth
from autograder.exercises._gated import weights as _weights
from autograder.exercises._gated import zero_sum as _zero_sum_batch

# The grader's copy of the notebook's GatedNet is compiled under its own file name and registered with
# linecache so that torch.jit.script can read its source (every HELPERS string shares one label), in a module
# of its own so that pickle can find the class.
TORCH_HELPERS = '''
import linecache as _clash_linecache
import os as _clash_os
import numpy as _clash_np
import warnings as _clash_warnings
import torch
from torch import nn

_CLASH_MODEL_FILE = "<m05 grader model>"
_clash_linecache.cache[_CLASH_MODEL_FILE] = (len(_CLASH_MODEL_SRC), None, _CLASH_MODEL_SRC.splitlines(True),
                                             _CLASH_MODEL_FILE)
# In its own module, so that pickle (torch.save) finds the class by name, as it would in a notebook.
import sys as _clash_sys
import types as _clash_types
_clash_model_module = _clash_types.ModuleType("clash_m05_model")
_clash_model_module.__dict__.update(torch=torch, nn=nn)
exec(compile(_CLASH_MODEL_SRC, _CLASH_MODEL_FILE, "exec"), _clash_model_module.__dict__)
_clash_sys.modules["clash_m05_model"] = _clash_model_module
_ClashGatedNet = _clash_model_module._ClashGatedNet
_clash_state = {"saves": 0}


def _clash_guard(fn, *args):
    """Run the student's fn; turn its failures into one readable line for the parent."""
    try:
        return None, fn(*args)
    except NotImplementedError:
        return "not written yet: it raises NotImplementedError", None
    except NameError as e:
        return f"undefined: {e}", None
    except Exception as e:
        return f"raised {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}", None


def _clash_script(*weights):
    """The student's script_model on a fresh model with these weights; keep it for _clash_run_scripted."""
    global _clash_scripted_module
    _clash_scripted_module = None
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        err, scripted = _clash_guard(script_model, _clash_model(*weights))
    if err:
        return err
    if scripted is None:
        return "returned None (a missing return statement?)"
    _clash_scripted_module = scripted
    if not isinstance(scripted, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        kind = "an eager nn.Module" if isinstance(scripted, nn.Module) else f"a {type(scripted).__name__}"
        return f"returned {kind}, not a TorchScript module: pass the model through torch.jit.script"
    return "ok " + type(scripted).__name__


def _clash_run_scripted(x):
    """The scripted model on x's device (the worker's: CUDA where there is one; the model was built on the CPU)."""
    scripted = _clash_scripted_module
    if isinstance(scripted, nn.Module):
        scripted = scripted.to(x.device)
    with torch.no_grad():
        return scripted(x)


def _clash_trace_vs_eager(*args):
    """The model traced on `example`, and the eager model, both run on `x` (judged in the reference worker)."""
    *weights, example, x = args
    model = _clash_model(*weights).to(x.device)
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example.to(x.device))
    with torch.no_grad():
        return model(x), traced(x)


def _clash_save_torchscript(*weights):
    """The student's save_torchscript writes a file; it is read back here only for a clear message, and its
    bytes go to a fresh worker, which loads and runs it."""
    _clash_state["saves"] += 1
    path = f"m05_gated_{_clash_state['saves']}.pt"
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        err, _ = _clash_guard(save_torchscript, _clash_model(*weights), path)
    if err:
        return err
    if not _clash_os.path.isfile(path):
        return f"nofile {path}"
    try:
        torch.jit.load(path)
    except Exception as e:
        return f"noload {path}: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    with open(path, "rb") as f:
        return _clash_np.frombuffer(f.read(), dtype=_clash_np.uint8).copy()
''' + MODEL_HELPER
TORCH_HELPERS = f"_CLASH_MODEL_SRC = {NET_SOURCE!r}\n" + TORCH_HELPERS

TF_HELPERS = '''
import io as _clash_io
import os as _clash_tf_os
import tarfile as _clash_tarfile
import numpy as _clash_np
import tensorflow as tf
_CLASH_TF_KEYS = KEYS_LIST
_clash_tf_state = {"saves": 0}


def _clash_save_savedmodel(*weights):
    """The student's save_savedmodel writes a SavedModel; it is read back here only for a clear message, and the
    folder goes, as a tar archive's bytes, to a fresh worker, which loads and runs it."""
    _clash_tf_state["saves"] += 1
    path = f"m05_savedmodel_{_clash_tf_state['saves']}"
    state = {k: w.numpy().copy() for k, w in zip(_CLASH_TF_KEYS, weights)}
    try:
        save_savedmodel(state, path)
    except NotImplementedError:
        return "not written yet: it raises NotImplementedError"
    except NameError as e:
        return f"undefined: {e}"
    except Exception as e:
        return f"raised {type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
    if not _clash_tf_os.path.isfile(_clash_tf_os.path.join(path, "saved_model.pb")):
        return f"nofile {path}"
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        return f"noload {path}: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    if "serving_default" not in loaded.signatures and not callable(loaded):
        return "nocall"
    buffer = _clash_io.BytesIO()
    with _clash_tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname="savedmodel")
    return _clash_np.frombuffer(buffer.getvalue(), dtype=_clash_np.uint8).copy()
'''.replace("KEYS_LIST", repr(KEYS))

HELPERS = [TORCH_HELPERS, TF_HELPERS]

# A fresh worker's only cells: load the bytes of the student's files and run them. It never runs the student's
# code, so a notebook that patches torch.jit.load or tf.saved_model.load cannot pass off something else.
TORCH_LOADER = '''
import torch

def _clash_load_torchscript(data):
    global _clash_ts
    with open("m05_from_student.pt", "wb") as f:
        f.write(bytes(data.astype("uint8").tobytes()))
    _clash_ts = torch.jit.load("m05_from_student.pt", map_location="cpu")
    return "ok"

def _clash_run_torchscript(x):
    with torch.no_grad():  # the archive holds CPU weights; the answer goes back to the input's device
        return _clash_ts(x.cpu()).to(x.device)
'''

TF_LOADER = '''
import io
import tarfile
import tensorflow as tf

def _clash_load_savedmodel(data):
    global _clash_sm
    with tarfile.open(fileobj=io.BytesIO(bytes(data.astype("uint8").tobytes()))) as tar:
        tar.extractall("m05_from_student", filter="data")
    loaded = tf.saved_model.load("m05_from_student/savedmodel")
    if "serving_default" in loaded.signatures:
        _clash_sm = (loaded, loaded.signatures["serving_default"])
    elif callable(loaded):
        _clash_sm = (loaded, loaded)
    else:
        return "nocall"
    return "ok"

def _clash_run_savedmodel(x):
    _, fn = _clash_sm
    try:
        out = fn(x)
    except (ValueError, TypeError) as e:
        return "nomatch " + str(e).strip().splitlines()[0][:200]
    if isinstance(out, dict):
        if len(out) != 1:
            return f"outputs {sorted(out)}"
        out = next(iter(out.values()))
    return out
'''
LOADERS = {"torch": {"label": "course m05 torch loader", "source": TORCH_LOADER},
           "tensorflow": {"label": "course m05 tf loader", "source": TF_LOADER}}
BASELINE = ""  # no timed part: nothing for the reference worker to time


# -- ground truth, here in the parent ------------------------------------------------------------------
def _branch(x: np.ndarray) -> str:
    return "x.sum() > 0" if x.sum(dtype=np.float64) > 0 else "x.sum() <= 0"


def _student_status(ctx, output: dict, fn: str) -> str:
    """The helpers report the student's failures as text; turn them into one teaching line."""
    status = ctx.text(output, fn)
    if status.startswith("not written yet"):
        ctx.fail(f"{fn} is {status}")
    if status.startswith("undefined: "):
        ctx.fail(f"{status.removeprefix('undefined: ')} (define a function named {fn} in the notebook)")
    if status.startswith("raised ") or status.startswith("returned "):
        ctx.fail(f"{fn} {status}")
    return status


def _failures_by_branch(ctx, run, weights, signs, what: str) -> tuple[list[str], dict[str, str]]:
    """Run `run(x)` (a described output) on one batch per sign and compare with float64 NumPy: the branches
    taken, and the last mismatch message of each branch that failed."""
    seen, bad = [], {}
    for sign in signs:
        x = _signed(ctx.rng, (int(ctx.rng.integers(1, 9)), D_IN), sign)
        got = run(x)
        seen.append(_branch(x))
        try:
            ctx.same(got, ctx.truth(_truth(weights, x)), "torch", ["output"], f"{what} on a batch with {_branch(x)}",
                     want_framework="any")
        except Mismatch as m:
            bad[_branch(x)] = str(m)
    return seen, {b: bad[b] for b in dict.fromkeys(seen) if b in bad}  # in the order the branches came


@contextmanager
def _loader(ctx, framework: str):
    """A fresh confined worker with the grader's loader for one framework; it starts (imports its framework)
    while the student's worker saves."""
    worker = ctx.fresh_worker([LOADERS[framework]], [framework])
    try:
        yield worker
    finally:
        worker.close()


# -- the parts -------------------------------------------------------------------------------------------
def scripted(ctx):
    weights = _weights(ctx.rng)
    status = _student_status(ctx, ctx.call("_clash_script", weights, "torch"), "script_model")
    ctx.details["module_type"] = status.removeprefix("ok ")
    seen, bad = _failures_by_branch(ctx, lambda x: ctx.call("_clash_run_scripted", [x], "torch"), weights,
                                    (1, -1, 1, -1), "script_model(model)")
    fail_on_branches(ctx, bad, lambda branch: (
        f"traced, not scripted: the branch was frozen. script_model's module matches eager when "
        f"{next(b for b in seen if b != branch)} but not when {branch}; torch.jit.trace records only the branch its "
        f"example took, torch.jit.script compiles the `if` itself"))
    nodes = ctx.introspect("script_nodes", "_clash_scripted_module")
    ctx.details["graph_nodes"] = len(nodes)
    return f"a {ctx.details['module_type']} that matches eager on 4 batches, both branches taken"


def counterexample(ctx):
    signs = [1, -1, int(ctx.rng.choice([-1, 1]))]
    for sign in signs:
        weights = _weights(ctx.rng)
        example = _signed(ctx.rng, (int(ctx.rng.integers(2, 5)), D_IN), sign)
        out = ctx.call("counterexample", [example], "torch")
        if out.get("type") != "torch.Tensor":
            ctx.fail(f"counterexample(example) returned {out.get('type')}, expected a torch.Tensor "
                     f"(an input for the model, like example)")
        x = out["array"]
        if out.get("dtype") != "float32" or x.ndim != 2 or x.shape[1] != D_IN or not 1 <= x.shape[0] <= 10000:
            ctx.fail(f"counterexample(example) returned a {out.get('dtype')} tensor of shape {tuple(x.shape)}; "
                     f"a valid input is a float32 batch of shape (n, {D_IN}), like example's {example.shape}")
        if not np.isfinite(x).all() or np.abs(x).max() > 1e4:
            ctx.fail("counterexample(example) returned NaN, infinite or huge values; a valid input holds ordinary "
                     "finite numbers")
        # Judged in the clean reference worker, which traces its own copy of the model on `example`.
        _, ref = ctx.call_both("_clash_trace_vs_eager", [*weights, example, x], "torch")
        eager, traced = ref["items"][0]["array"], ref["items"][1]["array"]
        diff = float(np.abs(eager.astype(np.float64) - traced).max())
        ctx.details.setdefault("eager_vs_traced", []).append(diff)
        if diff <= 1e-3:
            if _branch(x) == _branch(example):
                ctx.fail(f"counterexample(example) returned an input that takes the same branch as example (both have "
                         f"{_branch(x)}), so the traced model replays the branch it recorded and agrees with eager "
                         f"(max difference {diff:.2g}); return an input that takes the other branch")
            ctx.fail(f"on counterexample(example) the traced and the eager model agree (max difference {diff:.2g}); "
                     f"it must make them disagree")
    return (f"the traced model is wrong on each of your 3 counterexamples (eager vs traced differ by at least "
            f"{min(ctx.details['eager_vs_traced']):.2f}), judged in the grader's own process")


def _saved_bytes(ctx, helper: str, fn: str, framework: str, weights, advice: dict) -> np.ndarray:
    """The student's `fn` saves through the grader's `helper`, which reads the file back (for a clear message)
    and returns its bytes. A status it reports instead fails with the line `advice` gives for its first word."""
    output = ctx.call(helper, weights, framework)
    if output.get("type") == "str":
        status = _student_status(ctx, output, fn)
        word = status.split(" ", 1)[0]
        ctx.fail(advice[word](status) if word in advice else f"{fn}: {status}")
    return output["array"].astype(np.uint8)


def _save_torchscript_checked(ctx, weights, worker) -> None:
    """The student's archive, saved in their worker, loaded in the grader's fresh `worker`."""
    data = _saved_bytes(ctx, "_clash_save_torchscript", "save_torchscript", "torch", weights, {
        "nofile": lambda status: f"save_torchscript(model, path) wrote nothing at {status.split()[1]}: save the file "
                                 f"at the path you are given",
        "noload": lambda status: f"torch.jit.load cannot read what save_torchscript wrote "
                                 f"({status.split(': ', 1)[1].split('. ')[0][:120]}): it is not a TorchScript "
                                 f"archive. torch.save pickles the Python object, which needs its class to load; save "
                                 f"a scripted module with torch.jit.save(scripted, path) or scripted.save(path)"})
    ctx.fresh_call(worker, "_clash_load_torchscript", [data], "numpy",
                   "torch.jit.load cannot read your file in a fresh process")


def _run_torchscript(ctx, worker, x) -> dict:
    return ctx.fresh_call(worker, "_clash_run_torchscript", [x], "torch", "the reloaded module raised")


def torchscript_file(ctx):
    weights = _weights(ctx.rng)
    with _loader(ctx, "torch") as worker:
        _save_torchscript_checked(ctx, weights, worker)
        _, bad = _failures_by_branch(ctx, lambda x: _run_torchscript(ctx, worker, x), weights, (1, -1, -1, 1),
                                     "the reloaded module")
    fail_on_branches(ctx, bad, lambda branch: (
        f"the reloaded module is wrong when {branch} and right otherwise: it was traced, not scripted, so the branch "
        f"was frozen into the file"), ". Did you save the model you were given (its weights), not another one?")
    return "torch.jit.load reads the file back in a fresh process, and it matches eager on 4 batches, both branches taken"


def _save_savedmodel_checked(ctx, weights, worker) -> None:
    """The student's SavedModel, saved in their worker, loaded in the grader's fresh `worker`."""
    data = _saved_bytes(ctx, "_clash_save_savedmodel", "save_savedmodel", "tensorflow", weights, {
        "nofile": lambda status: f"save_savedmodel(state, path) left no SavedModel at {status.split()[1]} (no "
                                 f"saved_model.pb): call tf.saved_model.save(obj, path) with the path you are given",
        "noload": lambda status: f"tf.saved_model.load cannot read what save_savedmodel wrote "
                                 f"({status.split(': ', 1)[1]})",
        "nocall": lambda status: NO_CALL})
    loaded = ctx.fresh_call(worker, "_clash_load_savedmodel", [data], "numpy",
                            "tf.saved_model.load cannot read your SavedModel in a fresh process")
    if ctx.text(loaded, "the loader's answer") == "nocall":
        ctx.fail(NO_CALL)


NO_CALL = ("the reloaded SavedModel has no serving_default signature and cannot be called: save a tf.Module whose "
           "__call__ is a tf.function with an input_signature, or pass signatures=")


def _run_savedmodel(ctx, worker, x: np.ndarray) -> dict:
    got = ctx.fresh_call(worker, "_clash_run_savedmodel", [x], "tensorflow", "the reloaded SavedModel raised")
    if got.get("type") == "str":
        text = got["value"]
        if text.startswith("nomatch"):
            ctx.fail(f"the reloaded SavedModel has no function for a batch of {len(x)} row(s): without an "
                     f"input_signature only the shapes traced before saving are kept; give the tf.function "
                     f"input_signature=[tf.TensorSpec([None, {D_IN}], tf.float32)]")
        if text.startswith("outputs"):
            ctx.fail(f"the SavedModel's serving signature returns several outputs {text[8:]}; return one tensor")
    return got


def savedmodel(ctx):
    weights = _weights(ctx.rng)
    with _loader(ctx, "tensorflow") as worker:
        _save_savedmodel_checked(ctx, weights, worker)
        for n, sign in ((int(ctx.rng.integers(2, 6)), 1), (1, -1), (int(ctx.rng.integers(6, 12)), -1), (1, 1)):
            x = _signed(ctx.rng, (n, D_IN), sign)
            got = _run_savedmodel(ctx, worker, x)
            ctx.same(got, ctx.truth(_truth(weights, x)), "tensorflow", ["output"],
                     f"the reloaded SavedModel on {n} row(s) with {_branch(x)}", want_framework="any")
    return ("tf.saved_model.load reads it back in a fresh process, and it matches eager on 4 batches of 3 sizes, "
            "both branches taken")


def exports_agree(ctx):
    weights = _weights(ctx.rng)
    with _loader(ctx, "torch") as torch_worker, _loader(ctx, "tensorflow") as tf_worker:
        _save_torchscript_checked(ctx, weights, torch_worker)
        _save_savedmodel_checked(ctx, weights, tf_worker)
        _agree_on_batches(ctx, weights, lambda x: _run_torchscript(ctx, torch_worker, x),
                          lambda x: _run_savedmodel(ctx, tf_worker, x))
    return "the TorchScript file and the SavedModel agree on 4 batches, one row, a large batch and x.sum() == 0 included"


def _agree_on_batches(ctx, weights, run_torch, run_tf) -> None:
    batches = [_signed(ctx.rng, (1, D_IN), 1), _signed(ctx.rng, (1, D_IN), -1),
               _zero_sum_batch(ctx.rng, int(ctx.rng.integers(2, 6))),
               _signed(ctx.rng, (int(ctx.rng.integers(20, 40)), D_IN), int(ctx.rng.choice([-1, 1])))]
    for x in batches:
        judge_agreement(ctx, weights, x, run_torch(x), run_tf(x), ("the TorchScript file", "the SavedModel"),
                        "use the same strict comparison in both frameworks")

PARTS = {f.__name__: f for f in (scripted, counterexample, torchscript_file, savedmodel, exports_agree)}
