"""Checks for module 06, "Compilers: torch.compile and XLA; torch.export and SavedModel".

The notebook gives `tangled(x)`, an eager function with three graph breaks, and `Gate`, a small model whose forward
pass branches on its input (`if x.sum() > 0`). The student removes every graph break (`fixed`), compiles a function
so that a stream of shapes costs at most two compiles (`compile_for_stream`), exports the gate with `torch.cond`
(`export_gate`), writes an XLA-compiled TensorFlow layer (`xla_norm_gelu`) and the gate with `tf.cond` (`tf_gate`).

Ground truth is float64 NumPy computed here, in the parent, on inputs drawn from ctx.rng on every run.
- Graph breaks are read twice: `torch._dynamo.explain` (the engine's `graph_breaks` introspection: counts and
  reasons) and a `torch.compile(fixed, fullgraph=True)` with a counting backend, which also catches a break that
  explain does not count (a `print` before any tensor work).
- Recompiles: the grader owns the backend. The student's `compile_for_stream(fn, backend)` must forward it to
  torch.compile; the backend counts compiles and the runs of compiled graphs, so returning `fn` uncompiled, or
  falling back to eager after the first call, shows as 0 compiles or missing runs rather than passing.
- The exported program is saved by the student's function in their worker, its bytes come back here, and a fresh
  isolated worker that never ran the student's code (nor can read the solutions) loads it with torch.export.load
  and runs it: the verdict on the artefact does not come from the student's process. (Not the reference worker:
  torch.export.load can fall back to unpickling, and the reference worker can read the solutions.)
- XLA: `experimental_get_compiler_ir` refuses any function not marked jit_compile=True, and the function's graph
  carries `_XlaMustCompile`; both are read by the grader's helper through TensorFlow's own objects.
"""
from __future__ import annotations

import numpy as np

from autograder._compare import Mismatch
from autograder.exercises._gated import D_IN, MODEL_HELPER, NET_SOURCE, fail_on_branches, judge_agreement
from autograder.exercises._gated import signed as _signed
from autograder.exercises._gated import branch as _branch
from autograder.exercises._gated import truth as _gate_truth
from autograder.exercises._gated import weights as _weights
from autograder.exercises._gated import zero_sum as _zero_sum

STREAM_D, STREAM_K = 8, 4
MAX_COMPILES = 2

TORCH_HELPERS = '''
import os as _clash_os
import numpy as _clash_np
import torch
from torch import nn


_clash_state = {"saves": 0}


def _clash_counting_backend(counts):
    def backend(gm, example_inputs):
        counts["compiles"] += 1

        def run(*args):
            counts["runs"] += 1
            return gm.forward(*args)
        return run
    return backend


def _clash_fullgraph(*xs):
    """fixed, compiled with fullgraph=True (any graph break raises) and a counting backend, on each input."""
    import torch._dynamo as _dynamo
    _dynamo.reset()
    counts = {"compiles": 0, "runs": 0}
    compiled = torch.compile(fixed, fullgraph=True, dynamic=False, backend=_clash_counting_backend(counts))
    outs = []
    for x in xs:
        try:
            outs.append(compiled(x))
        except _dynamo.exc.Unsupported as e:
            lines = [l.strip() for l in str(e).splitlines() if l.strip()]
            return "unsupported " + " / ".join(lines[:2])[:300]
    if counts["runs"] != len(xs):
        return f"runs {counts['runs']} of {len(xs)}"
    return tuple(outs)


def _clash_stream_start(w):
    """The student's compile_for_stream on the grader's function and the grader's counting backend."""
    import torch._dynamo as _dynamo
    global _clash_stream, _clash_stream_counts
    _dynamo.reset()
    _clash_stream_counts = {"compiles": 0, "runs": 0, "calls": 0}

    def stream_fn(x):
        return torch.tanh(x @ w).mean(dim=1)

    _clash_stream = compile_for_stream(stream_fn, _clash_counting_backend(_clash_stream_counts))
    if _clash_stream is None:
        return "returned None (a missing return statement?)"
    if not callable(_clash_stream):
        return f"returned a {type(_clash_stream).__name__}, not a callable"
    return "ok"


def _clash_stream_step(x):
    _clash_stream_counts["calls"] += 1
    return _clash_stream(x)


def _clash_stream_report():
    c = _clash_stream_counts
    return c["compiles"], c["runs"], c["calls"]


def _clash_export(*args):
    """The student's export_gate writes a file; the grader reads it back here (for a clear message) and returns
    its bytes, for a fresh worker to load and judge."""
    global _clash_loaded_ep
    _clash_loaded_ep = None
    *weights, example = args
    _clash_state["saves"] += 1
    path = f"m06_gate_{_clash_state['saves']}.pt2"
    export_gate(_clash_model(*weights), example.detach().cpu().clone(), path)
    if not _clash_os.path.isfile(path):
        return f"nofile {path}"
    try:
        ep = torch.export.load(path)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"noload {type(e).__name__}: {msg}"
    _clash_loaded_ep = ep.module()
    with open(path, "rb") as f:
        return _clash_np.frombuffer(f.read(), dtype=_clash_np.uint8).copy()


def _clash_run_export(x):
    with torch.no_grad():  # the program holds CPU weights; its answer goes back to the device the input came on
        return _clash_loaded_ep(x.cpu()).to(x.device)
''' + NET_SOURCE + MODEL_HELPER

TF_HELPERS = '''
import tensorflow as tf


def _clash_xla_info(x, gamma, beta):
    """Is xla_norm_gelu a tf.function marked for XLA? Read from TensorFlow's own objects."""
    fn = xla_norm_gelu
    if not isinstance(fn, type(tf.function(lambda: 0))):
        return "plain " + type(fn).__name__
    concrete = fn.get_concrete_function(x, gamma, beta)
    attr = concrete.function_def.attr
    if "_XlaMustCompile" not in attr or not attr["_XlaMustCompile"].b:
        return "nojit"
    try:
        hlo = fn.experimental_get_compiler_ir(x, gamma, beta)(stage="optimized_hlo")
    except Exception as e:
        return "nohlo " + type(e).__name__ + ": " + str(e).strip().splitlines()[0][:200]
    return f"ok {hlo.count(' fusion(')}"
'''

HELPERS = [TORCH_HELPERS, TF_HELPERS]
BASELINE = ""  # no timed part

# A fresh worker's only cell: load the exported program's bytes and run it. It never runs the student's code.
LOADER = '''
import io
import torch

def _clash_load(data):
    global _clash_program
    with open("m06_from_student.pt2", "wb") as f:
        f.write(bytes(data.astype("uint8").tobytes()))
    _clash_program = torch.export.load("m06_from_student.pt2").module()
    return "ok"

def _clash_run(x):
    with torch.no_grad():  # run where it was saved (CPU); answer on the device the input came on
        return _clash_program(x.cpu()).to(x.device)
'''


# -- ground truth, here in the parent ------------------------------------------------------------------------
def _tangled_truth(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    y = x / np.abs(x).max()
    norm = np.linalg.norm(y)
    return y * norm if y.sum() > 0 else np.tanh(y) - norm


def _norm_gelu_truth(x, gamma, beta) -> np.ndarray:
    x, gamma, beta = (a.astype(np.float64) for a in (x, gamma, beta))
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + 1e-5) * gamma + beta
    return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))


_BREAK_ADVICE = [
    ("item()", "`.item()` turns a tensor into a Python number: keep it a tensor"),
    ("generic_jump", "a Python `if` on a tensor: use torch.where (or torch.cond)"),
    ("data dependent", "a NumPy call on `.numpy()` returns a Python number: use the torch op (torch.linalg.vector_norm)"),
    ("print", "`print` cannot go into a graph: remove it"),
]


def _advice(reasons: list[str]) -> str:
    found = [a for key, a in _BREAK_ADVICE if any(key in r.lower() for r in reasons)]
    return ("; ".join(found) + ".") if found else ""


# -- the parts -------------------------------------------------------------------------------------------------
def no_breaks(ctx):
    shape = (int(ctx.rng.integers(3, 9)), int(ctx.rng.integers(2, 7)))
    x = _signed(ctx.rng, shape, int(ctx.rng.choice([-1, 1])))
    info = ctx.introspect("graph_breaks", "fixed", [x])
    ctx.details.update(graph_count=info["graph_count"], graph_break_count=info["graph_break_count"])
    reasons = [r.strip().splitlines()[0][:120] for r in info["reasons"]]
    if info["graph_break_count"] > 0:
        listed = "; ".join(f"({i}) {r}" for i, r in enumerate(dict.fromkeys(reasons), 1))
        ctx.fail(f"torch._dynamo.explain(fixed) finds {info['graph_break_count']} graph break(s) and "
                 f"{info['graph_count']} graphs: {listed}. {_advice(reasons)}")
    if info["graph_count"] != 1:
        ctx.fail(f"torch._dynamo.explain(fixed) captured {info['graph_count']} graphs; one graph is expected "
                 f"(does fixed compute with torch ops on x?)")
    xs = [_signed(ctx.rng, shape, s) for s in (1, -1)]
    xs += [_signed(ctx.rng, (int(ctx.rng.integers(2, 12)), int(ctx.rng.integers(2, 9))), s) for s in (-1, 1)]
    got = ctx.call("_clash_fullgraph", xs, "torch")
    if got.get("type") == "str":
        text = got["value"]
        if text.startswith("unsupported"):
            reason = text.removeprefix("unsupported ")
            ctx.fail(f"torch.compile(fixed, fullgraph=True) raises: {reason}. {_advice([reason])} "
                     f"(torch._dynamo.explain does not count a break before the first tensor op; fullgraph does)")
        ctx.fail(f"the compiled fixed did not run its graph on every call ({text})")
    for i, x in enumerate(xs):
        ctx.same(got["items"][i],
                 ctx.truth(_tangled_truth(x)), "torch", ["output"],
                 f"torch.compile(fixed, fullgraph=True) on a {x.shape[0]}x{x.shape[1]} input with "
                 f"{'y.sum() > 0' if x.sum(dtype=np.float64) > 0 else 'y.sum() < 0'}", want_framework="any")
        eager = ctx.call("fixed", [x], "torch")
        ctx.same(eager, ctx.truth(_tangled_truth(x)), "torch", ["output"],
                 f"fixed on a {x.shape[0]}x{x.shape[1]} input with "
                 f"{'y.sum() > 0' if x.sum(dtype=np.float64) > 0 else 'y.sum() < 0'} (compared with tangled)",
                 want_framework="any")
    return "one graph, no breaks (explain and fullgraph=True agree), and the same outputs as tangled on both branches"


def _stream_shapes(rng: np.random.Generator) -> list[tuple[int, int]]:
    """Batch sizes change from the second call; the length changes from the fifth. Sizes are >= 2 (torch.compile
    always specialises 0 and 1), never 8 and never batch == length: with dynamic=True, dimensions of equal size on
    the first call share one symbol ("duck sizing") and would cost a recompile the student did not cause."""
    def pick(*avoid):
        while True:
            v = int(rng.integers(2, 33))
            if v != STREAM_D and v not in avoid:
                return v
    t = pick()
    b = pick(t)
    shapes = []
    for i in range(8):
        if i > 0:
            b = pick(b, t)
        if i >= 4:
            t = pick(t, b)
        shapes.append((b, t))
    return shapes


def few_recompiles(ctx):
    w = ctx.rng.normal(size=(STREAM_D, STREAM_K)).astype(np.float32)
    status = ctx.text(ctx.call("_clash_stream_start", [w], "torch"), "compile_for_stream")
    if status != "ok":
        ctx.fail(f"compile_for_stream(fn, backend) {status}")
    shapes = _stream_shapes(ctx.rng)
    for b, t in shapes:
        x = ctx.rng.normal(size=(b, t, STREAM_D)).astype(np.float32)
        got = ctx.call("_clash_stream_step", [x], "torch")
        want = np.tanh(x.astype(np.float64) @ w.astype(np.float64)).mean(axis=1)
        ctx.same(got, ctx.truth(want), "torch", ["output"], f"the compiled function on a {b}x{t}x{STREAM_D} input",
                 want_framework="any")
    report = ctx.call("_clash_stream_report", [], "torch")
    compiles, runs, calls = (int(i["array"]) for i in report["items"])
    ctx.details.update(compiles=compiles, runs=runs, calls=calls, shapes=[list(s) for s in shapes])
    stream = ", ".join(f"{b}x{t}" for b, t in shapes)
    if compiles == 0:
        ctx.fail("the backend you were given was never called: compile_for_stream must return "
                 "torch.compile(fn, backend=backend, ...) with the grader's backend, not fn itself nor another backend")
    if compiles > MAX_COMPILES:
        why = (" torch.compile's default (dynamic=None) compiles static shapes first and recompiles each time a new "
               "dimension changes: here the batch changes from the 2nd call and the length from the 5th.")
        ctx.fail(f"{compiles} compiles over a stream of {len(shapes)} shapes ({stream}); at most {MAX_COMPILES} "
                 f"expected.{why if compiles == 3 else ''} Declare the shapes dynamic up front: dynamic=True, or "
                 f"torch._dynamo.mark_dynamic on the dimensions that change. dynamic=False recompiles for every "
                 f"new shape")
    if runs != calls:
        ctx.fail(f"only {runs} of {calls} calls ran a compiled graph; the others ran eagerly: the callable must call "
                 f"the compiled function every time")
    return (f"{compiles} compile(s) for {len(shapes)} shapes ({stream}), every call through the compiled graph, "
            f"outputs right")


def _export_bytes(ctx, weights) -> np.ndarray:
    example = _signed(ctx.rng, (3, D_IN), int(ctx.rng.choice([-1, 1])))
    try:
        out = ctx.call("_clash_export", [*weights, example], "torch")
    except Mismatch as m:
        text = str(m)
        if "data-dependent" in text or "DataDependent" in text:
            ctx.fail(f"{text[:260]}. torch.export cannot keep a Python `if` on a tensor (it would have to pick a "
                     f"branch while tracing): write the branch as torch.cond(x.sum() > 0, up_fn, down_fn, (h,))")
        raise
    if out.get("type") == "str":
        text = out["value"]
        if text.startswith("nofile"):
            ctx.fail(f"export_gate(model, example, path) wrote nothing at {text.split()[1]}: save the program with "
                     f"torch.export.save(exported, path)")
        if text.startswith("noload"):
            ctx.fail(f"torch.export.load cannot read what export_gate wrote ({text.removeprefix('noload ')}): save "
                     f"an ExportedProgram with torch.export.save(torch.export.export(...), path)")
        ctx.fail(f"export_gate: {text}")
    return out["array"].astype(np.uint8)


def export_cond(ctx):
    weights = _weights(ctx.rng)
    # The loader starts (imports torch) while the student's worker exports.
    worker = ctx.fresh_worker([{"label": "course m06 loader", "source": LOADER}], ["torch"])
    try:
        data = _export_bytes(ctx, weights)
        ctx.fresh_call(worker, "_clash_load", [data], "numpy", "loading your file with torch.export.load in a fresh "
                                                             "process")
        batches = [(1, 1), (int(ctx.rng.integers(4, 9)), -1), (1, -1), (int(ctx.rng.integers(10, 30)), 1)]
        results = []
        for n, sign in batches:
            x = _signed(ctx.rng, (n, D_IN), sign)
            reply = worker.request({"op": "call", "fn": "_clash_run", "args": [x], "framework": "torch"}, "running it")
            results.append((x, reply))
    finally:
        worker.close()
    bad = {}
    for x, reply in results:
        what = f"the reloaded program on {len(x)} row(s) with {_branch(x)}"
        if not reply.get("ok"):
            error = str(reply.get("error", ""))
            if "Guard failed" in error or "size()" in error:
                ctx.fail(f"{what} raises ({error.split('raised ', 1)[-1][:160]}): the batch size was frozen at the "
                         f"example's 3 rows; export with dynamic_shapes={{'x': {{0: torch.export.Dim('batch')}}}} "
                         f"(or Dim.DYNAMIC)")
            ctx.fail(f"{what} raises: {error[:300]}")
        try:
            ctx.same(reply["output"], ctx.truth(_gate_truth(weights, x)), "torch", ["output"], what,
                     want_framework="any")
        except Mismatch as m:
            bad.setdefault(_branch(x), str(m))
    fail_on_branches(ctx, bad, lambda branch: (
        f"the exported program is wrong when {branch} and right otherwise: one branch was frozen into the graph. "
        f"Write the branch as torch.cond(x.sum() > 0, up_fn, down_fn, (h,)) so both go into the file"),
        ". Did you export the model you were given (its weights)?")
    return ("torch.export.load reads the file back in a fresh process, and it matches eager on 4 batches of 3 sizes "
            "(one row included), both branches taken")


def xla_equal(ctx):
    for k in range(3):
        n, d = int(ctx.rng.integers(1, 40)), int(ctx.rng.integers(8, 65))
        x = (ctx.rng.normal(size=(n, d)) * ctx.rng.uniform(0.5, 3) + ctx.rng.normal()).astype(np.float32)
        gamma = ctx.rng.normal(1.0, 0.3, size=d).astype(np.float32)
        beta = ctx.rng.normal(0.0, 0.3, size=d).astype(np.float32)
        got = ctx.call("xla_norm_gelu", [x, gamma, beta], "tensorflow")
        if k == 0:
            info = ctx.text(ctx.call("_clash_xla_info", [x, gamma, beta], "tensorflow"), "xla_norm_gelu")
            if info.startswith("plain"):
                ctx.fail(f"xla_norm_gelu is a {info.split()[1]}, not a tf.function: decorate it with "
                         f"@tf.function(jit_compile=True)")
            if info == "nojit":
                ctx.fail("xla_norm_gelu is a tf.function but not compiled with XLA: TensorFlow runs its graph op by "
                         "op and refuses to show HLO for it. Pass jit_compile=True to tf.function")
            if info.startswith("nohlo"):
                ctx.fail(f"XLA cannot compile xla_norm_gelu ({info.removeprefix('nohlo ')})")
            ctx.details["fusions"] = int(info.split()[1])
        ctx.same(got, ctx.truth(_norm_gelu_truth(x, gamma, beta)), "tensorflow", ["output"],
                 f"xla_norm_gelu on a {n}x{d} input (vs a float64 layer norm + tanh-GELU)", want_framework="any")
    return (f"XLA-compiled ({ctx.details['fusions']} fusions in the optimised HLO), equal to a float64 NumPy layer "
            f"norm + GELU on 3 shapes")


def cond_agree(ctx):
    weights = _weights(ctx.rng)
    _export_bytes(ctx, weights)  # leaves the student's exported program loaded in their worker
    # Batches of the example's 3 rows: this part is about the branch, not the batch size (export_cond checks that).
    batches = [_zero_sum(ctx.rng, 3), _signed(ctx.rng, (3, D_IN), 1), _signed(ctx.rng, (3, D_IN), -1),
               _zero_sum(ctx.rng, 3)]
    for x in batches:
        judge_agreement(ctx, weights, x, ctx.call("_clash_run_export", [x], "torch"),
                        ctx.call("tf_gate", [x, *weights], "tensorflow"), ("the exported program", "tf_gate"),
                        "use the same strict comparison in tf.cond")
    return "torch.cond and tf.cond agree on 4 batches, both branches and x.sum() == 0 included"


PARTS = {f.__name__: f for f in (no_breaks, few_recompiles, export_cond, xla_equal, cond_agree)}
