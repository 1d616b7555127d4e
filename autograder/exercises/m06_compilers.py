"""Checks for module 06, "Compilers: torch.compile and XLA; torch.export and SavedModel".

The notebook gives `tangled(x)`, an eager function with three graph breaks, and `Gate`, a small model whose forward
pass branches on its input (`if x.sum() > 0`). The student removes every graph break (`fixed`), exports a function
so that one program serves a stream of shapes (`export_for_stream`), exports the gate with `torch.cond`
(`export_gate`), writes an XLA-compiled TensorFlow layer (`xla_norm_gelu`) and the gate with `tf.cond` (`tf_gate`).

Ground truth is float64 NumPy computed here, in the parent, on inputs drawn from ctx.rng on every run.
Evidence the student's process cannot write: each program is exported in the student's worker into its scratch
folder (`fixed` by the grader's own torch.export.export call, the others by the student's functions), its bytes come
back here, and a fresh confined worker that never ran the student's code (nor can read the solutions) checks the
file, loads it with torch.export.load, reads its operators and runs it on inputs drawn here
(autograder.worker.m06_compilers has both sides; its loader refuses files crafted to run code as they load).
- Graph breaks: the exported program of `fixed` must exist (export fails on a Python `if` on a tensor or a NumPy
  round trip), call no `.item()`, and equal `tangled` on inputs of another shape, both branches. What
  torch._dynamo.explain and torch.compile(fullgraph=True) report in the student's worker only words a failure (the
  breaks and their reasons, a `print`), never a pass.
- A stream of shapes: one program must serve every shape of the stream (batch and length changing), as a
  torch.compile with dynamic shapes serves it without recompiling.
- XLA: `experimental_get_compiler_ir` refuses any function not marked jit_compile=True, and the function's graph
  carries `_XlaMustCompile`; both are read by the grader's code through TensorFlow's own objects.
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from autograder.exercises._gated import D_IN, fail_on_branches, judge_agreement
from autograder.exercises._gated import branch as _branch
from autograder.exercises._gated import signed as _signed
from autograder.exercises._gated import truth as _gate_truth
from autograder.exercises._gated import weights as _weights
from autograder.exercises._gated import zero_sum as _zero_sum
from autograder.spec import GraderError, Mismatch, bad_file

STREAM_D, STREAM_K = 8, 4


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
    ("data-dependent branching", "a Python `if` on a tensor: use torch.where (or torch.cond)"),
    ("data dependent",
     "a NumPy call on `.numpy()` returns a Python number: use the torch op (torch.linalg.vector_norm)"),
    ("print", "`print` cannot go into a graph: remove it"),
]
# Operators by which an exported program leaves the tensors for a Python number: a graph break under torch.compile.
_SCALAR_OPS = ("aten.item.default", "aten._local_scalar_dense.default")


def _advice(reasons: list[str]) -> str:
    found = list(dict.fromkeys(a for key, a in _BREAK_ADVICE if any(key in r.lower() for r in reasons)))
    return ("; ".join(found) + ".") if found else ""


# -- the verifier ----------------------------------------------------------------------------------------------
@contextmanager
def _verifier(ctx):
    """A fresh confined worker that runs no notebook code: it checks, loads and runs the programs the student's
    worker saved. It starts at once and imports torch.export's loader while the student's worker exports; _load
    collects that first reply."""
    with ctx.fresh_worker(["torch"]) as worker:
        worker.send({"op": "call", "fn": "@prepare_verifier", "args": [], "framework": "numpy"})
        yield worker


def _values(output: dict) -> list:
    """A described list of str and int (a report from the grader's code in a worker) as Python values."""
    return [i["value"] if i.get("type") == "str" else int(i["array"]) for i in output.get("items", [])]


def _program_bytes(ctx, output: dict, fn: str, nofile: str) -> np.ndarray:
    """The bytes of a program saved in the student's worker; "nofile PATH" instead fails with `nofile`."""
    if output.get("type") == "str":
        text = output["value"]
        if text.startswith("nofile"):
            ctx.fail(nofile.format(path=text.split()[1]))
        ctx.fail(bad_file(fn, text) or f"{fn}: {text}")
    if output.get("type") != "numpy.ndarray" or output.get("dtype") != "uint8":
        ctx.fail(f"{fn}: no program came back from your worker (a {output.get('type')})")
    return output["array"].astype(np.uint8)


def _load(ctx, worker, data: np.ndarray, what: str) -> tuple[list[str], list[int]]:
    """Load a program in the verifier; it must take one input and return one output. Its operators, and the sizes
    of its input (-1 where a dimension is dynamic)."""
    prepared = worker.receive(worker.limits.call_timeout_s, "preparing to load your program")
    if not prepared.get("ok"):
        raise GraderError(f"the verifier could not import torch.export's loader: {prepared.get('error')}")
    signature = _values(ctx.fresh_call(worker, "@load_program", [data], "numpy",
                                       f"torch.export.load cannot read {what} in a fresh process"))
    if signature[:2] != [1, 1]:
        ctx.fail(f"{what} takes {signature[0]} input(s) and returns {signature[1]} output(s); one tensor in, one out "
                 f"is expected")
    ops = ctx.text(ctx.fresh_call(worker, "@program_ops", [], "numpy", f"reading {what}"), what).split()
    return ops, signature[2:]


def _run(worker, x: np.ndarray) -> dict:
    """The verifier's reply to running its program on x: its output, or the program's error."""
    return worker.request({"op": "call", "fn": "@run_program", "args": [x], "framework": "torch"}, "running it")


# -- the parts -------------------------------------------------------------------------------------------------
def no_breaks(ctx):
    shape = (int(ctx.rng.integers(3, 9)), int(ctx.rng.integers(2, 7)))
    x = _signed(ctx.rng, shape, int(ctx.rng.choice([-1, 1])))
    xs = [_signed(ctx.rng, shape, s) for s in (1, -1)]
    xs += [_signed(ctx.rng, (int(ctx.rng.integers(2, 12)), int(ctx.rng.integers(2, 9))), s) for s in (-1, 1)]
    with _verifier(ctx) as worker:
        exported = ctx.call("@export_fixed", [x], "torch", blame="fixed")
        if exported.get("type") == "list":
            _why_not_exported(ctx, _values(exported))
        data = _program_bytes(ctx, exported, "fixed", "")
        ops, sizes = _load(ctx, worker, data, "the program exported from fixed")
        ctx.details.update(graph_ops=len(ops), input_sizes=sizes)
        scalar = [op for op in ops if op in _SCALAR_OPS]
        if scalar:
            ctx.fail(f"fixed turns a tensor into a Python number ({scalar[0]} in its exported program): under "
                     f"torch.compile that is a graph break. {_advice(['item()'])}")
        # A fixed whose Python reads its input's sizes exports for that size only (torch.compile would recompile
        # for another): no graph break for all that, so its program runs on the inputs its sizes admit.
        admits = [len(x.shape) == len(sizes) and all(s in (-1, n) for s, n in zip(sizes, x.shape)) for x in xs]
        if not all(admits[:2]):  # xs[:2] have the shape it was exported on
            ctx.fail(f"the program exported from fixed takes inputs of sizes {sizes}, not the {shape[0]}x{shape[1]} "
                     f"input it was exported on")
        runs = [x for x, admitted in zip(xs, admits) if admitted]
        replies = [_run(worker, x) for x in runs]
    for x, reply in zip(runs, replies):
        what = (f"the program exported from fixed, on a {x.shape[0]}x{x.shape[1]} input with "
                f"{'y.sum() > 0' if x.sum(dtype=np.float64) > 0 else 'y.sum() < 0'}")
        if not reply.get("ok"):
            ctx.fail(f"{what} raises: {str(reply.get('error', ''))[:300]}")
        ctx.same(reply["output"], ctx.truth(_tangled_truth(x)), "torch", ["output"], f"{what} (compared with tangled)",
                 want_framework="any")
    for x in xs:  # and fixed itself, eager
        ctx.same(ctx.call("fixed", [x], "torch"), ctx.truth(_tangled_truth(x)), "torch", ["output"],
                 f"fixed on a {x.shape[0]}x{x.shape[1]} input with "
                 f"{'y.sum() > 0' if x.sum(dtype=np.float64) > 0 else 'y.sum() < 0'} (compared with tangled)",
                 want_framework="any")
    shapes = "inputs of 2 shapes" if len(runs) == len(xs) else f"{shape[0]}x{shape[1]} inputs (its sizes are fixed)"
    return (f"one graph: torch.export captured fixed whole, and its program, run in a fresh process, equals tangled on "
            f"{shapes}, both branches taken")


def _why_not_exported(ctx, report: list) -> None:
    """Fail with what the grader's code in the student's worker found instead of a program (see export_fixed)."""
    kind = report[0]
    if kind == "breaks":
        graphs, breaks, reasons = report[1], report[2], report[3:]
        if breaks > 0:
            listed = "; ".join(f"({i}) {r}" for i, r in enumerate(dict.fromkeys(reasons), 1))
            ctx.fail(f"torch._dynamo.explain(fixed) finds {breaks} graph break(s) and {graphs} graphs: {listed}. "
                     f"{_advice(reasons)}")
        ctx.fail(f"torch._dynamo.explain(fixed) captured {graphs} graphs; one graph is expected (does fixed compute "
                 f"with torch ops on x?)")
    if kind == "unsupported":
        ctx.fail(f"torch.compile(fixed, fullgraph=True) raises: {report[1]}. {_advice([report[1]])} "
                 f"(torch._dynamo.explain does not count a break before the first tensor op; fullgraph does)")
    error = str(report[-1]).rstrip(".")
    ctx.fail(f"torch.export.export cannot capture fixed as one graph: {error}. {_advice([error])}".strip())


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
    shapes = _stream_shapes(ctx.rng)
    xs = [ctx.rng.normal(size=(b, t, STREAM_D)).astype(np.float32) for b, t in shapes]
    ctx.details["shapes"] = [list(s) for s in shapes]
    stream = ", ".join(f"{b}x{t}" for b, t in shapes)
    with _verifier(ctx) as worker:
        saved = ctx.call("@export_stream", [w, xs[0]], "torch", blame="export_for_stream")
        data = _program_bytes(ctx, saved, "export_for_stream", "export_for_stream(model, example, path) wrote nothing "
                              "at {path}: save the program with torch.export.save(exported, path)")
        _load(ctx, worker, data, "export_for_stream's program")
        replies = [_run(worker, x) for x in xs]
    for i, (x, reply) in enumerate(zip(xs, replies)):
        b, t = shapes[i]
        if not reply.get("ok"):
            _fail_frozen(ctx, str(reply.get("error", "")), i, shapes)
        want = np.tanh(x.astype(np.float64) @ w.astype(np.float64)).mean(axis=1)
        ctx.same(reply["output"], ctx.truth(want), "torch", ["output"],
                 f"export_for_stream's program on a {b}x{t}x{STREAM_D} input", want_framework="any")
    return (f"one exported program, loaded in a fresh process, serves all {len(shapes)} shapes of the stream "
            f"({stream}) with the right outputs")


def _fail_frozen(ctx, error: str, i: int, shapes: list[tuple[int, int]]) -> None:
    """The program refused the stream's i-th shape: name the dimension that export froze, when torch says which."""
    (b0, t0), (b, t) = shapes[0], shapes[i]
    dim = re.search(r"(?:size\(\)|shape)\[(\d)\]", error)
    which = {"0": f"batch size was frozen at the example's {b0}", "1": f"length was frozen at the example's {t0}",
             "2": "last dimension was frozen"}.get(dim.group(1) if dim else "", "shape was frozen")
    ctx.fail(f"export_for_stream's program serves {i} of the stream's {len(shapes)} shapes, then refuses a "
             f"{b}x{t}x{STREAM_D} input ({error.split('raised ', 1)[-1][:160]}): its {which}. torch.export makes "
             f"every dimension a constant unless dynamic_shapes declares it dynamic, and a program cannot recompile "
             f"as torch.compile does (dynamic=None recompiles each time a new dimension starts to change). Declare "
             f"both up front: dynamic_shapes={{'x': {{0: torch.export.Dim('batch'), 1: torch.export.Dim('length')}}}}")


def _export_bytes(ctx, weights) -> np.ndarray:
    example = _signed(ctx.rng, (3, D_IN), int(ctx.rng.choice([-1, 1])))
    try:
        out = ctx.call("@export_gate", [*weights, example], "torch", blame="export_gate")
    except Mismatch as m:
        text = str(m)
        if "data-dependent" in text or "DataDependent" in text:
            ctx.fail(f"{text[:260]}. torch.export cannot keep a Python `if` on a tensor (it would have to pick a "
                     f"branch while tracing): write the branch as torch.cond(x.sum() > 0, up_fn, down_fn, (h,))")
        raise
    if out.get("type") == "str" and out["value"].startswith("noload"):
        ctx.fail(f"torch.export.load cannot read what export_gate wrote ({out['value'].removeprefix('noload ')}): "
                 f"save an ExportedProgram with torch.export.save(torch.export.export(...), path)")
    return _program_bytes(ctx, out, "export_gate", "export_gate(model, example, path) wrote nothing at {path}: save "
                          "the program with torch.export.save(exported, path)")


def export_cond(ctx):
    weights = _weights(ctx.rng)
    with _verifier(ctx) as worker:
        _load(ctx, worker, _export_bytes(ctx, weights), "export_gate's program")
        batches = [(1, 1), (int(ctx.rng.integers(4, 9)), -1), (1, -1), (int(ctx.rng.integers(10, 30)), 1)]
        xs = [_signed(ctx.rng, (n, D_IN), sign) for n, sign in batches]
        results = [(x, _run(worker, x)) for x in xs]
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
            info = ctx.text(ctx.call("@xla_info", [x, gamma, beta], "tensorflow", blame="xla_norm_gelu"),
                            "xla_norm_gelu")
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
        judge_agreement(ctx, weights, x, ctx.call("@run_exported", [x], "torch", blame="export_gate"),
                        ctx.call("tf_gate", [x, *weights], "tensorflow"), ("the exported program", "tf_gate"),
                        "use the same strict comparison in tf.cond")
    return "torch.cond and tf.cond agree on 4 batches, both branches and x.sum() == 0 included"


PARTS = {f.__name__: f for f in (no_breaks, few_recompiles, export_cond, xla_equal, cond_agree)}
