"""Checks for module 03, "Debugging with pdb".

Part A: the student fixes a buggy PyTorch attention and a buggy TensorFlow standardisation, checked by behaviour
against float64 NumPy on inputs that trip each planted bug. The TensorFlow one is judged as its graph: the student's
worker saves it as a SavedModel and a fresh verifier runs it, so "still a tf.function" is not the word of the
student's process.
Part B: the student writes pdb commands from a whitelist (places, names and attribute paths: nothing that runs code);
the grader runs its own copy of a buggy program, seeded afresh, under pdb in a fresh isolated worker with no notebook,
and reads the debugger's own record of where it stood when each command printed what it printed.
Part C: the student's anomaly-tool functions name the op that makes the first NaN in models the grader builds.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from autograder.spec import GraderError, Mismatch, tensor

# The grader's code that runs in the workers (Part C's models, Part B's recorded pdb session) is in
# autograder/worker/m03_debugging.py.

# -- Part B: the grader's copy of the program the student debugs (the notebook shows the same text), kept as a real
# file. The seed line is replaced on every run, so the printed tensor changes and cannot be written into the answer.
PDB_FILE, PDB_FUNCTION, PDB_NAME, PDB_LINE = "program.py", "softmax_rows", "shifted", 9
PDB_PROGRAM = (Path(__file__).resolve().parents[1] / "worker" / "m03_program.py").read_text()

# The pdb commands the grader runs, each with the argument it may take: places, names and attribute paths only.
# Anything else (`!` statements, expressions with calls, conditions, other commands) could run code of the
# student's in the grader's session and print whatever it likes.
_PATH = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"        # a name or an attribute path: x, self.w.shape
_PLACE = rf"(?:(?:[\w./-]+:)?\d+|{_PATH})?"         # a breakpoint: [FILE:]LINE or FUNCTION, or none (list them)
_COUNT = r"\d*"
PDB_WHITELIST = {
    **dict.fromkeys(("break", "b", "tbreak"), _PLACE),
    **dict.fromkeys(("continue", "c", "cont", "next", "n", "step", "s", "return", "r", "where", "w", "bt"), ""),
    **dict.fromkeys(("until", "unt", "up", "u", "down", "d"), _COUNT),
    **dict.fromkeys(("p", "pp"), _PATH),
}
_WHITELIST_WORDS = ("break/b and tbreak [FILE:]LINE or FUNCTION, continue/c/cont, next/n, step/s, return/r, "
                    "until/unt [LINE], where/w/bt, up/u and down/d [COUNT], and p or pp of a name or an attribute "
                    "path (p x, p self.w.shape)")


# -- Part A: PyTorch attention ------------------------------------------------------------------------------
def _softmax(s: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _attention(q, k, v, scale: bool = True, axis: int = -1) -> np.ndarray:
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = q @ k.T / (np.sqrt(q.shape[1]) if scale else 1.0)
    return _softmax(s, axis) @ v


def _attention_problem(rng, big: bool = False, m: int | None = None):
    n, d, e = int(rng.integers(3, 9)), int(rng.integers(4, 17)), int(rng.integers(2, 7))
    m = m or int(rng.integers(3, 11))
    while True:
        q = rng.normal(size=(n, d)).astype(np.float32) * (60.0 if big else 1.0)
        k = rng.normal(size=(m, d)).astype(np.float32)
        v = rng.normal(size=(m, e)).astype(np.float32)
        if not big or (q.astype(np.float64) @ k.T.astype(np.float64) / np.sqrt(d)).max() > 120:  # exp overflows float32
            return [q, k, v]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5)


def torch_fix(ctx):
    fn = "torch_attention"
    problems = [(_attention_problem(ctx.rng), "ordinary scores") for _ in range(3)]
    problems.append((_attention_problem(ctx.rng, m=1), "a single key"))
    problems.append((_attention_problem(ctx.rng, big=True), "large scores (q @ k.T / sqrt(d) above 120)"))
    for args, case in problems:
        out = ctx.call(fn, args, "torch")
        got = tensor(out, "torch", ctx.device, fn) if out.get("type") != "tuple" else None
        want = _attention(*args)
        if got is not None and got.shape == want.shape and not _close(got, want):
            if np.isnan(got).any():
                ctx.fail(f"{fn} returns NaN for {case}: exp(scores) overflows float32 above ~88, and inf / inf is "
                         "NaN. Subtract each row's max before exp (or use torch.softmax), which leaves the softmax "
                         "unchanged")
            if case.startswith("large") and np.isfinite(got).all():
                ctx.fail(f"{fn} matches on ordinary inputs but is wrong for {case}, though it returns no NaN: "
                         "replacing NaN (nan_to_num) hides the overflow without fixing the values. Subtract each "
                         "row's max before exp, or use torch.softmax")
            if _close(got, _attention(*args, scale=False)):
                ctx.fail(f"{fn} does not scale the scores: d ** (1 // 2) is d ** 0 == 1, because // is integer "
                         "division. Divide by d ** 0.5 (math.sqrt(d))")
            if _close(got, _attention(*args, axis=0)) or _close(got, _attention(*args, scale=False, axis=0)):
                ctx.fail(f"{fn} normalises over the queries (dim 0): each query's weights over the keys must sum "
                         "to 1, so the softmax runs over the last dimension (dim=-1)")
        ctx.same(out, ctx.truth(want), "torch", ["output"], f"{fn} vs float64 NumPy ({case})", want_framework="any")
    return "matches float64 NumPy on 5 inputs, a single key and overflowing scores included"


# -- Part A: TensorFlow standardisation ---------------------------------------------------------------------
def _standardize(x: np.ndarray, rows_mean: bool = False) -> np.ndarray:
    x = x.astype(np.float64)
    c = x - (x.mean(axis=1) if rows_mean else x.mean(axis=0, keepdims=True))
    std = c.std(axis=0)
    return c / np.where(std < 1e-6, 1.0, std)


def _standardize_problem(rng, n: int, d: int) -> np.ndarray:
    x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d) * 3).astype(np.float32)
    cols = rng.permutation(d)[:2]
    x[:, cols[0]] = np.float32(rng.integers(-4, 5) + 0.5)               # a constant column: std 0
    x[:, cols[1]] = (rng.normal(size=n) * 1e-7).astype(np.float32)      # a tiny column: std ~1e-7, only centred
    return x


def tf_fix(ctx):
    fn = "tf_standardize"
    # The evidence is a graph: the student's worker traces tf_standardize once for any (n, d) and saves it as a
    # SavedModel; a fresh verifier that runs no notebook code loads it and answers every input. Started first, it
    # starts while the student's worker saves.
    verifier = ctx.fresh_worker(["tensorflow"])
    try:
        saved = ctx.call("@export_tf_standardize", [], "tensorflow", blame=fn)
        if saved.get("type") == "str":
            ctx.fail(f"{fn} is a plain Python function, not a tf.function: keep @tf.function. Dropping the graph "
                     "hides the Python `if` on a tensor instead of fixing it; choose the divisor per column with "
                     "tf.where(std < 1e-6, tf.ones_like(std), std)")
        if saved.get("type") != "numpy.ndarray" or saved.get("dtype") != "uint8":
            ctx.fail(f"exporting the graph of {fn} gave a {saved.get('type')}, not a SavedModel's bytes")
        ctx.fresh_call(verifier, "@load_tf_standardize", [saved["array"]], "numpy",
                       f"the graph of {fn}, saved as a SavedModel, does not load in a fresh process")
        return _judge_tf_standardize(ctx, fn, lambda x: ctx.fresh_call(
            verifier, "@run_tf_standardize", [x], "tensorflow", f"the graph of {fn}, run in a fresh process, raised"))
    finally:
        verifier.close()


def _judge_tf_standardize(ctx, fn: str, run) -> str:
    shapes = [(int(ctx.rng.integers(6, 20)), int(ctx.rng.integers(3, 6))) for _ in range(2)]
    shapes.insert(0, (shapes[0][1] + 3,) * 2)  # square first: a row mean broadcasts silently here
    for n, d in shapes:
        x = _standardize_problem(ctx.rng, n, d)
        out = run(x)
        want = _standardize(x)
        if out.get("type") in ("tf.Tensor", "tf.Variable"):
            got = out["array"]
            if got.shape == want.shape and not _close(got, want):
                if np.isnan(got).any():
                    ctx.fail(f"{fn} returns NaN for a constant column (std 0): 0 / 0. Divide such columns by 1 "
                             "(tf.where(std < 1e-6, 1.0, std)) rather than by their std")
                if n == d and _close(got, _standardize(x, rows_mean=True)):
                    ctx.fail(f"{fn} subtracts the row means: reduce_mean(x, axis=1) has shape (n,), which "
                             "broadcasts across the columns without an error when n == d. Take the mean over "
                             "axis 0 (keepdims=True)")
                small = np.abs(want).max(axis=0) < 1e-3
                if _close(got[:, ~small], want[:, ~small]):
                    ctx.fail(f"{fn} is wrong only in columns whose std is below 1e-6 (a tiny-valued column): they "
                             "must be centred but not divided. Replacing NaN with 0 only fixes the constant column; "
                             "choose the divisor per column with tf.where(std < 1e-6, 1.0, std)")
        ctx.same(out, ctx.truth(want), "tensorflow", ["output"], f"{fn} vs float64 NumPy ({n}x{d} input)",
                 want_framework="any")
    return ("still a tf.function: its graph, saved and reloaded in a fresh process, matches float64 NumPy on 3 "
            "shapes, constant and tiny columns included")


# -- Part B: pdb commands -----------------------------------------------------------------------------------
def _unlisted(commands: str) -> str | None:
    """The first line of `commands` that is not a whitelisted pdb command, or None. Lines split as pdb reads them
    (at "\n"); an empty line repeats the previous command, so it is allowed."""
    for line in commands.split("\n"):
        word, arg = (line.split(None, 1) + ["", ""])[:2]
        if word and not (word in PDB_WHITELIST and re.fullmatch(PDB_WHITELIST[word], arg.strip())):
            return line.strip()
    return None


def _pdb_events(ctx, worker, program: str, commands: str, doing: str) -> list[list[str]]:
    """The grader's program under pdb in `worker`, fed `commands`: the session's events (see
    autograder/worker/m03_debugging.py, pdb_session): stops and commands with where pdb stood, then the transcript."""
    out = ctx.fresh_call(worker, "@pdb_session", [program, commands], "numpy", doing)
    return [[leaf["value"] for leaf in event["items"]] for event in out["items"]]


def pdb_shifted(ctx):
    commands = ctx.text(ctx.call("pdb_commands", [], "numpy"), "pdb_commands()")
    unlisted = _unlisted(commands)
    if unlisted is not None:
        shown = unlisted if len(unlisted) <= 100 else unlisted[:100] + "..."
        ctx.fail(f"pdb_commands() holds {shown!r}, which is not one of the pdb commands the grader runs: "
                 f"{_WHITELIST_WORDS}; no ! statements, no calls, no conditions, no other commands")
    seed = int(ctx.rng.integers(1, 1 << 31))
    program = PDB_PROGRAM.replace("SEED = 0", f"SEED = {seed}")
    # In one fresh isolated worker with no notebook: first the grader's own commands (what `p shifted` prints at
    # the right place), answered before the student's commands run there on the same program.
    worker = ctx.fresh_worker(["torch"], device="cpu")
    try:
        try:
            mine = _pdb_events(ctx, worker, program, f"b {PDB_FILE}:{PDB_LINE}\nc\np {PDB_NAME}\nc\n",
                               "the grader's own pdb run failed")
        except Mismatch as m:
            raise GraderError(str(m)) from None
        events = _pdb_events(ctx, worker, program, commands, "pdb could not run your commands")
    finally:
        worker.close()
    want = next((e[5].strip() for e in mine if e[0] == "command" and e[4] == f"p {PDB_NAME}"), "")
    if not want.startswith("tensor("):
        raise GraderError(f"the grader's own pdb run printed {want[:80]!r}")
    ctx.details["transcript"] = events[-1][1][-2000:]
    # Where pdb stood comes from the debugger's own record, never from printed text.
    stops = [(fn, int(line)) for _, file, fn, line, _ in (e for e in events if e[0] == "stop") if file == PDB_FILE]
    if not any(fn == PDB_FUNCTION for fn, _ in stops):
        seen = sorted({f"{fn}() line {n}" for fn, n in stops})
        ctx.fail(f"your commands never stopped inside {PDB_FUNCTION}() "
                 f"(pdb stopped at: {', '.join(seen) or 'nothing'}). pdb starts at main()'s first line: set a "
                 f"breakpoint in {PDB_FUNCTION} (b {PDB_FUNCTION}, or b program.py:LINE) and continue with c")
    commands_run = [e for e in events if e[0] == "command"]
    shown = [(file, fn, int(line)) for _, file, fn, line, _, output in commands_run if want in output]
    if not shown:
        if any(f"NameError: name '{PDB_NAME}' is not defined" in e[5] for e in commands_run):
            ctx.fail(f"pdb stopped in {PDB_FUNCTION}() before {PDB_NAME} was assigned (NameError): a breakpoint "
                     f"on a line stops before that line runs. Step past the assignment with n, or break on the "
                     f"line after it")
        ctx.fail(f"your commands stopped inside {PDB_FUNCTION}() but the transcript never shows the value of "
                 f"{PDB_NAME} (print it with p {PDB_NAME}; printing another variable, or a converted copy such as "
                 f".numpy(), does not count)")
    inside = [line for file, fn, line in shown if (file, fn) == (PDB_FILE, PDB_FUNCTION)]
    if not inside:
        ctx.fail(f"the transcript shows {PDB_NAME}'s value, but not while stopped inside {PDB_FUNCTION}()")
    return f"stopped in {PDB_FUNCTION}() at line {inside[0]} and printed {PDB_NAME} (grader seed {seed})"


# -- Part C: the op that makes the first NaN ----------------------------------------------------------------
KINDS = ("sqrt", "acos", "div", "pow")
_SYNONYMS = {"realdiv": "div", "truediv": "div", "divide": "div", "arccos": "acos", "power": "pow"}


def _op_name(text: str) -> str:
    s = text.strip().lower()
    s = re.sub(r"^(torch\.|tf\.math\.|tf\.|aten\.|aten::)", "", s)
    s = re.sub(r"\.(default|tensor|scalar|tensor_scalar|tensor_tensor)$", "", s)
    s = re.sub(r"backward\d*$", "", s)
    s = re.sub(r"[^a-z0-9]", "", s)
    return _SYNONYMS.get(s, s)


def _nan_problem(rng, kind: str) -> list:
    """x, W and the four parameters: only `kind` leaves its domain, with margins far above float32 rounding."""
    while True:
        n, d = int(rng.integers(4, 9)), int(rng.integers(3, 7))
        x = rng.normal(size=(n, d)).astype(np.float32)
        W = rng.normal(size=(d, d)).astype(np.float32)
        h = x.astype(np.float64) @ W.astype(np.float64)
        row_max = h.max(axis=1)
        safe = {"sqrt": float(h.min() - 1.0), "acos": 0.5, "div": float(row_max.min() - 0.5),
                "pow": float(h.min() - 1.0)}
        bad = {"sqrt": float(np.median(h)), "acos": 3.0, "div": float(row_max.min() + 0.5),
               "pow": float(np.median(h))}
        ok = {"sqrt": (h < bad["sqrt"] - 0.1).any(), "acos": (np.abs(np.tanh(h)) > 0.4).any(),
              "div": (row_max < bad["div"] - 0.1).any() and (row_max > bad["div"] + 0.1).any(),
              "pow": (h < bad["pow"] - 0.1).any()}
        if ok[kind]:
            params = [bad[k] if k == kind else safe[k] for k in KINDS]
            return [x, W, *params]


def _named(ctx, fn: str, helper: str, framework: str, kind: str, args: list) -> str:
    out = ctx.call(helper, args, framework, blame=fn)
    if out.get("type") == "None":
        how = ("Anomaly mode checks the backward pass only: make x require grad and call .backward() on a scalar "
               "(model_fn(x).sum()) inside detect_anomaly" if framework == "torch" else
               "Call tf.debugging.enable_check_numerics() before running model_fn(x), and read the op from the error")
        ctx.fail(f"{fn} returned None for a model whose output holds NaN: no error reached your code. {how}")
    text = ctx.text(out, f"{fn}(...)")
    name = _op_name(text)
    ctx.details.setdefault("answers", []).append(text[:80])
    if name == kind:
        return name
    if len(text) > 60:
        ctx.fail(f"{fn} returned {len(text)} characters ({text[:60]!r}...): return only the op's name, e.g. the "
                 f"name inside the error message")
    ctx.fail(f"{fn} returned {text!r} for a model whose first NaN comes from another op. Every model the grader "
             f"builds has the same ops (sqrt, acos, a division and pow among them) and different inputs push a "
             f"different one out of its domain: run the model under the anomaly tool and read the op from its "
             f"error, rather than returning a fixed name")


def _nan_part(ctx, fn: str, helper: str, framework: str, kinds: list[str]) -> str:
    for kind in kinds:
        _named(ctx, fn, helper, framework, kind, _nan_problem(ctx.rng, kind))
    return f"named the right op for {len(kinds)} models whose NaN comes from {', '.join(sorted(kinds))}"


def torch_nan(ctx):
    kinds = list(ctx.rng.permutation(["sqrt", "acos", "div"]))
    return _nan_part(ctx, "torch_first_nan_op", "@torch_nan", "torch", kinds)


def tf_nan(ctx):
    kinds = list(ctx.rng.permutation(["sqrt", "acos", "div"]))
    return _nan_part(ctx, "tf_first_nan_op", "@tf_nan", "tensorflow", kinds)


def nan_agree(ctx):
    # Twin models with the same weights and inputs: the backward-pass tool (PyTorch) and the forward-pass tool
    # (TensorFlow) must blame the same op, including pow, which the single-framework parts never use.
    kinds = ["pow", str(ctx.rng.choice(["sqrt", "acos", "div"]))]
    for kind in kinds:
        args = _nan_problem(ctx.rng, kind)
        a = _named(ctx, "torch_first_nan_op", "@torch_nan", "torch", kind, args)
        b = _named(ctx, "tf_first_nan_op", "@tf_nan", "tensorflow", kind, args)
        if a != b:  # unreachable while both equal kind; kept as the statement of what this part checks
            ctx.fail(f"PyTorch blamed {a!r} and TensorFlow {b!r} on twin models")
    return f"PyTorch's detect_anomaly and TensorFlow's check_numerics blame the same op ({', '.join(kinds)})"


PARTS = {f.__name__: f for f in (torch_fix, tf_fix, pdb_shifted, torch_nan, tf_nan, nan_agree)}
