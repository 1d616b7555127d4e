"""Checks for module 05, "TorchScript, and the SavedModel on the other side".

The notebook gives a small model whose forward pass branches on its input (`if x.sum() > 0`). The student
scripts it, proves a traced copy wrong with an input of their choosing, saves it as a TorchScript archive and
writes the same model as a TensorFlow SavedModel with an input signature.

Weights are drawn here, in the parent, on every run and loaded into the grader's own copy of the model
(autograder.worker._gated), so ground truth is a float64 NumPy forward pass computed here. The counterexample is
judged in the clean reference worker, which traces the model itself. What the student's code makes (the scripted
module, which the grader saves with torch.jit.save; the files their functions save) is written into the student's
scratch folder; its bytes come back here and are loaded (torch.jit.load, tf.saved_model.load), inspected and run in
a fresh confined worker that never runs the student's code (autograder.worker.m05_torchscript has both sides).
"""
from __future__ import annotations

import numpy as np

from autograder.exercises._gated import D_IN, fail_on_branches, judge_agreement
from autograder.exercises._gated import signed as _signed
from autograder.exercises._gated import truth as _truth
from autograder.exercises._gated import weights as _weights
from autograder.exercises._gated import zero_sum as _zero_sum_batch
from autograder.spec import Mismatch, bad_file


# -- ground truth, here in the parent ------------------------------------------------------------------
def _branch(x: np.ndarray) -> str:
    return "x.sum() > 0" if x.sum(dtype=np.float64) > 0 else "x.sum() <= 0"


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


# -- the student's files, and the verifier that loads them ----------------------------------------------
def _file_bytes(ctx, output: dict, fn: str, advice: dict) -> np.ndarray:
    """The bytes of a file saved in the student's worker. Instead of bytes, the grader's code there reports in
    words why there are none: fail with the line `advice` gives for its first word, else "FN STATUS"."""
    if output.get("type") == "str":
        status = output["value"]
        word = status.split(" ", 1)[0]
        ctx.fail(bad_file(fn, status) or (advice[word](status) if word in advice else f"{fn} {status}"))
    if output.get("type") != "numpy.ndarray" or output.get("dtype") != "uint8":
        ctx.fail(f"{fn}: no file came back from your worker (a {output.get('type')})")
    return output["array"].astype(np.uint8)


def _run_torchscript(ctx, worker, x, what: str = "the reloaded module") -> dict:
    return ctx.fresh_call(worker, "@run_torchscript", [x], "torch", f"{what} raised")


# -- the parts -------------------------------------------------------------------------------------------
def scripted(ctx):
    weights = _weights(ctx.rng)
    with ctx.fresh_worker(["torch"]) as worker:
        # The grader saves what script_model returned with torch.jit.save; only a real TorchScript module survives
        # the trip to a process that never ran the notebook.
        data = _file_bytes(ctx, ctx.call("@script", weights, "torch", blame="script_model"), "script_model", {})
        ctx.fresh_call(worker, "@load_torchscript", [data], "numpy",
                       "torch.jit.load cannot read script_model's module, saved with torch.jit.save, in a fresh "
                       "process")
        kinds = ctx.text(ctx.fresh_call(worker, "@torchscript_nodes", [], "numpy", "reading the module's graph"),
                         "the module's graph").split()
        seen, bad = _failures_by_branch(ctx, lambda x: _run_torchscript(ctx, worker, x, "script_model's module"),
                                        weights, (1, -1, 1, -1), "script_model(model)")
    ctx.details["graph_nodes"] = len(kinds)
    fail_on_branches(ctx, bad, lambda branch: (
        f"traced, not scripted: the branch was frozen. script_model's module matches eager when "
        f"{next(b for b in seen if b != branch)} but not when {branch}; torch.jit.trace records only the branch its "
        f"example took, torch.jit.script compiles the `if` itself"))
    if "prim::If" not in kinds:
        ctx.fail("script_model's module matches eager on both branches, but its graph holds no `if` (no prim::If "
                 "node): this part is about keeping the model's data-dependent `if`; return torch.jit.script(model)")
    return ("a TorchScript module whose graph keeps the `if` (prim::If); saved, reloaded in a fresh process, it "
            "matches eager on 4 batches, both branches taken")


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
        ref = ctx.call_reference("@trace_vs_eager", [*weights, example, x], "torch")
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


def _save_torchscript_checked(ctx, weights, worker) -> None:
    """The student's archive, saved in their worker, loaded in the grader's fresh `worker`."""
    output = ctx.call("@save_torchscript", weights, "torch", blame="save_torchscript")
    data = _file_bytes(ctx, output, "save_torchscript", {
        "nofile": lambda status: f"save_torchscript(model, path) wrote nothing at {status.split()[1]}: save the file "
                                 f"at the path you are given",
        "noload": lambda status: f"torch.jit.load cannot read what save_torchscript wrote "
                                 f"({status.split(': ', 1)[1].split('. ')[0][:120]}): it is not a TorchScript "
                                 f"archive. torch.save pickles the Python object, which needs its class to load; save "
                                 f"a scripted module with torch.jit.save(scripted, path) or scripted.save(path)"})
    ctx.fresh_call(worker, "@load_torchscript", [data], "numpy",
                   "torch.jit.load cannot read your file in a fresh process")


def torchscript_file(ctx):
    weights = _weights(ctx.rng)
    with ctx.fresh_worker(["torch"]) as worker:
        _save_torchscript_checked(ctx, weights, worker)
        _, bad = _failures_by_branch(ctx, lambda x: _run_torchscript(ctx, worker, x), weights, (1, -1, -1, 1),
                                     "the reloaded module")
    fail_on_branches(ctx, bad, lambda branch: (
        f"the reloaded module is wrong when {branch} and right otherwise: it was traced, not scripted, so the branch "
        f"was frozen into the file"), ". Did you save the model you were given (its weights), not another one?")
    return ("torch.jit.load reads the file back in a fresh process, and it matches eager on 4 batches, both branches "
            "taken")


def _save_savedmodel_checked(ctx, weights, worker) -> None:
    """The student's SavedModel, saved in their worker, loaded in the grader's fresh `worker`."""
    output = ctx.call("@save_savedmodel", weights, "tensorflow", blame="save_savedmodel")
    data = _file_bytes(ctx, output, "save_savedmodel", {
        "nofile": lambda status: f"save_savedmodel(state, path) left no SavedModel at {status.split()[1]} (no "
                                 f"saved_model.pb): call tf.saved_model.save(obj, path) with the path you are given",
        "noload": lambda status: f"tf.saved_model.load cannot read what save_savedmodel wrote "
                                 f"({status.split(': ', 1)[1]})",
        "nocall": lambda status: NO_CALL})
    loaded = ctx.fresh_call(worker, "@load_savedmodel", [data], "numpy",
                            "tf.saved_model.load cannot read your SavedModel in a fresh process")
    if ctx.text(loaded, "the loader's answer") == "nocall":
        ctx.fail(NO_CALL)


NO_CALL = ("the reloaded SavedModel has no serving_default signature and cannot be called: save a tf.Module whose "
           "__call__ is a tf.function with an input_signature, or pass signatures=")


def _run_savedmodel(ctx, worker, x: np.ndarray) -> dict:
    got = ctx.fresh_call(worker, "@run_savedmodel", [x], "tensorflow", "the reloaded SavedModel raised")
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
    with ctx.fresh_worker(["tensorflow"]) as worker:
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
    with ctx.fresh_worker(["torch"]) as torch_worker, ctx.fresh_worker(["tensorflow"]) as tf_worker:
        _save_torchscript_checked(ctx, weights, torch_worker)
        _save_savedmodel_checked(ctx, weights, tf_worker)
        _agree_on_batches(ctx, weights, lambda x: _run_torchscript(ctx, torch_worker, x),
                          lambda x: _run_savedmodel(ctx, tf_worker, x))
    return ("the TorchScript file and the SavedModel agree on 4 batches, one row, a large batch and x.sum() == 0 "
            "included")


def _agree_on_batches(ctx, weights, run_torch, run_tf) -> None:
    batches = [_signed(ctx.rng, (1, D_IN), 1), _signed(ctx.rng, (1, D_IN), -1),
               _zero_sum_batch(ctx.rng, int(ctx.rng.integers(2, 6))),
               _signed(ctx.rng, (int(ctx.rng.integers(20, 40)), D_IN), int(ctx.rng.choice([-1, 1])))]
    for x in batches:
        judge_agreement(ctx, weights, x, run_torch(x), run_tf(x), ("the TorchScript file", "the SavedModel"),
                        "use the same strict comparison in both frameworks")

PARTS = {f.__name__: f for f in (scripted, counterexample, torchscript_file, savedmodel, exports_agree)}
